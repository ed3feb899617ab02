"""Which workers are online and what they loaded, as the web tier reads it.

Each worker keeps a short-lived heartbeat key in Redis (written by generation.worker.heartbeats in
worker processes only); a worker whose key has expired is gone.
"""

import json

from .brokers import client

KEY_PREFIX = "ourvidz:worker:"
LOADED_SUFFIX = ":loaded"
TTL_SECONDS = 15


def online():
    """The workers whose heartbeat is fresh, each with what it has loaded."""
    keys = [k for k in client().scan_iter(KEY_PREFIX + "*") if not k.endswith(LOADED_SUFFIX.encode())]
    workers = []
    for key, value in zip(keys, client().mget(keys) if keys else [], strict=True):
        if value:
            loaded = client().get(key + LOADED_SUFFIX.encode())
            workers.append({**json.loads(value), "loaded": json.loads(loaded) if loaded else {}})
    return sorted(workers, key=lambda w: w["name"])
