"""Worker presence: each worker keeps a short-lived heartbeat key in Redis that the web tier reads.

Connected by the pools' task modules, so only worker processes send heartbeats. The main worker
process says which queues it serves; the pool child that loads the pipeline says what it loaded.
"""

import json
import os
import socket

from celery import signals

from .brokers import client

KEY_PREFIX = "ourvidz:worker:"
TTL_SECONDS = 15

status = {"name": socket.gethostname(), "queues": []}


def _key(suffix=""):
    return f"{KEY_PREFIX}{status['name']}{suffix}"


def publish():
    """Write this worker's heartbeat now."""
    client().set(_key(), json.dumps({**status, "pid": os.getpid()}), ex=TTL_SECONDS)


def publish_loaded(info):
    """Record what this worker's pool has loaded (model, dtype, device, memory)."""
    client().set(_key(":loaded"), json.dumps(info))


def online():
    """The workers whose heartbeat is fresh, each with what it has loaded."""
    keys = [k for k in client().scan_iter(KEY_PREFIX + "*") if not k.endswith(b":loaded")]
    workers = []
    for key, value in zip(keys, client().mget(keys) if keys else [], strict=True):
        if value:
            loaded = client().get(key + b":loaded")
            workers.append({**json.loads(value), "loaded": json.loads(loaded) if loaded else {}})
    return sorted(workers, key=lambda w: w["name"])


@signals.celeryd_init.connect
def _init(sender, **kwargs):
    status["name"] = sender  # the worker's node name, known before the pool forks


@signals.worker_ready.connect
def _ready(sender, **kwargs):
    status["queues"] = sorted(sender.app.amqp.queues.consume_from)
    publish()


@signals.heartbeat_sent.connect
def _heartbeat(sender, **kwargs):
    publish()


@signals.worker_shutdown.connect
def _shutdown(sender, **kwargs):
    client().delete(_key(), _key(":loaded"))
