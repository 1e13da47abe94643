"""Settings for Workbench, read from the environment (see README "Configuration")."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from urllib.parse import unquote, urlsplit

import dj_database_url
from celery.schedules import crontab

from workbench import embedded

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = env_bool("DEBUG", True)
_INSECURE_DEV_KEY = "dev-only-insecure-key-set-SECRET_KEY-in-production"
SECRET_KEY = os.environ.get("SECRET_KEY") or _INSECURE_DEV_KEY
if not DEBUG and SECRET_KEY == _INSECURE_DEV_KEY:
    raise RuntimeError("SECRET_KEY must be set when DEBUG=0")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]" if DEBUG else "")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")

# No DATABASE_URL / REDIS_URL: start (or join) the embedded servers under var/.
embedded.ensure_services()
DATABASE_URL = os.environ["DATABASE_URL"]
REDIS_URL = os.environ["REDIS_URL"]
# Keys of the channel layer and of realtime sequence numbers start with this, so that several
# deployments (or test workers) can share one Redis without hearing each other.
REDIS_PREFIX = os.environ.get("WORKBENCH_REDIS_PREFIX", "wb")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "template_partials",
    "rules.apps.AutodiscoverRulesConfig",
    "axes",
    "django_celery_beat",
    "anymail",
    "workbench",
    "customers",
    "cases",
    "campaigns",
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
    "csp.middleware.CSPMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "workbench.middleware.AccessMiddleware",
    # Last, so that a locked-out sign-in is answered before the view runs.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "workbench.urls"
ASGI_APPLICATION = "workbench.asgi.application"
AUTH_USER_MODEL = "workbench.User"

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
                "workbench.views.navigation",
            ],
        },
    },
]

# Under Daphne every request runs its sync code in a thread of its own, and a persistent
# connection stays with its thread: with CONN_MAX_AGE > 0, 32 concurrent clients exhausted
# PostgreSQL's 100 connections in `bench http`. So 0 (closed at the end of each request) unless
# DB_CONN_MAX_AGE says otherwise (a Celery worker, whose threads live long, may keep them).
DATABASES = {
    "default": dj_database_url.parse(
        DATABASE_URL, conn_max_age=int(os.environ.get("DB_CONN_MAX_AGE", "0"))
    )
}
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# Several test runs can share one server when each names its own test database.
if os.environ.get("TEST_DATABASE_NAME"):
    DATABASES["default"]["TEST"] = {"NAME": os.environ["TEST_DATABASE_NAME"]}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": f"{REDIS_PREFIX}:cache",
    }
}

AUTHENTICATION_BACKENDS = [
    # Axes first: it refuses a locked-out sign-in before any password is checked.
    "axes.backends.AxesStandaloneBackend",
    "rules.permissions.ObjectPermissionBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

# Sign-in rate limit: five failures for one username from one address lock that pair out for
# fifteen minutes; the page says so (429) instead of failing silently.
AXES_FAILURE_LIMIT = int(os.environ.get("AXES_FAILURE_LIMIT", "5"))
AXES_COOLOFF_TIME = timedelta(minutes=15)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_RESET_ON_SUCCESS = True
AXES_VERBOSE = False

LANGUAGE_CODE = "en"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "var" / "static"
# In development WhiteNoise serves straight from the finders: no collectstatic needed.
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", BASE_DIR / "var" / "media"))

# --- Channels (realtime) ---------------------------------------------------------------------
# Pub/sub is the default: one PUBLISH per event reaches every process with a subscriber, where
# the core layer writes one list entry per socket (`python manage.py bench realtime` compares).
CHANNEL_LAYER = os.environ.get("CHANNEL_LAYER", "pubsub")
_LAYER_BACKENDS = {
    "pubsub": "channels_redis.pubsub.RedisPubSubChannelLayer",
    "core": "channels_redis.core.RedisChannelLayer",
}
if CHANNEL_LAYER not in _LAYER_BACKENDS:
    raise RuntimeError(f"CHANNEL_LAYER must be one of {sorted(_LAYER_BACKENDS)}")
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": _LAYER_BACKENDS[CHANNEL_LAYER],
        "CONFIG": {"hosts": [{"address": REDIS_URL}], "prefix": f"{REDIS_PREFIX}:asgi"},
    }
}
# Websocket frames from browsers: anything larger is refused and closes that socket.
REALTIME_MAX_FRAME_BYTES = 4096
# Live chat (workbench/connectors/chat.py): a visitor's frame limit, message rate, token life.
CHAT_MAX_FRAME_BYTES = int(os.environ.get("CHAT_MAX_FRAME_BYTES", "4096"))
CHAT_RATE_MESSAGES = int(os.environ.get("CHAT_RATE_MESSAGES", "10"))
CHAT_RATE_WINDOW_S = int(os.environ.get("CHAT_RATE_WINDOW_S", "10"))
CHAT_TOKEN_MAX_AGE_S = int(os.environ.get("CHAT_TOKEN_MAX_AGE_S", str(90 * 24 * 3600)))


# --- Celery ----------------------------------------------------------------------------------
def _celery_broker_url(url: str) -> str:
    """Kombu spells a Redis unix socket `redis+socket://`; everything else passes through."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return f"redis+socket://{parts.path}"
    return url


CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL") or _celery_broker_url(REDIS_URL)
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# At-least-once delivery, work done once: every task is idempotent (ids in, status guards and
# unique constraints inside), so a task is acknowledged only after it ran and redelivered when
# its worker died.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
# The queue tasks are sent to and workers consume by default; a test or a bench that starts its
# own workers on a shared broker names a queue of its own here.
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("WORKBENCH_CELERY_QUEUE", "celery")
CELERY_RESULT_BACKEND = None
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = "UTC"
# Beat polls for due work; the database scheduler picks these up on start. `expires` drops a
# run that waited longer than its period, so a backlog never runs the same sweep twice in a row.
CELERY_BEAT_SCHEDULE = {
    "cases-check-sla-breaches": {
        "task": "cases.check_sla_breaches",
        "schedule": 60.0,
        "options": {"expires": 55},
    },
    "cases-flag-overdue-commitments": {
        "task": "cases.flag_overdue_commitments",
        "schedule": 300.0,
        "options": {"expires": 290},
    },
    "cases-close-solved-cases": {
        "task": "cases.close_solved_cases",
        "schedule": 3600.0,
        "options": {"expires": 3500},
    },
    # Campaigns: start due ones (and kick stalled ones), release held touches whose reason
    # cleared, end campaigns past their end (campaigns.dispatch). Polls, never far-future ETAs.
    "campaigns-start-due": {
        "task": "campaigns.start_due_campaigns",
        "schedule": 15.0,
        "options": {"expires": 14},
    },
    "campaigns-release-held-touches": {
        "task": "campaigns.release_held_touches",
        "schedule": 30.0,
        "options": {"expires": 29},
    },
    "campaigns-expire-touches": {
        "task": "campaigns.expire_touches",
        "schedule": 60.0,
        "options": {"expires": 55},
    },
    # Nightly at 02:30 UTC: engagement and value of every customer (customers.engagement).
    "customers-compute-engagement": {
        "task": "customers.compute_engagement",
        "schedule": crontab(hour=2, minute=30),
        "options": {"expires": 6 * 3600},
    },
    # The console's rollups (workbench.console.rollups): recent buckets every 5 minutes, the
    # whole 92-day window nightly (late arrivals).
    "workbench-refresh-rollups": {
        "task": "workbench.refresh_rollups",
        "schedule": 300.0,
        "options": {"expires": 290},
    },
    "workbench-recompute-rollups": {
        "task": "workbench.recompute_rollups",
        "schedule": crontab(hour=2, minute=10),
        "options": {"expires": 6 * 3600},
    },
    # The console's live panel (backlog, agents online, held touches): pushed when it changed.
    "workbench-refresh-console-live": {
        "task": "workbench.refresh_console_live",
        "schedule": 30.0,
        "options": {"expires": 25},
    },
    # Outbound messages a lost task or a dead worker left queued or "sending"
    # (workbench.connectors.delivery.sweep_stuck_deliveries).
    "workbench-sweep-stuck-deliveries": {
        "task": "workbench.sweep_stuck_deliveries",
        "schedule": 60.0,
        "options": {"expires": 55},
    },
}

# --- REST API --------------------------------------------------------------------------------
REST_FRAMEWORK = {
    # Token first: its WWW-Authenticate header makes a missing credential a 401, not a 403.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["workbench.api.HasRole"],
    "DEFAULT_PAGINATION_CLASS": "workbench.api.KeysetPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"]
    + (["rest_framework.renderers.BrowsableAPIRenderer"] if DEBUG else []),
    "DEFAULT_THROTTLE_RATES": {"anon": "60/min", "user": "1200/min"},
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Workbench API",
    "DESCRIPTION": "Customers, cases and campaigns on one timeline. Session or token auth.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["workbench.api.HasRole"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Several models have a "status" or "kind": name each choice set once, after its model.
    "ENUM_NAME_OVERRIDES": {
        "CaseStatusEnum": "cases.models.Status",
        "CommitmentStatusEnum": "cases.models.CommitmentStatus",
        "CommitmentKindEnum": "cases.models.CommitmentKind",
        "ChannelEnum": "customers.models.Channel",
        "CampaignChannelEnum": "campaigns.editing.CAMPAIGN_CHANNELS",
    },
}

# --- Email -----------------------------------------------------------------------------------
# Outbound mail goes, in this order of preference, through EMAIL_BACKEND as given; SMTP when
# EMAIL_URL (smtp://user:pass@host:587, smtps://… for implicit TLS) or EMAIL_HOST is set; the
# anymail provider named by ANYMAIL_<PROVIDER>_* variables (ANYMAIL_POSTMARK_SERVER_TOKEN=…);
# else the local outbox (a table, readable at /outbox/), so a demo shows what it would have sent.
ANYMAIL = {key.removeprefix("ANYMAIL_"): value for key, value in os.environ.items()
           if key.startswith("ANYMAIL_")}  # fmt: skip
_ANYMAIL_PROVIDERS = ("amazon_ses", "brevo", "mailersend", "mailgun", "mailjet", "mailtrap",
                      "mandrill", "postal", "postmark", "resend", "scaleway", "sendgrid",
                      "sparkpost", "unisender_go")  # fmt: skip
_anymail_provider = next(
    # Webhook keys (ANYMAIL_MAILGUN_WEBHOOK_SIGNING_KEY) configure receiving, not sending.
    (p for p in _ANYMAIL_PROVIDERS
     if any(k.startswith(f"{p.upper()}_") and "WEBHOOK" not in k for k in ANYMAIL)),
    None,
)  # fmt: skip
if os.environ.get("EMAIL_URL"):
    _mail_url = urlsplit(os.environ["EMAIL_URL"])
    if _mail_url.scheme not in {"smtp", "smtps"}:
        raise RuntimeError("EMAIL_URL must start with smtp:// or smtps://")
    EMAIL_HOST = _mail_url.hostname or "localhost"
    EMAIL_USE_SSL = _mail_url.scheme == "smtps"
    EMAIL_PORT = _mail_url.port or (465 if EMAIL_USE_SSL else 25)
    EMAIL_USE_TLS = not EMAIL_USE_SSL and (EMAIL_PORT == 587 or "tls=1" in _mail_url.query)
    EMAIL_HOST_USER = unquote(_mail_url.username or "")
    EMAIL_HOST_PASSWORD = unquote(_mail_url.password or "")
elif os.environ.get("EMAIL_HOST"):
    EMAIL_HOST = os.environ["EMAIL_HOST"]
    EMAIL_PORT = int(os.environ.get("EMAIL_PORT", "25"))
    EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
    EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
    EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", EMAIL_PORT == 587)
    EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", EMAIL_PORT == 465)
if os.environ.get("EMAIL_BACKEND"):
    EMAIL_BACKEND = os.environ["EMAIL_BACKEND"]
elif os.environ.get("EMAIL_URL") or os.environ.get("EMAIL_HOST"):
    EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
elif _anymail_provider is not None:
    EMAIL_BACKEND = f"anymail.backends.{_anymail_provider}.EmailBackend"
else:
    EMAIL_BACKEND = "workbench.mail.OutboxBackend"
EMAIL_TIMEOUT = int(os.environ.get("EMAIL_TIMEOUT", "30"))
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "Workbench <support@workbench.local>")
# The domain of the Message-IDs we give replies (<case-12.…@domain>), so answers thread back.
WORKBENCH_MAIL_DOMAIN = os.environ.get("WORKBENCH_MAIL_DOMAIN", "workbench.localhost")
# Inbound mail: POST /inbound/email/raw/ takes a raw RFC 5322 mail from a mail server that
# sends "Authorization: Bearer <INBOUND_EMAIL_SECRET>" (unset: the endpoint refuses everything).
# Provider webhooks (/inbound/email/<mailgun|sendgrid|postmark>/<inbound|tracking>/) check
# ANYMAIL_WEBHOOK_SECRET ("user:pass" basic auth) and ANYMAIL_MAILGUN_WEBHOOK_SIGNING_KEY.
INBOUND_EMAIL_SECRET = os.environ.get("INBOUND_EMAIL_SECRET", "")

# --- Social channels ---------------------------------------------------------------------------
# Meta (Messenger, Instagram, WhatsApp Cloud API): webhooks at /inbound/meta/, signed with the
# app secret; replies through the Graph API with the page token (WhatsApp: its own token if set).
META_APP_SECRET = os.environ.get("META_APP_SECRET", "")
META_VERIFY_TOKEN = os.environ.get("META_VERIFY_TOKEN", "")
META_PAGE_ACCESS_TOKEN = os.environ.get("META_PAGE_ACCESS_TOKEN", "")
META_GRAPH_BASE_URL = os.environ.get("META_GRAPH_BASE_URL", "https://graph.facebook.com/v21.0")
WHATSAPP_PHONE_NUMBER_ID = os.environ.get("WHATSAPP_PHONE_NUMBER_ID", "")
WHATSAPP_ACCESS_TOKEN = os.environ.get("WHATSAPP_ACCESS_TOKEN", "") or META_PAGE_ACCESS_TOKEN
# X account activity: webhooks at /inbound/x/ (CRC and signature with the consumer secret);
# replies through the X API v2 with a user-context bearer token of our account.
X_CONSUMER_SECRET = os.environ.get("X_CONSUMER_SECRET", "")
X_BEARER_TOKEN = os.environ.get("X_BEARER_TOKEN", "")
X_API_BASE_URL = os.environ.get("X_API_BASE_URL", "https://api.x.com")
SOCIAL_HTTP_TIMEOUT_S = float(os.environ.get("SOCIAL_HTTP_TIMEOUT_S", "10"))

# --- Security --------------------------------------------------------------------------------
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
if not DEBUG:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
    SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", str(60 * 60 * 24 * 365)))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", True)
    if env_bool("BEHIND_TLS_PROXY", False):
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# Scripts and styles only from our own origin: htmx is configured to evaluate nothing, and
# anything a customer wrote is escaped, so no inline script is ever needed.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'"],
        "base-uri": ["'self'"],
        "object-src": ["'none'"],
    }
}
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"axes": {"level": "WARNING"}, "pgserver": {"level": "WARNING"}},
}
