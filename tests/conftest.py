"""Shared fixtures: named users and their clients, the web tier's settings, and, for the tests that need
them, the tiny development models and real Celery worker processes.

Run through `make test`, which provides PostgreSQL and Redis (embedded unless DATABASE_URL /
REDIS_URL are set). Worker processes are started from the Procfile exactly as `make run` starts
them, against the test database.

Every test gets what the web tier reads: a private media folder and the SDXL tokenizer (negative prompts
are cut to its window). The tiny models are built (once, cached under var/test-models/<digest>, or under
OURVIDZ_TEST_MODELS_DIR) only for tests that ask for `tiny_models`, directly or through the worker
fixtures; those tests are marked `workers`, so `make test ARGS="-m 'not workers'"` runs the quick rest.
"""

import hashlib
import importlib
import json
import os
import subprocess
import sys
import uuid
from dataclasses import replace
from pathlib import Path

import pytest
from django.apps import apps as django_apps
from django.test import Client, override_settings
from helpers import ALICE_PASSWORD, BOB_PASSWORD, CHARLIE_PASSWORD, Stack, create_user, pools_online, worker_env
from rest_framework.test import APIClient

from generation import brokers, job_types, negative_prompts, presence, storage
from generation.api import throttles
from generation.web import live

ROOT = Path(__file__).resolve().parent.parent
BUILDERS = [ROOT / "sdxl_tasks" / "devmodel.py", ROOT / "wan_tasks" / "devmodels.py",
            ROOT / "generation" / "worker" / "devmodels.py",
            ROOT / "generation" / "migrations" / "0002_seed_negative_terms.py"]
POOL_QUEUES = ["sdxl_queue", "wan_queue", "maintenance"]
# The tiny models' folders: those of settings' defaults, which job metadata reports as the model names.
MODEL_FOLDERS = {"sdxl": "sdxl-tiny", "ip_adapter": "sdxl-ip-adapter-tiny", "wan": "wan-tiny",
                 "wan_i2v": "wan-i2v-tiny", "enhancer": "enhancer-tiny"}
# The settings naming a model, and which one.
MODEL_SETTINGS = {"SDXL_MODEL_PATH": "sdxl", "SDXL_CONFIG_PATH": "sdxl", "SDXL_IP_ADAPTER_PATH": "ip_adapter",
                  "WAN_MODEL_PATH": "wan", "WAN_I2V_MODEL_PATH": "wan_i2v", "ENHANCER_MODEL_PATH": "enhancer"}

def pytest_collection_modifyitems(items):
    """A test that needs the tiny models (worker processes need them too) is a `workers` test."""
    for item in items:
        if "models_dir" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.workers)


# --- settings ------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def media_root(tmp_path_factory):
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def sdxl_tokenizer(tmp_path_factory):
    """A folder holding only the tiny SDXL model's tokenizer (tokenizer.json and tokenizer_config.json),
    all that the web tier reads of a model; written in a tenth of a second, without torch or transformers."""
    from sdxl_tasks import devmodel

    return devmodel.write_tokenizer(tmp_path_factory.mktemp("sdxl-tokenizer"))


@pytest.fixture(scope="session", autouse=True)
def project_settings(media_root, sdxl_tokenizer, tmp_path_factory):
    """Point this process at a private media folder and the SDXL tokenizer, like the workers. The model
    paths name folders that do not exist, so that a test using a model without asking for `tiny_models`
    fails rather than reads whatever `make run` left in var/models/."""
    not_built = tmp_path_factory.mktemp("models-not-built")
    overrides = override_settings(
        **{name: str(not_built / MODEL_FOLDERS[model]) for name, model in MODEL_SETTINGS.items()},
        SDXL_TOKENIZER_PATH=str(sdxl_tokenizer),
        MEDIA_ROOT=media_root, STORAGE_BACKEND="local", OURVIDZ_PROFILE="dev",
    )
    overrides.enable()
    storage._storage.cache_clear()
    negative_prompts.load_tokenizer.cache_clear()
    # Throttle and stream counts are kept in Redis by user id, and each run's test database numbers users from 1
    # again: each run counts under keys of its own.
    run = f"ourvidz-test-{uuid.uuid4().hex[:8]}"
    throttles.SubmissionThrottle.cache.key_prefix = run
    live.STREAMS_KEY = f"{run}:streams:"
    yield
    overrides.disable()
    storage._storage.cache_clear()


@pytest.fixture(autouse=True)
def fresh_stream_slots(monkeypatch):
    """Each test gets this process's live-stream slots afresh: a stream a test left unread keeps its slot."""
    import threading

    from django.conf import settings

    monkeypatch.setattr(live, "_process_slots", threading.BoundedSemaphore(settings.EVENT_STREAMS_PER_PROCESS))


@pytest.fixture(autouse=True)
def fresh_negative_terms():
    """Each test reads the terms of its own database, not a previous test's cached ones."""
    negative_prompts.forget_terms()


# --- pools of a test's own ----------------------------------------------------------------------------

class Sandbox:
    """Worker heartbeats private to one test and, on request, broker queues of its own."""

    def __init__(self, tag, monkeypatch):
        self.tag, self.monkeypatch = tag, monkeypatch
        self.prefix = f"ourvidz:{tag}:worker:"
        monkeypatch.setattr(presence, "KEY_PREFIX", self.prefix)
        self.queues = []

    def private_queues(self):
        """Give each pool a broker queue of this test's own (`sdxl_queue.test-…`), that no worker process
        takes tasks from: what the scheduler sends stays there for the test to read (`sent`)."""
        for name, pool in list(job_types.POOLS.items()):
            private = replace(pool, queue=f"{pool.queue}.{self.tag}")
            self.monkeypatch.setitem(job_types.POOLS, name, private)
            self.queues.append(private.queue)

    def worker(self, pool, name=None, reference_types=None):
        """Publish the heartbeat of a worker of `pool` ("sdxl" or "wan"), as a running one does; with
        `reference_types`, what it says it loaded. Nothing takes tasks in its name."""
        name = name or f"{pool}-{uuid.uuid4().hex[:6]}@{self.tag}"
        queue = job_types.POOLS[pool].queue
        heartbeat = {"name": name, "queues": [queue], "pid": os.getpid()}
        brokers.client().set(self.prefix + name, json.dumps(heartbeat), ex=60)
        if reference_types is not None:
            loaded = json.dumps({"pool": pool, "reference_types": sorted(reference_types)})
            brokers.client().set(self.prefix + name + presence.LOADED_SUFFIX, loaded)
        return name

    def stop(self, name):
        brokers.client().delete(self.prefix + name, self.prefix + name + presence.LOADED_SUFFIX)

    def sent(self, pool):
        """The task ids in `pool`'s private queue, oldest first."""
        raw = brokers.client().lrange(job_types.POOLS[pool].queue, 0, -1)
        return [json.loads(message)["headers"]["id"] for message in reversed(raw)]

    def clear(self):
        server = brokers.client()
        keys = [*self.queues, *server.scan_iter(self.prefix + "*")]
        if keys:
            server.delete(*keys)


@pytest.fixture(autouse=True)
def sandbox(request, monkeypatch):
    """Tests without worker processes see only the workers they pretend are online
    (`sandbox.worker("sdxl")`): the workers other tests started neither show up nor change what the
    scheduler does. Tests with worker processes see the real ones."""
    if "worker_processes" in request.fixturenames:
        yield None
        return
    box = Sandbox(f"test-{uuid.uuid4().hex[:8]}", monkeypatch)
    yield box
    box.clear()


# --- users and clients -----------------------------------------------------------------------------

@pytest.fixture
def alice(db):
    return create_user("alice", ALICE_PASSWORD)


@pytest.fixture
def bob(db):
    return create_user("bob", BOB_PASSWORD)


@pytest.fixture
def charlie(db):
    return create_user("charlie", CHARLIE_PASSWORD)


def _api_client(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


def _logged_in(user):
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def alice_api(alice):
    """The JSON API as alice (DRF's APIClient, authenticated without a login)."""
    return _api_client(alice)


@pytest.fixture
def bob_api(bob):
    return _api_client(bob)


@pytest.fixture
def alice_client(alice):
    """A browser-like django.test.Client with alice logged in (a session cookie)."""
    return _logged_in(alice)


@pytest.fixture
def bob_client(bob):
    return _logged_in(bob)


# --- the tiny models and worker processes ----------------------------------------------------------

def _models_dir():
    """Tiny models are cached per version of their builders: a change rebuilds them."""
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in BUILDERS if p.exists())).hexdigest()[:12]
    return Path(os.environ.get("OURVIDZ_TEST_MODELS_DIR", ROOT / "var" / "test-models")) / digest


@pytest.fixture(scope="session")
def models_dir():
    """A folder holding the tiny SDXL (and its IP-Adapter), WAN and enhancer models, built once.
    Tests ask for `tiny_models`, which also points the settings at them."""
    path = _models_dir()
    paths = {model: path / folder for model, folder in MODEL_FOLDERS.items()}
    if not all(p.exists() for p in paths.values()):
        path.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "sdxl_tasks.devmodel", str(paths["sdxl"]), "--ip-adapter",
                        str(paths["ip_adapter"])], check=True, cwd=ROOT)
        subprocess.run([sys.executable, "-m", "wan_tasks.devmodels", str(paths["wan"]),
                        str(paths["enhancer"]), "--i2v", str(paths["wan_i2v"])], check=True, cwd=ROOT)
    return paths


@pytest.fixture(scope="session")
def tiny_models(models_dir, project_settings):
    """The tiny models, with this process's model settings pointing at them (as the workers' do) for the
    rest of the session; returns models_dir's paths."""
    overrides = override_settings(**{name: str(models_dir[model]) for name, model in MODEL_SETTINGS.items()})
    overrides.enable()
    yield models_dir
    overrides.disable()


@pytest.fixture(scope="session")
def worker_processes(django_db_setup, django_db_blocker, tmp_path_factory, tiny_models):
    """One real Celery worker per pool (the Procfile run by ourvidz.supervise), against the test database."""
    with django_db_blocker.unblock():
        client = brokers.client()
        client.delete(*POOL_QUEUES)
        for key in client.scan_iter(presence.KEY_PREFIX + "*"):
            client.delete(key)
        stack = Stack(["sdxl", "wan"], worker_env(), tmp_path_factory.mktemp("logs") / "workers.log")
        try:
            stack.wait_for(pools_online, 120, "both worker pools")
            yield stack
        finally:
            stack.stop()


@pytest.fixture
def live_workers(worker_processes, transactional_db):
    """Tests that use workers need committed rows: a transactional database. Flushing it between such
    tests empties what the data migration seeded, so the negative-prompt terms are seeded again."""
    importlib.import_module("generation.migrations.0002_seed_negative_terms").seed(django_apps, None)
    return worker_processes


@pytest.fixture(scope="module")
def s3_endpoint():
    """A real S3 server (moto) on a loopback port, for the minio storage backend: host:port."""
    from faults import free_port
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop()
