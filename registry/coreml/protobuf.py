"""Parse a Core ML protobuf, and say why bytes that do not parse were refused (cut short, or not a model)."""

from .rejection import ModelRejected


def _model_pb2():
    # Importing coremltools takes seconds (it pulls in scikit-learn, scipy, sympy), so only
    # code paths that actually parse a model pay for it.
    from coremltools.proto import Model_pb2

    return Model_pb2


def parse_spec(data: bytes):
    """Return the Core ML `Model` message of `data`, or raise ModelRejected (truncated / not_coreml)."""
    from google.protobuf.message import DecodeError

    spec = _model_pb2().Model()
    try:
        spec.ParseFromString(data)
    except (DecodeError, RecursionError, ValueError):
        if wire_scan(data) == "truncated":
            raise ModelRejected(
                "truncated",
                f"The file looks like a Core ML model that was cut short ({len(data):,} bytes): "
                "the data ends in the middle of a field. Upload the complete file.",
            ) from None
        raise ModelRejected(
            "not_coreml",
            f"The bytes are not a readable Core ML model (.mlmodel protobuf).{text_hint(data)}",
        ) from None
    return spec


def wire_scan(data: bytes) -> str:
    """Walk the top-level protobuf fields: "ok", "truncated" (a known field runs past the end) or "corrupt"."""
    from google.protobuf.descriptor import FieldDescriptor

    length_delimited = (
        FieldDescriptor.TYPE_MESSAGE,
        FieldDescriptor.TYPE_STRING,
        FieldDescriptor.TYPE_BYTES,
    )
    known = {f.number: f for f in _model_pb2().Model.DESCRIPTOR.fields}
    position, seen_any = 0, False
    while position < len(data):
        tag, position = _read_varint(data, position)
        if tag is None:
            return "truncated" if seen_any else "corrupt"
        number, wire_type = tag >> 3, tag & 7
        expected = known.get(number)
        if expected is None or wire_type != (2 if expected.type in length_delimited else 0):
            return "corrupt"
        if wire_type == 0:
            _, position = _read_varint(data, position)
            if position is None:
                return "truncated"
        else:
            length, position = _read_varint(data, position)
            if length is None:
                return "truncated"
            position += length
            if position > len(data):
                return "truncated"
        seen_any = True
    return "ok"


def _read_varint(data: bytes, position: int) -> tuple[int | None, int | None]:
    result, shift = 0, 0
    while position < len(data) and shift < 64:
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7
    return None, None


def text_hint(data: bytes) -> str:
    """A sentence (with a leading space) saying what text or page the bytes are, or ""."""
    head = data[:200]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return ""
    if not text.strip() or any(ch < " " and ch not in "\t\r\n" for ch in text):
        return ""
    if text.lstrip().lower().startswith(("<!doctype", "<html", "<?xml")):
        return " It is an HTML/XML page; perhaps a download page was saved instead of the file."
    first_line = text.strip().splitlines()[0][:60]
    return f" It is text starting {first_line!r}."
