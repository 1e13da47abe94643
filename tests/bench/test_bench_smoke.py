"""Smoke test of `manage.py bench`: each scenario runs at small scale and reports sane figures.

The benchmarks start their own Daphne and database, so these run the command as a subprocess
(with this environment's DATABASE_URL and REDIS_URL) and read the JSON on its last line. They
check that the figures exist and make sense, not how fast this machine is. One xdist group:
two benchmarks at once would measure each other.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BASE_DIR = Path(__file__).resolve().parents[2]
TIMEOUT_S = 240

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("bench")]


def run_bench(scenario: str) -> dict:
    result = subprocess.run(
        [sys.executable, "manage.py", "bench", scenario, "--scale", "small", "--json"],
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_bench_http_reports_throughput_and_latency_of_each_endpoint_against_the_floor():
    figures = run_bench("http")

    for key in ("healthz_rps", "floor_rps", "login_rps", "healthz_p50_ms", "healthz_p95_ms",
                "login_p95_ms", "floor_p95_ms", "healthz_vs_floor"):  # fmt: skip
        assert figures[key] > 0, key
    assert figures["floor_errors"] == figures["login_errors"] == 0
    # /healthz answers 503 when PostgreSQL runs out of connections, which a loaded shared server
    # can; the bench reports those answers, and here most must be 200.
    assert figures["healthz_errors"] * 2 < figures["healthz_requests"]
    assert figures["healthz_p50_ms"] <= figures["healthz_p95_ms"]


def test_bench_realtime_delivers_every_event_to_every_socket_on_both_layers():
    figures = run_bench("realtime")

    assert figures["clients"] > 0
    assert figures["events"] > 0
    for key in ("p50_ms", "p95_ms", "floor_p95_ms", "core_p95_ms", "pubsub_p95_ms"):
        assert figures[key] > 0, key
    assert figures["lost"] == 0
    assert figures["floor_lost"] == 0
    assert figures["core_lost"] == figures["pubsub_lost"] == 0
    assert figures["received"] == figures["clients"] * figures["events"]


def test_bench_dispatch_sends_and_delivers_every_touch_with_each_worker_shape():
    # The command fails unless every touch was sent and every mail is in the outbox, per run.
    figures = run_bench("dispatch")

    assert figures["touches"] == 1_000
    assert figures["worker_processes"] >= 1
    for suffix in ("", "_one_process"):
        assert figures[f"sent_per_s{suffix}"] >= figures[f"dispatch_per_s{suffix}"] > 0
        assert 0 < figures[f"sent_s{suffix}"] <= figures[f"dispatch_s{suffix}"]
