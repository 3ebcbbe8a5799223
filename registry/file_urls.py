"""Routes of the model files themselves."""

urlpatterns: list = []
