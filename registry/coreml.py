"""Read an uploaded Core ML file (.mlmodel, or a zipped .mlpackage), describe it, and refuse what cannot ship."""

from __future__ import annotations

import json
import os
import re
import stat
import struct
import tempfile
import unicodedata
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

MLMODEL = "mlmodel"
MLPACKAGE = "mlpackage"

DEFAULT_MAX_UNPACKED_BYTES = 500 * 1024 * 1024
DEFAULT_MAX_ARCHIVE_FILES = 1000

# The newest specification version coremltools 9.0 writes (iOS 26).
KNOWN_MAX_SPEC_VERSION = 10
# Far beyond any real version: a parse that yields more is garbage that happened to decode.
_IMPLAUSIBLE_SPEC_VERSION = 100

_SNIFF_BYTES = 1024
_MAX_MANIFEST_BYTES = 1024 * 1024
_COPY_CHUNK = 1024 * 1024

_PIPELINE_TYPES = ("pipeline", "pipelineClassifier", "pipelineRegressor")
_NEURAL_NETWORK_TYPES = ("neuralNetwork", "neuralNetworkClassifier", "neuralNetworkRegressor")
# Types whose ClassLabels are not the classes of a prediction (object detection, word tagging).
_NOT_CLASSIFIER_LABELS = ("nonMaximumSuppression", "gazetteer")

_ARRAY_DATA_TYPES = {
    0: "invalid",
    65568: "float32",
    65600: "double",
    131104: "int32",
    131080: "int8",
    65552: "float16",
}
_COLOR_SPACES = {0: "invalid", 10: "grayscale", 20: "rgb", 30: "bgr", 40: "grayscale_float16"}

_RESTRICTIVE_LICENCE = re.compile(
    r"private|proprietary|confidential|all rights reserved|internal use|"
    r"non[- ]?commercial|no[- ]?deriv|\bcc[- ]by[- ]n[cd]\b|do not (re)?distribute|"
    r"not for (re)?distribution",
    re.IGNORECASE,
)
_DRIVE_LETTER = re.compile(r"^[A-Za-z]:")
_IGNORED_ARCHIVE_ENTRY = re.compile(r"(^|/)(__MACOSX/|\.DS_Store$)")

# Compressed single files, by magic number: (prefix, name).
_COMPRESSED_MAGIC = (
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
)
_OTHER_ARCHIVE_MAGIC = (
    (b"7z\xbc\xaf\x27\x1c", "7-Zip"),
    (b"Rar!\x1a\x07", "RAR"),
)
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")


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


@dataclass(frozen=True)
class FeatureDescription:
    name: str
    type: str
    optional: bool
    shape: tuple[int, ...] | None = None
    data_type: str | None = None
    key_type: str | None = None
    description: str = ""

    def to_dict(self) -> dict:
        result: dict[str, Any] = {"name": self.name, "type": self.type, "optional": self.optional}
        if self.shape is not None:
            result["shape"] = list(self.shape)
        if self.data_type is not None:
            result["data_type"] = self.data_type
        if self.key_type is not None:
            result["key_type"] = self.key_type
        result["description"] = self.description
        return result

    @classmethod
    def from_dict(cls, data: dict) -> FeatureDescription:
        shape = data.get("shape")
        return cls(
            name=data["name"],
            type=data["type"],
            optional=bool(data.get("optional", False)),
            shape=tuple(shape) if shape is not None else None,
            data_type=data.get("data_type"),
            key_type=data.get("key_type"),
            description=data.get("description", ""),
        )


@dataclass(frozen=True)
class ModelDescription:
    format: str
    spec_version: int
    model_type: str
    sub_models: tuple[str, ...]
    inputs: tuple[FeatureDescription, ...]
    outputs: tuple[FeatureDescription, ...]
    class_labels: tuple[str, ...]
    predicted_feature_name: str
    predicted_probabilities_name: str
    metadata: dict = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    @property
    def is_classifier(self) -> bool:
        return bool(self.class_labels) or self.model_type.endswith("Classifier")

    def to_dict(self) -> dict:
        return {
            "format": self.format,
            "spec_version": self.spec_version,
            "model_type": self.model_type,
            "sub_models": list(self.sub_models),
            "inputs": [feature.to_dict() for feature in self.inputs],
            "outputs": [feature.to_dict() for feature in self.outputs],
            "class_labels": list(self.class_labels),
            "predicted_feature_name": self.predicted_feature_name,
            "predicted_probabilities_name": self.predicted_probabilities_name,
            "metadata": json.loads(json.dumps(self.metadata)),
            "warnings": list(self.warnings),
        }

    @classmethod
    def from_dict(cls, data: dict) -> ModelDescription:
        return cls(
            format=data["format"],
            spec_version=data["spec_version"],
            model_type=data["model_type"],
            sub_models=tuple(data.get("sub_models", ())),
            inputs=tuple(FeatureDescription.from_dict(f) for f in data.get("inputs", ())),
            outputs=tuple(FeatureDescription.from_dict(f) for f in data.get("outputs", ())),
            class_labels=tuple(data.get("class_labels", ())),
            predicted_feature_name=data.get("predicted_feature_name", ""),
            predicted_probabilities_name=data.get("predicted_probabilities_name", ""),
            metadata=data.get("metadata", {}),
            warnings=tuple(data.get("warnings", ())),
        )

    def output(self, name: str) -> FeatureDescription | None:
        return next((feature for feature in self.outputs if feature.name == name), None)


# --------------------------------------------------------------------------- entry point


def inspect_model(
    path,
    *,
    max_unpacked_bytes: int = DEFAULT_MAX_UNPACKED_BYTES,
    max_archive_files: int = DEFAULT_MAX_ARCHIVE_FILES,
) -> ModelDescription:
    """Read a .mlmodel file, or a ZIP of an .mlpackage, from a path on disk. Raise ModelRejected otherwise.

    An unzipped .mlpackage directory is accepted too (it is what a zip becomes once extracted).
    """
    path = Path(path)
    if path.is_dir():
        return _read_package_dir(path)
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            head = handle.read(_SNIFF_BYTES)
    except OSError as error:
        raise ModelRejected(
            "unreadable", f"The file could not be read: {error.strerror}."
        ) from None

    if size == 0:
        raise ModelRejected(
            "empty", "The file is empty (0 bytes). Upload the .mlmodel file itself."
        )
    _refuse_known_non_models(head)
    if head.startswith(_ZIP_MAGIC):
        return _read_zipped_package(path, max_unpacked_bytes, max_archive_files)
    if size > max_unpacked_bytes:
        raise ModelRejected(
            "too_large",
            f"The file is {size:,} bytes; the limit is {max_unpacked_bytes:,} bytes.",
        )
    return _describe(_parse_spec(path.read_bytes()), MLMODEL)


def _refuse_known_non_models(head: bytes) -> None:
    # LFS pointers and compressed files both fail protobuf with the same vague "Wire format
    # was corrupt", so they are recognised first and told apart.
    if head.startswith(b"version https://git-lfs"):
        text = head.decode("ascii", "replace")
        size = re.search(r"^size (\d+)", text, re.MULTILINE)
        names = f" of {int(size.group(1)):,} bytes" if size else ""
        raise ModelRejected(
            "git_lfs_pointer",
            f"This is a Git LFS pointer file, not the model: it only names a stored object{names}. "
            "Fetch the real file (git lfs pull) and upload that.",
        )
    for magic, kind in _COMPRESSED_MAGIC:
        if head.startswith(magic):
            raise ModelRejected(
                "compressed",
                f"The file is {kind}-compressed. Decompress it first and upload the .mlmodel inside "
                "(or zip an .mlpackage folder).",
            )
    archive = next((kind for magic, kind in _OTHER_ARCHIVE_MAGIC if head.startswith(magic)), None)
    if archive is None and head[257:262] == b"ustar":
        archive = "tar"
    if archive is not None:
        raise ModelRejected(
            "unsupported_archive",
            f"The file is a {archive} archive. Upload a single .mlmodel file, or an .mlpackage folder "
            "compressed as a .zip.",
        )


# --------------------------------------------------------------------------- protobuf


def _model_pb2():
    # Importing coremltools takes seconds (it pulls in scikit-learn, scipy, sympy), so only
    # code paths that actually parse a model pay for it.
    from coremltools.proto import Model_pb2

    return Model_pb2


def _parse_spec(data: bytes):
    from google.protobuf.message import DecodeError

    spec = _model_pb2().Model()
    try:
        spec.ParseFromString(data)
    except (DecodeError, RecursionError, ValueError):
        if _wire_scan(data) == "truncated":
            raise ModelRejected(
                "truncated",
                f"The file looks like a Core ML model that was cut short ({len(data):,} bytes): "
                "the data ends in the middle of a field. Upload the complete file.",
            ) from None
        raise ModelRejected(
            "not_coreml",
            f"The bytes are not a readable Core ML model (.mlmodel protobuf).{_text_hint(data)}",
        ) from None
    return spec


def _wire_scan(data: bytes) -> str:
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


def _text_hint(data: bytes) -> str:
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


# --------------------------------------------------------------------------- zip / package


def _read_zipped_package(path: Path, max_bytes: int, max_files: int) -> ModelDescription:
    declared = _declared_entry_count(path)
    if declared is not None and declared > max_files:
        raise _too_many_files(declared, max_files)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError) as error:
        raise ModelRejected("unreadable", f"The zip file is damaged: {error}.") from None
    with archive:
        entries = archive.infolist()
        if len(entries) > max_files:
            raise _too_many_files(len(entries), max_files)
        _check_entries_are_safe(entries)
        total = sum(entry.file_size for entry in entries)
        if total > max_bytes:
            raise ModelRejected(
                "too_large",
                f"Unpacked, the zip would be {total:,} bytes; the limit is {max_bytes:,} bytes.",
            )
        kept = [entry for entry in entries if not _IGNORED_ARCHIVE_ENTRY.search(entry.filename)]
        prefix = _package_prefix([entry.filename for entry in kept])
        with tempfile.TemporaryDirectory(prefix="cohort-mlpackage-") as scratch:
            root = Path(scratch) / "package"
            root.mkdir()
            _extract(
                archive, [e for e in kept if e.filename.startswith(prefix)], prefix, root, max_bytes
            )
            return _read_package_dir(root)


def _too_many_files(count: int, limit: int) -> ModelRejected:
    return ModelRejected(
        "too_many_files",
        f"The zip holds {count:,} entries; at most {limit:,} are accepted for one .mlpackage.",
    )


def _declared_entry_count(path: Path) -> int | None:
    """Entry count from the end-of-central-directory record, read before zipfile loads every entry."""
    with path.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(max(0, size - 65557))
        tail = handle.read()
    at = tail.rfind(b"PK\x05\x06")
    # The record ends the file except for its comment, whose length it states.
    while at >= 0 and (
        len(tail) < at + 22
        or struct.unpack("<H", tail[at + 20 : at + 22])[0] != len(tail) - at - 22
    ):
        at = tail.rfind(b"PK\x05\x06", 0, at)
    if at < 0:
        return None
    count = struct.unpack("<H", tail[at + 10 : at + 12])[0]
    if count != 0xFFFF:
        return count
    locator = at - 20
    if locator < 0 or tail[locator : locator + 4] != b"PK\x06\x07":
        return None
    record_offset = struct.unpack("<Q", tail[locator + 8 : locator + 16])[0]
    with path.open("rb") as handle:
        handle.seek(record_offset)
        record = handle.read(56)
    if len(record) < 40 or record[:4] != b"PK\x06\x06":
        return None
    return struct.unpack("<Q", record[32:40])[0]


def _check_entries_are_safe(entries: list[zipfile.ZipInfo]) -> None:
    seen: dict[str, str] = {}
    for entry in entries:
        name = entry.filename
        unsafe = _unsafe_name_reason(name)
        if unsafe:
            raise ModelRejected(
                "unsafe_archive", f"The zip entry {name!r} {unsafe}; it was refused."
            )
        mode = entry.external_attr >> 16
        kind = stat.S_IFMT(mode)
        if kind == stat.S_IFLNK:
            raise ModelRejected(
                "unsafe_archive",
                f"The zip entry {name!r} is a symbolic link; a model package must hold only "
                "files and folders.",
            )
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise ModelRejected(
                "unsafe_archive",
                f"The zip entry {name!r} is a special file (not a file or folder).",
            )
        if entry.flag_bits & 0x1:
            raise ModelRejected(
                "unsafe_archive",
                f"The zip entry {name!r} is encrypted. Upload a zip without a password.",
            )
        # macOS file systems ignore case and Unicode normalisation, so these would collide there.
        key = unicodedata.normalize("NFC", name.rstrip("/")).casefold()
        if key in seen:
            raise ModelRejected(
                "unsafe_archive",
                f"The zip holds {seen[key]!r} and {name!r}, which name the same file.",
            )
        seen[key] = name


def _unsafe_name_reason(name: str) -> str | None:
    if not name or "\x00" in name:
        return "has an empty or invalid name"
    if "\\" in name:
        return "contains a backslash (a Windows path)"
    if name.startswith("/"):
        return "is an absolute path"
    if _DRIVE_LETTER.match(name):
        return "starts with a drive letter"
    if any(part in ("..", ".") for part in name.rstrip("/").split("/")):
        return "contains '..' or '.' path components (it could write outside the folder)"
    if "//" in name.rstrip("/"):
        return "contains an empty path component"
    return None


def _package_prefix(names: list[str]) -> str:
    """Where Manifest.json sits: at the root ("") or inside a single top-level folder ("X.mlpackage/")."""
    if "Manifest.json" in names:
        return ""
    tops = {name.split("/", 1)[0] for name in names}
    if len(tops) == 1:
        top = tops.pop()
        if f"{top}/Manifest.json" in names:
            return f"{top}/"
    files = [name for name in names if not name.endswith("/")]
    mlmodels = [name for name in files if name.lower().endswith(".mlmodel")]
    if any(PurePosixPath(name).name == "coremldata.bin" for name in files):
        hint = (
            " It looks like a compiled model (.mlmodelc); upload the source .mlmodel or "
            ".mlpackage instead."
        )
    elif len(mlmodels) == 1 and not any("Manifest.json" in name for name in files):
        hint = f" It holds {mlmodels[0]!r}: upload that .mlmodel file directly, not zipped."
    elif len(tops) > 1:
        hint = " Zip exactly one .mlpackage folder (or its contents)."
    else:
        hint = ""
    raise ModelRejected(
        "not_mlpackage",
        "The zip is not an .mlpackage: there is no Manifest.json at its root or inside a "
        f"single top-level folder.{hint}",
    )


def _extract(
    archive: zipfile.ZipFile,
    entries: list[zipfile.ZipInfo],
    prefix: str,
    root: Path,
    max_bytes: int,
) -> None:
    written = 0
    resolved_root = root.resolve()
    for entry in entries:
        relative = entry.filename[len(prefix) :]
        if not relative:
            continue
        target = (root / relative).resolve()
        if resolved_root not in target.parents:
            raise ModelRejected(
                "unsafe_archive", f"The zip entry {entry.filename!r} points outside the package."
            )
        try:
            if entry.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            entry_written = 0
            with archive.open(entry) as source, target.open("xb") as sink:
                while chunk := source.read(_COPY_CHUNK):
                    entry_written += len(chunk)
                    written += len(chunk)
                    # Headers can lie about sizes, so the bytes actually produced are what count.
                    if written > max_bytes or entry_written > entry.file_size:
                        raise ModelRejected(
                            "too_large",
                            f"Unpacking {entry.filename!r} produced more data than the zip declares "
                            f"or than the {max_bytes:,}-byte limit allows.",
                        )
                    sink.write(chunk)
        except ModelRejected:
            raise
        except (zipfile.BadZipFile, EOFError, zlib.error) as error:
            raise ModelRejected(
                "unreadable",
                f"The zip entry {entry.filename!r} is damaged: its data does not match the zip's "
                f"records ({error}).",
            ) from None
        except NotImplementedError as error:
            raise ModelRejected(
                "unreadable",
                f"The zip entry {entry.filename!r} uses an unsupported compression method ({error}). "
                "Re-create the zip with standard (deflate) compression.",
            ) from None
        except OSError as error:
            raise ModelRejected(
                "unreadable",
                f"The zip entry {entry.filename!r} could not be unpacked: {error.strerror or error}.",
            ) from None


def _read_package_dir(root: Path) -> ModelDescription:
    manifest_path = root / "Manifest.json"
    if not manifest_path.is_file():
        raise ModelRejected("not_mlpackage", "The package has no Manifest.json at its root.")
    if manifest_path.stat().st_size > _MAX_MANIFEST_BYTES:
        raise ModelRejected("unreadable", "The package's Manifest.json is implausibly large.")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelRejected(
            "unreadable", f"The package's Manifest.json is not valid JSON ({error})."
        ) from None
    if not isinstance(manifest, dict):
        raise ModelRejected("unreadable", "The package's Manifest.json is not a JSON object.")
    items = manifest.get("itemInfoEntries")
    root_id = manifest.get("rootModelIdentifier")
    if not isinstance(items, dict) or not isinstance(items.get(root_id), dict):
        raise ModelRejected(
            "unreadable",
            "The package's Manifest.json does not name its root model "
            "(rootModelIdentifier must be a key of itemInfoEntries).",
        )
    data_dir = root / "Data"
    for identifier, item in items.items():
        item_path = item.get("path") if isinstance(item, dict) else None
        if not isinstance(item_path, str) or _unsafe_name_reason(item_path):
            raise ModelRejected(
                "unreadable",
                f"The package's Manifest.json gives item {identifier} an invalid path.",
            )
        if not (data_dir / item_path).exists():
            what = item.get("description") or item.get("name") or "an item"
            raise ModelRejected(
                "unreadable",
                f"The package is incomplete: Manifest.json lists Data/{item_path} ({what}), "
                "but the package does not contain it. Zip the whole .mlpackage folder.",
            )
    model_file = data_dir / items[root_id]["path"]
    if not model_file.is_file():
        raise ModelRejected(
            "unreadable", f"The package's root model Data/{items[root_id]['path']} is not a file."
        )
    spec = _parse_spec(model_file.read_bytes())
    description = _describe(spec, MLPACKAGE)
    _check_weight_files(spec, model_file.parent)
    return description


def _check_weight_files(spec, model_dir: Path) -> None:
    # An ML program keeps its weights beside the spec ("@model_path/weights/weight.bin"); a
    # package that lost them parses fine here but fails to load on the device.
    for file_name, offset in _blob_references(spec):
        relative = file_name.removeprefix("@model_path/")
        blob = model_dir / relative
        if _unsafe_name_reason(relative) or not blob.is_file():
            raise ModelRejected(
                "unreadable",
                f"The ML program's weights are missing: it needs {relative}, which is not in the "
                "package. Zip the whole .mlpackage folder, including weights/.",
            )
        if offset >= blob.stat().st_size:
            raise ModelRejected(
                "unreadable",
                f"The ML program's weight file {relative} is shorter than the model expects "
                "(truncated copy?).",
            )


# --------------------------------------------------------------------------- description


def _describe(spec, file_format: str) -> ModelDescription:
    model_type = spec.WhichOneof("Type")
    version = spec.specificationVersion
    if version < 1 or version > _IMPLAUSIBLE_SPEC_VERSION or model_type is None:
        raise ModelRejected(
            "not_coreml",
            "The bytes are not a readable Core ML model: they parse, but specify "
            f"{'no model type' if model_type is None else 'model type ' + model_type} and "
            f"specification version {version}. The file may be cut short, or not a Core ML model.",
        )
    warnings: list[str] = []
    description = spec.description
    inputs_src, outputs_src = description.input, description.output
    predicted_feature = description.predictedFeatureName
    predicted_probabilities = description.predictedProbabilitiesName
    if not inputs_src and description.functions:
        chosen = next(
            (f for f in description.functions if f.name == description.defaultFunctionName),
            description.functions[0],
        )
        inputs_src, outputs_src = chosen.input, chosen.output
        predicted_feature = chosen.predictedFeatureName
        predicted_probabilities = chosen.predictedProbabilitiesName
        warnings.append(
            f"The model has {len(description.functions)} functions; Cohort describes "
            f"'{chosen.name}', the default."
        )
    if not inputs_src:
        raise ModelRejected(
            "invalid_spec", "The model declares no inputs, so no app could call it."
        )
    if not outputs_src:
        raise ModelRejected("invalid_spec", "The model declares no outputs.")
    inputs = tuple(_feature(f) for f in inputs_src)
    outputs = tuple(_feature(f) for f in outputs_src)
    for role, features in (("input", inputs), ("output", outputs)):
        names = [f.name for f in features]
        if "" in names:
            raise ModelRejected("invalid_spec", f"The model has an {role} with no name.")
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ModelRejected(
                "invalid_spec", f"The model declares the {role} {duplicates[0]!r} more than once."
            )

    if model_type == "mlProgram" and file_format == MLMODEL and _blob_references(spec):
        raise ModelRejected(
            "unreadable",
            "This ML program keeps its weights in separate files, so a lone .mlmodel cannot load. "
            "Zip the whole .mlpackage folder and upload that.",
        )
    metadata = _metadata(description.metadata)
    warnings += _feature_warnings(inputs, inputs_src, outputs, spec)
    warnings += _model_warnings(spec, version, metadata)
    class_labels = _class_labels(spec)
    if model_type.endswith("Classifier") and not class_labels:
        warnings.append("The model is a classifier but lists no class labels.")
    return ModelDescription(
        format=file_format,
        spec_version=version,
        model_type=model_type,
        sub_models=tuple(_sub_models(spec)),
        inputs=inputs,
        outputs=outputs,
        class_labels=class_labels,
        predicted_feature_name=predicted_feature,
        predicted_probabilities_name=predicted_probabilities,
        metadata=metadata,
        warnings=tuple(warnings),
    )


def _feature(proto) -> FeatureDescription:
    feature_type = proto.type
    kind = feature_type.WhichOneof("Type")
    common = {
        "name": proto.name,
        "optional": bool(feature_type.isOptional),
        "description": proto.shortDescription,
    }
    if kind == "multiArrayType":
        array = feature_type.multiArrayType
        return FeatureDescription(
            type="multiArray",
            shape=tuple(int(d) for d in array.shape),
            data_type=_ARRAY_DATA_TYPES.get(array.dataType, "invalid"),
            **common,
        )
    if kind == "imageType":
        image = feature_type.imageType
        return FeatureDescription(
            type="image",
            shape=(int(image.height), int(image.width)),
            data_type=_COLOR_SPACES.get(image.colorSpace, "invalid"),
            **common,
        )
    if kind == "dictionaryType":
        key = feature_type.dictionaryType.WhichOneof("KeyType")
        key_type = {"stringKeyType": "string", "int64KeyType": "int64"}.get(key, "invalid")
        return FeatureDescription(type="dictionary", key_type=key_type, **common)
    if kind == "sequenceType":
        element = feature_type.sequenceType.WhichOneof("Type")
        data_type = {"int64Type": "int64", "stringType": "string"}.get(element, "invalid")
        return FeatureDescription(type="sequence", data_type=data_type, **common)
    if kind == "stateType":
        array = feature_type.stateType.arrayType
        return FeatureDescription(
            type="state",
            shape=tuple(int(d) for d in array.shape),
            data_type=_ARRAY_DATA_TYPES.get(array.dataType, "invalid"),
            **common,
        )
    simple = {"int64Type": "int64", "doubleType": "double", "stringType": "string"}
    return FeatureDescription(type=simple.get(kind, "invalid"), **common)


def _metadata(proto) -> dict:
    return {
        "short_description": proto.shortDescription,
        "author": proto.author,
        "license": proto.license,
        "version": proto.versionString,
        "user_defined": dict(sorted(proto.userDefined.items())),
    }


def _feature_warnings(inputs, input_protos, outputs, spec) -> list[str]:
    warnings = []
    for role, features, protos in (
        ("Input", inputs, input_protos),
        ("Output", outputs, [None] * len(outputs)),
    ):
        for feature, proto in zip(features, protos, strict=True):
            if feature.type == "invalid":
                warnings.append(f"{role} '{feature.name}' has no type set.")
            elif feature.type in ("multiArray", "state") and feature.data_type == "invalid":
                warnings.append(
                    f"{role} '{feature.name}' is a MultiArray with no valid data type "
                    "(INVALID_ARRAY_DATA_TYPE); newer Core ML versions may refuse it."
                )
            if role != "Input":
                continue
            if feature.type == "image":
                height, width = feature.shape or (0, 0)
                warnings.append(
                    f"Input '{feature.name}' is an image ({feature.data_type}, {width}x{height}); "
                    "the app must supply a pixel buffer, not SDK signals."
                )
            array = proto.type.multiArrayType if feature.type == "multiArray" else None
            image = proto.type.imageType if feature.type == "image" else None
            if (array is not None and array.WhichOneof("ShapeFlexibility")) or (
                image is not None and image.WhichOneof("SizeFlexibility")
            ):
                warnings.append(
                    f"Input '{feature.name}' has a flexible shape; Cohort compares its default "
                    f"shape {list(feature.shape or ())}."
                )
    for state in spec.description.state:
        warnings.append(f"The model keeps state '{state.name}' between predictions (iOS 18+).")
    return warnings


def _model_warnings(spec, version: int, metadata: dict) -> list[str]:
    warnings = []
    if version > KNOWN_MAX_SPEC_VERSION:
        warnings.append(
            f"Specification version {version} is newer than this server knows "
            f"({KNOWN_MAX_SPEC_VERSION}); check which iOS versions can load it."
        )
    for class_name in _custom_classes(spec):
        warnings.append(
            f"The model uses a custom layer or model '{class_name}': the app must ship that "
            "class, or the model will not load."
        )
    for linked in _linked_files(spec):
        warnings.append(f"The model links to '{linked}', which must already be on the device.")
    licence = metadata["license"]
    if licence and _RESTRICTIVE_LICENCE.search(licence):
        warnings.append(
            f"The model's metadata licence says '{licence}'; make sure you may ship it to devices."
        )
    if spec.isUpdatable:
        warnings.append("The model is updatable (on-device training is enabled in it).")
    return warnings


def _walk_models(spec):
    """The model and, for pipelines, every model inside it (depth first, in order)."""
    yield spec
    kind = spec.WhichOneof("Type")
    if kind in _PIPELINE_TYPES:
        pipeline = spec.pipeline if kind == "pipeline" else getattr(spec, kind).pipeline
        for model in pipeline.models:
            yield from _walk_models(model)


def _sub_models(spec) -> list[str]:
    kinds = []
    for model in list(_walk_models(spec))[1:]:
        kind = model.WhichOneof("Type")
        if kind not in _PIPELINE_TYPES:
            kinds.append(kind or "invalid")
    return kinds


def _class_labels(spec) -> tuple[str, ...]:
    labels: tuple[str, ...] = ()
    for model in _walk_models(spec):
        kind = model.WhichOneof("Type")
        if kind is None or kind in _NOT_CLASSIFIER_LABELS:
            continue
        if kind == "mlProgram":
            found = _mil_class_labels(model.mlProgram)
        else:
            message = getattr(model, kind)
            if "ClassLabels" not in message.DESCRIPTOR.oneofs_by_name:
                continue
            which = message.WhichOneof("ClassLabels")
            found = tuple(str(v) for v in getattr(message, which).vector) if which else ()
        # A pipeline's last classifier decides the classes.
        if found:
            labels = found
    return labels


def _mil_operations(program):
    def in_block(block):
        for operation in block.operations:
            yield operation
            for inner in operation.blocks:
                yield from in_block(inner)

    for function in program.functions.values():
        for block in function.block_specializations.values():
            yield from in_block(block)


def _mil_class_labels(program) -> tuple[str, ...]:
    operations = list(_mil_operations(program))
    constants = {
        output.name: operation.attributes["val"]
        for operation in operations
        if operation.type == "const" and "val" in operation.attributes
        for output in operation.outputs
    }
    for operation in operations:
        if operation.type != "classify" or "classes" not in operation.inputs:
            continue
        for binding in operation.inputs["classes"].arguments:
            if binding.WhichOneof("binding") == "value":
                return tuple(_mil_values(binding.value))
            if binding.name in constants:
                return tuple(_mil_values(constants[binding.name]))
    return ()


def _mil_values(value) -> list[str]:
    if value.WhichOneof("value") != "immediateValue":
        return []
    immediate = value.immediateValue
    kind = immediate.WhichOneof("value")
    if kind == "tensor":
        tensor = immediate.tensor
        which = tensor.WhichOneof("value")
        if which in ("strings", "longInts", "ints"):
            return [str(v) for v in getattr(tensor, which).values]
        return []
    if kind == "list":
        return [label for item in immediate.list.values for label in _mil_values(item)]
    return []


def _blob_references(spec) -> list[tuple[str, int]]:
    if spec.WhichOneof("Type") != "mlProgram":
        return []
    references = []
    for operation in _mil_operations(spec.mlProgram):
        for value in operation.attributes.values():
            if value.WhichOneof("value") == "blobFileValue":
                references.append((value.blobFileValue.fileName, value.blobFileValue.offset))
    return references


def _neural_network_layers(network):
    for layer in network.layers:
        yield layer
        kind = layer.WhichOneof("layer")
        if kind == "loop":
            yield from _neural_network_layers(layer.loop.conditionNetwork)
            yield from _neural_network_layers(layer.loop.bodyNetwork)
        elif kind == "branch":
            yield from _neural_network_layers(layer.branch.ifBranch)
            yield from _neural_network_layers(layer.branch.elseBranch)


def _custom_classes(spec) -> list[str]:
    names: list[str] = []
    for model in _walk_models(spec):
        kind = model.WhichOneof("Type")
        if kind == "customModel":
            names.append(model.customModel.className or "(unnamed)")
        elif kind in _NEURAL_NETWORK_TYPES:
            for layer in _neural_network_layers(getattr(model, kind)):
                if layer.WhichOneof("layer") == "custom":
                    names.append(layer.custom.className or "(unnamed)")
    return list(dict.fromkeys(names))


def _linked_files(spec) -> list[str]:
    return [
        model.linkedModel.linkedModelFile.linkedModelFileName.defaultValue
        for model in _walk_models(spec)
        if model.WhichOneof("Type") == "linkedModel"
    ]


# --------------------------------------------------------------------------- interface


def interface_from_description(description: ModelDescription) -> dict:
    """The flow interface a model implies: {"inputs": [feature.to_dict() for every input]}."""
    return {"inputs": [feature.to_dict() for feature in description.inputs]}


def interface_problems(
    description: ModelDescription, interface: dict | None, positive_label: str
) -> list[str]:
    """Sentences saying why a model does not fit a flow; [] when it fits."""
    problems: list[str] = []
    if interface is not None:
        problems += _input_problems(description, interface)
        wanted_output = interface.get("output") if isinstance(interface, dict) else None
        if wanted_output and description.output(wanted_output) is None:
            problems.append(
                f"The flow reads the output '{wanted_output}', which the model does not have "
                f"(it has: {_names(description.outputs)})."
            )
    if positive_label:
        problems += _probability_problems(description, positive_label)
    return problems


def _input_problems(description: ModelDescription, interface: dict) -> list[str]:
    raw = interface.get("inputs") if isinstance(interface, dict) else None
    if not isinstance(raw, list) or not all(
        isinstance(item, dict) and isinstance(item.get("name"), str) for item in raw
    ):
        return ["The flow's interface is malformed: 'inputs' must be a list of named features."]
    offered = {item["name"]: item for item in raw}
    offered_names = ", ".join(offered) or "none"
    problems = []
    for feature in description.inputs:
        item = offered.get(feature.name)
        if item is None:
            # The model copes with an absent optional input; it only matters when it is sent.
            if not feature.optional:
                problems.append(
                    f"The model reads input '{feature.name}', which the flow's interface does not "
                    f"have (it has: {offered_names})."
                )
            continue
        problems += _feature_mismatch(feature, item)
    return problems


def _feature_mismatch(model: FeatureDescription, item: dict) -> list[str]:
    name = model.name
    if item.get("type") != model.type:
        return [
            f"Input '{name}' is a {model.type} in the model but a {item.get('type')} in the "
            "flow's interface."
        ]
    problems = []
    offered_shape = item.get("shape")
    offered_shape = tuple(offered_shape) if isinstance(offered_shape, list | tuple) else None
    if model.type in ("multiArray", "image") and offered_shape != model.shape:
        problems.append(
            f"Input '{name}' has shape {_shape(model.shape)} in the model but "
            f"{_shape(offered_shape)} in the flow's interface."
        )
    if model.type == "multiArray" and item.get("data_type") != model.data_type:
        problems.append(
            f"Input '{name}' holds {model.data_type} values in the model but "
            f"{item.get('data_type')} in the flow's interface."
        )
    if model.type == "dictionary" and item.get("key_type") != model.key_type:
        problems.append(
            f"Input '{name}' is a dictionary keyed by {model.key_type} in the model but by "
            f"{item.get('key_type')} in the flow's interface."
        )
    return problems


def _probability_problems(description: ModelDescription, positive_label: str) -> list[str]:
    if not description.is_classifier:
        return [
            f"The flow reads the probability of '{positive_label}', but the model is a "
            f"{description.model_type}, not a classifier."
        ]
    problems = []
    name = description.predicted_probabilities_name
    output = description.output(name) if name else None
    if output is None or output.type != "dictionary":
        problems.append(
            f"The flow reads the probability of '{positive_label}', but the model has no "
            f"class-probability output (a dictionary named by predictedProbabilitiesName); "
            f"its outputs are: {_names(description.outputs)}."
        )
    if positive_label not in description.class_labels:
        labels = ", ".join(description.class_labels) or "none listed"
        problems.append(
            f"The positive label '{positive_label}' is not one of the model's class labels "
            f"({labels})."
        )
    return problems


def _names(features) -> str:
    return ", ".join(feature.name for feature in features) or "none"


def _shape(shape) -> str:
    return "unspecified" if shape is None else "[" + ", ".join(str(d) for d in shape) + "]"


__all__ = [
    "MLMODEL",
    "MLPACKAGE",
    "FeatureDescription",
    "ModelDescription",
    "ModelRejected",
    "inspect_model",
    "interface_from_description",
    "interface_problems",
]
