"""The health check load balancers and operators poll."""

from django.db import connection
from django.http import JsonResponse
from django.views.decorators.http import require_GET

from .. import brokers, storage


@require_GET
def healthz(request):
    """200 when the database, the broker and storage all answer; 503 naming what does not."""
    checks = {}
    for name, probe in (("database", _check_database), ("broker", lambda: brokers.client().ping()),
                        ("storage", lambda: storage.get_storage().check())):
        try:
            probe()
            checks[name] = "ok"
        except Exception as exc:
            checks[name] = f"error: {exc}"
    healthy = all(v == "ok" for v in checks.values())
    return JsonResponse({"status": "ok" if healthy else "error", **checks}, status=200 if healthy else 503)


def _check_database():
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
