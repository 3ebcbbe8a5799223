"""Known non-models, told apart by their first bytes before protobuf would call them all "corrupt"."""

import re

from .rejection import ModelRejected

# How much of the file's start the sniffing reads (a tar header's "ustar" sits at 257).
SNIFF_BYTES = 1024

# Compressed single files, by magic number: (prefix, name).
_COMPRESSED_MAGIC = (
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
)
_OTHER_ARCHIVE_MAGIC = (
    (b"7z\xbc\xaf\x27\x1c", "7-Zip"),
    (b"Rar!\x1a\x07", "RAR"),
)
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")


def is_zip(head: bytes) -> bool:
    return head.startswith(_ZIP_MAGIC)


def refuse_known_non_models(head: bytes) -> None:
    """Raise ModelRejected when the first bytes show a Git LFS pointer, a compressed file or a non-zip archive."""
    # LFS pointers and compressed files both fail protobuf with the same vague "Wire format
    # was corrupt", so they are recognised first and told apart.
    if head.startswith(b"version https://git-lfs"):
        text = head.decode("ascii", "replace")
        size = re.search(r"^size (\d+)", text, re.MULTILINE)
        names = f" of {int(size.group(1)):,} bytes" if size else ""
        raise ModelRejected(
            "git_lfs_pointer",
            f"This is a Git LFS pointer file, not the model: it only names a stored object{names}. "
            "Fetch the real file (git lfs pull) and upload that.",
        )
    for magic, kind in _COMPRESSED_MAGIC:
        if head.startswith(magic):
            raise ModelRejected(
                "compressed",
                f"The file is {kind}-compressed. Decompress it first and upload the .mlmodel inside "
                "(or zip an .mlpackage folder).",
            )
    archive = next((kind for magic, kind in _OTHER_ARCHIVE_MAGIC if head.startswith(magic)), None)
    if archive is None and head[257:262] == b"ustar":
        archive = "tar"
    if archive is not None:
        raise ModelRejected(
            "unsupported_archive",
            f"The file is a {archive} archive. Upload a single .mlmodel file, or an .mlpackage folder "
            "compressed as a .zip.",
        )
