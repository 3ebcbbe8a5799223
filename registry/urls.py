"""Management API routes of the registry."""

from django.urls import path

from . import api

urlpatterns = [
    path("apps", api.AppListCreateApi.as_view(), name="app-list"),
    path("apps/<str:app_id>/sdk-keys", api.AppSdkKeyCreateApi.as_view(), name="app-sdk-keys"),
    path(
        "apps/<str:app_id>/bundle-manifest",
        api.AppBundleManifestApi.as_view(),
        name="app-bundle-manifest",
    ),
    path("apps/<str:app_id>/flows", api.AppFlowListCreateApi.as_view(), name="app-flows"),
    path("flows/<str:flow_id>", api.FlowDetailApi.as_view(), name="flow-detail"),
    path("flows/<str:flow_id>/models", api.FlowModelListUploadApi.as_view(), name="flow-models"),
    path("flows/<str:flow_id>/baseline", api.FlowBaselineSetApi.as_view(), name="flow-baseline"),
    path("models/<str:model_id>", api.ModelVersionDetailApi.as_view(), name="model-detail"),
]
