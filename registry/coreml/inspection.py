"""The entry point: read a file from disk as an .mlmodel or a zipped .mlpackage, and describe it or refuse it."""

from pathlib import Path

from .archive import unpacked_package
from .description import describe_spec
from .model_description import MLMODEL, ModelDescription
from .package import read_package_dir
from .protobuf import parse_spec
from .rejection import ModelRejected
from .sniffing import SNIFF_BYTES, is_zip, refuse_known_non_models

DEFAULT_MAX_UNPACKED_BYTES = 500 * 1024 * 1024
DEFAULT_MAX_ARCHIVE_FILES = 1000


def inspect_model(
    path,
    *,
    max_unpacked_bytes: int = DEFAULT_MAX_UNPACKED_BYTES,
    max_archive_files: int = DEFAULT_MAX_ARCHIVE_FILES,
) -> ModelDescription:
    """Read a .mlmodel file, or a ZIP of an .mlpackage, from a path on disk. Raise ModelRejected otherwise.

    An unzipped .mlpackage directory is accepted too (it is what a zip becomes once extracted).
    """
    path = Path(path)
    if path.is_dir():
        return read_package_dir(path)
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            head = handle.read(SNIFF_BYTES)
    except OSError as error:
        raise ModelRejected(
            "unreadable", f"The file could not be read: {error.strerror}."
        ) from None

    if size == 0:
        raise ModelRejected(
            "empty", "The file is empty (0 bytes). Upload the .mlmodel file itself."
        )
    refuse_known_non_models(head)
    if is_zip(head):
        with unpacked_package(
            path, max_bytes=max_unpacked_bytes, max_files=max_archive_files
        ) as root:
            return read_package_dir(root)
    if size > max_unpacked_bytes:
        raise ModelRejected(
            "too_large",
            f"The file is {size:,} bytes; the limit is {max_unpacked_bytes:,} bytes.",
        )
    return describe_spec(parse_spec(path.read_bytes()), MLMODEL)
