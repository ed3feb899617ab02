"""This worker as one of several on a host: a node name no live worker holds, and its share of the host's CPU.

Importing this module connects its Celery signal handlers (the pools' task modules import it, before their
loaders connect theirs). Two workers of one name would be one worker to the scheduler, the API and Flower, so a
worker whose name is held by a live worker refuses to start. Torch gives every process all the cores by default,
and two workers on one host then starve each other (measured: 4x slower than one); each takes an equal share.
"""

import json
import logging
import os
import time

import redis
import torch
from celery import signals
from django.conf import settings

from .. import presence
from ..brokers import client
from . import heartbeats

log = logging.getLogger(__name__)


def host(name):
    """The host part of a node name ("sdxl-gpu1@gpu-07" -> "gpu-07")."""
    return name.rpartition("@")[2]


def workers_on_host(name):
    """How many workers run on `name`'s host, counting `name` itself (heartbeats of the same host part)."""
    names = {worker["name"] for worker in presence.online() if host(worker["name"]) == host(name)}
    return len(names | {name})


def cores():
    """The CPU cores this process may run on (its affinity: a container's or taskset's cpuset, not the machine's)."""
    return len(os.sched_getaffinity(0))


def thread_budget(name):
    """(torch threads, why) for worker `name`: WORKER_THREADS when set, else the cores shared among the workers
    on its host."""
    if settings.WORKER_THREADS:
        return settings.WORKER_THREADS, "WORKER_THREADS"
    count = workers_on_host(name)
    return max(1, cores() // count), f"{cores()} cores, {count} workers on {host(name)}"


def apply_thread_budget(name, say=False):
    """Set this process's torch threads to its budget (again before each job: workers come and go on a host),
    logging it when it changes, or with `say`."""
    try:
        threads, why = thread_budget(name)
    except redis.RedisError as exc:  # who else runs here is unknown for now: keep what we have
        log.warning("could not count the workers on this host: %s", exc)
        return
    if say or threads != torch.get_num_threads():
        torch.set_num_threads(threads)
        log.info("%s uses %d torch threads (%s)", name, threads, why)


class NameTaken(Exception):
    """Another live worker holds this node name."""


def claim_name(name, pid, watch=None):
    """Raise NameTaken when a live worker other than `pid` holds node `name`'s heartbeat.

    A heartbeat left by a worker that died lives on until it expires (WORKER_LOST_AFTER): one of another pid is
    watched for up to `watch` seconds (two heartbeat intervals) and counts as live only if it is renewed.
    """
    key = presence.KEY_PREFIX + name
    server = client()
    holder = server.get(key)
    if holder is None or json.loads(holder).get("pid") == pid:
        return
    watch = 2 * heartbeats.INTERVAL + 0.5 if watch is None else watch
    start, left = time.monotonic(), server.pttl(key)
    while time.monotonic() - start < watch:
        time.sleep(0.1)
        now = server.pttl(key)
        if now < 0:  # expired or deleted: the holder is gone
            return
        if now > left - 1000 * (time.monotonic() - start) + 500:  # renewed since we first looked
            raise NameTaken(f"the node name {name} is held by a live worker (pid {json.loads(holder).get('pid')}); "
                            "start this one under another name (make worker POOL=... GPU=n names it "
                            "<pool>-gpu<n>@<host>; or set SDXL_WORKER_NAME / WAN_WORKER_NAME)")


@signals.worker_init.connect
def _refuse_a_taken_name(sender, **kwargs):
    # In the main process, before the pool starts: exits with status 1 and the one-line message.
    try:
        claim_name(sender.hostname, os.getpid())
    except NameTaken as exc:
        raise SystemExit(f"worker {sender.hostname} not started: {exc}") from exc
    except redis.RedisError as exc:  # Redis is down: the worker waits for its broker anyway
        log.warning("could not check that the node name %s is free: %s", sender.hostname, exc)


@signals.worker_process_init.connect
def _budget_at_start(**kwargs):
    # In the pool process, before its models are loaded and warmed up.
    apply_thread_budget(heartbeats.status["name"], say=True)


@signals.task_prerun.connect
def _budget_per_job(**kwargs):
    if heartbeats.status["pid"]:  # in a worker: a task run eagerly elsewhere leaves that process's threads alone
        apply_thread_budget(heartbeats.status["name"])
