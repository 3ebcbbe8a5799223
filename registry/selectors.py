"""Read queries of the registry."""

import uuid

from controlplane.errors import NotFound

from .models import App, Flow, ModelVersion
from .storage import model_file_url


def _uuid_or_not_found(value, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise NotFound(f"No {what} with id '{value}'.") from None


def app_list():
    return App.objects.all()


def app_get(*, app_id) -> App:
    app = App.objects.filter(pk=_uuid_or_not_found(app_id, "app")).first()
    if app is None:
        raise NotFound(f"No app with id '{app_id}'.")
    return app


def flow_list(*, app: App):
    return app.flows.select_related("baseline").order_by("name")


def flow_get(*, flow_id) -> Flow:
    flow = (
        Flow.objects.select_related("app", "baseline")
        .filter(pk=_uuid_or_not_found(flow_id, "flow"))
        .first()
    )
    if flow is None:
        raise NotFound(f"No flow with id '{flow_id}'.", code="flow_not_found")
    return flow


def model_version_list(*, flow: Flow):
    return flow.model_versions.select_related("uploaded_by").order_by("-created_at")


def model_version_get(*, model_id, flow: Flow | None = None) -> ModelVersion:
    queryset = ModelVersion.objects.select_related("flow", "flow__app")
    if flow is not None:
        queryset = queryset.filter(flow=flow)
    version = queryset.filter(pk=_uuid_or_not_found(model_id, "model")).first()
    if version is None:
        where = f" in flow '{flow.name}'" if flow is not None else ""
        raise NotFound(f"No model with id '{model_id}'{where}.", code="model_not_found")
    return version


def bundle_manifest(*, app: App, base_url: str = "") -> dict:
    """The baselines a per-customer SDK build bundles, so the app works offline from first launch."""
    flows = app.flows.select_related("baseline").filter(baseline__isnull=False).order_by("flow_id")
    return {
        "app_id": str(app.pk),
        "bundle_identifiers": list(app.bundle_identifiers),
        "customModels": [
            {
                "flowId": flow.flow_id,
                "flowName": flow.name,
                "modelVersion": str(flow.baseline.pk),
                "sha256": flow.baseline.sha256,
                "size": flow.baseline.size,
                "format": flow.baseline.format,
                "fileName": flow.baseline.file_name,
                "url": model_file_url(flow.baseline.storage_key, base_url=base_url),
            }
            for flow in flows
        ],
    }


def flow_get_by_name(*, app_name: str, flow_name: str) -> Flow:
    flow = (
        Flow.objects.select_related("app", "baseline")
        .filter(app__name=app_name, name=flow_name)
        .first()
    )
    if flow is None:
        raise NotFound(f"App '{app_name}' has no flow named '{flow_name}'.", code="flow_not_found")
    return flow
