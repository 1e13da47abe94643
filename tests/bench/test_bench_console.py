"""Smoke test of `manage.py bench console`: the data it generates and the figures it reports.

Run as a subprocess (the command builds its own database and re-runs itself under a bench Redis
prefix) and read the JSON on its last line. It checks the generated counts, that the charts read
from the rollups equal those read from the raw tables (the command fails otherwise), that the
engagement job saw every interaction, and that every figure is there; not how fast this machine
is. One xdist group: two benchmarks at once would measure each other.
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

ISSUE_KEYS = ("dashboard_p50_ms", "dashboard_p95_ms", "engagement_job_s", "engagement_per_s",
              "rollup_refresh_s")  # fmt: skip


def test_bench_console_reports_dashboard_rollup_and_engagement_figures():
    result = subprocess.run(
        [sys.executable, "manage.py", "bench", "console", "--scale", "small", "--json"],
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:] + result.stdout[-2000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])

    for key in ISSUE_KEYS:
        assert key in figures, key
        assert figures[key] > 0, key
    assert figures["scale"] == "small"
    assert (figures["customers"], figures["cases"], figures["interactions"]) == (
        20_000, 4_000, 100_000,
    )  # fmt: skip
    assert figures["commitments"] == 1_000  # one case in four
    assert figures["touches"] == 20 * 500
    assert figures["engagement_customers"] == 20_000
    # 4 periods x 3 time zones, each equal from rollups and raw tables (else the run fails).
    assert figures["charts_compared"] == 12
    assert figures["rollup_rows"] > 0
    assert figures["requests"] >= 30
    assert "bench console (small)" in result.stdout
