"""
What a poll does for one device: assign each flow from the app's snapshot, note the exposures
(and, after a rollback, the devices that confirm the baseline), and encode the answer once per
distinct answer of a snapshot.
"""

import hashlib
import json
import uuid

from django.conf import settings
from django.utils import timezone

from registry.sdk_versions import format_sdk_version
from registry.storage import model_file_url

from .assignment import Assignment, assign
from .documents import AppDoc
from .exposures import baseline_confirmation_note, exposure_note
from .sdk_requests import SdkRequestError
from .signing import AssignmentClaims, AssignmentSigner, private_key_from_text

MAX_CURRENT_MODELS = 100


def current_models(text: str) -> frozenset[str]:
    if not text:
        return frozenset()
    ids = [part.strip() for part in text.split(",") if part.strip()]
    if len(ids) > MAX_CURRENT_MODELS:
        raise SdkRequestError(400, "invalid_current", "current lists too many model ids.")
    try:
        return frozenset(str(uuid.UUID(part)) for part in ids)
    except ValueError:
        raise SdkRequestError(
            400, "invalid_current", "current must be comma-separated model ids (UUIDs)."
        ) from None


_signers: dict[str, AssignmentSigner] = {}


def _signer() -> AssignmentSigner | None:
    """The configured signer (None: unsigned), built once per key."""
    text = settings.ASSIGNMENT_SIGNING_KEY
    if not text:
        return None
    signer = _signers.get(text)
    if signer is None:
        _signers.clear()
        signer = _signers[text] = AssignmentSigner(private_key_from_text(text))
    return signer


def _signature(doc: AppDoc, assignment: Assignment, signer: AssignmentSigner) -> str:
    model, issued = assignment.model, int(doc.built_at.timestamp())
    return signer.sign(
        AssignmentClaims(
            app=doc.app_id,
            flow=assignment.flow.name,
            flow_id=assignment.flow.flow_id,
            model_id=model.model_id if model else None,
            sha256=model.sha256 if model else None,
            min_sdk=format_sdk_version(model.min_sdk) if model else None,
            iat=issued,
            exp=issued + settings.ASSIGNMENT_SIGNATURE_TTL_SECONDS,
            ver=doc.version,
        )
    )


def _entry(doc: AppDoc, assignment: Assignment, base_url: str) -> dict:
    flow, model = assignment.flow, assignment.model
    entry = {
        "flow": flow.name,
        "flow_id": flow.flow_id,
        "model_id": None,
        "url": None,
        "sha256": None,
        "size": None,
        "format": None,
        "signature": None,
        "rollout": None,
    }
    if model is not None:
        entry.update(
            model_id=model.model_id,
            url=model_file_url(model.storage_key, base_url=base_url),
            sha256=model.sha256,
            size=model.size,
            format=model.format,
        )
    if assignment.rollout_id is not None:
        entry["rollout"] = {"id": assignment.rollout_id, "arm": assignment.arm}
    signer = _signer()
    if signer is not None:
        entry["signature"] = _signature(doc, assignment, signer)
    return entry


def _record(assignment: Assignment, device_id: str, sdk_text: str, current: frozenset[str]):
    """Note the exposure, and after a rollback, whether the device confirmed the baseline."""
    if assignment.rollout_id is not None:
        exposure_note(
            rollout_id=assignment.rollout_id,
            device_id=device_id,
            arm=assignment.arm,
            bucket=assignment.bucket,
            sdk_version=sdk_text,
        )
    if not current:
        return
    for rolled_back in assignment.flow.rolled_back:
        bad = {arm.model.model_id for arm in rolled_back.arms}
        if current & bad:
            continue  # still runs a rolled-back model
        runs_baseline = assignment.model is None or assignment.model.model_id in current
        if rolled_back.baseline is not None and rolled_back.baseline.model_id in current:
            runs_baseline = True
        if not runs_baseline:
            continue  # the ids it sent say nothing about this flow
        _, arm = rolled_back.placement(device_id)
        if arm is not None:
            baseline_confirmation_note(rollout_id=rolled_back.id, device_id=device_id)


def assignments_for(
    doc: AppDoc,
    *,
    device_id: str,
    sdk: tuple[int, int, int],
    sdk_text: str,
    flow_name: str | None,
    current: frozenset[str],
) -> list[Assignment]:
    if flow_name is not None:
        if flow_name not in doc.flows:
            raise SdkRequestError(404, "flow_not_found", f"This app has no flow '{flow_name}'.")
        flows = [doc.flows[flow_name]]
    else:
        flows = list(doc.flows.values())
    assignments = []
    for flow in flows:
        assignment = assign(flow, device_id, sdk)
        _record(assignment, device_id, sdk_text, current)
        assignments.append(assignment)
    return assignments


def device_assignments_encoded(
    doc: AppDoc, *, device_id: str, sdk: tuple[int, int, int], sdk_text: str, base_url: str
) -> bytes:
    """The assignments body for one device as JSON bytes, noting exposures on the way."""
    assignments = assignments_for(
        doc, device_id=device_id, sdk=sdk, sdk_text=sdk_text, flow_name=None, current=frozenset()
    )
    return assignments_encoded(doc, assignments, base_url=base_url)[0]


def device_assignments(
    doc: AppDoc, *, device_id: str, sdk: tuple[int, int, int], sdk_text: str, base_url: str
) -> dict:
    """The assignments body for one device, noting exposures on the way."""
    return json.loads(
        device_assignments_encoded(
            doc, device_id=device_id, sdk=sdk, sdk_text=sdk_text, base_url=base_url
        )
    )


def assignments_encoded(
    doc: AppDoc, assignments: list[Assignment], *, base_url: str, single: bool = False
) -> tuple[bytes, str]:
    """The answer's JSON bytes and ETag: the assignments body, or one flow's entry (single)."""
    poll_after = doc.poll_after_s(timezone.now())
    key = (
        single,
        base_url,
        poll_after,
        settings.ASSIGNMENT_SIGNING_KEY,
        tuple(
            (a.flow.name, a.model.model_id if a.model else None, a.rollout_id, a.arm)
            for a in assignments
        ),
    )

    def build():
        entries = [_entry(doc, assignment, base_url) for assignment in assignments]
        return entries[0] if single else {"poll_after_s": poll_after, "models": entries}

    return _encoded(doc, key, build)


def _encoded(doc: AppDoc, key: tuple, build) -> tuple[bytes, str]:
    """The JSON bytes and ETag of an answer, built once per distinct answer of a snapshot.

    A snapshot has only a handful of distinct answers (one per arm combination), so most
    polls reuse bytes encoded before instead of encoding and hashing them again.
    """
    memo = doc.encoded_answers
    found = memo.get(key)
    if found is None:
        payload = json.dumps(build(), separators=(",", ":")).encode()
        found = (payload, '"' + hashlib.blake2b(payload, digest_size=16).hexdigest() + '"')
        if len(memo) > 4096:
            memo.clear()
        memo[key] = found
    return found
