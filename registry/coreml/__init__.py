"""Read an uploaded Core ML file (.mlmodel, or a zipped .mlpackage), describe it, and refuse what cannot ship.

Pure: the standard library only, plus coremltools' protobuf classes, imported when a file is
parsed (importing coremltools takes seconds). The modules, in the order a file meets them:

- `inspection`: `inspect_model`, the entry point, and its default limits.
- `sniffing`: known non-models (Git LFS pointers, compressed files, other archives) by their first bytes.
- `archive`: a zip's safety (entry count, names, links, sizes) checked before unpacking, then unpacking.
- `relative_paths`: which names may be created inside a package folder.
- `package`: an unpacked .mlpackage folder (Manifest.json, the root model, ML-program weights).
- `protobuf`: parsing a spec, and telling a cut-short file from one that is not a model.
- `description`, `features`, `ml_program`: the description of a parsed spec and its warnings.
- `model_description`, `rejection`: the values inspection returns and the exception it raises.

Whether a model fits a flow is `registry.interfaces`' business.
"""

from .description import KNOWN_MAX_SPEC_VERSION
from .inspection import DEFAULT_MAX_ARCHIVE_FILES, DEFAULT_MAX_UNPACKED_BYTES, inspect_model
from .model_description import MLMODEL, MLPACKAGE, FeatureDescription, ModelDescription
from .rejection import ModelRejected

__all__ = [
    "DEFAULT_MAX_ARCHIVE_FILES",
    "DEFAULT_MAX_UNPACKED_BYTES",
    "KNOWN_MAX_SPEC_VERSION",
    "MLMODEL",
    "MLPACKAGE",
    "FeatureDescription",
    "ModelDescription",
    "ModelRejected",
    "inspect_model",
]
