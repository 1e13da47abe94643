"""Smoke test of `manage.py bench timeline`: the data it generates and the figures it reports.

The command builds its own database and re-runs itself under a bench Redis prefix, so this runs
it as a subprocess (with this environment's DATABASE_URL and REDIS_URL) and reads the JSON on
its last line. It checks what was generated and that every figure is there and makes sense,
not how fast this machine is. One xdist group: two benchmarks at once would measure each other.
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

TIMED_KEYS = ("first_page_p50_ms", "first_page_p95_ms", "deep_page_p50_ms", "deep_page_p95_ms",
              "offset_deep_page_p50_ms", "offset_deep_page_p95_ms", "search_p50_ms",
              "search_p95_ms", "page_p50_ms", "page_p95_ms", "far_page_p50_ms", "far_page_p95_ms",
              "offset_far_page_p95_ms")  # fmt: skip


def run_bench_timeline() -> dict:
    result = subprocess.run(
        [sys.executable, "manage.py", "bench", "timeline", "--scale", "small", "--json"],
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_bench_timeline_measures_reads_search_and_recording_over_the_generated_timeline():
    figures = run_bench_timeline()

    assert figures["scale"] == "small"
    assert figures["customers"] == 2_000
    assert figures["interactions_total"] == 20_000
    assert figures["customer_interactions"] == 2_000
    assert figures["records"] == 200
    assert figures["far_depth"] == 1_800
    assert figures["first_page_queries"] == 1
    for key in (*TIMED_KEYS, "deep_vs_first", "far_vs_first", "offset_vs_keyset", "record_per_s"):
        assert figures[key] > 0, key
    for read in ("first_page", "deep_page", "offset_deep_page", "search", "page"):
        assert figures[f"{read}_p50_ms"] <= figures[f"{read}_p95_ms"], read
    assert figures["search_mean_results"] > 0
    assert set(figures["plans"]) == {"first", "deep", "far", "offset"}
    assert "timeline_newest_first" in figures["plans"]["first"]
