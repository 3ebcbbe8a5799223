"""Cohort hashing: map `(salt, device_id)` to a stable bucket in `[0, 10 000)` (basis points).

Contract (stdlib only, no Django; the SDK may one day evaluate it on the device):

    message = UTF-8 bytes of  salt + ":" + device_id
    digest  = SHA-256(message)                       # 32 bytes
    bucket  = uint64_big_endian(digest[0:8]) % 10000

- Strings are encoded exactly as given: no Unicode normalisation, trimming or case folding.
  "é" as U+00E9 and "e" + U+0301 are different devices, and so are an uppercase IDFV and its
  lowercase spelling. An SDK must send, and hash, the identifier byte for byte as stored.
- The first 8 digest bytes are read as an UNSIGNED 64-bit big-endian integer (Swift: fold
  the bytes into a UInt64; Kotlin/Java: `java.lang.Long.remainderUnsigned`; JavaScript:
  BigInt). A signed read gives wrong buckets for every digest whose first bit is set, i.e.
  about half of all devices.
- Modulo bias: 2^64 mod 10000 = 1616, so buckets 0..1615 each have 1 844 674 407 370 956
  preimages and buckets 1616..9999 have 1 844 674 407 370 955: a relative excess of
  5.4e-16, far below anything a rollout or an experiment could measure.
- Salts from `new_salt()` are hex and never contain ":", so a message splits back into
  exactly one `(salt, device_id)` pair; device ids may contain ":" freely.
- Published test vectors: `docs/hashing/bucket-vectors.json` (pinned by the unit tests).
"""

import hashlib
import secrets

BUCKETS = 10_000

_SALT_BYTES = 16


def bucket(salt: str, device_id: str) -> int:
    """Return the device's bucket in `[0, BUCKETS)` for this salt."""
    # Refuse bytes/None/ints: f-string formatting would silently hash "b'...'" or "None".
    if not isinstance(salt, str):
        raise TypeError(f"salt must be a str, not {type(salt).__name__}.")
    if not isinstance(device_id, str):
        raise TypeError(f"device_id must be a str, not {type(device_id).__name__}.")
    digest = hashlib.sha256(f"{salt}:{device_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def new_salt() -> str:
    """Return a fresh random salt: 16 bytes as 32 lowercase hex characters."""
    return secrets.token_hex(_SALT_BYTES)
