"""The reference client's check of signed assignments, against the server's signer."""

import base64
import dataclasses

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from client.signatures import AssignmentRefused, assignment_verify, public_key_from_text
from rollout.signing import (
    AssignmentClaims,
    AssignmentSigner,
    key_id_of,
    private_key_from_text,
    public_key_text,
)

APP = "0193a1b2-0000-7000-8000-000000000001"
NOW = 1_800_000_000
SIGNER = AssignmentSigner(Ed25519PrivateKey.from_private_bytes(bytes(range(32))))
TRUSTED = {SIGNER.key_id: SIGNER.public_key}
CLAIMS = AssignmentClaims(
    app=APP,
    flow="onboarding_upsell",
    flow_id=8362,
    model_id="0193a1b2-0000-7000-8000-0000000000aa",
    sha256="ab" * 32,
    min_sdk="1.4.0",
    iat=NOW - 60,
    exp=NOW + 3600,
    ver=41,
)


def entry_for(claims: AssignmentClaims, signer: AssignmentSigner = SIGNER) -> dict:
    return {
        "flow": claims.flow,
        "model_id": claims.model_id,
        "sha256": claims.sha256,
        "signature": signer.sign(claims),
    }


def refusal(entry: dict, trusted=TRUSTED, **kwargs) -> str:
    with pytest.raises(AssignmentRefused) as refused:
        assignment_verify(entry, trusted, app_id=kwargs.pop("app_id", APP), now=NOW, **kwargs)
    return refused.value.code


def test_verify__signed_by_a_trusted_key__returns_what_the_claims_bind():
    signed = assignment_verify(entry_for(CLAIMS), TRUSTED, app_id=APP, now=NOW, last_version=41)

    assert (signed.model_id, signed.sha256, signed.version) == (CLAIMS.model_id, CLAIMS.sha256, 41)
    assert (signed.issued_at, signed.expires_at, signed.min_sdk) == (NOW - 60, NOW + 3600, "1.4.0")


def test_verify__bundled_model_signed__verifies_with_null_model():
    claims = dataclasses.replace(CLAIMS, model_id=None, sha256=None, min_sdk=None)

    assert assignment_verify(entry_for(claims), TRUSTED, app_id=APP, now=NOW).model_id is None


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"signature": None}, "malformed"),
        ({"signature": "v2.a.b.c"}, "malformed"),
        ({"model_id": "0193a1b2-0000-7000-8000-0000000000bb"}, "wrong_model"),
        ({"sha256": "cd" * 32}, "wrong_model"),
        ({"flow": "paywall"}, "wrong_target"),
    ],
)
def test_verify__entry_changed_after_signing__refused(change, code):
    assert refusal({**entry_for(CLAIMS), **change}) == code


def test_verify__another_app__refused():
    assert refusal(entry_for(CLAIMS), app_id="another-app") == "wrong_target"


def test_verify__expired__refused():
    assert refusal(entry_for(dataclasses.replace(CLAIMS, exp=NOW))) == "expired"


def test_verify__older_than_the_last_accepted_version__refused():
    assert refusal(entry_for(CLAIMS), last_version=42) == "older_version"


def test_verify__key_not_trusted__refused():
    other = AssignmentSigner(Ed25519PrivateKey.generate())

    assert refusal(entry_for(CLAIMS, other)) == "unknown_key"


def test_verify__another_key_under_a_trusted_id__refused():
    impostor = AssignmentSigner(Ed25519PrivateKey.generate(), key_id=SIGNER.key_id)

    assert refusal(entry_for(CLAIMS, impostor)) == "bad_signature"


def test_verify__claims_swapped_between_two_tokens__refused():
    token = entry_for(CLAIMS)["signature"]
    other = entry_for(dataclasses.replace(CLAIMS, ver=99))["signature"]
    head, key, _, signature = token.split(".")
    spliced = ".".join([head, key, other.split(".")[2], signature])

    assert refusal({**entry_for(CLAIMS), "signature": spliced}) == "bad_signature"


@given(position=st.integers(min_value=0), replacement=st.sampled_from("AQgw_-"))
def test_verify__any_character_of_the_token_changed__refused(position, replacement):
    token = entry_for(CLAIMS)["signature"]
    position %= len(token)
    if token[position] == replacement:
        return
    tampered = token[:position] + replacement + token[position + 1 :]

    with pytest.raises(AssignmentRefused):
        assignment_verify(
            {**entry_for(CLAIMS), "signature": tampered}, TRUSTED, app_id=APP, now=NOW
        )


def test_rotation__device_trusting_old_and_new_keys__accepts_both():
    new = AssignmentSigner(Ed25519PrivateKey.generate())
    both = {**TRUSTED, new.key_id: new.public_key}

    for signer in (SIGNER, new):
        assert assignment_verify(entry_for(CLAIMS, signer), both, app_id=APP, now=NOW).version == 41


def test_key_texts__as_printed_by_the_command__round_trip():
    seed = base64.b64encode(bytes(range(32))).decode()
    key = private_key_from_text(seed)
    public = public_key_from_text(public_key_text(key.public_key()))

    assert key_id_of(public) == SIGNER.key_id
    with pytest.raises(ValueError):
        private_key_from_text(base64.b64encode(b"short").decode())


def test_verify__signature_with_unused_low_bits_set__refused_as_not_canonical():
    token = entry_for(CLAIMS)["signature"]
    head, signature = token.rsplit(".", 1)
    # 64 bytes leave 4 unused bits in the last character; setting them keeps the bytes.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(signature[-1])
    assert last & 0b1111 == 0
    spelled_otherwise = f"{head}.{signature[:-1]}{alphabet[last | 0b1111]}"

    assert refusal({**entry_for(CLAIMS), "signature": spelled_otherwise}) == "bad_signature"
