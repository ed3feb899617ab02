"""The Redis connection the web tier and workers use beside Celery: queue lengths, worker heartbeats,
the task messages the broker holds."""

import json
from functools import lru_cache

import redis
from django.conf import settings


@lru_cache(maxsize=1)
def client():
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)


# Where kombu's Redis transport keeps the messages a worker has taken but not yet acknowledged
# (tasks are acknowledged late, once they end): {delivery tag: [message, exchange, routing key]}.
UNACKED_KEY = "unacked"


def task_ids(queue):
    """The ids of the tasks the broker holds for `queue`: waiting in its list, or taken by a worker and
    not yet acknowledged (those of every queue)."""
    server = client()
    messages = [json.loads(raw) for raw in server.lrange(queue, 0, -1)]
    messages += [json.loads(raw)[0] for raw in server.hvals(UNACKED_KEY)]
    return {message.get("headers", {}).get("id") for message in messages}
