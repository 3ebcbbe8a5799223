"""OpenAPI generation: the bearer-token scheme, and unique names for views' nested serializers."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema


class ApiTokenScheme(OpenApiAuthenticationExtension):
    target_class = "controlplane.authentication.ApiTokenAuthentication"
    name = "ApiToken"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer"}


class AutoSchema(SpectacularAutoSchema):
    def get_serializer_name(self, serializer, direction):
        """Name `FlowModelListUploadApi.InputSerializer` `FlowModelListUploadInput`, not `Input`."""
        qualname = type(serializer).__qualname__
        if "." in qualname:
            outer, inner = qualname.rsplit(".", 1)
            return outer.removesuffix("Api") + inner.removesuffix("Serializer")
        return super().get_serializer_name(serializer, direction)
