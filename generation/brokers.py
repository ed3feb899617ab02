"""The Redis connection the web tier and workers use beside Celery: queue lengths, worker heartbeats,
the task messages the broker holds."""

import base64
import json
from functools import lru_cache

import redis
from django.conf import settings
from redis.backoff import NoBackoff
from redis.retry import Retry


@lru_cache(maxsize=1)
def client():
    # No retries: every use (presence, events, the scheduler) is retried by its own next round anyway,
    # and a request must not hang on redis-py's backoff while Redis is down.
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2,
                                retry=Retry(NoBackoff(), 0))


# Where kombu's Redis transport keeps the messages a worker has taken but not yet acknowledged
# (tasks are acknowledged late, once they end): {delivery tag: [message, exchange, routing key]}.
UNACKED_KEY = "unacked"


def job_messages(queue, tasks):
    """(job id, release number) of each message of the `tasks` (task names) the broker holds for
    `queue`: waiting in its list, or taken by a worker and not yet acknowledged. A message sent without
    a release number (before the scheduler) reads as release 0."""
    server = client()
    messages = [json.loads(raw) for raw in server.lrange(queue, 0, -1)]
    messages += [json.loads(raw)[0] for raw in server.hvals(UNACKED_KEY)]
    found = set()
    for message in messages:
        if message.get("headers", {}).get("task") not in tasks:
            continue
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args, kwargs, _ = json.loads(body)
        found.add((str(args[0]), kwargs.get("release", 0)))
    return found
