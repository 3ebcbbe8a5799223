"""
Errors that services raise, independent of HTTP.

Each carries the machine code and the sentence of the wire contract's error body; the API maps
the class to its status (see `controlplane.exceptions`). Admin actions and commands show the
sentence as it is.
"""


class DomainError(Exception):
    status = 400
    code = "invalid"

    def __init__(self, detail: str, *, code: str | None = None, fields: dict | None = None):
        super().__init__(detail)
        self.detail = detail
        if code:
            self.code = code
        self.fields = fields


class InvalidInput(DomainError):
    status = 400
    code = "invalid"


class NotFound(DomainError):
    status = 404
    code = "not_found"


class Conflict(DomainError):
    status = 409
    code = "conflict"


class TooLarge(DomainError):
    status = 413
    code = "too_large"


class Unavailable(DomainError):
    """The request could not be answered in time; the same request may succeed later."""

    status = 503
    code = "unavailable"
