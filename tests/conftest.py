"""Shared fixtures: tiny development models, worker environment and real Celery worker processes.

Run through `make test`, which provides PostgreSQL and Redis (embedded unless DATABASE_URL /
REDIS_URL are set). Worker processes are started from the Procfile exactly as `make run` starts
them, against the test database.
"""

import hashlib
import importlib
import subprocess
import sys
from pathlib import Path

import pytest
from django.apps import apps as django_apps
from django.test import override_settings
from helpers import Stack, pools_online, worker_env

from generation import brokers, negative_prompts, presence, storage

ROOT = Path(__file__).resolve().parent.parent
BUILDERS = [ROOT / "sdxl_tasks" / "devmodel.py", ROOT / "wan_tasks" / "devmodels.py",
            ROOT / "generation" / "worker" / "devmodels.py",
            ROOT / "generation" / "migrations" / "0002_seed_negative_terms.py"]
POOL_QUEUES = ["sdxl_queue", "wan_queue", "maintenance"]


def _models_dir():
    """Tiny models are cached per version of their builders: a change rebuilds them."""
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in BUILDERS if p.exists())).hexdigest()[:12]
    return ROOT / "var" / "test-models" / digest


@pytest.fixture(scope="session")
def models_dir():
    """A folder holding the tiny SDXL (and its IP-Adapter), WAN and enhancer models, built once."""
    path = _models_dir()
    # The folder names of settings' defaults, which job metadata reports as the model names.
    paths = {"sdxl": path / "sdxl-tiny", "ip_adapter": path / "sdxl-ip-adapter-tiny", "wan": path / "wan-tiny",
             "wan_i2v": path / "wan-i2v-tiny", "enhancer": path / "enhancer-tiny"}
    if not all(p.exists() for p in paths.values()):
        path.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "sdxl_tasks.devmodel", str(paths["sdxl"]), "--ip-adapter",
                        str(paths["ip_adapter"])], check=True, cwd=ROOT)
        subprocess.run([sys.executable, "-m", "wan_tasks.devmodels", str(paths["wan"]),
                        str(paths["enhancer"]), "--i2v", str(paths["wan_i2v"])], check=True, cwd=ROOT)
    return paths


@pytest.fixture(scope="session")
def media_root(tmp_path_factory):
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session", autouse=True)
def project_settings(models_dir, media_root):
    """Point this process at the tiny models and a private media folder, like the workers."""
    overrides = override_settings(
        SDXL_MODEL_PATH=str(models_dir["sdxl"]), SDXL_CONFIG_PATH=str(models_dir["sdxl"]),
        SDXL_TOKENIZER_PATH=str(models_dir["sdxl"] / "tokenizer"), SDXL_IP_ADAPTER_PATH=str(models_dir["ip_adapter"]),
        WAN_MODEL_PATH=str(models_dir["wan"]), WAN_I2V_MODEL_PATH=str(models_dir["wan_i2v"]),
        ENHANCER_MODEL_PATH=str(models_dir["enhancer"]),
        MEDIA_ROOT=media_root, STORAGE_BACKEND="local", OURVIDZ_PROFILE="dev",
    )
    overrides.enable()
    storage._storage.cache_clear()
    negative_prompts.load_tokenizer.cache_clear()
    yield
    overrides.disable()
    storage._storage.cache_clear()


@pytest.fixture(autouse=True)
def fresh_negative_terms():
    """Each test reads the terms of its own database, not a previous test's cached ones."""
    negative_prompts.forget_terms()


@pytest.fixture(scope="session")
def worker_processes(django_db_setup, django_db_blocker, tmp_path_factory):
    """One real Celery worker per pool (honcho + Procfile), against the test database."""
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
