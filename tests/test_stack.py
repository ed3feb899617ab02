"""The whole stack from the Procfile, as `make run` starts it: web, both pools, beat and Flower."""

import socket
import time

import pytest
import requests
from helpers import Stack, worker_env
from rest_framework.authtoken.models import Token

from generation.models import Job
from generation.submission import build_job


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def answers(url, **kwargs):
    try:
        return requests.get(url, timeout=2, **kwargs).status_code == 200
    except requests.RequestException:
        return False


@pytest.mark.django_db(transaction=True)
def test_make_run_stack_serves_jobs_and_flower_sees_both_pools(tmp_path, worker_processes, alice):
    token = Token.objects.create(user=alice).key
    web, flower = free_port(), free_port()
    # Its own Redis database, so the session's workers do not take this stack's tasks.
    redis_url = worker_env()["REDIS_URL"].rsplit("/", 1)[0] + "/1"
    env = worker_env(WEB_BIND=f"127.0.0.1:{web}", FLOWER_PORT=flower, REDIS_URL=redis_url,
                     OURVIDZ_DATA_DIR=tmp_path)
    stack = Stack([], env, tmp_path / "stack.log")  # no names: every process in the Procfile
    base = f"http://127.0.0.1:{web}"
    try:
        stack.wait_for(lambda: answers(f"{base}/healthz"), 60, "the web server")
        session = requests.Session()
        session.headers["Authorization"] = f"Token {token}"
        html = session.get(f"{base}/api/jobs/", headers={"Accept": "text/html"})
        assert html.status_code == 200 and "Django REST framework" in html.text  # browsable API
        response = session.post(f"{base}/api/jobs/", json={"job_type": "sdxl_image_fast", "prompt": "a boat"})
        assert response.status_code == 201, response.text
        job = stack.wait_for_job(response.json()["id"])
        assert job.status == "completed", job.error_message
        image = session.get(f"{base}/api/jobs/{job.pk}/").json()["images"][0]
        assert requests.get(image["url"], timeout=5).content.startswith(b"\x89PNG")

        def flower_workers():
            try:
                login = (tmp_path / "flower_credentials").read_text().split(":", 1)  # Flower made it at its start
                found = requests.get(f"http://127.0.0.1:{flower}/api/workers", params={"refresh": 1},
                                     auth=tuple(login), timeout=5).json()
            except (OSError, requests.RequestException, ValueError):
                return False
            names = {name.split("@")[0] for name in found}
            return {"sdxl", "wan"} <= names

        stack.wait_for(flower_workers, 60, "Flower to report both workers")

        # Ctrl-C while a job runs: the worker finishes it (warm shutdown), then everything stops.
        slow = build_job(alice, "sdxl_image_high", "a slow boat")
        slow.width, slow.height, slow.steps = 128, 128, 25  # about 5 s on the tiny model on a CPU: still running
        slow.save(force_insert=True)  # beat's next tick in the stack releases it
        stack.wait_for(lambda: Job.objects.get(pk=slow.pk).status == "processing", 30, "the slow job to start")
    finally:
        stack.stop()
    slow.refresh_from_db()
    assert slow.status == "completed" and slow.images.count() == 1, slow.error_message
    output = stack.output()
    assert stack.process.returncode is not None
    for name in ("web", "sdxl", "wan", "housekeeping", "beat", "flower"):
        assert f"| {name} started (pid" in output, name
        assert f"| {name} stopped (" in output, name
    assert "sdxl stopped (status 0)" in output and "killing" not in output  # within the grace period
    time.sleep(0.5)
    assert not answers(f"{base}/healthz")  # Ctrl-C stopped everything
