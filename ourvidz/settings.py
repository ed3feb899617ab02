"""Django settings for OurVidz. Every setting comes from an environment variable (see README)."""

import secrets
from datetime import timedelta
from pathlib import Path
from urllib.parse import unquote

import environ
from django.core.exceptions import ImproperlyConfigured

from ourvidz.credentials import keep_secret

BASE_DIR = Path(__file__).resolve().parent.parent


class Env(environ.Env):
    """django-environ's Env, changed so that every variable reads as it did before django-environ, or fails naming it.

    - A value that does not cast raises ImproperlyConfigured naming the variable, the value and what was expected:
      django-environ lets int()'s and float()'s bare ValueError through, which names neither.
    - Values are literal: django-environ reads `$NAME` as "the value of NAME", which would silently swap a secret
      that starts with `$` (Django's generated keys can) for another variable's value.
    - Floats and booleans are strict and list items are stripped: django-environ's float drops everything but
      digits, ',', '.' and '-' ('1e3' reads 13.0, 'x1' reads 1.0) and its bool reads any unknown word as False.
    - path() gives a pathlib.Path: environ.Path has no `/` and makes a relative path absolute.
    """

    EXPECTED = {int: "an integer", float: "a number", bool: "a boolean (1/0, true/false, yes/no, on/off)"}
    BOOLEANS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False,
                "off": False, "": False}

    def get_value(self, var, cast=None, default=environ.Env.NOTSET, parse_default=False):
        if var not in self.ENVIRON:
            if default is self.NOTSET:
                raise ImproperlyConfigured(f"Set the {var} environment variable")
            return default
        value = self.ENVIRON[var]
        try:
            return self.parse_value(value, cast)
        except ValueError:
            raise ImproperlyConfigured(f"{var}={value!r} is not {self.EXPECTED.get(cast, 'valid')}") from None

    @classmethod
    def parse_value(cls, value, cast):
        if cast is float:
            return float(value)
        if cast is bool:
            word = value.strip().lower()
            if word not in cls.BOOLEANS:
                raise ValueError(value)
            return cls.BOOLEANS[word]
        if cast is list:
            return [item.strip() for item in value.split(",") if item.strip()]
        return super().parse_value(value, cast)

    def path(self, var, default=environ.Env.NOTSET):
        return Path(self.str(var, default))


env = Env()

# Everything the stack writes on disk: local media, development models, the embedded database.
DATA_DIR = env.path("OURVIDZ_DATA_DIR", BASE_DIR / "var").resolve()


def _secret_key():
    """DJANGO_SECRET_KEY, else a random key kept in DATA_DIR (mode 0600) so that all processes share it."""
    if key := env.str("DJANGO_SECRET_KEY", ""):
        return key
    return keep_secret(DATA_DIR / "secret_key", lambda: secrets.token_urlsafe(50))


SECRET_KEY = _secret_key()
# Every host of an installation needs the same key: `check --deploy` refuses a generated one (generation.checks).
SECRET_KEY_GENERATED = not env.str("DJANGO_SECRET_KEY", "")
DEBUG = env.bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

# Secure transport: on by default when the site is served over https (DEBUG off and every trusted origin
# https://), as deploy/ourvidz.env.example sets it up; `manage.py check --deploy` is then clean.
HTTPS = env.bool("DJANGO_HTTPS", not DEBUG and bool(CSRF_TRUSTED_ORIGINS)
                 and all(origin.startswith("https://") for origin in CSRF_TRUSTED_ORIGINS))
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = HTTPS
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", HTTPS)
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]  # load balancers probe over plain http
SECURE_HSTS_SECONDS = env.int("DJANGO_HSTS_SECONDS", 365 * 24 * 3600 if HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("DJANGO_HSTS_INCLUDE_SUBDOMAINS", HTTPS)
SECURE_HSTS_PRELOAD = env.bool("DJANGO_HSTS_PRELOAD", HTTPS)  # the directive only; joining the list is a choice
# Behind a proxy that terminates TLS: the header it sets to "https" (e.g. X-Forwarded-Proto), which it must also
# strip from what clients send (deploy/nginx.conf does).
_ssl_header = env.str("DJANGO_SECURE_PROXY_SSL_HEADER", "")
SECURE_PROXY_SSL_HEADER = ("HTTP_" + _ssl_header.upper().replace("-", "_"), "https") if _ssl_header else None

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "axes",
    "ourvidz",
    "generation",
]

MIDDLEWARE = [
    "ourvidz.middleware.RequestSizeLimitMiddleware",  # first: nothing may read an oversized body
    "django.middleware.security.SecurityMiddleware",
    "ourvidz.middleware.ContentSecurityPolicyMiddleware",  # django-csp's, a fixed policy for JSON
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "ourvidz.middleware.DatabaseUnavailableMiddleware",
    "axes.middleware.AxesMiddleware",  # last: it answers for a login refused by a lockout
]

# django-axes: wrong passwords for one account, or from one address, slow its logins down (the pages, the admin
# and the API's token endpoint), then lock them for a while; staff unlock in the admin (Axes → Access attempts)
# or with `manage.py axes_reset_username NAME`.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_HANDLER = "ourvidz.lockout.SlowingHandler"
AXES_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("LOGIN_LOCKOUT_MINUTES", 15))
LOGIN_SLOWDOWN_SECONDS = env.float("LOGIN_SLOWDOWN_SECONDS", 1.0)  # after failure k, 2^(k-1) times this
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True
# A try refused by the slow-down or the lockout is not one more failure: it does not lengthen either.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_LOCKOUT_CALLABLE = "ourvidz.lockout.locked_out"

ROOT_URLCONF = "ourvidz.urls"
WSGI_APPLICATION = "ourvidz.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# `python -m ourvidz.services` sets both URLs to embedded servers when they are not given.
DATABASE_URL = env.str("DATABASE_URL", "")
REDIS_URL = env.str("REDIS_URL", "")
if not DATABASE_URL or not REDIS_URL:
    raise ImproperlyConfigured(
        "DATABASE_URL and REDIS_URL must be set. Run through `make run` / `make test`, or prefix the "
        "command with `.venv/bin/python -m ourvidz.services --` to get embedded PostgreSQL and Redis."
    )
# CONN_HEALTH_CHECKS: a pooled connection broken by a database restart is replaced before use, so
# requests succeed again as soon as the database is back.
DATABASES = {"default": {**env.db_url("DATABASE_URL"), "CONN_MAX_AGE": env.int("DB_CONN_MAX_AGE", 60),
                         "CONN_HEALTH_CHECKS": True}}
if DATABASES["default"].get("ENGINE") != "django.db.backends.postgresql":
    # django-environ reads an unknown scheme as an unknown engine, or as no database at all, without
    # failing; the URL itself is not repeated here since it holds the password.
    raise ImproperlyConfigured("DATABASE_URL is not a PostgreSQL URL: postgres://user:password@host:5432/name "
                               "(or postgresql://...).")
# A socket folder given as the URL's host (`postgres://user@%2Fvar%2Frun%2Fpostgresql/db`), as dj-database-url read it.
DATABASES["default"]["HOST"] = unquote(DATABASES["default"].get("HOST", ""))
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# Served by WhiteNoise straight from the apps, so no collectstatic step is needed; set STATIC_ROOT
# only to collect them for another web server.
STATIC_ROOT = env.str("STATIC_ROOT", None)
WHITENOISE_USE_FINDERS = True
WHITENOISE_ROOT = BASE_DIR / "generation" / "web" / "root"  # served at the site's root: /favicon.ico
WHITENOISE_AUTOREFRESH = DEBUG

LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"
# Whether visitors may create their own account at /accounts/signup/ (otherwise admins add users).
OURVIDZ_SIGNUP = env.bool("OURVIDZ_SIGNUP", False)
# Where the dashboard links operators to Flower.
FLOWER_URL = env.str("FLOWER_URL", "http://127.0.0.1:5555/")
# The bearer token Prometheus sends to /metrics (generation.web.metrics); empty: staff sessions only.
METRICS_TOKEN = env.str("METRICS_TOKEN", "")
# OpenTelemetry tracing (ourvidz.tracing, the `tracing` extra), exported over OTLP/HTTP to the standard
# OTEL_EXPORTER_OTLP_ENDPOINT; off, nothing of OpenTelemetry is imported.
OTEL_ENABLED = env.bool("OTEL_ENABLED", False)

CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    # Counts every web process shares (generation.api.throttles); short timeouts: Redis being down must not
    # hold a request.
    "throttles": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL,
                  "KEY_PREFIX": "ourvidz", "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1}},
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.TokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer",
                                 "generation.api.renderers.BrowsableAPIRenderer"],
    "DEFAULT_PAGINATION_CLASS": "generation.api.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "generation.api.schema.AutoSchema",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "EXCEPTION_HANDLER": "generation.api.exceptions.handle",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "OurVidz API",
    "DESCRIPTION": "Submit image and video generation jobs and fetch their results.",
    "VERSION": "1.0.0",
    # Requests get components of their own: an upload's `file` is binary there, a URL nowhere.
    "COMPONENT_SPLIT_REQUEST": True,
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", "INFO")},
}

# --- Generation -----------------------------------------------------------------------------------

# "dev" scales sizes, steps and frames of the job-type table down for the tiny development models.
OURVIDZ_PROFILE = env.str("OURVIDZ_PROFILE", "dev")
if OURVIDZ_PROFILE not in ("dev", "production"):
    raise ImproperlyConfigured("OURVIDZ_PROFILE must be 'dev' or 'production'.")

MODELS_DIR = env.path("OURVIDZ_MODELS_DIR", DATA_DIR / "models")
# Unset model paths mean the tiny development models that `manage.py setup` builds here.
# SDXL: a diffusers folder, or a single .safetensors checkpoint plus a local diffusers-format
# folder for its configs and tokenizers (SDXL_CONFIG_PATH; the model is never looked up online).
SDXL_MODEL_PATH = env.str("SDXL_MODEL_PATH", str(MODELS_DIR / "sdxl-tiny"))
SDXL_CONFIG_PATH = env.str("SDXL_CONFIG_PATH", "" if SDXL_MODEL_PATH.endswith(".safetensors") else SDXL_MODEL_PATH)
SDXL_TOKENIZER_PATH = env.str("SDXL_TOKENIZER_PATH", str(Path(SDXL_CONFIG_PATH or SDXL_MODEL_PATH) / "tokenizer"))
# IP-Adapter for `style` / `character` references: a folder with the weights file and the image
# encoder. Without it those two reference types are refused at submission.
SDXL_IP_ADAPTER_PATH = env.str("SDXL_IP_ADAPTER_PATH",
                               "" if env.str("SDXL_MODEL_PATH", "") else str(MODELS_DIR / "sdxl-ip-adapter-tiny"))
SDXL_IP_ADAPTER_WEIGHT = env.str("SDXL_IP_ADAPTER_WEIGHT", "ip-adapter_sdxl.safetensors")
SDXL_IP_ADAPTER_IMAGE_ENCODER = env.str("SDXL_IP_ADAPTER_IMAGE_ENCODER", "image_encoder")
# torch.compile of the SDXL UNet at worker start: "auto" compiles on CUDA only.
SDXL_COMPILE = env.str("SDXL_COMPILE", "auto")
SDXL_COMPILE_MODE = env.str("SDXL_COMPILE_MODE", "max-autotune")
WAN_MODEL_PATH = env.str("WAN_MODEL_PATH", str(MODELS_DIR / "wan-tiny"))
# WAN 2.1 image-to-video, for video jobs with a reference image: a WanImageToVideoPipeline folder
# (e.g. Wan2.1-I2V-14B-480P-Diffusers) whose text encoder and VAE are the text-to-video model's; the
# worker loads only its transformer and image encoder. Empty: WAN types refuse reference images.
WAN_I2V_MODEL_PATH = env.str("WAN_I2V_MODEL_PATH",
                             "" if env.str("WAN_MODEL_PATH", "") else str(MODELS_DIR / "wan-i2v-tiny"))
# torch.compile of the WAN transformer at worker start: "auto" compiles on CUDA only.
WAN_COMPILE = env.str("WAN_COMPILE", "auto")
WAN_COMPILE_MODE = env.str("WAN_COMPILE_MODE", "default")
# Classifier-free guidance runs for this fraction of the steps; later steps run the conditional pass
# only (about half their cost). 1.0 keeps guidance on every step.
WAN_GUIDANCE_STOP = env.float("WAN_GUIDANCE_STOP", 1.0)
ENHANCER_MODEL_PATH = env.str("ENHANCER_MODEL_PATH", str(MODELS_DIR / "enhancer-tiny"))
ENHANCER_MAX_NEW_TOKENS = env.int("ENHANCER_MAX_NEW_TOKENS", 200)
# The enhancer shares the WAN worker's GPU: "auto" keeps it resident when WAN, the enhancer and
# WAN_MEMORY_RESERVE_GB of working memory fit on the card, and moves it to the CPU between uses
# otherwise; "always" / "never" force either.
ENHANCER_OFFLOAD = env.str("ENHANCER_OFFLOAD", "auto")
WAN_MEMORY_RESERVE_GB = env.float("WAN_MEMORY_RESERVE_GB", 20.0)
# "auto" picks CUDA when the worker sees a GPU; CUDA_VISIBLE_DEVICES pins each worker to one.
TORCH_DEVICE = env.str("TORCH_DEVICE", "auto")
# Torch threads per worker; 0: the host's cores divided among the workers running on it (generation.worker.node).
WORKER_THREADS = env.int("WORKER_THREADS", 0)

# Worker progress writes to the database at most this often (seconds).
PROGRESS_INTERVAL = env.float("PROGRESS_INTERVAL", 0.5)
# Pictures of a job while it renders, sent to its owner's open pages (never stored): "latent" (a linear map
# of the latents, or TAESD for SDXL when SDXL_PREVIEW_DECODER_PATH names a diffusers AutoencoderTiny folder)
# or "off"; at most one per PREVIEW_INTERVAL seconds per job, PREVIEW_SIZE pixels on the long side.
PREVIEWS = env.str("PREVIEWS", "latent")
PREVIEW_INTERVAL = env.float("PREVIEW_INTERVAL", 1.0)
PREVIEW_SIZE = env.int("PREVIEW_SIZE", 256)
SDXL_PREVIEW_DECODER_PATH = env.str("SDXL_PREVIEW_DECODER_PATH", "")
# A job's time limit is this multiple of its expected seconds, and never below the floor.
JOB_TIME_LIMIT_FACTOR = env.float("JOB_TIME_LIMIT_FACTOR", 10.0)
JOB_TIME_LIMIT_FLOOR = env.int("JOB_TIME_LIMIT_FLOOR", 300)

# The scheduler (generation.scheduler): each pool's broker queue holds at most (1 + this) unstarted
# jobs per online worker; the rest wait in the database and are released in fair order.
SCHEDULER_BUFFER_PER_WORKER = env.int("SCHEDULER_BUFFER_PER_WORKER", 1)
# A user who has waited this long unserved competes one tier higher (no tier starves).
SCHEDULER_AGEING_SECONDS = env.int("SCHEDULER_AGEING_SECONDS", 600)
if SCHEDULER_AGEING_SECONDS < 1:
    raise ImproperlyConfigured(f"SCHEDULER_AGEING_SECONDS={SCHEDULER_AGEING_SECONDS} must be at least 1.")
# Beat's safety-net tick: release what the last events did not, recover lost messages.
SCHEDULER_INTERVAL = env.float("SCHEDULER_INTERVAL", 5.0)
# A released job whose message the broker no longer holds after this long is released again.
SCHEDULER_LOST_AFTER = env.int("SCHEDULER_LOST_AFTER", 30)
# A worker whose heartbeat (renewed every 2 s) is this old is gone: its running job goes back to the
# scheduler at the next tick.
WORKER_LOST_AFTER = env.int("WORKER_LOST_AFTER", 20)
# A job whose worker died while running it this many times fails instead of killing another one.
JOB_MAX_ATTEMPTS = env.int("JOB_MAX_ATTEMPTS", 3)
# How long a worker waits for an unreachable database before putting the task back on its queue.
DATABASE_WAIT_SECONDS = env.int("DATABASE_WAIT_SECONDS", 60)

# Live job streams (the Workspace's server-sent events) per user, and per web process; past either, the page
# polls. Each stream holds a server thread: the default leaves two of WEB_THREADS free for the API.
EVENT_STREAMS_PER_USER = env.int("EVENT_STREAMS_PER_USER", 4)
EVENT_STREAMS_PER_PROCESS = env.int("EVENT_STREAMS_PER_PROCESS", max(1, env.int("WEB_THREADS", 8) - 2))

# --- Webhooks (generation.webhooks) -----------------------------------------------------------------

# Hosts webhooks may reach over plain http and at internal addresses (loopback, private ...): none by default.
WEBHOOK_ALLOWED_HOSTS = env.list("WEBHOOK_ALLOWED_HOSTS", default=[])
WEBHOOK_CONNECT_TIMEOUT = env.float("WEBHOOK_CONNECT_TIMEOUT", 5.0)
WEBHOOK_READ_TIMEOUT = env.float("WEBHOOK_READ_TIMEOUT", 10.0)
# Seconds before the first retry, doubled for each next one (at most an hour), with jitter; retried this long.
WEBHOOK_RETRY_DELAY = env.float("WEBHOOK_RETRY_DELAY", 10.0)
WEBHOOK_RETRY_FOR = env.int("WEBHOOK_RETRY_FOR", 24 * 3600)
# The site's address as receivers reach it: file URLs in webhook bodies are made absolute with it.
OURVIDZ_PUBLIC_URL = env.str("OURVIDZ_PUBLIC_URL", CSRF_TRUSTED_ORIGINS[0] if CSRF_TRUSTED_ORIGINS
                             else "http://127.0.0.1:8000")

# --- Credits and quotas (generation.credits, generation.quotas) ------------------------------------

# Submissions cost their job type's credits; 0 turns charging off (the ledger still records usage).
OURVIDZ_CREDITS = env.bool("OURVIDZ_CREDITS", True)
# Credits every new user starts with, however created.
OURVIDZ_SIGNUP_CREDITS = env.int("OURVIDZ_SIGNUP_CREDITS", 1000)
# Per tier: "standard,priority" (one number: both; 0: no limit). Jobs waiting or running at once per user.
QUOTA_ACTIVE_JOBS = env.list("QUOTA_ACTIVE_JOBS", cast=int, default=[50, 200])
# Submissions (new jobs and retries) per user per minute.
QUOTA_SUBMISSIONS_PER_MINUTE = env.list("QUOTA_SUBMISSIONS_PER_MINUTE", cast=int, default=[60, 240])
# Reference uploads per user per day, and the bytes of references a user may keep.
QUOTA_REFERENCES_PER_DAY = env.list("QUOTA_REFERENCES_PER_DAY", cast=int, default=[100, 500])
QUOTA_REFERENCE_BYTES = env.list("QUOTA_REFERENCE_BYTES", cast=int, default=[1024**3, 10 * 1024**3])
# Days images and videos are kept before the daily housekeeping deletes them, per tier (0: forever); what a
# user marks "keep" stays (generation.retention).
RETENTION_DAYS = env.list("RETENTION_DAYS", cast=int, default=[0])

REFERENCE_MAX_BYTES = env.int("REFERENCE_MAX_BYTES", 10 * 1024 * 1024)
# A larger request body is refused (413) before it is read: a reference image and its form fields fit.
REQUEST_MAX_BYTES = REFERENCE_MAX_BYTES + 1024 * 1024
REFERENCE_MAX_PIXELS = env.int("REFERENCE_MAX_PIXELS", 4096 * 4096)

# --- Storage --------------------------------------------------------------------------------------

STORAGE_BACKEND = env.str("STORAGE_BACKEND", "local")  # "local" or "minio"
MEDIA_ROOT = env.path("MEDIA_ROOT", DATA_DIR / "media")
SIGNED_URL_TTL = env.int("SIGNED_URL_TTL", 3600)
MINIO_ENDPOINT = env.str("MINIO_ENDPOINT", "127.0.0.1:9000")
MINIO_ACCESS_KEY = env.str("MINIO_ACCESS_KEY", "")
MINIO_SECRET_KEY = env.str("MINIO_SECRET_KEY", "")
MINIO_SECURE = env.bool("MINIO_SECURE", False)
MINIO_REGION = env.str("MINIO_REGION", "us-east-1")
MINIO_BUCKET_PREFIX = env.str("MINIO_BUCKET_PREFIX", "")
# Host:port browsers use for presigned URLs, when it differs from MINIO_ENDPOINT, and whether over https (a TLS
# proxy in front of a plain-http MinIO, say).
MINIO_PUBLIC_ENDPOINT = env.str("MINIO_PUBLIC_ENDPOINT", "")
MINIO_PUBLIC_SECURE = env.bool("MINIO_PUBLIC_SECURE", MINIO_SECURE)

# Content-Security-Policy (django-csp): the pages run only their own scripts and styles (page data travels in
# json_script blocks, never inline code); images and videos come from this site or, with MinIO, its public
# endpoint.
_media_origins = ([f"{'https' if MINIO_PUBLIC_SECURE else 'http'}://{MINIO_PUBLIC_ENDPOINT}" if MINIO_PUBLIC_ENDPOINT
                   else f"{'https' if MINIO_SECURE else 'http'}://{MINIO_ENDPOINT}"]
                  if STORAGE_BACKEND == "minio" else [])
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:", *_media_origins],
        "media-src": ["'self'", *_media_origins],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
}

# --- Celery ---------------------------------------------------------------------------------------

CELERY_BROKER_URL = REDIS_URL
CELERY_TASK_IGNORE_RESULT = True  # results go to the database through signals
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Pool children load (and on a GPU compile and warm up) their pipeline at start; Celery's 4 s default would
# kill a child loading real SDXL or WAN weights, over and over.
CELERY_WORKER_PROC_ALIVE_TIMEOUT = env.float("CELERY_WORKER_PROC_ALIVE_TIMEOUT", 1800.0)
CELERY_WORKER_SEND_TASK_EVENTS = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Must exceed the longest job's time limit, or Redis hands a running job to a second worker
# (checked by generation.checks).
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", 7200)}
# Housekeeping runs on its own small queue and worker (the Procfile's `housekeeping`), so that a tick
# never waits behind a GPU job; a tick nobody took in time is dropped (expires), the next one comes.
MAINTENANCE_QUEUE = "maintenance"
CELERY_BEAT_SCHEDULE = {
    "schedule": {
        "task": "generation.schedule",
        "schedule": SCHEDULER_INTERVAL,
        "options": {"queue": MAINTENANCE_QUEUE, "expires": SCHEDULER_INTERVAL},
    },
    "fail-stalled-jobs": {
        "task": "generation.fail_stalled_jobs",
        "schedule": 60.0,
        "options": {"queue": MAINTENANCE_QUEUE, "expires": 60.0},
    },
    "resend-lost-webhooks": {
        "task": "generation.resend_lost_webhooks",
        "schedule": SCHEDULER_INTERVAL,
        "options": {"queue": MAINTENANCE_QUEUE, "expires": SCHEDULER_INTERVAL},
    },
    "expire-outputs": {
        "task": "generation.expire_outputs",
        "schedule": 24 * 3600.0,
        "options": {"queue": MAINTENANCE_QUEUE, "expires": 3600.0},
    },
}
