"""Worker heartbeats: this worker's presence key in Redis, which generation.presence reads.

Importing this module connects its Celery signal handlers, so only worker processes (the pools'
task modules import it) send heartbeats. The main worker process says which queues it serves; the
pool child that loads the pipeline says what it loaded.
"""

import json
import os
import socket

from celery import signals
from django.conf import settings

from .. import presence, scheduler
from ..brokers import client

status = {"name": socket.gethostname(), "queues": [], "pid": None}


def _key(suffix=""):
    return f"{presence.KEY_PREFIX}{status['name']}{suffix}"


def identity():
    """This worker as its heartbeat names it ("<node>/<main process pid>"); "" outside a worker. The pid
    tells a restarted worker of the same name from the one that died."""
    return presence.identity(status["name"], status["pid"]) if status["pid"] else ""


def publish():
    """Write this worker's heartbeat now."""
    client().set(_key(), json.dumps(status), ex=settings.WORKER_LOST_AFTER)


def publish_loaded(info):
    """Record what this worker's pool has loaded (model, dtype, device, memory)."""
    client().set(_key(presence.LOADED_SUFFIX), json.dumps(info))


@signals.worker_init.connect
def _init(sender, **kwargs):
    # The worker's node name and main process, known before the pool forks (this module is imported with
    # the pool's tasks through --include, after celeryd_init has been sent).
    status["name"], status["pid"] = sender.hostname, os.getpid()


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
