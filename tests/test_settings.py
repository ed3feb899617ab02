"""Settings read from the environment: README's defaults, typed values, and start-up errors that name the variable.

Each case starts a fresh interpreter with a controlled environment, since settings are read once per process.
Settings only parse DATABASE_URL and REDIS_URL, so neither server is needed.
"""

import json
import os
import secrets
import subprocess
import sys

import pytest
from helpers import ROOT

DUMMY = {
    "DATABASE_URL": "postgres://tester:s%40cret@db.example:6543/ourvidz_dummy",
    "REDIS_URL": "redis://redis.example:6379/9",
    "DJANGO_SECRET_KEY": "test-secret-key",
}
PRINT_SETTINGS = (
    "import django, json, sys; django.setup(); from django.conf import settings; "
    "print(json.dumps({name: getattr(settings, name) for name in sys.argv[1:]}, default=str))"
)


def start(names=(), **variables):
    """Set up Django in a new process whose environment is DUMMY plus `variables` (None: unset)."""
    env = {"PATH": os.environ.get("PATH", ""), "DJANGO_SETTINGS_MODULE": "ourvidz.settings", **DUMMY}
    env.update(variables)
    env = {key: value for key, value in env.items() if value is not None}
    return subprocess.run([sys.executable, "-c", PRINT_SETTINGS, *names], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def read(*names, **variables):
    result = start(names, **variables)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_defaults_are_those_in_readme():
    s = read("PROGRESS_INTERVAL", "JOB_TIME_LIMIT_FACTOR", "JOB_TIME_LIMIT_FLOOR", "CELERY_BROKER_TRANSPORT_OPTIONS",
             "CELERY_WORKER_PROC_ALIVE_TIMEOUT", "DATABASES", "DEBUG", "MINIO_SECURE", "OURVIDZ_SIGNUP",
             "ALLOWED_HOSTS", "CSRF_TRUSTED_ORIGINS", "SIGNED_URL_TTL", "REFERENCE_MAX_BYTES", "REFERENCE_MAX_PIXELS",
             "ENHANCER_MAX_NEW_TOKENS", "WAN_MEMORY_RESERVE_GB", "WAN_GUIDANCE_STOP", "DATA_DIR", "MEDIA_ROOT",
             "MODELS_DIR", "SDXL_MODEL_PATH", "SDXL_CONFIG_PATH", "SDXL_TOKENIZER_PATH", "SDXL_IP_ADAPTER_PATH",
             "WAN_MODEL_PATH", "WAN_I2V_MODEL_PATH", "ENHANCER_MODEL_PATH", "STATIC_ROOT", "LOGGING", "OURVIDZ_PROFILE",
             "STORAGE_BACKEND", "MINIO_ENDPOINT", "MINIO_REGION", "MINIO_ACCESS_KEY", "FLOWER_URL", "TORCH_DEVICE",
             "SDXL_COMPILE", "SDXL_COMPILE_MODE", "WAN_COMPILE_MODE", "ENHANCER_OFFLOAD")
    numbers = {"PROGRESS_INTERVAL": 0.5, "JOB_TIME_LIMIT_FACTOR": 10.0, "JOB_TIME_LIMIT_FLOOR": 300,
               "CELERY_WORKER_PROC_ALIVE_TIMEOUT": 1800.0, "SIGNED_URL_TTL": 3600, "REFERENCE_MAX_BYTES": 10485760,
               "REFERENCE_MAX_PIXELS": 16777216, "ENHANCER_MAX_NEW_TOKENS": 200, "WAN_MEMORY_RESERVE_GB": 20.0,
               "WAN_GUIDANCE_STOP": 1.0}
    for name, value in numbers.items():
        assert (s[name], type(s[name])) == (value, type(value)), name
    assert s["CELERY_BROKER_TRANSPORT_OPTIONS"] == {"visibility_timeout": 7200}
    assert s["DATABASES"]["default"]["CONN_MAX_AGE"] == 60
    assert s["DEBUG"] is False and s["MINIO_SECURE"] is False and s["OURVIDZ_SIGNUP"] is False
    assert s["ALLOWED_HOSTS"] == ["127.0.0.1", "localhost", "[::1]", "testserver"]
    assert s["CSRF_TRUSTED_ORIGINS"] == []
    models = ROOT / "var" / "models"
    assert s["DATA_DIR"] == str(ROOT / "var")
    assert s["MEDIA_ROOT"] == str(ROOT / "var" / "media")
    assert s["MODELS_DIR"] == str(models)
    assert s["SDXL_MODEL_PATH"] == s["SDXL_CONFIG_PATH"] == str(models / "sdxl-tiny")
    assert s["SDXL_TOKENIZER_PATH"] == str(models / "sdxl-tiny" / "tokenizer")
    assert s["SDXL_IP_ADAPTER_PATH"] == str(models / "sdxl-ip-adapter-tiny")
    assert s["WAN_MODEL_PATH"] == str(models / "wan-tiny")
    assert s["WAN_I2V_MODEL_PATH"] == str(models / "wan-i2v-tiny")
    assert s["ENHANCER_MODEL_PATH"] == str(models / "enhancer-tiny")
    assert s["STATIC_ROOT"] is None
    assert s["LOGGING"]["root"]["level"] == "INFO"
    assert {name: s[name] for name in ("OURVIDZ_PROFILE", "STORAGE_BACKEND", "MINIO_ENDPOINT", "MINIO_REGION",
                                       "MINIO_ACCESS_KEY", "FLOWER_URL", "TORCH_DEVICE", "SDXL_COMPILE",
                                       "SDXL_COMPILE_MODE", "WAN_COMPILE_MODE", "ENHANCER_OFFLOAD")} == {
        "OURVIDZ_PROFILE": "dev", "STORAGE_BACKEND": "local", "MINIO_ENDPOINT": "127.0.0.1:9000",
        "MINIO_REGION": "us-east-1", "MINIO_ACCESS_KEY": "", "FLOWER_URL": "http://127.0.0.1:5555/",
        "TORCH_DEVICE": "auto", "SDXL_COMPILE": "auto", "SDXL_COMPILE_MODE": "max-autotune",
        "WAN_COMPILE_MODE": "default", "ENHANCER_OFFLOAD": "auto"}


def test_set_values_are_read_with_their_types(tmp_path):
    s = read("ALLOWED_HOSTS", "CSRF_TRUSTED_ORIGINS", "MINIO_SECURE", "DEBUG", "WAN_GUIDANCE_STOP", "PROGRESS_INTERVAL",
             "WAN_MEMORY_RESERVE_GB", "JOB_TIME_LIMIT_FLOOR", "CELERY_BROKER_TRANSPORT_OPTIONS", "DATABASES",
             "MEDIA_ROOT", "SDXL_MODEL_PATH", "SDXL_CONFIG_PATH", "SDXL_TOKENIZER_PATH", "SDXL_IP_ADAPTER_PATH",
             "WAN_I2V_MODEL_PATH", "OURVIDZ_PROFILE", "MINIO_SECRET_KEY", "STATIC_ROOT",
             DJANGO_ALLOWED_HOSTS="a.example, b.example,", DJANGO_CSRF_TRUSTED_ORIGINS="https://vidz.example.com",
             MINIO_SECURE="true", DJANGO_DEBUG="On", WAN_GUIDANCE_STOP="0.8", PROGRESS_INTERVAL="0",
             WAN_MEMORY_RESERVE_GB="1e1", JOB_TIME_LIMIT_FLOOR="600", CELERY_VISIBILITY_TIMEOUT="9000",
             DB_CONN_MAX_AGE="0", MEDIA_ROOT=str(tmp_path / "media"), SDXL_MODEL_PATH="/models/sdxl.safetensors",
             WAN_MODEL_PATH="/models/wan", OURVIDZ_PROFILE="production", MINIO_SECRET_KEY="$ecret", STATIC_ROOT="")
    assert s["ALLOWED_HOSTS"] == ["a.example", "b.example"]
    assert s["CSRF_TRUSTED_ORIGINS"] == ["https://vidz.example.com"]
    assert s["MINIO_SECURE"] is True and s["DEBUG"] is True
    assert (s["WAN_GUIDANCE_STOP"], s["PROGRESS_INTERVAL"], s["WAN_MEMORY_RESERVE_GB"]) == (0.8, 0.0, 10.0)
    assert type(s["PROGRESS_INTERVAL"]) is float
    assert (s["JOB_TIME_LIMIT_FLOOR"], type(s["JOB_TIME_LIMIT_FLOOR"])) == (600, int)
    assert s["CELERY_BROKER_TRANSPORT_OPTIONS"] == {"visibility_timeout": 9000}
    assert s["DATABASES"]["default"]["CONN_MAX_AGE"] == 0
    assert s["MEDIA_ROOT"] == str(tmp_path / "media")
    # A single-file checkpoint has no config folder of its own; a set model path means no dev adapter / I2V model.
    assert (s["SDXL_MODEL_PATH"], s["SDXL_CONFIG_PATH"]) == ("/models/sdxl.safetensors", "")
    assert s["SDXL_TOKENIZER_PATH"] == "/models/sdxl.safetensors/tokenizer"
    assert s["SDXL_IP_ADAPTER_PATH"] == s["WAN_I2V_MODEL_PATH"] == ""
    assert s["OURVIDZ_PROFILE"] == "production"
    assert s["MINIO_SECRET_KEY"] == "$ecret"  # literal, not the value of a variable named "ecret"
    assert s["STATIC_ROOT"] == ""


@pytest.mark.parametrize(("word", "expected"), [
    ("1", True), ("true", True), ("TRUE", True), (" yes ", True), ("on", True),
    ("0", False), ("false", False), ("No", False), ("off", False), ("", False),
])
def test_boolean_words(word, expected):
    s = read("DEBUG", "MINIO_SECURE", "OURVIDZ_SIGNUP", DJANGO_DEBUG=word, MINIO_SECURE=word, OURVIDZ_SIGNUP=word)
    assert s == {"DEBUG": expected, "MINIO_SECURE": expected, "OURVIDZ_SIGNUP": expected}


@pytest.mark.parametrize(("name", "value", "expected"), [
    ("PROGRESS_INTERVAL", "abc", "is not a number"),
    ("WAN_GUIDANCE_STOP", "0.8x", "is not a number"),
    ("JOB_TIME_LIMIT_FLOOR", "5min", "is not an integer"),
    ("DB_CONN_MAX_AGE", "1.5", "is not an integer"),
    ("MINIO_SECURE", "maybe", "is not a boolean"),
    ("DJANGO_DEBUG", "2", "is not a boolean"),
])
def test_bad_value_fails_at_start_naming_the_variable(name, value, expected):
    result = start(**{name: value})
    assert result.returncode != 0
    assert f"ImproperlyConfigured: {name}={value!r} {expected}" in result.stderr, result.stderr


def test_database_url_is_parsed():
    default = read("DATABASES")["DATABASES"]["default"]
    assert {key: default[key] for key in ("ENGINE", "HOST", "PORT", "NAME", "USER", "PASSWORD", "CONN_MAX_AGE")} == {
        "ENGINE": "django.db.backends.postgresql", "HOST": "db.example", "PORT": 6543, "NAME": "ourvidz_dummy",
        "USER": "tester", "PASSWORD": "s@cret", "CONN_MAX_AGE": 60}
    # The embedded server's form (a socket folder in the query), and a socket folder as the host.
    socket = read("DATABASES", DATABASE_URL="postgresql://postgres:@/ourvidz?host=/tmp/pg")["DATABASES"]["default"]
    assert (socket["HOST"], socket["NAME"], socket["OPTIONS"]) == ("", "ourvidz", {"host": "/tmp/pg"})
    host = read("DATABASES", DATABASE_URL="postgres://u@%2Fvar%2Frun%2Fpostgresql/db")["DATABASES"]["default"]
    assert (host["HOST"], host["NAME"]) == ("/var/run/postgresql", "db")


@pytest.mark.parametrize("url", ["db.example:5432/ourvidz", "postgress://u:p@db.example/ourvidz",
                                 "mysql://u:p@db.example/ourvidz"])
def test_a_database_url_that_is_not_postgresql_fails_at_start_naming_it(url):
    result = start(DATABASE_URL=url)
    assert result.returncode != 0
    assert "ImproperlyConfigured: DATABASE_URL is not a PostgreSQL URL" in result.stderr, result.stderr


@pytest.mark.parametrize("missing", ["DATABASE_URL", "REDIS_URL"])
def test_database_and_redis_urls_are_required(missing):
    result = start(**{missing: None})
    assert result.returncode != 0
    assert "DATABASE_URL and REDIS_URL must be set" in result.stderr, result.stderr


def test_profile_is_checked():
    result = start(OURVIDZ_PROFILE="staging")
    assert result.returncode != 0
    assert "OURVIDZ_PROFILE must be 'dev' or 'production'." in result.stderr, result.stderr


def test_secret_key_is_kept_in_data_dir(tmp_path):
    unset = {"DJANGO_SECRET_KEY": None, "OURVIDZ_DATA_DIR": str(tmp_path)}
    first = read("SECRET_KEY", "DATA_DIR", **unset)
    assert first == {"SECRET_KEY": (tmp_path / "secret_key").read_text().strip(), "DATA_DIR": str(tmp_path.resolve())}
    assert len(first["SECRET_KEY"]) >= 50
    assert read("SECRET_KEY", **unset) == {"SECRET_KEY": first["SECRET_KEY"]}
    assert read("SECRET_KEY", **{**unset, "DJANGO_SECRET_KEY": "$given"}) == {"SECRET_KEY": "$given"}


HTTPS_SETTINGS = ("SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS",
                  "SECURE_HSTS_INCLUDE_SUBDOMAINS", "SECURE_HSTS_PRELOAD", "SECURE_PROXY_SSL_HEADER")


def test_secure_transport_is_on_when_the_site_is_served_over_https():
    on = read(*HTTPS_SETTINGS, DJANGO_CSRF_TRUSTED_ORIGINS="https://vidz.example.com",
              DJANGO_SECURE_PROXY_SSL_HEADER="X-Forwarded-Proto")
    assert on == {"SESSION_COOKIE_SECURE": True, "CSRF_COOKIE_SECURE": True, "SECURE_SSL_REDIRECT": True,
                  "SECURE_HSTS_SECONDS": 31536000, "SECURE_HSTS_INCLUDE_SUBDOMAINS": True, "SECURE_HSTS_PRELOAD": True,
                  "SECURE_PROXY_SSL_HEADER": ["HTTP_X_FORWARDED_PROTO", "https"]}
    # `make run` on http://127.0.0.1, a plain-http origin, or DEBUG: all off (a secure cookie would never come back).
    off = {"SESSION_COOKIE_SECURE": False, "CSRF_COOKIE_SECURE": False, "SECURE_SSL_REDIRECT": False,
           "SECURE_HSTS_SECONDS": 0, "SECURE_HSTS_INCLUDE_SUBDOMAINS": False, "SECURE_HSTS_PRELOAD": False,
           "SECURE_PROXY_SSL_HEADER": None}
    assert read(*HTTPS_SETTINGS) == off
    assert read(*HTTPS_SETTINGS, DJANGO_CSRF_TRUSTED_ORIGINS="http://10.0.0.5:8000") == off
    assert read(*HTTPS_SETTINGS, DJANGO_CSRF_TRUSTED_ORIGINS="https://vidz.example.com", DJANGO_DEBUG="1") == off
    # Each can be set on its own, e.g. HSTS for a shorter time while trying https out.
    assert read("SECURE_HSTS_SECONDS", DJANGO_CSRF_TRUSTED_ORIGINS="https://vidz.example.com",
                DJANGO_HSTS_SECONDS="300") == {"SECURE_HSTS_SECONDS": 300}


WEBHOOK_SETTINGS = ("WEBHOOK_ALLOWED_HOSTS", "WEBHOOK_CONNECT_TIMEOUT", "WEBHOOK_READ_TIMEOUT", "WEBHOOK_RETRY_DELAY",
                    "WEBHOOK_RETRY_FOR", "OURVIDZ_PUBLIC_URL")


def test_webhook_settings_default_to_those_in_readme_and_are_read():
    assert read(*WEBHOOK_SETTINGS) == {
        "WEBHOOK_ALLOWED_HOSTS": [], "WEBHOOK_CONNECT_TIMEOUT": 5.0, "WEBHOOK_READ_TIMEOUT": 10.0,
        "WEBHOOK_RETRY_DELAY": 10.0, "WEBHOOK_RETRY_FOR": 86400, "OURVIDZ_PUBLIC_URL": "http://127.0.0.1:8000"}
    assert read("WEBHOOK_ALLOWED_HOSTS", "OURVIDZ_PUBLIC_URL", WEBHOOK_ALLOWED_HOSTS="hooks.lan, 10.0.0.5",
                DJANGO_CSRF_TRUSTED_ORIGINS="https://vidz.example.com") == {
        "WEBHOOK_ALLOWED_HOSTS": ["hooks.lan", "10.0.0.5"], "OURVIDZ_PUBLIC_URL": "https://vidz.example.com"}


def production_environment(tmp_path, sdxl_tokenizer):
    """deploy/ourvidz.env.example as an operator fills it in: secrets instead of CHANGE-ME, and (on this test
    machine) the tokenizer of the tiny SDXL model where the real model would be."""
    env = {}
    for line in (ROOT / "deploy" / "ourvidz.env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition("=")
            env[name] = value.replace("CHANGE-ME", secrets.token_urlsafe(16))
    env["DJANGO_SECRET_KEY"] = secrets.token_urlsafe(50)
    return {**env, "OURVIDZ_DATA_DIR": str(tmp_path), "SDXL_TOKENIZER_PATH": str(sdxl_tokenizer)}


def test_check_deploy_is_clean_for_the_documented_production_environment(tmp_path, sdxl_tokenizer):
    env = {"PATH": os.environ.get("PATH", ""), **production_environment(tmp_path, sdxl_tokenizer)}
    result = subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout


def test_check_deploy_refuses_a_generated_secret_key(tmp_path, sdxl_tokenizer):
    """Another web host, or a worker signing file URLs, would generate a key of its own."""
    env = {"PATH": os.environ.get("PATH", ""), **production_environment(tmp_path, sdxl_tokenizer)}
    del env["DJANGO_SECRET_KEY"]
    result = subprocess.run([sys.executable, "manage.py", "check", "--deploy"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "(ourvidz.E003) DJANGO_SECRET_KEY is not set: this host generated a key of its own" in result.stderr
    assert "Set the same DJANGO_SECRET_KEY on every host." in result.stderr


def test_minio_public_endpoint_has_its_own_https_setting():
    minio = {"STORAGE_BACKEND": "minio", "MINIO_ENDPOINT": "minio.internal:9000"}
    assert read("MINIO_PUBLIC_SECURE", MINIO_SECURE="1") == {"MINIO_PUBLIC_SECURE": True}  # as MINIO_SECURE by default
    s = read("MINIO_SECURE", "MINIO_PUBLIC_SECURE", "CONTENT_SECURITY_POLICY", **minio,
             MINIO_PUBLIC_ENDPOINT="media.example.com", MINIO_PUBLIC_SECURE="1")
    assert (s["MINIO_SECURE"], s["MINIO_PUBLIC_SECURE"]) == (False, True)
    assert "https://media.example.com" in s["CONTENT_SECURITY_POLICY"]["DIRECTIVES"]["img-src"]
    internal = read("CONTENT_SECURITY_POLICY", **minio, MINIO_PUBLIC_SECURE="1")  # no public endpoint: the internal one
    assert "http://minio.internal:9000" in internal["CONTENT_SECURITY_POLICY"]["DIRECTIVES"]["media-src"]
