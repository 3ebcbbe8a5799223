"""Routes of the model files themselves (content-addressed, immutable)."""

from django.urls import path

from .files import model_file_download

urlpatterns = [
    path("models/<str:sha256>/<str:file_name>", model_file_download, name="model-file"),
]
