"""Smoke test of `manage.py bench ingest`: every webhook door takes its share and repeats dedupe.

The command builds its own database and re-runs itself under a bench Redis prefix, so this runs
it as a subprocess and reads the JSON on its last line. It checks what was sent and stored (the
stored count must equal the distinct messages), not how fast this machine is.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BASE_DIR = Path(__file__).resolve().parents[2]
TIMEOUT_S = 600
BENCH = [sys.executable, "manage.py", "bench"]

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("bench")]


def test_bench_ingest_stores_each_distinct_message_once_across_every_door():
    result = subprocess.run(
        [*BENCH, "ingest", "--scale", "small", "--json", "--processes", "3", "--threads", "1"],
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:] + result.stdout[-2000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])

    assert {"messages_per_s", "sent", "distinct", "stored", "p95_ms"} <= figures.keys()
    assert (figures["sent"], figures["distinct"], figures["stored"]) == (1000, 800, 800)
    assert figures["refused"] == 0 and "failed" not in figures
    assert figures["stored_by_channel"] == {
        "email": 160, "facebook": 160, "instagram": 160, "whatsapp": 160, "x": 160,
    }  # fmt: skip
    assert figures["customers_stored"] == 100 and figures["cases"] == 100
    assert figures["messages_per_s"] > 0 and figures["p95_ms"] > 0
    assert (figures["processes"], figures["threads"]) == (3, 1)
    assert figures["cpu_ms_per_message"] > 0
    assert "bench ingest (small)" in result.stdout and "3 processes of 1 threads" in result.stdout


def test_bench_refuses_process_counts_for_other_scenarios_and_out_of_range():
    for arguments, error in (
        (["http", "--processes", "2"], "apply to the ingest scenario only"),
        (["ingest", "--processes", "0"], "invalid count value"),
    ):
        result = subprocess.run(
            [*BENCH, *arguments, "--scale", "small"],
            cwd=BASE_DIR, capture_output=True, text=True, timeout=TIMEOUT_S, check=False,
        )  # fmt: skip
        assert result.returncode != 0
        assert error in result.stderr
