"""The registry's pure modules import no Django (and Core ML inspection no coremltools until it parses)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]
COREML_MODULES = sorted(
    "registry.coreml" if path.stem == "__init__" else f"registry.coreml.{path.stem}"
    for path in (REPO_ROOT / "registry" / "coreml").glob("*.py")
)
PURE_MODULES = [*COREML_MODULES, "registry.interfaces", "registry.sdk_versions"]


def modules_loaded_by_importing(module: str) -> list[str]:
    """The top-level packages a fresh interpreter has loaded after importing `module` alone."""
    script = (
        f"import importlib, json, sys; importlib.import_module({module!r}); "
        "print(json.dumps(sorted({name.split('.')[0] for name in sys.modules})))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO_ROOT,
        env={key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(completed.stdout)


def test_coreml_modules__found_on_disk__include_the_entry_point_and_the_zip_checks():
    assert {"registry.coreml", "registry.coreml.inspection", "registry.coreml.archive"} <= set(
        COREML_MODULES
    )


@pytest.mark.parametrize("module", PURE_MODULES)
def test_pure_module__imported_alone__loads_no_django(module):
    loaded = modules_loaded_by_importing(module)

    assert "django" not in loaded
    assert "rest_framework" not in loaded
    # Importing coremltools takes seconds; only parsing a model may pay for it.
    assert "coremltools" not in loaded
    assert not {"controlplane", "rollout", "experiments"} & set(loaded)
