"""/healthz: is the database, Redis and the Celery broker reachable? 200 if all, else 503."""

from __future__ import annotations

import time

import redis
from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from kombu import Connection


def _database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _redis() -> None:
    client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
    try:
        client.ping()
    finally:
        client.close()


def _broker() -> None:
    # Read at request time (not from the Celery app's cached conf) so tests can point it elsewhere.
    with Connection(settings.CELERY_BROKER_URL, connect_timeout=1) as conn:
        conn.ensure_connection(max_retries=1, timeout=1)


CHECKS = {"database": _database, "redis": _redis, "broker": _broker}


@never_cache
@login_not_required
def healthz(request):
    """Each check's status and time; `down` names what failed (and the status is 503)."""
    results, down = {}, []
    for name, check in CHECKS.items():
        started = time.perf_counter()
        try:
            check()
        except Exception as exc:
            results[name] = {"status": "down", "error": f"{type(exc).__name__}: {exc}"[:300]}
            down.append(name)
        else:
            elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
            results[name] = {"status": "up", "ms": elapsed_ms}
    body = {"status": "down" if down else "up", "down": down, "checks": results}
    return JsonResponse(body, status=503 if down else 200)
