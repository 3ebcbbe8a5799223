"""State changes of the registry: apps, SDK keys, flows, model uploads and baselines."""

import hashlib
import re
import tempfile
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import ProtectedError
from django.utils import timezone

from controlplane.config_version import config_version_bump
from controlplane.errors import Conflict, InvalidInput, NotFound, TooLarge
from controlplane.secrets import secret_new

from . import coreml
from .interfaces import (
    InvalidInterface,
    interface_from_description,
    interface_problems,
    interface_validate,
    signals_validate,
)
from .models import App, BaselineChange, Flow, ModelVersion, SdkKey
from .sdk_versions import InvalidSdkVersion, format_sdk_version, parse_sdk_version
from .storage import model_file_save, model_storage_key

SDK_KEY_PREFIX = "cohort_sdk_"
_BUNDLE_ID = re.compile(r"^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")
_CHUNK = 1024 * 1024


def _validation_error_to_invalid(error: ValidationError) -> InvalidInput:
    fields = {name: [str(m) for m in messages] for name, messages in error.message_dict.items()}
    detail = "; ".join(f"{name}: {' '.join(messages)}" for name, messages in fields.items())
    return InvalidInput(detail, fields=fields)


def _full_clean(instance, *, exclude=None) -> None:
    """Validate fields; uniqueness is checked by the caller, because it is a 409, not a 400."""
    try:
        instance.full_clean(exclude=exclude, validate_unique=False, validate_constraints=False)
    except ValidationError as error:
        raise _validation_error_to_invalid(error) from None


def bundle_identifiers_validate(bundle_identifiers) -> list[str]:
    bundle_identifiers = list(bundle_identifiers or [])
    bad = [b for b in bundle_identifiers if not isinstance(b, str) or not _BUNDLE_ID.match(b)]
    if bad:
        raise InvalidInput(
            f"Not a bundle identifier: {', '.join(map(str, bad))} (expected e.g. com.example.shop).",
            fields={"bundle_identifiers": ["Expected reverse-DNS names such as com.example.shop."]},
        )
    return bundle_identifiers


def app_create(*, name: str, bundle_identifiers: list[str] | None = None) -> App:
    bundle_identifiers = bundle_identifiers_validate(bundle_identifiers)
    if App.objects.filter(name=name).exists():
        raise Conflict(f"An app named '{name}' exists already.", code="already_exists")
    app = App(name=name, bundle_identifiers=bundle_identifiers)
    _full_clean(app)
    try:
        app.save()
    except IntegrityError:
        raise Conflict(f"An app named '{name}' exists already.", code="already_exists") from None
    return app


def app_update(*, app: App, name: str, bundle_identifiers: list[str]) -> App:
    """Rename an app or change its bundle identifiers; devices see neither, so nothing is bumped."""
    bundle_identifiers = bundle_identifiers_validate(bundle_identifiers)
    if App.objects.filter(name=name).exclude(pk=app.pk).exists():
        raise Conflict(f"An app named '{name}' exists already.", code="already_exists")
    app.name, app.bundle_identifiers = name, bundle_identifiers
    _full_clean(app)
    try:
        with transaction.atomic():
            app.save(update_fields=["name", "bundle_identifiers"])
    except IntegrityError:
        raise Conflict(f"An app named '{name}' exists already.", code="already_exists") from None
    return app


def app_delete(*, app: App) -> None:
    """Delete an app without flows, and its SDK keys, which stop working at once."""
    try:
        with transaction.atomic():  # the keys' removal and the config-version bump together
            app.delete()
            config_version_bump()
    except ProtectedError:
        raise Conflict(
            f"App '{app.name}' has flows; delete them first.", code="app_in_use"
        ) from None


def sdk_key_create(*, app: App, name: str = "") -> tuple[SdkKey, str]:
    """Create an SDK key; return it with its plaintext, which is shown once and never stored."""
    plaintext, digest = secret_new(SDK_KEY_PREFIX)
    with transaction.atomic():  # the key and its config-version bump commit together
        key = SdkKey.objects.create(
            app=app, name=name, digest=digest, prefix=plaintext[: len(SDK_KEY_PREFIX) + 6]
        )
        config_version_bump()
    return key, plaintext


def sdk_key_revoke(*, key: SdkKey) -> SdkKey:
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        with transaction.atomic():
            key.save(update_fields=["revoked_at"])
            config_version_bump()
    return key


def sdk_key_rename(*, key: SdkKey, name: str) -> SdkKey:
    """Change a key's name, the one thing about it that may change; devices never see it."""
    SdkKey.objects.filter(pk=key.pk).update(name=name)
    key.name = name
    return key


def sdk_key_delete(*, key: SdkKey) -> None:
    """Delete an SDK key; like a revoked one, it stops working at once."""
    with transaction.atomic():
        key.delete()
        config_version_bump()


def flow_create(
    *,
    app: App,
    name: str,
    flow_id: int,
    positive_label: str = "",
    interface: dict | None = None,
    signals: dict | None = None,
    attribution_window_hours: int = 72,
) -> Flow:
    try:
        interface = interface_validate(interface) if interface is not None else None
        signals = signals_validate(signals)
    except InvalidInterface as error:
        raise InvalidInput(str(error), code="invalid_interface") from None
    flow = Flow(
        app=app,
        name=name,
        flow_id=flow_id,
        positive_label=positive_label or "",
        interface=interface,
        signals=signals,
        attribution_window_hours=attribution_window_hours,
    )
    _full_clean(flow, exclude=["baseline"])
    if Flow.objects.filter(app=app, name=name).exists():
        raise Conflict(
            f"App '{app.name}' has a flow named '{name}' already.", code="already_exists"
        )
    if Flow.objects.filter(app=app, flow_id=flow_id).exists():
        raise Conflict(
            f"App '{app.name}' has a flow with id {flow_id} already.", code="already_exists"
        )
    try:
        with transaction.atomic():
            flow.save()
            config_version_bump()
    except IntegrityError:
        raise Conflict("That flow exists already.", code="already_exists") from None
    return flow


def flow_update(
    *,
    flow: Flow,
    positive_label: str | None = None,
    interface: dict | None = None,
    signals: dict | None = None,
    attribution_window_hours: int | None = None,
) -> Flow:
    """Change what a flow declares; existing model versions keep the checks they passed."""
    try:
        if interface is not None:
            flow.interface = interface_validate(interface)
        if signals is not None:
            flow.signals = signals_validate(signals)
    except InvalidInterface as error:
        raise InvalidInput(str(error), code="invalid_interface") from None
    if positive_label is not None:
        flow.positive_label = positive_label
    if attribution_window_hours is not None:
        if attribution_window_hours < 1:
            raise InvalidInput("attribution_window_hours must be at least 1.")
        flow.attribution_window_hours = attribution_window_hours
    # The app snapshot carries positive_label and attribution_window_hours, by which arriving
    # events are counted. Bumped on every save rather than on a detected change: the admin hands
    # over a flow its form has already changed, so old and new values cannot be compared here,
    # and a flow edit is rare enough that a needless snapshot rebuild costs nothing.
    with transaction.atomic():
        flow.save(
            update_fields=["interface", "signals", "positive_label", "attribution_window_hours"]
        )
        config_version_bump()
    return flow


def flow_delete(*, flow: Flow) -> None:
    """Delete a flow without models or rollouts; devices stop getting it at once."""
    try:
        with transaction.atomic():
            flow.delete()
            config_version_bump()
    except ProtectedError:
        raise Conflict(
            f"Flow '{flow.name}' has models or rollouts; it cannot be deleted.", code="flow_in_use"
        ) from None


def _sdk_version_or_none(value: str | None, field: str):
    if value in (None, ""):
        return None
    try:
        return parse_sdk_version(value)
    except InvalidSdkVersion as error:
        raise InvalidInput(
            str(error), code="invalid_sdk_version", fields={field: [str(error)]}
        ) from None


def model_min_sdk_version_derive(*, flow: Flow, description: coreml.ModelDescription):
    """Return (version, input name) of the newest SDK needed to send every input the model reads."""
    needed = [
        (parse_sdk_version(flow.signals[feature.name]), feature.name)
        for feature in description.inputs
        if feature.name in flow.signals
    ]
    return max(needed) if needed else ((0, 0, 0), None)


def _spool_upload(upload, destination) -> tuple[str, int]:
    """Copy an upload to a file, returning its sha256 and size; stop past the size limit."""
    digest = hashlib.sha256()
    size = 0
    limit = settings.MODEL_MAX_UPLOAD_BYTES
    chunks = (
        upload.chunks(_CHUNK)
        if hasattr(upload, "chunks")
        else iter(lambda: upload.read(_CHUNK), b"")
    )
    for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise TooLarge(
                f"The model file is larger than the limit of {limit:,} bytes "
                "(MODEL_MAX_UPLOAD_BYTES).",
                code="file_too_large",
            )
        digest.update(chunk)
        destination.write(chunk)
    destination.flush()
    return digest.hexdigest(), size


def model_version_upload(
    *,
    flow: Flow,
    file,
    filename: str = "",
    min_sdk_version: str | None = None,
    max_sdk_version: str | None = None,
    notes: str = "",
    metrics: dict | None = None,
    uploaded_by=None,
) -> tuple[ModelVersion, bool]:
    """Check a Core ML file against the flow and store it; return (version, created).

    The same bytes uploaded to the same flow again return the existing version unchanged.
    """
    if getattr(file, "size", None) is not None and file.size > settings.MODEL_MAX_UPLOAD_BYTES:
        raise TooLarge(
            f"The model file is {file.size:,} bytes, larger than the limit of "
            f"{settings.MODEL_MAX_UPLOAD_BYTES:,} bytes (MODEL_MAX_UPLOAD_BYTES).",
            code="file_too_large",
        )
    given_min = _sdk_version_or_none(min_sdk_version, "min_sdk_version")
    given_max = _sdk_version_or_none(max_sdk_version, "max_sdk_version")
    if metrics is not None and not isinstance(metrics, dict):
        raise InvalidInput(
            "metrics must be a JSON object.", fields={"metrics": ["Expected an object."]}
        )

    with tempfile.NamedTemporaryFile(
        prefix="cohort-upload-", suffix=Path(filename).suffix
    ) as spool:
        sha256, size = _spool_upload(file, spool)
        existing = ModelVersion.objects.filter(flow=flow, sha256=sha256).first()
        if existing is not None:
            return existing, False
        try:
            description = coreml.inspect_model(
                spool.name,
                max_unpacked_bytes=settings.MODEL_MAX_UNPACKED_BYTES,
                max_archive_files=settings.MODEL_MAX_ARCHIVE_FILES,
            )
        except coreml.ModelRejected as error:
            error_class = TooLarge if error.code == "too_large" else InvalidInput
            raise error_class(
                error.detail, code=error.code, fields={"file": [error.detail]}
            ) from None

        with transaction.atomic():
            # The lock serialises uploads to one flow: the first model's interface is adopted once.
            flow = Flow.objects.select_for_update().get(pk=flow.pk)
            existing = ModelVersion.objects.filter(flow=flow, sha256=sha256).first()
            if existing is not None:
                return existing, False
            problems = interface_problems(description, flow.interface, flow.positive_label)
            if problems:
                raise InvalidInput(
                    "The model does not fit flow '" + flow.name + "': " + " ".join(problems),
                    code="interface_mismatch",
                    fields={"file": problems},
                )
            derived, signal = model_min_sdk_version_derive(flow=flow, description=description)
            if given_min is not None and given_min < derived:
                raise InvalidInput(
                    f"min_sdk_version {format_sdk_version(given_min)} is lower than "
                    f"{format_sdk_version(derived)}, the first SDK version that sends '{signal}', "
                    "which this model reads.",
                    code="sdk_version_too_low",
                    fields={
                        "min_sdk_version": [f"Must be at least {format_sdk_version(derived)}."]
                    },
                )
            min_version = given_min or derived
            if given_max is not None and given_max < min_version:
                raise InvalidInput(
                    f"max_sdk_version {format_sdk_version(given_max)} is lower than "
                    f"min_sdk_version {format_sdk_version(min_version)}.",
                    code="invalid_sdk_version",
                    fields={"max_sdk_version": ["Must not be lower than min_sdk_version."]},
                )
            if flow.interface is None:
                flow.interface = interface_from_description(description)
                flow.save(update_fields=["interface"])
            version = ModelVersion(
                flow=flow,
                sha256=sha256,
                size=size,
                format=description.format,
                original_filename=Path(filename).name[:255],
                spec_version=description.spec_version,
                model_type=description.model_type,
                description=description.to_dict(),
                min_sdk_version=format_sdk_version(min_version),
                max_sdk_version=format_sdk_version(given_max) if given_max else "",
                metrics=metrics or {},
                notes=notes or "",
                uploaded_by=uploaded_by,
            )
            version.storage_key = model_storage_key(
                sha256=sha256, model_id=version.id, format=description.format
            )
            spool.seek(0)
            # Stored before the row commits: a rolled-back upload leaves an unreferenced file,
            # never a row without its file.
            model_file_save(key=version.storage_key, file=spool)
            version.save()
        return version, True


def model_version_notes_set(*, model_version: ModelVersion, notes: str) -> ModelVersion:
    """Change a version's notes, the one thing about it that may change."""
    ModelVersion.objects.filter(pk=model_version.pk).update(notes=notes)
    model_version.notes = notes
    return model_version


def flow_baseline_set(
    *, flow: Flow, model_version: ModelVersion, actor: str, reason: str = ""
) -> Flow:
    """Make a model the flow's baseline, recording the change."""
    if model_version.flow_id != flow.pk:
        raise NotFound(
            f"Model {model_version.pk} is not a model of flow '{flow.name}'.",
            code="model_not_found",
        )
    with transaction.atomic():
        flow = Flow.objects.select_for_update().get(pk=flow.pk)
        if flow.baseline_id == model_version.pk:
            return flow
        BaselineChange.objects.create(
            flow=flow,
            model_version=model_version,
            previous_id=flow.baseline_id,
            actor=actor,
            reason=reason,
        )
        flow.baseline = model_version
        flow.save(update_fields=["baseline"])
        config_version_bump()
    return flow
