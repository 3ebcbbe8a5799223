"""
The OpenAPI document (`/api/schema/`): the bearer-token scheme, unique names for views' nested
serializers, the error responses of every operation, and the SDK endpoints and model files,
which are plain Django views that drf-spectacular cannot see (added by `sdk_endpoints`).

Every error is the one body `Error` (`controlplane.exceptions.error_body`), written once here.
`tests/integration/test_api_fuzz.py` holds the answers of the running code to this document.
"""

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers


class ApiTokenScheme(OpenApiAuthenticationExtension):
    target_class = "controlplane.authentication.ApiTokenAuthentication"
    name = "ApiToken"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer"}


class ErrorSerializer(serializers.Serializer):
    """The body of every error (CONTRACT.md): a machine code, a sentence, and field errors."""

    error = serializers.CharField(help_text="Machine code, such as `not_found` or `invalid`.")
    detail = serializers.CharField(help_text="A sentence a person can act on.")
    fields = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        required=False,
        help_text="Only for field errors: messages by field name (`a.b` for nested fields).",
    )


ERROR_DESCRIPTIONS = {
    400: "Bad input: a malformed body or parameter (`fields` names the fields at fault).",
    401: "No credentials, or unknown or revoked ones.",
    403: "The caller's role does not allow this.",
    404: "No such object (or no such path).",
    405: "The path does not accept this method (`Allow` lists those it does).",
    409: "Conflicts with the current state: it exists already, or the state does not allow it.",
    411: "A chunked body the server could not read: send a Content-Length.",
    413: "The body or the upload is larger than this endpoint accepts.",
    415: "The body's Content-Type is not one this endpoint reads.",
    429: "Rate limited: `Retry-After` says how many seconds to wait.",
    503: "Not answered in time, or a backing service is unreachable; the same request may "
    "succeed later.",
}

# Headers an error response always carries, by status.
_ERROR_HEADERS = {
    401: {"WWW-Authenticate": "The scheme to authenticate with: `Bearer`."},
    405: {"Allow": "The methods this path accepts."},
    429: {"Retry-After": "Seconds to wait before trying again."},
}


def error_response(status: int, description: str | None = None) -> OpenApiResponse:
    """The `Error` response of one status, for `extend_schema(responses={...})`."""
    return OpenApiResponse(ErrorSerializer, description=description or ERROR_DESCRIPTIONS[status])


def _header(description: str) -> dict:
    return {"description": description, "required": True, "schema": {"type": "string"}}


class AutoSchema(SpectacularAutoSchema):
    """Adds the error responses every management operation can give to what its view declares.

    401, 403, 405 and 429 (`controlplane.throttling`) everywhere; 404 where a path or a body
    names an object; 400 where there is a body or a query; 413 and 415 where there is a body.
    Views declare the others (409, 503...) and their own wording with `error_response` in
    `extend_schema`.
    """

    def get_serializer_name(self, serializer, direction):
        """Name `FlowModelListUploadApi.InputSerializer` `FlowModelListUploadInput`, not `Input`."""
        qualname = type(serializer).__qualname__
        if "." in qualname:
            outer, inner = qualname.rsplit(".", 1)
            return outer.removesuffix("Api") + inner.removesuffix("Serializer")
        return super().get_serializer_name(serializer, direction)

    def get_request_serializer(self):
        """A view's nested `InputSerializer` when `extend_schema` names none (a base class'
        method then documents each subclass' own input)."""
        input_serializer = getattr(self.view, "InputSerializer", None)
        if input_serializer is not None and self.method in ("POST", "PUT", "PATCH"):
            return input_serializer
        return super().get_request_serializer()

    def get_operation(self, *args, **kwargs):
        operation = super().get_operation(*args, **kwargs)
        if operation is None:
            return None
        has_body = "requestBody" in operation
        has_query = any(p.get("in") == "query" for p in operation.get("parameters", []))
        statuses = [401, 403, 405, 429]
        if has_body or "{" in self.path:
            statuses.append(404)
        if has_body or has_query:
            statuses.append(400)
        if has_body:
            statuses += [413, 415]
        responses = operation["responses"]
        for status in statuses:
            if str(status) not in responses:
                responses[str(status)] = self._get_response_for_code(
                    error_response(status), str(status)
                )
        for code, response in responses.items():
            headers = _ERROR_HEADERS.get(int(code), {}) if code.isdigit() else {}
            for name, description in headers.items():
                response.setdefault("headers", {})[name] = _header(description)
        operation["responses"] = dict(sorted(responses.items()))
        return operation


# The SDK endpoints (CONTRACT.md, docs/sdk.md) and the model files. Plain Django views, so
# written here by hand; the fuzz test holds the views to it.

_ERROR_REF = {"$ref": "#/components/schemas/Error"}
_DEVICE_ID = {
    "type": "string",
    "minLength": 1,
    "maxLength": 128,
    "pattern": "^[ -~]+$",
    "description": "1-128 printable ASCII characters, typically the IDFV UUID.",
}
_SDK_VERSION = {
    "type": "string",
    "pattern": r"^(0|[1-9][0-9]{0,5})\.(0|[1-9][0-9]{0,5})\.(0|[1-9][0-9]{0,5})$",
    "description": "Strict `MAJOR.MINOR.PATCH`, such as `1.4.0`.",
}
_UUID = {"type": "string", "format": "uuid"}

SDK_COMPONENTS = {
    "SdkModel": {
        "type": "object",
        "description": "What one flow runs on the device. The model fields are null when it "
        "should run the model bundled in the app.",
        "properties": {
            "flow": {"type": "string"},
            "flow_id": {"type": "integer"},
            "model_id": {**_UUID, "nullable": True},
            "url": {"type": "string", "nullable": True},
            "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$", "nullable": True},
            "size": {"type": "integer", "nullable": True},
            "format": {"type": "string", "enum": ["mlmodel", "mlpackage", None], "nullable": True},
            "signature": {
                "type": "string",
                "nullable": True,
                "description": "With a signing key configured: the signed claims of this entry.",
            },
            "rollout": {
                "type": "object",
                "nullable": True,
                "description": "Null unless the device is an exposed member of an active rollout.",
                "properties": {
                    "id": _UUID,
                    "arm": {"type": "string", "description": "`baseline` or a challenger."},
                },
                "required": ["id", "arm"],
            },
        },
        "required": [
            "flow",
            "flow_id",
            "model_id",
            "url",
            "sha256",
            "size",
            "format",
            "signature",
            "rollout",
        ],
    },
    "SdkAssignments": {
        "type": "object",
        "properties": {
            "poll_after_s": {"type": "integer", "minimum": 0},
            "models": {"type": "array", "items": {"$ref": "#/components/schemas/SdkModel"}},
        },
        "required": ["poll_after_s", "models"],
    },
    "SdkEvent": {
        "type": "object",
        "description": "An invalid event is listed in `rejected`; its neighbours are kept.",
        "properties": {
            "id": {**_UUID, "description": "Unique per event; keep it across retries."},
            "flow": {"type": "string", "minLength": 1, "description": "The flow's name."},
            "model_id": {**_UUID, "nullable": True},
            "outcome": {"type": "string", "minLength": 1, "maxLength": 100},
            "value": {"type": "number", "minimum": -1e9, "maximum": 1e9, "nullable": True},
            "ts": {"type": "string", "format": "date-time"},
            "signals": {
                "type": "object",
                "maxProperties": 100,
                "additionalProperties": {
                    "oneOf": [
                        {"type": "number"},
                        {"type": "boolean"},
                        {"type": "string", "maxLength": 200},
                    ]
                },
            },
        },
        "required": ["id", "flow", "outcome", "ts"],
    },
    "SdkEventBatch": {
        "type": "object",
        "properties": {
            "device_id": _DEVICE_ID,
            "sdk_version": _SDK_VERSION,
            "events": {
                "type": "array",
                "maxItems": 1000,
                "items": {"$ref": "#/components/schemas/SdkEvent"},
            },
        },
        "required": ["device_id", "sdk_version", "events"],
    },
    "SdkEventsResult": {
        "type": "object",
        "properties": {
            "accepted": {"type": "integer", "minimum": 0},
            "duplicates": {"type": "integer", "minimum": 0},
            "rejected": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "index": {"type": "integer", "minimum": 0},
                        "error": {"type": "string"},
                        "detail": {"type": "string"},
                    },
                    "required": ["index", "error", "detail"],
                },
            },
            "assignments": {"$ref": "#/components/schemas/SdkAssignments"},
        },
        "required": ["accepted", "duplicates", "rejected", "assignments"],
    },
}

SDK_SECURITY_SCHEMES = {
    "SdkKey": {"type": "http", "scheme": "bearer", "description": "The app's SDK key."},
    "SdkKeyQuery": {
        "type": "apiKey",
        "in": "query",
        "name": "key",
        "description": "The app's SDK key, for clients that can only fetch a plain URL.",
    },
}
_SDK_SECURITY = [{"SdkKey": []}, {"SdkKeyQuery": []}]


def _json(schema: dict, description: str, headers: dict | None = None) -> dict:
    response = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        response["headers"] = headers
    return response


def _error(status: int, description: str | None = None) -> dict:
    headers = {name: _header(text) for name, text in _ERROR_HEADERS.get(status, {}).items()} or None
    return _json(_ERROR_REF, description or ERROR_DESCRIPTIONS[status], headers)


def _query(name: str, schema: dict, *, required: bool = False) -> dict:
    return {"in": "query", "name": name, "required": required, "schema": schema}


def _poll_operation(operation_id: str, summary: str, body: dict, *, extra_parameters) -> dict:
    not_found = "flow_not_found: the app has no flow of this name."
    return {
        "operationId": operation_id,
        "summary": summary,
        "tags": ["sdk"],
        "security": _SDK_SECURITY,
        "parameters": [
            _query("device_id", _DEVICE_ID, required=True),
            _query("sdk_version", _SDK_VERSION, required=True),
            *extra_parameters,
            _query(
                "current",
                {"type": "string", "description": "Comma-separated model ids (at most 100)."},
            ),
            {
                "in": "header",
                "name": "If-None-Match",
                "required": False,
                "schema": {"type": "string"},
                "description": "The ETag of the last answer applied: `304` if it is unchanged.",
            },
        ],
        "responses": {
            "200": _json(
                body,
                "The assignment. The same request gives the same answer until something changes.",
                {
                    "ETag": _header("A hash of the body, for If-None-Match."),
                    "Cache-Control": _header("`private, no-cache`."),
                },
            ),
            "304": {
                "description": "Unchanged since the ETag sent in If-None-Match; no body.",
                "headers": {"ETag": _header("The same ETag.")},
            },
            "400": _error(400, "invalid_device_id, invalid_sdk_version or invalid_current."),
            "401": _error(401, "not_authenticated or authentication_failed (the SDK key)."),
            "404": _error(404, not_found),
            "405": _error(405),
            "429": _error(429),
        },
    }


def _sdk_paths() -> dict:
    assignments_ref = {"$ref": "#/components/schemas/SdkAssignments"}
    return {
        "/api/v1/sdk/assignments": {
            "get": _poll_operation(
                "sdk_assignments",
                "What each flow of the app should run on this device.",
                assignments_ref,
                extra_parameters=[
                    _query("flow", {"type": "string", "description": "Only this flow (by name)."})
                ],
            )
        },
        "/api/v1/sdk/flows/{flow_name}/latest": {
            "get": _poll_operation(
                "sdk_flow_latest",
                "One flow's entry, for clients that read `url` from a fixed address.",
                {"$ref": "#/components/schemas/SdkModel"},
                extra_parameters=[
                    {
                        "in": "path",
                        "name": "flow_name",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
            )
        },
        "/api/v1/sdk/events": {
            "post": {
                "operationId": "sdk_events",
                "summary": "Report outcome events; answers with the device's assignments too.",
                "tags": ["sdk"],
                "security": _SDK_SECURITY,
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/SdkEventBatch"}
                        }
                    },
                },
                "responses": {
                    "200": _json(
                        {"$ref": "#/components/schemas/SdkEventsResult"},
                        "What was kept; valid events are kept even when others are rejected.",
                    ),
                    "400": _error(
                        400,
                        "invalid_content_length, invalid_json, invalid_device_id, "
                        "invalid_sdk_version or invalid_events.",
                    ),
                    "401": _error(401, "not_authenticated or authentication_failed (the SDK key)."),
                    "405": _error(405),
                    "411": _error(411),
                    "413": _error(413, "More than 1 000 events or 1 MiB: nothing was stored."),
                    "429": _error(429),
                },
            }
        },
        "/models/{sha256}/{file_name}": {
            "get": {
                "operationId": "model_file",
                "summary": "A model file: exactly the bytes whose sha256 was announced.",
                "description": "Served by Cohort only when no CDN fronts the storage; no "
                "credentials. Not an API path: its 404 is an HTML page.",
                "tags": ["sdk"],
                "security": [{}],
                "parameters": [
                    {
                        "in": "path",
                        "name": "sha256",
                        "required": True,
                        "schema": {"type": "string"},
                    },
                    {
                        "in": "path",
                        "name": "file_name",
                        "required": True,
                        "schema": {"type": "string"},
                    },
                    {
                        "in": "header",
                        "name": "If-None-Match",
                        "required": False,
                        "schema": {"type": "string"},
                    },
                ],
                "responses": {
                    "200": {
                        "description": "The file.",
                        "headers": {
                            "ETag": _header("The file's sha256, quoted."),
                            "Cache-Control": _header("`public, max-age=31536000, immutable`."),
                        },
                        "content": {
                            "application/octet-stream": {
                                "schema": {"type": "string", "format": "binary"}
                            }
                        },
                    },
                    "304": {
                        "description": "Unchanged (it never changes); no body.",
                        "headers": {"ETag": _header("The same ETag.")},
                    },
                    "404": {
                        "description": "No such model file.",
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    },
                },
            }
        },
    }


def sdk_endpoints(result, generator, request, public):
    """Postprocessing hook (SPECTACULAR_SETTINGS): add the SDK endpoints and model files."""
    components = result.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas.update(SDK_COMPONENTS)
    # `Error` is there already: every management operation refers to it (AutoSchema).
    components.setdefault("securitySchemes", {}).update(SDK_SECURITY_SCHEMES)
    result.setdefault("paths", {}).update(_sdk_paths())
    return result
