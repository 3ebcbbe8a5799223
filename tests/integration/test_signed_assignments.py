"""Signed, expiring assignments from the poll, checked by the reference client."""

import base64
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from django.core.management import call_command

from client.signatures import AssignmentRefused, assignment_verify, public_key_from_text
from controlplane.config_version import config_version_read
from rollout import services
from rollout.cache import assignment_cache

pytestmark = pytest.mark.django_db


def new_key() -> tuple[str, dict]:
    key = Ed25519PrivateKey.generate()
    seed = base64.b64encode(key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()))
    from rollout.signing import key_id_of

    return seed.decode(), {key_id_of(key.public_key()): key.public_key()}


@pytest.fixture
def signing(settings):
    seed, trusted = new_key()
    settings.ASSIGNMENT_SIGNING_KEY = seed
    assignment_cache.clear()
    return trusted


def entries(poll, setup, device="IDFV-1", **kwargs):
    return poll(setup["key"], device, **kwargs).json()["models"]


def test_poll__no_signing_key__signature_null(poll, sdk_setup):
    assert [e["signature"] for e in entries(poll, sdk_setup)] == [None]


def test_poll__signing_key_set__every_entry_verifies_for_its_app(poll, sdk_setup, signing):
    [entry] = entries(poll, sdk_setup)

    signed = assignment_verify(
        entry, signing, app_id=str(sdk_setup["flow"].app_id), now=int(time.time())
    )

    baseline = sdk_setup["baseline"]
    assert (signed.model_id, signed.sha256) == (str(baseline.pk), baseline.sha256)
    assert signed.min_sdk == baseline.min_sdk_version
    assert signed.version == config_version_read()
    assert signed.expires_at - signed.issued_at == 48 * 3600
    assert abs(signed.issued_at - time.time()) < 60


def test_poll__rollout_started__new_answer_signed_higher_and_the_old_one_refused_as_older(
    poll, sdk_setup, signing
):
    app_id = str(sdk_setup["flow"].app_id)
    [old_entry] = entries(poll, sdk_setup)
    before = assignment_verify(old_entry, signing, app_id=app_id, now=int(time.time()))
    rollout = services.rollout_create(
        flow=sdk_setup["flow"],
        challengers=[{"model_id": str(sdk_setup["challenger"].pk), "stages": [100]}],
        actor="test",
    )
    services.rollout_start(rollout=rollout, actor="test")

    [entry] = entries(poll, sdk_setup)
    after = assignment_verify(
        entry, signing, app_id=app_id, now=int(time.time()), last_version=before.version
    )

    assert entry["rollout"]["arm"] == "challenger-1"
    assert after.model_id == str(sdk_setup["challenger"].pk)
    assert after.version > before.version
    # The old answer replayed to a device that has seen the new one: refused, not obeyed.
    with pytest.raises(AssignmentRefused) as replayed:
        assignment_verify(
            old_entry, signing, app_id=app_id, now=int(time.time()), last_version=after.version
        )
    assert replayed.value.code == "older_version"


def test_poll__answer_replayed_after_expiry__refused(poll, sdk_setup, signing, settings):
    settings.ASSIGNMENT_SIGNATURE_TTL_SECONDS = 60
    [entry] = entries(poll, sdk_setup)

    with pytest.raises(AssignmentRefused) as refused:
        assignment_verify(
            entry, signing, app_id=str(sdk_setup["flow"].app_id), now=int(time.time()) + 61
        )
    assert refused.value.code == "expired"


def test_poll__snapshot_past_half_its_signatures_life__signed_anew(
    poll, sdk_setup, signing, settings
):
    settings.ASSIGNMENT_SIGNATURE_TTL_SECONDS = 2
    first = entries(poll, sdk_setup, fresh=False)[0]["signature"]
    assert entries(poll, sdk_setup, fresh=False)[0]["signature"] == first
    time.sleep(1.1)

    again = entries(poll, sdk_setup, fresh=False)[0]

    assert again["signature"] != first
    assignment_verify(again, signing, app_id=str(sdk_setup["flow"].app_id), now=int(time.time()))


def test_poll__signed_and_warm__makes_no_query(poll, sdk_setup, signing, django_assert_num_queries):
    entries(poll, sdk_setup)

    with django_assert_num_queries(0):
        [entry] = entries(poll, sdk_setup, device="IDFV-2", fresh=False)
    assert entry["signature"].startswith("v1.")


def test_rotation__server_switches_keys__device_trusting_both_accepts_old_refuses_unknown(
    poll, sdk_setup, signing, settings
):
    app_id = str(sdk_setup["flow"].app_id)
    old_entry = entries(poll, sdk_setup)[0]
    seed, new_trusted = new_key()
    settings.ASSIGNMENT_SIGNING_KEY = seed

    new_entry = entries(poll, sdk_setup)[0]

    both = {**signing, **new_trusted}
    now = int(time.time())
    for entry in (old_entry, new_entry):
        assert assignment_verify(entry, both, app_id=app_id, now=now).model_id is not None
    with pytest.raises(AssignmentRefused) as refused:
        assignment_verify(new_entry, signing, app_id=app_id, now=now)
    assert refused.value.code == "unknown_key"


def test_signing_key_command__new_then_show__prints_the_same_public_key(settings, capsys):
    call_command("signing_key", "new")
    made = capsys.readouterr().out.splitlines()
    settings.ASSIGNMENT_SIGNING_KEY = made[0].split("=", 1)[1]

    call_command("signing_key", "show")
    shown = capsys.readouterr().out.splitlines()

    assert shown == made[1:]
    public_key_from_text(shown[1].rsplit(" ", 1)[1])


def test_signing_key_command__setting_only__prints_just_the_env_line(capsys):
    call_command("signing_key", "new", "--setting-only")

    [line] = capsys.readouterr().out.splitlines()
    assert line.startswith("ASSIGNMENT_SIGNING_KEY=")
