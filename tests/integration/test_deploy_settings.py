"""Production settings: `check --deploy` is clean, and Cohort refuses to start without a secret.

Each check runs `manage.py` in a fresh process with `controlplane.settings` (not the test
settings) and an environment built from scratch: this process's own environment carries the
test settings' defaults (`SECURE_SSL_REDIRECT=false`, a test `SECRET_KEY`, ...), which would hide
exactly the problems these tests look for. `DEBUG` is always given, because the settings also
read a local `.env`, and the one `bin/run` writes says `DEBUG=true`.
"""

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

BASE_DIR = Path(__file__).resolve().parents[2]
# `env.int("NAME", ...)`, `environ.Env().str("NAME", ...)`, possibly across lines.
SETTINGS_READ = re.compile(r'[Ee]nv(?:\(\))?\.\w+\(\s*"([A-Z][A-Z0-9_]*)"')
EXAMPLE_LINE = re.compile(r"^#?\s*([A-Z][A-Z0-9_]*)=", re.MULTILINE)
# Only what any process needs to run; nothing that configures Cohort.
PASSTHROUGH = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")
MISSING_SECRET_KEY = (
    "django.core.exceptions.ImproperlyConfigured: SECRET_KEY must be set when DEBUG is off."
)


def production_environment(**overrides: str) -> dict[str, str]:
    """Return the environment of a production process: no DEBUG, real services, a long secret."""
    environment = {name: os.environ[name] for name in PASSTHROUGH if name in os.environ}
    environment.update(
        DJANGO_SETTINGS_MODULE="controlplane.settings",
        DEBUG="false",
        SECRET_KEY=secrets.token_urlsafe(64),
        ALLOWED_HOSTS="cohort.example.com",
        DATABASE_URL="postgres://postgres@127.0.0.1:5432/postgres",
        REDIS_URL="redis://127.0.0.1:6379/14",
    )
    environment.update(overrides)
    return environment


def manage(*arguments: str, environment: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *arguments],
        cwd=BASE_DIR,
        env=environment,
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.mark.parametrize(
    "only",
    [
        pytest.param([], id="every-check"),
        pytest.param(["--tag", "security"], id="security-checks"),
    ],
)
def test_check_deploy__production_environment__no_warnings(only):
    """Under production settings, no deploy check (security, schema, ...) reports anything."""
    result = manage(
        "check", "--deploy", "--fail-level", "WARNING", *only, environment=production_environment()
    )

    report = f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.returncode == 0, report
    assert "System check identified no issues" in result.stdout, report
    assert "WARNINGS" not in result.stderr, report


def test_settings__secret_key_empty_and_debug_off__refuses_to_start():
    """An empty SECRET_KEY with DEBUG off stops every command with one sentence saying why."""
    result = manage("check", environment=production_environment(SECRET_KEY=""))

    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == MISSING_SECRET_KEY, result.stderr


@pytest.mark.skipif(
    (BASE_DIR / ".env").is_file(),
    reason="a local .env (bin/run writes one) supplies SECRET_KEY and DEBUG to the settings",
)
def test_settings__secret_key_and_debug_unset__refuses_to_start():
    """With neither SECRET_KEY nor DEBUG in the environment, Cohort is in production mode and
    refuses to start instead of signing sessions with a known key."""
    environment = production_environment()
    del environment["SECRET_KEY"], environment["DEBUG"]

    result = manage("check", environment=environment)

    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == MISSING_SECRET_KEY, result.stderr


def test_env_example__lists_every_variable_the_settings_read():
    """.env.example names every variable controlplane/settings.py reads, set or commented out."""
    read = set(SETTINGS_READ.findall((BASE_DIR / "controlplane" / "settings.py").read_text()))
    listed = set(EXAMPLE_LINE.findall((BASE_DIR / ".env.example").read_text()))

    assert read, "no env reads found: the pattern no longer matches settings.py"
    assert sorted(read - listed) == []
