"""Production settings: `check --deploy` is clean with DEBUG=0 and a real SECRET_KEY."""

import os
import subprocess
import sys


def run_check(**env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_check_deploy_is_clean_in_production_settings():
    result = run_check(
        DEBUG="0",
        SECRET_KEY="k3y-" + "x" * 60 + "-long-and-random-enough-for-django-checks",
        ALLOWED_HOSTS="workbench.example.com",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_production_settings_refuse_the_development_secret_key():
    result = run_check(DEBUG="0", SECRET_KEY="", ALLOWED_HOSTS="workbench.example.com")
    assert result.returncode == 1
    assert "SECRET_KEY must be set when DEBUG=0" in result.stderr
