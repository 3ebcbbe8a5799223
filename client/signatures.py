"""
Checking a signed assignment before acting on it (docs/sdk.md, "Signed assignments").

An entry's `signature` is `v1.<key id>.<claims>.<signature>`: `claims` is base64url (unpadded)
JSON, and `signature` the base64url Ed25519 signature over the ASCII bytes
`v1.<key id>.<claims>`. A device trusts the public keys its app ships with, by key id: two
while one replaces the other.

The checks, in this order (the first failure is the answer, with a stable code):
1. `malformed`: not four dot-separated parts starting with `v1`.
2. `unknown_key`: no trusted key has that id.
3. `bad_signature`: the signature does not verify, or the claims are not the expected JSON.
4. `wrong_target`: the claims name another app or flow than the entry.
5. `wrong_model`: the claims name another model id or sha256 than the entry (the downloaded
   file is then checked against the same sha256).
6. `expired`: `exp` is not in the future.
7. `older_version`: `ver` is lower than the last version accepted for that flow (a replayed
   older answer, or a process that has not seen a newer change yet).
On any failure the device keeps the model it runs (its last good one, or the bundled one): an
assignment it cannot trust never turns inference off.
"""

import base64
import binascii
import json
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

FORMAT = "v1"
_CLAIMS = {"app", "flow", "flow_id", "model_id", "sha256", "min_sdk", "iat", "exp", "ver"}


class AssignmentRefused(ValueError):
    """Why a device must not act on an assignment; `code` is one of the module's codes."""

    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code = code


@dataclass(frozen=True)
class SignedAssignment:
    app: str
    flow: str
    flow_id: int
    model_id: str | None
    sha256: str | None
    min_sdk: str | None
    issued_at: int
    expires_at: int
    version: int


def _unb64(text: str) -> bytes:
    """Strict base64url: one spelling per byte string, so a token cannot be altered into
    another that still verifies."""
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if base64.urlsafe_b64encode(data).rstrip(b"=").decode() != text:
        raise ValueError("not canonical base64url")
    return data


def public_key_from_text(text: str) -> Ed25519PublicKey:
    """A public key as `manage.py signing_key show` prints it (base64url, 32 bytes)."""
    raw = _unb64(text.strip())
    if len(raw) != 32:
        raise ValueError("An Ed25519 public key is 32 bytes, base64url-encoded.")
    return Ed25519PublicKey.from_public_bytes(raw)


def assignment_verify(
    entry: dict,
    trusted_keys: dict[str, Ed25519PublicKey],
    *,
    app_id: str,
    now: int,
    last_version: int | None = None,
) -> SignedAssignment:
    """What a signed entry of a poll's answer binds, once every check passes."""
    token = entry.get("signature")
    parts = token.split(".") if isinstance(token, str) else []
    if len(parts) != 4 or parts[0] != FORMAT:
        raise AssignmentRefused("malformed", "The signature is not a v1 assignment token.")
    _, key_id, claims_text, signature_text = parts
    key = trusted_keys.get(key_id)
    if key is None:
        raise AssignmentRefused("unknown_key", f"No trusted key has id {key_id!r}.")
    try:
        key.verify(_unb64(signature_text), f"{FORMAT}.{key_id}.{claims_text}".encode())
        claims = json.loads(_unb64(claims_text))
    except (InvalidSignature, ValueError, binascii.Error):
        raise AssignmentRefused("bad_signature", "The signature does not verify.") from None
    if not isinstance(claims, dict) or set(claims) != _CLAIMS:
        raise AssignmentRefused("bad_signature", "The signed claims are not an assignment's.")
    if claims["app"] != app_id or claims["flow"] != entry.get("flow"):
        raise AssignmentRefused(
            "wrong_target", "The assignment was signed for another app or flow."
        )
    if claims["model_id"] != entry.get("model_id") or claims["sha256"] != entry.get("sha256"):
        raise AssignmentRefused("wrong_model", "The signature is for another model file.")
    if claims["exp"] <= now:
        raise AssignmentRefused("expired", "The assignment's signature has expired.")
    if last_version is not None and claims["ver"] < last_version:
        raise AssignmentRefused(
            "older_version",
            f"Version {claims['ver']} is older than {last_version}, which was already accepted.",
        )
    return SignedAssignment(
        app=claims["app"],
        flow=claims["flow"],
        flow_id=claims["flow_id"],
        model_id=claims["model_id"],
        sha256=claims["sha256"],
        min_sdk=claims["min_sdk"],
        issued_at=claims["iat"],
        expires_at=claims["exp"],
        version=claims["ver"],
    )
