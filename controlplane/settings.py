"""
Settings of Cohort, read from the environment only (12-factor).

Every variable is listed in `.env.example`. With none set, Cohort runs on the embedded default:
a SQLite file, an in-memory cache, a filesystem Celery broker and model files in a local folder.
`DATABASE_URL`, `REDIS_URL` and `S3_BUCKET` move it to PostgreSQL, Redis and object storage.
"""

from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
if (BASE_DIR / ".env").is_file():
    env.read_env(BASE_DIR / ".env")
VAR_DIR = Path(env.str("COHORT_VAR_DIR", default=str(BASE_DIR / "var")))

DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off.")
    SECRET_KEY = "django-insecure-local-development-only"

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "axes",
    "controlplane",
    "registry",
    "rollout",
    "experiments",
]

MIDDLEWARE = [
    "controlplane.middleware.RequestFramingMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes requires: it turns a locked-out login into the lockout page.
    "axes.middleware.AxesMiddleware",
]
# django-axes' backend first: it refuses a locked-out login before the password is checked.
# Only the admin's login form authenticates; API tokens do not go through these backends.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

ROOT_URLCONF = "controlplane.urls"
WSGI_APPLICATION = "controlplane.wsgi.application"

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

DATABASES = {
    "default": env.db_url("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'cohort.sqlite3'}"),
}
DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("DB_CONN_MAX_AGE", default=60))
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Server-side prepared statements, for the few statements sent with server-side binding
    # (the events endpoint's: experiments.events.store.fast_cursor); Django's own queries bind
    # on the client and are never prepared. Empty turns it off (PgBouncer < 1.21 in
    # transaction mode cannot keep prepared statements).
    _prepare = env.str("DB_PREPARE_THRESHOLD", default="5")
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
        "prepare_threshold", int(_prepare) if _prepare else None
    )
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    # A web process and a worker share the file: wait for the lock instead of failing.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 20, "transaction_mode": "IMMEDIATE"}
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env.str("REDIS_URL", default="")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            # The API's rate limits count here on every request: an unreachable Redis must fail
            # fast (they then let requests through) rather than hang a request for minutes.
            "OPTIONS": {"socket_connect_timeout": 1.0, "socket_timeout": 1.0},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

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
# Every time the admin shows carries its zone ("14:05 UTC"): controlplane/formats/en/formats.py.
FORMAT_MODULE_PATH = ["controlplane.formats"]

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
MEDIA_ROOT = Path(env.str("MEDIA_ROOT", default=str(VAR_DIR / "media")))
MEDIA_URL = "media/"


def s3_model_storage(env: environ.Env) -> dict:
    """The storage of model files in an S3-compatible bucket, from the `S3_*` variables.

    A function so that tests/integration/test_s3_storage.py builds exactly this configuration.
    """
    from botocore.config import Config as botocore_config

    return {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": env.str("S3_BUCKET"),
            "endpoint_url": env.str("S3_ENDPOINT_URL", default="") or None,
            "region_name": env.str("S3_REGION", default="") or None,
            "access_key": env.str("S3_ACCESS_KEY_ID", default="") or None,
            "secret_key": env.str("S3_SECRET_ACCESS_KEY", default="") or None,
            "custom_domain": env.str("S3_CUSTOM_DOMAIN", default="") or None,
            "querystring_auth": False,
            "file_overwrite": False,
            "object_parameters": {"CacheControl": "public, max-age=31536000, immutable"},
            # botocore waits 60 s to connect by default: a bucket that drops packets would hold
            # an upload (and a web worker) for minutes before the 503 storage_unavailable.
            "client_config": botocore_config(
                connect_timeout=env.int("S3_CONNECT_TIMEOUT_SECONDS", default=5),
                read_timeout=env.int("S3_READ_TIMEOUT_SECONDS", default=60),
                retries={"max_attempts": 3, "mode": "standard"},
            ),
        },
    }


S3_BUCKET = env.str("S3_BUCKET", default="")
if S3_BUCKET:
    MODEL_STORAGE = s3_model_storage(env)
else:
    MODEL_STORAGE = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(MEDIA_ROOT), "base_url": "/" + MEDIA_URL},
    }
STORAGES = {
    "default": MODEL_STORAGE,
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Absolute base of the model URLs announced to devices ("https://cdn.example.com"). Empty: the
# URL of this server, which serves the files itself.
MODEL_FILES_BASE_URL = env.str("MODEL_FILES_BASE_URL", default="").rstrip("/")
MODEL_MAX_UPLOAD_BYTES = env.int("MODEL_MAX_UPLOAD_BYTES", default=100 * 1024 * 1024)
MODEL_MAX_UNPACKED_BYTES = env.int("MODEL_MAX_UNPACKED_BYTES", default=500 * 1024 * 1024)
MODEL_MAX_ARCHIVE_FILES = env.int("MODEL_MAX_ARCHIVE_FILES", default=1000)
# Upload bodies larger than this are streamed to a temporary file instead of memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "controlplane.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["controlplane.permissions.HasRole"],
    "DEFAULT_SCHEMA_CLASS": "controlplane.schema.AutoSchema",
    "EXCEPTION_HANDLER": "controlplane.exceptions.api_exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # JSON only: a form-encoded body would silently lose nested fields such as a revision.
    # The model upload declares multipart itself.
    "DEFAULT_PARSER_CLASSES": ["controlplane.parsers.JsonParser"],
    # Rate limits (controlplane/throttling.py), counted in the cache: per API token or signed-in
    # user, and per client address for what anyone may request. 0 turns one off.
    "DEFAULT_THROTTLE_CLASSES": [
        "controlplane.throttling.ApiRateThrottle",
        "controlplane.throttling.AnonymousApiRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        scope: f"{per_minute}/min" if per_minute > 0 else None
        for scope, per_minute in (
            ("api", env.int("API_RATE_LIMIT_PER_MINUTE", default=600)),
            ("anon", env.int("API_ANON_RATE_LIMIT_PER_MINUTE", default=60)),
        )
    },
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Cohort API",
    "DESCRIPTION": "SDK and management API of Cohort. The wire contract is in CONTRACT.md.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # The SDK endpoints are plain Django views: controlplane.schema writes them in.
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "controlplane.schema.sdk_endpoints",
    ],
}

CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="") or REDIS_URL or "filesystem://"
if CELERY_BROKER_URL == "filesystem://":
    _broker_dir = VAR_DIR / "celery-broker"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir),
        "data_folder_out": str(_broker_dir),
        "processed_folder": str(VAR_DIR / "celery-processed"),
        # Else kombu keeps its exchange tables in ./control, outside the ignored var/.
        "control_folder": str(VAR_DIR / "celery-control"),
        "store_processed": False,
    }
else:
    # Longer than the longest task or countdown, or Redis hands a task to a second worker.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"

SDK_POLL_AFTER_SECONDS = env.int("SDK_POLL_AFTER_SECONDS", default=3600)
SDK_POLL_AFTER_SECONDS_DURING_ROLLOUT = env.int(
    "SDK_POLL_AFTER_SECONDS_DURING_ROLLOUT", default=900
)
SDK_POLL_AFTER_SECONDS_AFTER_ROLLBACK = env.int("SDK_POLL_AFTER_SECONDS_AFTER_ROLLBACK", default=60)
SDK_FAST_POLL_AFTER_ROLLBACK_WINDOW_SECONDS = env.int(
    "SDK_FAST_POLL_AFTER_ROLLBACK_WINDOW_SECONDS", default=6 * 3600
)
# Signed assignments (docs/sdk.md, "Signed assignments"): the Ed25519 key's 32-byte seed,
# base64 (`manage.py signing_key new` makes one); empty: entries carry `signature: null`.
ASSIGNMENT_SIGNING_KEY = env.str("ASSIGNMENT_SIGNING_KEY", default="")
# How long a signature stays valid. Snapshots are signed anew at half of it.
ASSIGNMENT_SIGNATURE_TTL_SECONDS = env.int("ASSIGNMENT_SIGNATURE_TTL_SECONDS", default=48 * 3600)
# How long after a rollback polls still record which devices confirmed the baseline.
ROLLBACK_CONFIRMATION_WINDOW_SECONDS = env.int(
    "ROLLBACK_CONFIRMATION_WINDOW_SECONDS", default=14 * 24 * 3600
)
# What serving model files costs per GB of egress (USD), for the download cost the admin shows
# before an advance or a promotion: 0.09 is S3's first tier, 0 is R2's (or a CDN paid flat).
EGRESS_PRICE_PER_GB = env.float("EGRESS_PRICE_PER_GB", default=0.09)
# The judge: significance level, and the relative lift the power calculation sizes for.
EXPERIMENT_ALPHA = env.float("EXPERIMENT_ALPHA", default=0.05)
EXPERIMENT_MIN_DETECTABLE_LIFT = env.float("EXPERIMENT_MIN_DETECTABLE_LIFT", default=0.10)
# A look whose data is complete only up to longer ago than this (the catch-up could not run)
# still rolls back on harm, but holds advancing and alerts. The attribution job moves the
# ledger's checkpoint every 30 s, so 120 s allows a few late runs.
JUDGE_MAX_DATA_AGE_SECONDS = env.int("JUDGE_MAX_DATA_AGE_SECONDS", default=120)
# POST …/analyze's database time: under gunicorn's worker timeout (30 s by default), so the
# request answers a JSON 503 instead of being killed.
ANALYZE_REQUEST_TIMEOUT_SECONDS = env.float("ANALYZE_REQUEST_TIMEOUT_SECONDS", default=15.0)
EMAIL_CONFIG = env.email_url("EMAIL_URL", default="consolemail://")
vars().update(EMAIL_CONFIG)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="cohort@localhost")
SERVER_EMAIL = DEFAULT_FROM_EMAIL
EMAIL_SUBJECT_PREFIX = "[Cohort] "
# Site admins, comma-separated e-mails: alerts of an app with no enabled channel go to them
# (and, as Django does, server errors when DEBUG is off).
ADMINS = [(address, address) for address in env.list("ADMINS", default=[])]
# A channel created or enabled again receives the app's alerts of this many past hours.
ALERT_BACKFILL_HOURS = env.int("ALERT_BACKFILL_HOURS", default=24)
# Webhooks go to public addresses only: the worker posts from inside the network, so a
# loopback, private or metadata address would be a way in (experiments/webhook_targets.py).
ALERT_WEBHOOK_ALLOW_PRIVATE = env.bool("ALERT_WEBHOOK_ALLOW_PRIVATE", default=False)
# Device clocks drift: an outcome stamped this much before its exposure still counts.
EVENT_CLOCK_SKEW_SECONDS = env.int("EVENT_CLOCK_SKEW_SECONDS", default=300)
# Events waiting for their device's exposure are given up (left unattributed) after this.
EVENT_ATTRIBUTION_PATIENCE_SECONDS = env.int("EVENT_ATTRIBUTION_PATIENCE_SECONDS", default=6 * 3600)
# How often each web process checks whether what devices are told has changed.
ROLLOUT_CONFIG_CHECK_SECONDS = env.float("ROLLOUT_CONFIG_CHECK_SECONDS", default=2.0)
# With Redis, how often each web process also reads the config version from the database, where
# it is committed: the bound on staleness when a change's copy to Redis was lost. (While its
# Redis is unreachable, and without Redis, a process reads the database at every check.)
ROLLOUT_CONFIG_DB_CHECK_SECONDS = env.float("ROLLOUT_CONFIG_DB_CHECK_SECONDS", default=10.0)
# Exposures each web process remembers, so a device's repeated polls write nothing.
ROLLOUT_EXPOSURE_MEMORY = env.int("ROLLOUT_EXPOSURE_MEMORY", default=200_000)
# SDK rate limits (rollout/rate_limit.py), kept in each web process's memory so the poll stays
# free of database and Redis round trips. Per SDK key, across all web processes: each process
# admits 1/WEB_PROCESSES of it. Per device (its id within the app), in each process. 0: off.
SDK_RATE_LIMIT_PER_MINUTE = env.int("SDK_RATE_LIMIT_PER_MINUTE", default=600_000)
SDK_RATE_LIMIT_PER_DEVICE_PER_MINUTE = env.int("SDK_RATE_LIMIT_PER_DEVICE_PER_MINUTE", default=60)
# Devices each web process keeps a bucket for (least recently seen forgotten first).
SDK_RATE_LIMIT_TRACKED_DEVICES = env.int("SDK_RATE_LIMIT_TRACKED_DEVICES", default=100_000)
# Web processes serving the SDK, all replicas together (replicas x gunicorn workers).
WEB_PROCESSES = env.int("WEB_PROCESSES", default=2)

# Admin login throttling (django-axes): after AXES_FAILURE_LIMIT wrong passwords, a username is
# locked out from that client address for the cool-off. Locking the pair, not the username,
# keeps an attacker from locking its owner out; each attempt while locked restarts the wait.
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("AXES_COOLOFF_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "controlplane.views.login_locked_out"
AXES_CLIENT_IP_CALLABLE = "controlplane.client_address.request_client_address"
# Proxies in front that append to X-Forwarded-For: the client's address is that many entries
# from its end. 0 uses the connection's address. Behind the TLS load balancer: 1.
TRUSTED_PROXY_COUNT = env.int(
    "TRUSTED_PROXY_COUNT",
    default=1 if not DEBUG and env.bool("BEHIND_TLS_PROXY", default=False) else 0,
)

if not DEBUG:
    # Load balancers probe over plain HTTP.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
    SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=True)
    SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=True)
    CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=True)
    if env.bool("BEHIND_TLS_PROXY", default=False):
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    # coremltools warns on import that Apple's runtime is missing: expected off macOS.
    "loggers": {"coremltools": {"level": "ERROR"}},
}
