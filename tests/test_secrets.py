"""Secrets: Flower asks for a login (the generated one, or FLOWER_BASIC_AUTH) and answers no other site, and the
secrets the stack generates are readable by their owner only.

Real processes: Flower started from the Procfile by the supervisor, as `make run` starts it; the settings loaded
by a Python process of their own. The embedded Redis's password is tested with the other embedded Redis tests, in
tests/test_supervision.py.
"""

import io
import os
import stat
import subprocess
import sys
import uuid

import requests
from faults import free_port
from helpers import ROOT, Stack, worker_env

from ourvidz import flower

ELSEWHERE = {"Origin": "https://elsewhere.example"}


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def answers(url):
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def start_flower(tmp_path, **env):
    """Flower from the Procfile under the supervisor, with `tmp_path` as OURVIDZ_DATA_DIR; returns (Stack, its URL)."""
    port = free_port()
    environ = worker_env(OURVIDZ_DATA_DIR=tmp_path, FLOWER_PORT=port, **env)
    if "FLOWER_BASIC_AUTH" not in env:
        environ.pop("FLOWER_BASIC_AUTH", None)
    stack = Stack(["flower"], environ, tmp_path / "flower.log")
    base = f"http://127.0.0.1:{port}"
    try:
        stack.wait_for(lambda: answers(f"{base}/healthcheck"), 60, "Flower")  # the health check needs no login
    except Exception:
        stack.stop()
        raise
    return stack, base


def test_flower_asks_for_the_generated_password(tmp_path):
    # The switch that used to open Flower's API to anyone: set, it must change nothing.
    stack, base = start_flower(tmp_path, FLOWER_UNAUTHENTICATED_API="true")
    try:
        login = tmp_path / "flower_credentials"
        assert mode(login) == 0o600
        user, password = login.read_text().split(":", 1)
        assert stack.output().count(f"{user} / {password}") == 1  # printed where it was made, once
        revoke = f"{base}/api/task/revoke/{uuid.uuid4()}"
        for page in ("/", "/tasks", "/api/tasks", "/api/workers"):
            assert requests.get(base + page, timeout=10).status_code == 401, page
            assert requests.get(base + page, auth=(user, "wrong"), timeout=10).status_code == 401, page
        assert requests.post(revoke, timeout=10).status_code == 401
        assert requests.get(f"{base}/api/tasks", auth=(user, password), timeout=10).status_code == 200
        assert requests.post(revoke, auth=(user, password), timeout=10).status_code == 200
    finally:
        stack.stop()


def test_flower_answers_no_other_site(tmp_path):
    stack, base = start_flower(tmp_path)
    try:
        login = tuple((tmp_path / "flower_credentials").read_text().split(":", 1))
        revoke = f"{base}/api/task/revoke/{uuid.uuid4()}"
        responses = [
            requests.get(f"{base}/api/tasks", headers=ELSEWHERE, auth=login, timeout=10),
            requests.options(revoke, headers={**ELSEWHERE, "Access-Control-Request-Method": "POST"}, timeout=10),
            requests.post(revoke, headers=ELSEWHERE, auth=login, timeout=10),
        ]
        for response in responses:
            assert "Access-Control-Allow-Origin" not in response.headers, response.request.method
        assert responses[-1].status_code == 403  # a revoke sent from another site's page, with the login
    finally:
        stack.stop()


def test_flower_basic_auth_replaces_the_generated_login(tmp_path):
    stack, base = start_flower(tmp_path, FLOWER_BASIC_AUTH="ops:chosen-by-the-operator")
    try:
        assert requests.get(f"{base}/api/workers", auth=("ops", "chosen-by-the-operator"), timeout=10).ok
        assert requests.get(f"{base}/api/workers", timeout=10).status_code == 401
        assert not (tmp_path / "flower_credentials").exists()
    finally:
        stack.stop()


def test_the_flower_login_is_made_and_printed_once(tmp_path, monkeypatch):
    monkeypatch.setenv("OURVIDZ_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("FLOWER_BASIC_AUTH", raising=False)
    first, second = io.StringIO(), io.StringIO()
    login = flower.credentials(first)
    assert flower.credentials(second) == login
    assert login.split(":", 1)[1] in first.getvalue() and second.getvalue() == ""


def settings_secret_key(data_dir):
    """The SECRET_KEY that a process of its own reads from the settings, with `data_dir` as OURVIDZ_DATA_DIR."""
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SECRET_KEY"}
    env.update(OURVIDZ_DATA_DIR=str(data_dir), DJANGO_SETTINGS_MODULE="ourvidz.settings")
    return subprocess.run([sys.executable, "-c", "from django.conf import settings; print(settings.SECRET_KEY)"],
                          cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout.strip()


def test_the_generated_secret_key_is_readable_by_its_owner_only(tmp_path):
    key = settings_secret_key(tmp_path)
    path = tmp_path / "secret_key"
    assert path.read_text() == key
    assert mode(path) == 0o600
    assert list(tmp_path.iterdir()) == [path]  # no draft left behind

    # A key file left readable by an earlier version is tightened, and kept.
    path.chmod(0o644)
    assert settings_secret_key(tmp_path) == key
    assert mode(path) == 0o600
