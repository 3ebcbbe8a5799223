"""An unpacked .mlpackage folder: its Manifest.json, the root model it names, and an ML program's weights."""

import json
from pathlib import Path

from .description import describe_spec
from .ml_program import blob_references
from .model_description import MLPACKAGE, ModelDescription
from .protobuf import parse_spec
from .rejection import ModelRejected
from .relative_paths import unsafe_path_reason

_MAX_MANIFEST_BYTES = 1024 * 1024


def read_package_dir(root: Path) -> ModelDescription:
    """Describe the .mlpackage folder `root`, or raise ModelRejected saying what is missing or wrong."""
    manifest_path = root / "Manifest.json"
    if not manifest_path.is_file():
        raise ModelRejected("not_mlpackage", "The package has no Manifest.json at its root.")
    if manifest_path.stat().st_size > _MAX_MANIFEST_BYTES:
        raise ModelRejected("unreadable", "The package's Manifest.json is implausibly large.")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelRejected(
            "unreadable", f"The package's Manifest.json is not valid JSON ({error})."
        ) from None
    if not isinstance(manifest, dict):
        raise ModelRejected("unreadable", "The package's Manifest.json is not a JSON object.")
    items = manifest.get("itemInfoEntries")
    root_id = manifest.get("rootModelIdentifier")
    if not isinstance(items, dict) or not isinstance(items.get(root_id), dict):
        raise ModelRejected(
            "unreadable",
            "The package's Manifest.json does not name its root model "
            "(rootModelIdentifier must be a key of itemInfoEntries).",
        )
    data_dir = root / "Data"
    for identifier, item in items.items():
        item_path = item.get("path") if isinstance(item, dict) else None
        if not isinstance(item_path, str) or unsafe_path_reason(item_path):
            raise ModelRejected(
                "unreadable",
                f"The package's Manifest.json gives item {identifier} an invalid path.",
            )
        if not (data_dir / item_path).exists():
            what = item.get("description") or item.get("name") or "an item"
            raise ModelRejected(
                "unreadable",
                f"The package is incomplete: Manifest.json lists Data/{item_path} ({what}), "
                "but the package does not contain it. Zip the whole .mlpackage folder.",
            )
    model_file = data_dir / items[root_id]["path"]
    if not model_file.is_file():
        raise ModelRejected(
            "unreadable", f"The package's root model Data/{items[root_id]['path']} is not a file."
        )
    spec = parse_spec(model_file.read_bytes())
    description = describe_spec(spec, MLPACKAGE)
    _check_weight_files(spec, model_file.parent)
    return description


def _check_weight_files(spec, model_dir: Path) -> None:
    # An ML program keeps its weights beside the spec ("@model_path/weights/weight.bin"); a
    # package that lost them parses fine here but fails to load on the device.
    for file_name, offset in blob_references(spec):
        relative = file_name.removeprefix("@model_path/")
        blob = model_dir / relative
        if unsafe_path_reason(relative) or not blob.is_file():
            raise ModelRejected(
                "unreadable",
                f"The ML program's weights are missing: it needs {relative}, which is not in the "
                "package. Zip the whole .mlpackage folder, including weights/.",
            )
        if offset >= blob.stat().st_size:
            raise ModelRejected(
                "unreadable",
                f"The ML program's weight file {relative} is shorter than the model expects "
                "(truncated copy?).",
            )
