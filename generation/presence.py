"""Which workers are online and what they loaded, as the web tier reads it.

Each worker keeps a short-lived heartbeat key in Redis (written by generation.worker.heartbeats in
worker processes only, every couple of seconds); a worker whose key has expired (WORKER_LOST_AFTER) is
gone.
"""

import json

from .brokers import client

KEY_PREFIX = "ourvidz:worker:"
LOADED_SUFFIX = ":loaded"  # a heartbeat lives settings.WORKER_LOST_AFTER seconds unless renewed


def identity(name, pid):
    """How a running job names its worker (Job.worker) and a heartbeat shows it."""
    return f"{name}/{pid}"


def online():
    """The workers whose heartbeat is fresh, each with what it has loaded."""
    # One SCAN round trip for a keyspace of up to a thousand keys (the default asks ten at a time), then
    # one MGET for every heartbeat and what it loaded.
    keys = [k for k in client().scan_iter(KEY_PREFIX + "*", count=1000) if not k.endswith(LOADED_SUFFIX.encode())]
    if not keys:
        return []
    values = client().mget(keys + [key + LOADED_SUFFIX.encode() for key in keys])
    workers = [{**json.loads(value), "loaded": json.loads(loaded) if loaded else {}}
               for value, loaded in zip(values[:len(keys)], values[len(keys):], strict=True) if value]
    return sorted(workers, key=lambda w: w["name"])
