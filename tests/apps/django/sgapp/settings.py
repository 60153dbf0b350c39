"""Settings of the sessiongate Django test app, all from the environment.

REDIS_URL           redis://127.0.0.1:P/0 (required)
SESSION_ENGINE      django.contrib.sessions.backends.cache (default) or
                    django.contrib.sessions.backends.cached_db
CACHE_BACKEND       django.core.cache.backends.redis.RedisCache (default, Django's own) or
                    django_redis.cache.RedisCache (django-redis)
CACHE_KEY_PREFIX    the cache's KEY_PREFIX (default "")
CACHE_VERSION       the cache's VERSION (default 1)
PICKLE_PROTOCOL     optional pickle protocol of the cache's serializer. Defaults when unset:
                    Django's RedisSerializer uses pickle.HIGHEST_PROTOCOL (5);
                    django-redis 7's PickleSerializer uses pickle.DEFAULT_PROTOCOL (4 on
                    Python 3.8-3.13, 5 from 3.14). Both store a plain int unpickled.
SESSION_TTL_SECONDS optional SESSION_COOKIE_AGE (default Django's two weeks)
DJANGO_DB_PATH      the SQLite file (or a directory, holding db.sqlite3) (required)
DJANGO_SECRET_KEY   optional SECRET_KEY (default: random per process)

Sessions are Django's: the cache value is the session dict pickled by the cache backend's
own serializer, no compression. SESSION_SERIALIZER only serializes the database copy
(cached_db); it is JSON with DjangoJSONEncoder so that a datetime in the session can be
saved there too (Django's default JSONSerializer refuses one).
"""

import functools
import os
import secrets
from pathlib import Path

ENGINES = (
    "django.contrib.sessions.backends.cache",
    "django.contrib.sessions.backends.cached_db",
)
BACKENDS = (
    "django.core.cache.backends.redis.RedisCache",
    "django_redis.cache.RedisCache",
)


def _env(name, default=None):
    value = os.environ.get(name, "")
    if value == "":
        if default is None:
            raise RuntimeError(f"{name} must be set")
        return default
    return value


REDIS_URL = _env("REDIS_URL")
SESSION_ENGINE = _env("SESSION_ENGINE", ENGINES[0])
if SESSION_ENGINE not in ENGINES:
    raise RuntimeError(f"SESSION_ENGINE must be one of {ENGINES}, not {SESSION_ENGINE!r}")
CACHE_BACKEND = _env("CACHE_BACKEND", BACKENDS[0])
if CACHE_BACKEND not in BACKENDS:
    raise RuntimeError(f"CACHE_BACKEND must be one of {BACKENDS}, not {CACHE_BACKEND!r}")

_options = {}
_protocol = os.environ.get("PICKLE_PROTOCOL", "")
if _protocol != "":
    if CACHE_BACKEND == BACKENDS[0]:
        from django.core.cache.backends.redis import RedisSerializer

        # RedisCacheClient calls a callable `serializer` option with no arguments.
        _options["serializer"] = functools.partial(RedisSerializer, protocol=int(_protocol))
    else:
        _options["PICKLE_VERSION"] = int(_protocol)

CACHES = {
    "default": {
        "BACKEND": CACHE_BACKEND,
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": os.environ.get("CACHE_KEY_PREFIX", ""),
        "VERSION": int(_env("CACHE_VERSION", "1")),
        "OPTIONS": _options,
    }
}

_db = Path(_env("DJANGO_DB_PATH"))
if _db.is_dir():
    _db = _db / "db.sqlite3"
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(_db)}}

SECRET_KEY = _env("DJANGO_SECRET_KEY", secrets.token_urlsafe(50))
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
ROOT_URLCONF = "sgapp.urls"

SESSION_CACHE_ALIAS = "default"
SESSION_COOKIE_NAME = "sessionid"
SESSION_COOKIE_SECURE = False
SESSION_SERIALIZER = "sgapp.serializers.JSONSerializer"
if os.environ.get("SESSION_TTL_SECONDS", "") != "":
    SESSION_COOKIE_AGE = int(os.environ["SESSION_TTL_SECONDS"])

# Test users get a random password: hash it cheaply (PBKDF2 would cost ~0.3 s a login).
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {
        "django.request": {"handlers": ["stderr"], "level": "ERROR", "propagate": False},
        "django.server": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        "django.contrib.sessions": {"handlers": ["stderr"], "level": "WARNING"},
    },
}
