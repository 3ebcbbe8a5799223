"""Management API routes of the registry."""

urlpatterns: list = []
