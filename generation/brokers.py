"""The Redis connection the web tier and workers use beside Celery: queue lengths, worker heartbeats."""

from functools import lru_cache

import redis
from django.conf import settings


@lru_cache(maxsize=1)
def client():
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
