"""
Signed, expiring assignments (pure: no Django).

With a signing key configured, every entry of a poll's answer carries `signature`, a compact
token that binds what the device is told to run to the app, an issue time, an expiry and a
monotonic version:

    v1.<key id>.<claims>.<signature>

`claims` is the base64url (unpadded) of canonical JSON (sorted keys, no spaces, UTF-8):
`app` (app id), `flow` (name), `flow_id` (the app's number), `model_id`, `sha256`, `min_sdk`
(null for the bundled model), `iat` and `exp` (Unix seconds), and `ver`, which never goes
down for a flow. `signature` is the base64url Ed25519 signature over the ASCII bytes
`v1.<key id>.<claims>`. The key id names the public key, so a device can trust two keys while
one replaces the other (docs/sdk.md, "Signed assignments").

A device checks it before acting on the entry: the reference client's
`client/signatures.py` is the verifier, and the tests hold this module to it.
"""

import base64
import hashlib
import json
from dataclasses import asdict, dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

FORMAT = "v1"


@dataclass(frozen=True)
class AssignmentClaims:
    app: str
    flow: str
    flow_id: int
    model_id: str | None
    sha256: str | None
    min_sdk: str | None
    iat: int
    exp: int
    ver: int

    def canonical(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def public_key_text(public_key: Ed25519PublicKey) -> str:
    """The raw 32-byte public key, base64url: what an app embeds to verify."""
    return _b64(public_key.public_bytes(Encoding.Raw, PublicFormat.Raw))


def key_id_of(public_key: Ed25519PublicKey) -> str:
    """A short, stable name for a public key: the first 8 bytes of its SHA-256, hex."""
    return hashlib.sha256(public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)).hexdigest()[:16]


def private_key_from_text(text: str) -> Ed25519PrivateKey:
    """The key from its 32-byte seed, base64 or base64url (what `signing_key_new` prints)."""
    seed = _unb64(text.strip().replace("+", "-").replace("/", "_"))
    if len(seed) != 32:
        raise ValueError("An Ed25519 signing key is 32 bytes, base64-encoded.")
    return Ed25519PrivateKey.from_private_bytes(seed)


class AssignmentSigner:
    def __init__(self, private_key: Ed25519PrivateKey, key_id: str | None = None):
        self._key = private_key
        self.public_key = private_key.public_key()
        self.key_id = key_id or key_id_of(self.public_key)

    def sign(self, claims: AssignmentClaims) -> str:
        head = f"{FORMAT}.{self.key_id}.{_b64(claims.canonical())}"
        return f"{head}.{_b64(self._key.sign(head.encode()))}"
