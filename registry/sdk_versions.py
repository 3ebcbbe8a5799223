"""SDK versions: strict semantic versions `MAJOR.MINOR.PATCH`, compared numerically."""

import re

_SEMVER = re.compile(r"(0|[1-9]\d{0,5})\.(0|[1-9]\d{0,5})\.(0|[1-9]\d{0,5})")

SdkVersion = tuple[int, int, int]


class InvalidSdkVersion(ValueError):
    pass


def parse_sdk_version(text: str) -> SdkVersion:
    """Return `(major, minor, patch)`, or raise InvalidSdkVersion with a sentence saying why."""
    match = _SEMVER.fullmatch(text or "")
    if match is None:
        raise InvalidSdkVersion(
            f"'{text}' is not an SDK version: expected MAJOR.MINOR.PATCH, such as 1.4.0."
        )
    major, minor, patch = (int(part) for part in match.groups())
    return major, minor, patch


def format_sdk_version(version: SdkVersion) -> str:
    return ".".join(str(part) for part in version)
