"""A zipped .mlpackage: refuse unsafe or oversized zips before unpacking, then unpack within the limits."""

import os
import re
import stat
import struct
import tempfile
import unicodedata
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from .rejection import ModelRejected
from .relative_paths import unsafe_path_reason

_COPY_CHUNK = 1024 * 1024
_IGNORED_ARCHIVE_ENTRY = re.compile(r"(^|/)(__MACOSX/|\.DS_Store$)")


@contextmanager
def unpacked_package(path: Path, *, max_bytes: int, max_files: int) -> Iterator[Path]:
    """Unpack the zip at `path` into a temporary folder that holds the package's Manifest.json at its root.

    Everything that can be judged from the zip's records is checked before a byte is unpacked;
    the folder is removed when the block ends. Raise ModelRejected when the zip is refused.
    """
    declared = _declared_entry_count(path)
    if declared is not None and declared > max_files:
        raise _too_many_files(declared, max_files)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError) as error:
        raise ModelRejected("unreadable", f"The zip file is damaged: {error}.") from None
    with archive:
        entries = archive.infolist()
        if len(entries) > max_files:
            raise _too_many_files(len(entries), max_files)
        _check_entries_are_safe(entries)
        total = sum(entry.file_size for entry in entries)
        if total > max_bytes:
            raise ModelRejected(
                "too_large",
                f"Unpacked, the zip would be {total:,} bytes; the limit is {max_bytes:,} bytes.",
            )
        kept = [entry for entry in entries if not _IGNORED_ARCHIVE_ENTRY.search(entry.filename)]
        prefix = _package_prefix([entry.filename for entry in kept])
        with tempfile.TemporaryDirectory(prefix="cohort-mlpackage-") as scratch:
            root = Path(scratch) / "package"
            root.mkdir()
            _extract(
                archive, [e for e in kept if e.filename.startswith(prefix)], prefix, root, max_bytes
            )
            yield root


def _too_many_files(count: int, limit: int) -> ModelRejected:
    return ModelRejected(
        "too_many_files",
        f"The zip holds {count:,} entries; at most {limit:,} are accepted for one .mlpackage.",
    )


def _declared_entry_count(path: Path) -> int | None:
    """Entry count from the end-of-central-directory record, read before zipfile loads every entry."""
    with path.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(max(0, size - 65557))
        tail = handle.read()
    at = tail.rfind(b"PK\x05\x06")
    # The record ends the file except for its comment, whose length it states.
    while at >= 0 and (
        len(tail) < at + 22
        or struct.unpack("<H", tail[at + 20 : at + 22])[0] != len(tail) - at - 22
    ):
        at = tail.rfind(b"PK\x05\x06", 0, at)
    if at < 0:
        return None
    count = struct.unpack("<H", tail[at + 10 : at + 12])[0]
    if count != 0xFFFF:
        return count
    locator = at - 20
    if locator < 0 or tail[locator : locator + 4] != b"PK\x06\x07":
        return None
    record_offset = struct.unpack("<Q", tail[locator + 8 : locator + 16])[0]
    with path.open("rb") as handle:
        handle.seek(record_offset)
        record = handle.read(56)
    if len(record) < 40 or record[:4] != b"PK\x06\x06":
        return None
    return struct.unpack("<Q", record[32:40])[0]


def _check_entries_are_safe(entries: list[zipfile.ZipInfo]) -> None:
    seen: dict[str, str] = {}
    for entry in entries:
        # zipfile cuts `filename` at a NUL; `orig_filename` is the name as the zip records it.
        name = entry.orig_filename
        unsafe = unsafe_path_reason(name)
        if unsafe:
            raise ModelRejected(
                "unsafe_archive", f"The zip entry {name!r} {unsafe}; it was refused."
            )
        mode = entry.external_attr >> 16
        kind = stat.S_IFMT(mode)
        if kind == stat.S_IFLNK:
            raise ModelRejected(
                "unsafe_archive",
                f"The zip entry {name!r} is a symbolic link; a model package must hold only "
                "files and folders.",
            )
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise ModelRejected(
                "unsafe_archive",
                f"The zip entry {name!r} is a special file (not a file or folder).",
            )
        if entry.flag_bits & 0x1:
            raise ModelRejected(
                "unsafe_archive",
                f"The zip entry {name!r} is encrypted. Upload a zip without a password.",
            )
        # macOS file systems ignore case and Unicode normalisation, so these would collide there.
        key = unicodedata.normalize("NFC", name.rstrip("/")).casefold()
        if key in seen:
            raise ModelRejected(
                "unsafe_archive",
                f"The zip holds {seen[key]!r} and {name!r}, which name the same file.",
            )
        seen[key] = name


def _package_prefix(names: list[str]) -> str:
    """Where Manifest.json sits: at the root ("") or inside a single top-level folder ("X.mlpackage/")."""
    if "Manifest.json" in names:
        return ""
    tops = {name.split("/", 1)[0] for name in names}
    if len(tops) == 1:
        top = tops.pop()
        if f"{top}/Manifest.json" in names:
            return f"{top}/"
    files = [name for name in names if not name.endswith("/")]
    mlmodels = [name for name in files if name.lower().endswith(".mlmodel")]
    if any(PurePosixPath(name).name == "coremldata.bin" for name in files):
        hint = (
            " It looks like a compiled model (.mlmodelc); upload the source .mlmodel or "
            ".mlpackage instead."
        )
    elif len(mlmodels) == 1 and not any("Manifest.json" in name for name in files):
        hint = f" It holds {mlmodels[0]!r}: upload that .mlmodel file directly, not zipped."
    elif len(tops) > 1:
        hint = " Zip exactly one .mlpackage folder (or its contents)."
    else:
        hint = ""
    raise ModelRejected(
        "not_mlpackage",
        "The zip is not an .mlpackage: there is no Manifest.json at its root or inside a "
        f"single top-level folder.{hint}",
    )


def _extract(
    archive: zipfile.ZipFile,
    entries: list[zipfile.ZipInfo],
    prefix: str,
    root: Path,
    max_bytes: int,
) -> None:
    written = 0
    resolved_root = root.resolve()
    for entry in entries:
        relative = entry.filename[len(prefix) :]
        if not relative:
            continue
        target = (root / relative).resolve()
        if resolved_root not in target.parents:
            raise ModelRejected(
                "unsafe_archive", f"The zip entry {entry.filename!r} points outside the package."
            )
        try:
            if entry.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            entry_written = 0
            with archive.open(entry) as source, target.open("xb") as sink:
                while chunk := source.read(_COPY_CHUNK):
                    entry_written += len(chunk)
                    written += len(chunk)
                    # Headers can lie about sizes, so the bytes actually produced are what count.
                    if written > max_bytes or entry_written > entry.file_size:
                        raise ModelRejected(
                            "too_large",
                            f"Unpacking {entry.filename!r} produced more data than the zip declares "
                            f"or than the {max_bytes:,}-byte limit allows.",
                        )
                    sink.write(chunk)
        except ModelRejected:
            raise
        except (zipfile.BadZipFile, EOFError, zlib.error) as error:
            raise ModelRejected(
                "unreadable",
                f"The zip entry {entry.filename!r} is damaged: its data does not match the zip's "
                f"records ({error}).",
            ) from None
        except NotImplementedError as error:
            raise ModelRejected(
                "unreadable",
                f"The zip entry {entry.filename!r} uses an unsupported compression method ({error}). "
                "Re-create the zip with standard (deflate) compression.",
            ) from None
        except OSError as error:
            raise ModelRejected(
                "unreadable",
                f"The zip entry {entry.filename!r} could not be unpacked: {error.strerror or error}.",
            ) from None
