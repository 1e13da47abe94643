"""Smoke test of `manage.py bench audience`: the data it generates and the figures it reports.

The command builds its own database and re-runs itself under a bench Redis prefix, so this runs
it as a subprocess (with this environment's DATABASE_URL and REDIS_URL) and reads the JSON on
its last line. It checks the audience split the generated data must give, that the floor and the
loop made exactly the touches materialisation made, and that every figure is there; not how
fast this machine is. One xdist group: two benchmarks at once would measure each other.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BASE_DIR = Path(__file__).resolve().parents[2]
TIMEOUT_S = 300

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("bench")]

ISSUE_KEYS = ("preflight_s", "materialise_s", "floor_s", "loop_s_scaled", "touches_per_s",
              "dispatch_per_s")  # fmt: skip


def run_bench_audience() -> dict:
    result = subprocess.run(
        [sys.executable, "manage.py", "bench", "audience", "--scale", "small", "--json"],
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:] + result.stdout[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_bench_audience_materialises_the_same_touches_as_the_floor_and_the_loop():
    figures = run_bench_audience()

    for key in ISSUE_KEYS:
        assert key in figures, key
    assert figures["scale"] == "small"
    assert figures["customers"] == figures["touches"] == 20_000
    counts = figures["preflight_counts"]
    assert sum(counts.values()) == 20_000
    # 30% without consent; the 1,000 with open commitments, the 10% capped and the complaint,
    # topic and cool-off slices all have consent, so each is counted under its own reason.
    assert counts["no_consent"] == 6_000
    assert counts["open_commitment"] == 1_000
    assert counts["frequency_cap"] == 2_000
    assert counts["topic_conflict"] == counts["open_complaint"] == 200
    assert counts["cool_off"] == 100
    assert figures["floor_differences"] == figures["loop_differences"] == 0
    assert figures["loop_sample"] == 2_000
    for key in ("preflight_s", "materialise_s", "floor_s", "loop_s_scaled", "touches_per_s"):
        assert figures[key] > 0, key
    assert figures["dispatch_per_s"] > 0  # from `bench dispatch`, run after
