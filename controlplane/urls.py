"""URLs: the admin, the API (SDK and management), its schema and docs, and model files."""

from django.contrib import admin
from django.urls import include, path, re_path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from .health import healthz
from .views import admin_index, api_not_found

handler400 = "controlplane.views.bad_request"
handler403 = "controlplane.views.permission_denied"
handler404 = "controlplane.views.not_found"
handler500 = "controlplane.views.server_error"

urlpatterns = [
    # Product managers and viewers land on the flows overview (controlplane.views.admin_index).
    path("admin/", admin.site.admin_view(admin_index)),
    path("admin/", admin.site.urls),
    path("healthz", healthz, name="healthz"),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/v1/sdk/", include("experiments.sdk_urls")),
    path("api/v1/sdk/", include("rollout.sdk_urls")),
    path("api/v1/", include("registry.urls")),
    path("api/v1/", include("experiments.urls")),
    path("api/v1/", include("rollout.urls")),
    path("", include("registry.file_urls")),
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    # JSON, not an HTML page, for unknown API paths (also with DEBUG on).
    re_path(r"^api/", api_not_found),
]
