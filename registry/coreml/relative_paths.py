"""Which relative paths (zip entry names, paths in Manifest.json) are safe to create inside a package folder."""

import re

_DRIVE_LETTER = re.compile(r"^[A-Za-z]:")
# C0 controls, DEL and C1 controls. No file name needs them; a NUL ends a name early in C (and
# Python's zipfile cuts names there too), and the others hide what a name really is in logs.
_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def unsafe_path_reason(name: str) -> str | None:
    """Why `name` must not be created under a package folder (a phrase), or None when it is safe."""
    if not name:
        return "has an empty or invalid name"
    control = _CONTROL_CHARACTER.search(name)
    if control:
        return (
            f"contains the control character U+{ord(control.group()):04X}, which no file name "
            "may hold"
        )
    if "\\" in name:
        return "contains a backslash (a Windows path)"
    if name.startswith("/"):
        return "is an absolute path"
    if _DRIVE_LETTER.match(name):
        return "starts with a drive letter"
    if any(part in ("..", ".") for part in name.rstrip("/").split("/")):
        return "contains '..' or '.' path components (it could write outside the folder)"
    if "//" in name.rstrip("/"):
        return "contains an empty path component"
    return None
