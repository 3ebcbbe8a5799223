"""The one exception of Core ML inspection: why a file cannot be accepted, as a code and a sentence."""


class ModelRejected(Exception):
    """Raised when a file cannot be accepted. .code is a short machine code, .detail a sentence a person can act on."""

    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code = code
        self.detail = detail

    def __repr__(self) -> str:
        return f"ModelRejected({self.code!r}, {self.detail!r})"

    def to_dict(self) -> dict:
        return {"code": self.code, "detail": self.detail}
