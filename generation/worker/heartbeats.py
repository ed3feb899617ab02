"""Worker heartbeats: this worker's presence key in Redis, which generation.presence reads.

Importing this module connects its Celery signal handlers, so only worker processes (the pools'
task modules import it) send heartbeats. The main worker process says which queues it serves; the
pool child that loads the pipeline says what it loaded.
"""

import json
import os
import socket

from celery import signals

from .. import presence, scheduler
from ..brokers import client

status = {"name": socket.gethostname(), "queues": []}


def _key(suffix=""):
    return f"{presence.KEY_PREFIX}{status['name']}{suffix}"


def publish():
    """Write this worker's heartbeat now."""
    client().set(_key(), json.dumps({**status, "pid": os.getpid()}), ex=presence.TTL_SECONDS)


def publish_loaded(info):
    """Record what this worker's pool has loaded (model, dtype, device, memory)."""
    client().set(_key(presence.LOADED_SUFFIX), json.dumps(info))


@signals.worker_init.connect
def _init(sender, **kwargs):
    # The worker's node name, known before the pool forks (this module is imported with the pool's
    # tasks through --include, after celeryd_init has been sent).
    status["name"] = sender.hostname


@signals.worker_ready.connect
def _ready(sender, **kwargs):
    status["queues"] = sorted(sender.app.amqp.queues.consume_from)
    publish()
    for queue in status["queues"]:
        scheduler.kick(queue)  # jobs waited for a worker: this one can take them now


@signals.heartbeat_sent.connect
def _heartbeat(sender, **kwargs):
    publish()


@signals.worker_shutdown.connect
def _shutdown(sender, **kwargs):
    client().delete(_key(), _key(presence.LOADED_SUFFIX))
