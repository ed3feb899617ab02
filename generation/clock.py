"""One clock for every host: the database's.

Hosts' clocks drift apart (a worker running fifteen minutes ahead failed jobs that ran fine elsewhere),
so job timestamps and the decisions made from them (a stalled job, a lost message, a vanished worker)
come from the database: `Now()` inside the statement that writes or compares, or `now()` when Python
needs the value. Intervals a process measures itself (time.monotonic, perf_counter) are its own.
"""

from django.db import connection
from django.db.models.functions import Now


def now():
    """The database's time now (an aware datetime): one round trip."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT STATEMENT_TIMESTAMP()")  # what Django's Now() is on PostgreSQL
        return cursor.fetchone()[0]


def since(interval):
    """An expression for the database's time `interval` (a timedelta) ago, for filters:
    `started_at__lt=clock.since(limit)`."""
    return Now() - interval
