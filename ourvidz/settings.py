"""Django settings for OurVidz. Every setting comes from an environment variable (see README)."""

import os
import secrets
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env(name, default=None):
    return os.environ.get(name, default)


def env_bool(name, default=False):
    return env(name, "1" if default else "0").strip().lower() in ("1", "true", "yes", "on")


def env_list(name, default=""):
    return [item.strip() for item in env(name, default).split(",") if item.strip()]


# Everything the stack writes on disk: local media, development models, the embedded database.
DATA_DIR = Path(env("OURVIDZ_DATA_DIR", BASE_DIR / "var")).resolve()


def _secret_key():
    """DJANGO_SECRET_KEY, else a random key kept in DATA_DIR so that all processes share it."""
    if env("DJANGO_SECRET_KEY"):
        return env("DJANGO_SECRET_KEY")
    path = DATA_DIR / "secret_key"
    if not path.exists():
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}")
        tmp.write_text(secrets.token_urlsafe(50))
        # Two processes may race here; whichever rename lands last wins and both then read it.
        os.replace(tmp, path)
    return path.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = env_bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,[::1],testserver")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", "")

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
    "ourvidz",
    "generation",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

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
DATABASE_URL = env("DATABASE_URL")
REDIS_URL = env("REDIS_URL")
if not DATABASE_URL or not REDIS_URL:
    raise ImproperlyConfigured(
        "DATABASE_URL and REDIS_URL must be set. Run through `make run` / `make test`, or prefix the "
        "command with `.venv/bin/python -m ourvidz.services --` to get embedded PostgreSQL and Redis."
    )
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=int(env("DB_CONN_MAX_AGE", "60")))}
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
STATIC_ROOT = env("STATIC_ROOT")
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"
# Whether visitors may create their own account at /accounts/signup/ (otherwise admins add users).
OURVIDZ_SIGNUP = env_bool("OURVIDZ_SIGNUP", False)
# Where the dashboard links operators to Flower.
FLOWER_URL = env("FLOWER_URL", "http://127.0.0.1:5555/")

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.TokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "EXCEPTION_HANDLER": "generation.api.exceptions.handle",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "OurVidz API",
    "DESCRIPTION": "Submit image and video generation jobs and fetch their results.",
    "VERSION": "1.0.0",
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", "INFO")},
}

# --- Generation -----------------------------------------------------------------------------------

# "dev" scales sizes, steps and frames of the job-type table down for the tiny development models.
OURVIDZ_PROFILE = env("OURVIDZ_PROFILE", "dev")
if OURVIDZ_PROFILE not in ("dev", "production"):
    raise ImproperlyConfigured("OURVIDZ_PROFILE must be 'dev' or 'production'.")

MODELS_DIR = Path(env("OURVIDZ_MODELS_DIR", DATA_DIR / "models"))
# Unset model paths mean the tiny development models that `manage.py setup` builds here.
# SDXL: a diffusers folder, or a single .safetensors checkpoint plus a local diffusers-format
# folder for its configs and tokenizers (SDXL_CONFIG_PATH; the model is never looked up online).
SDXL_MODEL_PATH = env("SDXL_MODEL_PATH", str(MODELS_DIR / "sdxl-tiny"))
SDXL_CONFIG_PATH = env("SDXL_CONFIG_PATH", "" if SDXL_MODEL_PATH.endswith(".safetensors") else SDXL_MODEL_PATH)
SDXL_TOKENIZER_PATH = env("SDXL_TOKENIZER_PATH", str(Path(SDXL_CONFIG_PATH or SDXL_MODEL_PATH) / "tokenizer"))
# IP-Adapter for `style` / `character` references: a folder with the weights file and the image
# encoder. Without it those two reference types are refused at submission.
SDXL_IP_ADAPTER_PATH = env("SDXL_IP_ADAPTER_PATH",
                           "" if env("SDXL_MODEL_PATH") else str(MODELS_DIR / "sdxl-ip-adapter-tiny"))
SDXL_IP_ADAPTER_WEIGHT = env("SDXL_IP_ADAPTER_WEIGHT", "ip-adapter_sdxl.safetensors")
SDXL_IP_ADAPTER_IMAGE_ENCODER = env("SDXL_IP_ADAPTER_IMAGE_ENCODER", "image_encoder")
# torch.compile of the SDXL UNet at worker start: "auto" compiles on CUDA only.
SDXL_COMPILE = env("SDXL_COMPILE", "auto")
SDXL_COMPILE_MODE = env("SDXL_COMPILE_MODE", "max-autotune")
WAN_MODEL_PATH = env("WAN_MODEL_PATH", str(MODELS_DIR / "wan-tiny"))
# WAN 2.1 image-to-video, for video jobs with a reference image: a WanImageToVideoPipeline folder
# (e.g. Wan2.1-I2V-14B-480P-Diffusers) whose text encoder and VAE are the text-to-video model's; the
# worker loads only its transformer and image encoder. Empty: WAN types refuse reference images.
WAN_I2V_MODEL_PATH = env("WAN_I2V_MODEL_PATH", "" if env("WAN_MODEL_PATH") else str(MODELS_DIR / "wan-i2v-tiny"))
# torch.compile of the WAN transformer at worker start: "auto" compiles on CUDA only.
WAN_COMPILE = env("WAN_COMPILE", "auto")
WAN_COMPILE_MODE = env("WAN_COMPILE_MODE", "default")
# Classifier-free guidance runs for this fraction of the steps; later steps run the conditional pass
# only (about half their cost). 1.0 keeps guidance on every step.
WAN_GUIDANCE_STOP = float(env("WAN_GUIDANCE_STOP", "1.0"))
ENHANCER_MODEL_PATH = env("ENHANCER_MODEL_PATH", str(MODELS_DIR / "enhancer-tiny"))
ENHANCER_MAX_NEW_TOKENS = int(env("ENHANCER_MAX_NEW_TOKENS", "200"))
# The enhancer shares the WAN worker's GPU: "auto" keeps it resident when WAN, the enhancer and
# WAN_MEMORY_RESERVE_GB of working memory fit on the card, and moves it to the CPU between uses
# otherwise; "always" / "never" force either.
ENHANCER_OFFLOAD = env("ENHANCER_OFFLOAD", "auto")
WAN_MEMORY_RESERVE_GB = float(env("WAN_MEMORY_RESERVE_GB", "20"))
# "auto" picks CUDA when the worker sees a GPU; CUDA_VISIBLE_DEVICES pins each worker to one.
TORCH_DEVICE = env("TORCH_DEVICE", "auto")

# Worker progress writes to the database at most this often (seconds).
PROGRESS_INTERVAL = float(env("PROGRESS_INTERVAL", "0.5"))
# A job's time limit is this multiple of its expected seconds, and never below the floor.
JOB_TIME_LIMIT_FACTOR = float(env("JOB_TIME_LIMIT_FACTOR", "10"))
JOB_TIME_LIMIT_FLOOR = int(env("JOB_TIME_LIMIT_FLOOR", "300"))

REFERENCE_MAX_BYTES = int(env("REFERENCE_MAX_BYTES", str(10 * 1024 * 1024)))
REFERENCE_MAX_PIXELS = int(env("REFERENCE_MAX_PIXELS", str(4096 * 4096)))

# --- Storage --------------------------------------------------------------------------------------

STORAGE_BACKEND = env("STORAGE_BACKEND", "local")  # "local" or "minio"
MEDIA_ROOT = Path(env("MEDIA_ROOT", DATA_DIR / "media"))
SIGNED_URL_TTL = int(env("SIGNED_URL_TTL", "3600"))
MINIO_ENDPOINT = env("MINIO_ENDPOINT", "127.0.0.1:9000")
MINIO_ACCESS_KEY = env("MINIO_ACCESS_KEY", "")
MINIO_SECRET_KEY = env("MINIO_SECRET_KEY", "")
MINIO_SECURE = env_bool("MINIO_SECURE", False)
MINIO_REGION = env("MINIO_REGION", "us-east-1")
MINIO_BUCKET_PREFIX = env("MINIO_BUCKET_PREFIX", "")
# Host:port browsers use for presigned URLs, when it differs from MINIO_ENDPOINT.
MINIO_PUBLIC_ENDPOINT = env("MINIO_PUBLIC_ENDPOINT", "")

# --- Celery ---------------------------------------------------------------------------------------

CELERY_BROKER_URL = REDIS_URL
CELERY_TASK_IGNORE_RESULT = True  # results go to the database through signals
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Pool children load (and on a GPU compile and warm up) their pipeline at start; Celery's 4 s default would
# kill a child loading real SDXL or WAN weights, over and over.
CELERY_WORKER_PROC_ALIVE_TIMEOUT = float(env("CELERY_WORKER_PROC_ALIVE_TIMEOUT", "1800"))
CELERY_WORKER_SEND_TASK_EVENTS = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Must exceed the longest job's time limit, or Redis hands a running job to a second worker
# (checked by generation.checks).
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": int(env("CELERY_VISIBILITY_TIMEOUT", "7200"))}
# Housekeeping runs on a small queue that both pools also consume.
MAINTENANCE_QUEUE = "maintenance"
CELERY_BEAT_SCHEDULE = {
    "fail-stalled-jobs": {
        "task": "generation.fail_stalled_jobs",
        "schedule": 60.0,
        "options": {"queue": MAINTENANCE_QUEUE},
    },
}
