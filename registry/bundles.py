"""Per-customer SDK bundles: the baseline model files a build pipeline embeds in an app's SDK."""

import hashlib
import json
import os
from pathlib import Path

from controlplane.errors import Conflict

from .models import App
from .selectors import bundle_manifest
from .storage import model_file_open


def bundle_export(*, app: App, folder: Path, base_url: str = "") -> dict:
    """Write `manifest.json` and every baseline file into a folder; verify each file's sha256.

    A file whose bytes do not match the sha256 recorded at upload is refused: shipping it inside
    an app binary would be far harder to undo than a bad download.
    """
    folder.mkdir(parents=True, exist_ok=True)
    manifest = bundle_manifest(app=app, base_url=base_url)
    for entry in manifest["customModels"]:
        key = f"models/{entry['sha256']}/{entry['fileName']}"
        target = folder / entry["fileName"]
        digest = hashlib.sha256()
        partial = target.with_name(target.name + ".partial")
        with model_file_open(key) as source, partial.open("wb") as out:
            for chunk in iter(lambda: source.read(1024 * 1024), b""):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != entry["sha256"]:
            partial.unlink()
            raise Conflict(
                f"Stored file of model {entry['modelVersion']} has sha256 {digest.hexdigest()}, "
                f"not {entry['sha256']}: storage is corrupt; nothing was bundled for it.",
                code="checksum_mismatch",
            )
        os.replace(partial, target)
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
