"""Worker heartbeats: this worker's presence key in Redis, which generation.presence reads.

Importing this module connects its Celery signal handlers, so only worker processes (the pools'
task modules import it) send heartbeats. The main worker process says which queues it serves; the
pool child that loads the pipeline says what it loaded.
"""

import json
import logging
import os
import socket
import threading

import torch
from celery import signals
from django.conf import settings

from .. import presence, scheduler
from ..brokers import client

log = logging.getLogger(__name__)

status = {"name": socket.gethostname(), "queues": [], "pid": None}
INTERVAL = 2.0  # seconds between heartbeats (WORKER_LOST_AFTER must be several of them)
_stopped = threading.Event()


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


def gpu_memory(device):
    """The memory in use and in all on GPU `device`, as its driver counts it (every process's share), in the
    keys a loaded record carries them; {} for a device that is not a CUDA GPU."""
    if device.type != "cuda":
        return {}
    free, total = torch.cuda.mem_get_info(device)
    return {"gpu_memory_used_bytes": total - free, "gpu_memory_total_bytes": total}


def keep_gpu_memory_fresh(info, device):
    """On a CUDA `device`, publish `info` (what this pool process loaded) again every INTERVAL seconds with the
    GPU's memory figures of the moment, from a thread of this process; nothing on the CPU. Measured here, in
    the pool process: CUDA used by the worker's main process would break the pool processes it forks later."""
    if device.type != "cuda":
        return

    def renew():
        while not _stopped.wait(INTERVAL):
            try:
                publish_loaded({**info, **gpu_memory(device)})
            except Exception as exc:  # Redis is down: the next round tries again
                log.warning("could not publish the GPU memory figures: %s", exc)

    threading.Thread(target=renew, name="gpu-memory", daemon=True).start()


@signals.worker_init.connect
def _init(sender, **kwargs):
    # The worker's node name and main process, known before the pool forks (this module is imported with
    # the pool's tasks through --include, after celeryd_init has been sent).
    status["name"], status["pid"] = sender.hostname, os.getpid()


@signals.worker_ready.connect
def _ready(sender, **kwargs):
    status["queues"] = sorted(sender.app.amqp.queues.consume_from)
    publish()
    threading.Thread(target=_beat, name="heartbeat", daemon=True).start()
    for queue in status["queues"]:
        scheduler.kick(queue)  # jobs waited for a worker: this one can take them now


def _beat():
    """Renew the heartbeat every INTERVAL seconds until the worker has shut down. A thread of its own, not
    Celery's consumer heartbeat: a warm shutdown stops the consumer before it waits for the running job,
    and after a Redis outage the consumer reconnects only after a backoff of up to 30 s; either way the
    scheduler would think the worker gone and take its job back mid-render."""
    while not _stopped.wait(INTERVAL):
        try:
            publish()
        except Exception as exc:  # Redis is down: the next beat tries again
            log.warning("could not write the heartbeat: %s", exc)


@signals.worker_shutdown.connect
def _shutdown(sender, **kwargs):
    # Sent once the pool has finished its jobs: the worker is gone from now on.
    _stopped.set()
    client().delete(_key(), _key(presence.LOADED_SUFFIX))
