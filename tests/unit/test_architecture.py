"""
The layer rules of docs/architecture.md, as import-linter contracts (pyproject.toml) run with
the suite; and proof that each contract fails when its rule is broken.
"""

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
CONTRACTS = {contract["id"]: contract for contract in CONFIG["contracts"]}
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint_imports(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", str(root / "pyproject.toml")],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_import_contracts__the_tree_as_it_is__are_all_kept():
    result = _lint_imports(ROOT)

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Contracts: {len(CONTRACTS)} kept, 0 broken." in result.stdout


# One import that breaks each contract: (module to edit, line to add).
_BREAKS = {
    "apps-one-way": ("registry/selectors.py", "from rollout import models as _broken\n"),
    "pure-modules": ("rollout/hashing.py", "import django as _broken\n"),
    "experiments-entry-points": (
        "experiments/tasks.py",
        "from experiments import judge as _broken\n",
    ),
    "rollout-entry-points": ("rollout/api.py", "from rollout import exposures as _broken\n"),
    "sdk-plumbing-once": ("experiments/sdk_api.py", "from rollout import sdk_api as _broken\n"),
    "client-stands-alone": ("client/signatures.py", "from rollout import signing as _broken\n"),
    "no-import-cycles": ("experiments/selectors.py", "from experiments import judge as _broken\n"),
}


def test_breaking_imports__one_per_contract__every_contract_has_one():
    assert set(_BREAKS) == set(CONTRACTS)


@pytest.fixture(scope="module")
def source_copy(tmp_path_factory) -> Path:
    """The project's packages and import-linter configuration, copied to edit safely."""
    copy = tmp_path_factory.mktemp("tree")
    for package in CONFIG["root_packages"]:
        shutil.copytree(
            ROOT / package, copy / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    return copy


@pytest.mark.parametrize("contract_id", sorted(_BREAKS))
def test_import_contracts__one_forbidden_import_added__that_contract_breaks(
    source_copy, contract_id
):
    path, line = _BREAKS[contract_id]
    module = source_copy / path
    original = module.read_text()
    module.write_text(original + line)
    try:
        result = _lint_imports(source_copy)
    finally:
        module.write_text(original)

    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{CONTRACTS[contract_id]['name']} BROKEN" in " ".join(result.stdout.split())
    assert "Contracts: " in result.stdout and " 1 broken." in result.stdout


_FORBIDDEN_AT_RUNTIME = ("django", "rest_framework", "celery", "redis", "psycopg")


@pytest.mark.parametrize("module", CONTRACTS["pure-modules"]["source_modules"])
def test_pure_module__imported_alone__loads_no_django_celery_or_redis(module):
    """Static contracts miss what a package's __init__ runs; importing each alone does not."""
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import sys, {module}; print(' '.join(sorted(sys.modules)))",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout.split()

    assert [m for m in loaded if m.split(".")[0] in _FORBIDDEN_AT_RUNTIME] == []
