"""Core ML inspection: the real-world corpus, refused uploads and unsafe zips."""

import json
import random
import shutil
import stat
import struct
import tarfile
import tempfile
import zipfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from registry.coreml import (
    MLMODEL,
    MLPACKAGE,
    FeatureDescription,
    ModelDescription,
    ModelRejected,
    inspect_model,
)
from registry.interfaces import interface_from_description, interface_problems
from registry.training import demo_rows, train_outcome_classifier

REPO_ROOT = Path(__file__).resolve().parents[3]
CORPUS = REPO_ROOT.parent / "shared" / "corpus" / "coreml"

PROPERTY = settings(database=None, max_examples=60, deadline=None)

DEMO = "KrauseFx__CoreMLDemo__MyFirstCustomModel.mlmodel"
DEMO_OTA = "KrauseFx__CoreMLDemo__80a2-82d1-bcf8-4ab5-9d35-d7f257c4c31e.mlmodel"
GAVI_IRIS = "gavi__Iris__iris.mlmodel"
CHINESE_PACKAGE = "CallmeLetty__YKCoreMLDemo__ChineseClassifier.mlpackage"
DIABETES_PACKAGE = "bkdevart__ML-Playground__DiabetesTest.mlpackage"
DIABETES_INPUTS = [
    "Pregnancies",
    "Glucose",
    "BloodPressure",
    "SkinThickness",
    "Insulin",
    "BMI",
    "DiabetesPedigreeFunction",
    "Age",
]
DEMO_INPUT = ("input", "multiArray", (2,), "double")
STRING_LABEL = ("classLabel", "string", None, None)
STRING_PROBABILITIES = ("classProbability", "dictionary", None, "string")


def double(name):
    return (name, "double", None, None)


# What SOURCES.md lists for each good file. Features are (name, type, shape, data_type or key_type).
EXPECTED = {
    DEMO: dict(
        spec=1,
        type="treeEnsembleClassifier",
        subs=(),
        inputs=[DEMO_INPUT],
        outputs=[STRING_LABEL, STRING_PROBABILITIES],
        labels=("Dismissed", "Purchased"),
        predicted=("classLabel", "classProbability"),
    ),
    DEMO_OTA: dict(
        spec=1,
        type="treeEnsembleClassifier",
        subs=(),
        inputs=[DEMO_INPUT],
        outputs=[STRING_LABEL, STRING_PROBABILITIES],
        labels=("Dismissed", "Purchased"),
        predicted=("classLabel", "classProbability"),
    ),
    "bkdevart__ML-Playground__DiabetesTest.mlmodel": dict(
        spec=1,
        type="pipelineClassifier",
        subs=("featureVectorizer", "scaler", "treeEnsembleClassifier"),
        inputs=[double(name) for name in DIABETES_INPUTS],
        outputs=[
            ("Outcome", "int64", None, None),
            ("classProbability", "dictionary", None, "int64"),
        ],
        labels=("0", "1"),
        predicted=("Outcome", "classProbability"),
    ),
    DIABETES_PACKAGE: dict(
        spec=1,
        type="pipelineClassifier",
        subs=("featureVectorizer", "treeEnsembleClassifier"),
        inputs=[double(name) for name in DIABETES_INPUTS],
        outputs=[
            ("Outcome", "int64", None, None),
            ("OutcomeProbability", "dictionary", None, "int64"),
        ],
        labels=("0", "1"),
        predicted=("Outcome", "OutcomeProbability"),
    ),
    CHINESE_PACKAGE: dict(
        spec=6,
        type="mlProgram",
        subs=(),
        inputs=[("text", "multiArray", (1, 50), "int32")],
        outputs=[STRING_LABEL, ("classLabel_probs", "dictionary", None, "string")],
        labels=("负面", "正面"),
        predicted=("classLabel", "classLabel_probs"),
    ),
    "CallmeLetty__YKCoreMLDemo__YKTextClassifier.mlmodel": dict(
        spec=3,
        type="textClassifier",
        subs=(),
        inputs=[("text", "string", None, None)],
        outputs=[("label", "string", None, None)],
        labels=("negative", "positive"),
        # Create ML left predictedFeatureName empty in this file.
        predicted=("", ""),
    ),
    "onnx__onnxmltools__onehot_simple.mlmodel": dict(
        spec=1,
        type="pipeline",
        subs=("arrayFeatureExtractor", "oneHotEncoder") * 8 + ("featureVectorizer",),
        inputs=[("input", "multiArray", (8,), "double")],
        outputs=[("transformed_features", "multiArray", (102,), "double")],
        labels=(),
        predicted=("", ""),
    ),
    "onnx__onnxmltools__keras2coreml_Dense_ImageNet_small.mlmodel": dict(
        spec=1,
        type="neuralNetwork",
        subs=(),
        inputs=[("input1", "multiArray", (3, 3, 3), "double")],
        outputs=[("output1", "multiArray", (2,), "double")],
        labels=(),
        predicted=("", ""),
    ),
    "olmaditekrar__Converting-ScikitModel-to-MlModels__iris.mlmodel": dict(
        spec=1,
        type="pipelineClassifier",
        subs=("featureVectorizer", "glmClassifier"),
        inputs=[
            double("sepal length (cm)"),
            double("sepal width (cm)"),
            double("petal length (cm)"),
            double("petal width (cm)"),
        ],
        outputs=[("iris", "int64", None, None), ("classProbability", "dictionary", None, "int64")],
        labels=("0", "1", "2"),
        predicted=("iris", "classProbability"),
    ),
    GAVI_IRIS: dict(
        spec=1,
        type="supportVectorClassifier",
        subs=(),
        inputs=[("data", "multiArray", (4,), "invalid")],
        outputs=[("Species", "string", None, None)],
        labels=("setosa", "versicolor", "virginica"),
        predicted=("Species", ""),
    ),
    "MoonAndEye__CreateMLDemo__HousePricer.mlmodel": dict(
        spec=1,
        type="pipelineRegressor",
        subs=("featureVectorizer", "treeEnsembleRegressor"),
        inputs=[double("RM"), double("LSTAT"), double("PTRATIO")],
        outputs=[double("MEDV")],
        labels=(),
        predicted=("MEDV", ""),
    ),
    "simonitalia__TradeMyTesla__Cars.mlmodel": dict(
        spec=1,
        type="pipelineRegressor",
        subs=("featureVectorizer", "glmRegressor"),
        inputs=[double("model"), double("premium"), double("milegae"), double("condition")],
        outputs=[double("price")],
        labels=(),
        predicted=("price", ""),
    ),
    "improve-ai__swift-ranker__model_v8.mlmodel": dict(
        spec=1,
        type="treeEnsembleRegressor",
        subs=(),
        inputs=[
            double(name)
            for name in (
                "context.value",
                "item.a",
                "item.b.x.0",
                "item.b.x.1",
                "item.b.x.2",
                "item.b.y",
                "item.b.z.value",
                "item.c.q.value",
                "item.c.u.0",
                "item.c.u.1",
                "item.c.v",
            )
        ],
        outputs=[double("target")],
        labels=(),
        predicted=("target", ""),
    ),
    "umerzia-7001__CoreML-Keras_Digit_recognition_app__MNISTClassifier.mlmodel": dict(
        spec=1,
        type="neuralNetworkClassifier",
        subs=(),
        inputs=[("imageInput", "image", (28, 28), "grayscale")],
        outputs=[("output", "dictionary", None, "string"), STRING_LABEL],
        labels=tuple(str(digit) for digit in range(10)),
        predicted=("classLabel", "output"),
    ),
    "dneprDroid__Lstsq-CoreML__test-model.mlmodel": dict(
        spec=4,
        type="neuralNetwork",
        subs=(),
        inputs=[
            ("a", "multiArray", (1, 1, 1, 2), "float32"),
            ("b", "multiArray", (1, 1, 1), "float32"),
        ],
        outputs=[
            ("solution", "multiArray", (), "float32"),
            ("rank", "multiArray", (), "float32"),
            ("singular_values", "multiArray", (), "float32"),
        ],
        labels=(),
        predicted=("", ""),
    ),
}
MLMODEL_FILES = sorted(name for name in EXPECTED if name.endswith(".mlmodel"))
PACKAGES = sorted(name for name in EXPECTED if name.endswith(".mlpackage"))


@pytest.fixture(scope="module", autouse=True)
def corpus():
    if not CORPUS.is_dir():
        pytest.fail(f"The Core ML corpus is missing: expected it at {CORPUS}.")
    return CORPUS


def features(description_features):
    return [
        (f.name, f.type, f.shape, f.key_type if f.type == "dictionary" else f.data_type)
        for f in description_features
    ]


def zip_package(source: Path, target: Path, *, top_folder: bool) -> Path:
    """Zip an .mlpackage the way an uploader would: with or without its own folder at the top."""
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(source.rglob("*")):
            relative = path.relative_to(source).as_posix()
            name = f"{source.name}/{relative}" if top_folder else relative
            if path.is_dir():
                archive.writestr(name + "/", b"")
            else:
                archive.write(path, name)
    return target


def writable_copy(source: Path, target: Path) -> Path:
    """Copy a corpus folder; shutil.copytree would keep the corpus's read-only modes."""
    for path in sorted(source.rglob("*")):
        if path.is_file():
            destination = target / path.relative_to(source)
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_bytes(path.read_bytes())
    return target


def write_zip(target: Path, entries) -> Path:
    """entries: (ZipInfo or name, bytes) pairs, written as given."""
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for info, data in entries:
            archive.writestr(info, data)
    return target


def rewrite_header_field(path: Path, entry_name: str, local_at: int, central_at: int, value: int):
    """Overwrite one 16/32-bit field of an entry in its local and central headers (to forge zips)."""
    data = bytearray(path.read_bytes())
    name = entry_name.encode()
    width = "<I" if local_at in (18, 22) else "<H"
    for signature, header_size, name_length_at, field_at in (
        (b"PK\x03\x04", 30, 26, local_at),
        (b"PK\x01\x02", 46, 28, central_at),
    ):
        at = data.find(signature)
        while at >= 0:
            length = struct.unpack_from("<H", data, at + name_length_at)[0]
            if bytes(data[at + header_size : at + header_size + length]) == name:
                struct.pack_into(width, data, at + field_at, value)
            at = data.find(signature, at + 4)
    path.write_bytes(bytes(data))


def package_entries(name: str = DIABETES_PACKAGE):
    source = CORPUS / name
    return [
        (path.relative_to(source).as_posix(), path.read_bytes())
        for path in sorted(source.rglob("*"))
        if path.is_file()
    ]


def rejected(path, **limits) -> ModelRejected:
    with pytest.raises(ModelRejected) as caught:
        inspect_model(path, **limits)
    return caught.value


def describe(name: str) -> ModelDescription:
    return inspect_model(CORPUS / name)


# --------------------------------------------------------------------------- the corpus


def test_corpus__directory__holds_exactly_the_files_sources_md_lists():
    present = {path.name for path in CORPUS.iterdir() if path.suffix in (".mlmodel", ".mlpackage")}

    assert present == set(EXPECTED)
    assert len(MLMODEL_FILES) == 13
    assert len(PACKAGES) == 2


def assert_matches_sources(description: ModelDescription, name: str, file_format: str):
    expected = EXPECTED[name]
    assert description.format == file_format
    assert description.spec_version == expected["spec"]
    assert description.model_type == expected["type"]
    assert description.sub_models == expected["subs"]
    assert features(description.inputs) == expected["inputs"]
    assert features(description.outputs) == expected["outputs"]
    assert description.class_labels == expected["labels"]
    assert (
        description.predicted_feature_name,
        description.predicted_probabilities_name,
    ) == expected["predicted"]
    assert description.is_classifier == bool(expected["labels"])


@pytest.mark.parametrize("name", MLMODEL_FILES)
def test_inspect_model__corpus_mlmodel__matches_sources_md(name):
    assert_matches_sources(describe(name), name, MLMODEL)


@pytest.mark.parametrize("top_folder", [True, False], ids=["with_top_folder", "contents_only"])
@pytest.mark.parametrize("name", PACKAGES)
def test_inspect_model__corpus_package_zipped__matches_sources_md(name, top_folder, tmp_path):
    upload = zip_package(CORPUS / name, tmp_path / "upload.zip", top_folder=top_folder)

    assert_matches_sources(inspect_model(upload), name, MLPACKAGE)


@pytest.mark.parametrize("name", PACKAGES)
def test_inspect_model__corpus_package_directory__matches_sources_md(name):
    assert_matches_sources(describe(name), name, MLPACKAGE)


def test_inspect_model__demo_model__reads_metadata_and_has_no_warnings():
    description = describe(DEMO)

    assert description.metadata == {
        "short_description": "My first model",
        "author": "",
        "license": "",
        "version": "",
        "user_defined": {
            "com.github.apple.coremltools.source": "scikit-learn==1.1.2",
            "com.github.apple.coremltools.version": "7.2",
        },
    }
    assert description.warnings == ()


def test_inspect_model__diabetes_package__reads_author_from_spec():
    description = describe(DIABETES_PACKAGE)

    assert description.metadata["author"] == "Brandon Knox"
    assert description.metadata["user_defined"]["com.apple.createml.version"] == "13.2.0"


def test_inspect_model__gavi_iris__warns_invalid_array_data_type():
    description = describe(GAVI_IRIS)

    assert description.inputs[0].data_type == "invalid"
    assert len(description.warnings) == 1
    assert "'data'" in description.warnings[0]
    assert "INVALID_ARRAY_DATA_TYPE" in description.warnings[0]


def test_inspect_model__custom_layer_model__warns_class_name_and_flexible_shapes():
    warnings = describe("dneprDroid__Lstsq-CoreML__test-model.mlmodel").warnings

    assert any("'dneprDroid_lstsq'" in w and "app must ship" in w for w in warnings)
    assert sum("flexible shape" in w for w in warnings) == 2


def test_inspect_model__private_licence_in_metadata__warns():
    description = describe("onnx__onnxmltools__onehot_simple.mlmodel")

    assert description.metadata["license"] == "Private"
    assert description.warnings == (
        "The model's metadata licence says 'Private'; make sure you may ship it to devices.",
    )


def test_inspect_model__permissive_metadata_licences__do_not_warn():
    for name in (GAVI_IRIS, "simonitalia__TradeMyTesla__Cars.mlmodel"):
        assert not any("licence" in w for w in describe(name).warnings)


def test_inspect_model__image_input__warns_pixel_buffer():
    description = describe(
        "umerzia-7001__CoreML-Keras_Digit_recognition_app__MNISTClassifier.mlmodel"
    )

    assert description.warnings == (
        "Input 'imageInput' is an image (grayscale, 28x28); the app must supply a pixel buffer, "
        "not SDK signals.",
    )


def test_description_to_dict__every_corpus_file__is_json_and_round_trips():
    for name in EXPECTED:
        description = describe(name)
        data = json.loads(json.dumps(description.to_dict()))

        assert ModelDescription.from_dict(data) == description


def test_feature_to_dict__scalar_feature__omits_none_fields():
    feature = FeatureDescription(name="Age", type="double", optional=False)

    assert feature.to_dict() == {
        "name": "Age",
        "type": "double",
        "optional": False,
        "description": "",
    }


# --------------------------------------------------------------------------- refused files


def test_inspect_model__git_lfs_pointer__refused_naming_size_and_git_lfs_pull():
    error = rejected(
        CORPUS / "bad" / "erkandiken__mnist-scikit-svm-to-coreml__digit_recognizer.mlmodel"
    )

    assert error.code == "git_lfs_pointer"
    assert "Git LFS pointer" in error.detail
    assert "110,281,016 bytes" in error.detail
    assert "git lfs pull" in error.detail


def test_inspect_model__gzip_file__refused_as_compressed():
    error = rejected(CORPUS / "bad" / "improve-ai__swift-ranker__happy_sunday.mlmodel.gz")

    assert error.code == "compressed"
    assert "gzip" in error.detail
    assert "Decompress" in error.detail


def test_inspect_model__empty_file__refused_as_empty(tmp_path):
    empty = tmp_path / "empty.mlmodel"
    empty.write_bytes(b"")

    error = rejected(empty)

    assert error.code == "empty"
    assert "0 bytes" in error.detail


def test_inspect_model__first_half_of_real_model__refused_as_truncated(tmp_path):
    data = (CORPUS / DEMO).read_bytes()
    cut = tmp_path / "cut.mlmodel"
    cut.write_bytes(data[: len(data) // 2])

    error = rejected(cut)

    assert error.code == "truncated"
    assert f"{len(data) // 2:,} bytes" in error.detail


def test_inspect_model__random_bytes__refused_as_not_coreml(tmp_path):
    noise = tmp_path / "noise.mlmodel"
    noise.write_bytes(random.Random(7).randbytes(4096))

    error = rejected(noise)

    assert error.code == "not_coreml"
    assert "not a readable Core ML model" in error.detail


def test_inspect_model__csv_uploaded_by_mistake__refused_quoting_its_first_line(tmp_path):
    text = tmp_path / "data.mlmodel"
    text.write_text("Outcome,Battery Level\nPurchased,0.5\n")

    error = rejected(text)

    assert error.code == "not_coreml"
    assert "'Outcome,Battery Level'" in error.detail


def test_inspect_model__spec_version_without_model_type__refused_as_not_coreml(tmp_path):
    bare = tmp_path / "bare.mlmodel"
    bare.write_bytes(b"\x08\x01")  # specificationVersion = 1, nothing else

    error = rejected(bare)

    assert error.code == "not_coreml"
    assert "no model type" in error.detail


def test_inspect_model__model_without_inputs__refused_as_invalid_spec(tmp_path):
    from coremltools.proto import Model_pb2

    spec = Model_pb2.Model()
    spec.ParseFromString((CORPUS / DEMO).read_bytes())
    del spec.description.input[:]
    stripped = tmp_path / "no-inputs.mlmodel"
    stripped.write_bytes(spec.SerializeToString())

    error = rejected(stripped)

    assert error.code == "invalid_spec"
    assert "no inputs" in error.detail


def test_inspect_model__tar_archive__refused_as_unsupported_archive(tmp_path):
    archive = tmp_path / "model.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(CORPUS / DEMO, arcname="model.mlmodel")

    error = rejected(archive)

    assert error.code == "unsupported_archive"
    assert "tar archive" in error.detail


def test_inspect_model__file_over_limit__refused_as_too_large():
    error = rejected(CORPUS / DEMO, max_unpacked_bytes=1000)

    assert error.code == "too_large"
    assert "7,671 bytes" in error.detail


@PROPERTY
@given(data=st.binary(min_size=1, max_size=512))
def test_inspect_model__arbitrary_bytes__describe_or_refuse_never_crash(data):
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "upload.mlmodel"
        path.write_bytes(data)
        try:
            description = inspect_model(path)
        except ModelRejected as error:
            assert error.code and error.detail
        else:
            assert description.inputs and description.model_type


@PROPERTY
@given(fraction=st.floats(min_value=0.0, max_value=0.999))
def test_inspect_model__any_prefix_of_demo_model__refused(fraction):
    data = (CORPUS / DEMO).read_bytes()
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "cut.mlmodel"
        path.write_bytes(data[: int(len(data) * fraction)])

        with pytest.raises(ModelRejected) as caught:
            inspect_model(path)

    assert caught.value.code in {"empty", "truncated", "not_coreml"}


# --------------------------------------------------------------------------- zips


def test_inspect_model__zip_slip_entry__refused_as_unsafe(tmp_path):
    upload = write_zip(tmp_path / "slip.zip", [*package_entries(), ("../evil", b"x")])

    error = rejected(upload)

    assert error.code == "unsafe_archive"
    assert "'../evil'" in error.detail


def test_inspect_model__absolute_path_entry__refused_as_unsafe(tmp_path):
    upload = write_zip(tmp_path / "abs.zip", [*package_entries(), ("/etc/evil", b"x")])

    error = rejected(upload)

    assert error.code == "unsafe_archive"
    assert "absolute path" in error.detail


@pytest.mark.parametrize("name", ["Data\\evil", "C:/evil", "Data/./x", "Data//x"])
def test_inspect_model__odd_entry_names__refused_as_unsafe(name, tmp_path):
    upload = write_zip(tmp_path / "odd.zip", [*package_entries(), (name, b"x")])

    assert rejected(upload).code == "unsafe_archive"


def entry_named(name: str) -> zipfile.ZipInfo:
    """A ZipInfo that keeps `name` whole: ZipInfo() itself cuts a name at its first NUL."""
    info = zipfile.ZipInfo("placeholder")
    info.filename = name
    return info


@pytest.mark.parametrize(
    ("name", "code_point"),
    [
        ("Data/evil\x00.txt", "U+0000"),
        ("Data/bell\x07", "U+0007"),
        ("Data/line\nbreak", "U+000A"),
        ("Data/escape\x1b[31m", "U+001B"),
        ("Data/delete\x7f", "U+007F"),
        ("Data/next\x85line", "U+0085"),
        ("Data/csi\x9b", "U+009B"),
    ],
)
def test_inspect_model__control_character_in_entry_name__refused_as_unsafe(
    name, code_point, tmp_path
):
    upload = write_zip(tmp_path / "control.zip", [*package_entries(), (entry_named(name), b"x")])
    # The local header and the central directory both record the name with the character in it.
    assert upload.read_bytes().count(name.encode("utf-8")) == 2

    error = rejected(upload)

    assert error.code == "unsafe_archive"
    assert error.detail == (
        f"The zip entry {name!r} contains the control character {code_point}, which no file "
        "name may hold; it was refused."
    )


def test_inspect_model__nul_written_into_zip_bytes__refused_naming_the_whole_name(tmp_path):
    upload = write_zip(tmp_path / "nul.zip", [*package_entries(), ("Data/evil_.txt", b"x")])
    # Forge the name in place, in the local header and the central directory, as a hostile
    # tool would: same length, so every offset stays right.
    data = upload.read_bytes()
    assert data.count(b"Data/evil_.txt") == 2
    upload.write_bytes(data.replace(b"Data/evil_.txt", b"Data/evil\x00.txt"))

    error = rejected(upload)

    assert error.code == "unsafe_archive"
    assert "'Data/evil\\x00.txt' contains the control character U+0000" in error.detail


def test_inspect_model__non_ascii_entry_names_without_controls__accepted(tmp_path):
    names = ["Data/Übersicht.txt", "Data/no\u00a0break space.txt", "Data/ÿ-latin1-end"]
    upload = write_zip(
        tmp_path / "accents.zip", [*package_entries(), *((name, b"x") for name in names)]
    )

    assert inspect_model(upload).model_type == "pipelineClassifier"


def test_inspect_model__symlink_entry__refused_as_unsafe(tmp_path):
    link = zipfile.ZipInfo("Data/link")
    link.create_system = 3
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    upload = write_zip(tmp_path / "link.zip", [*package_entries(), (link, b"/etc/passwd")])

    error = rejected(upload)

    assert error.code == "unsafe_archive"
    assert "symbolic link" in error.detail


def test_inspect_model__encrypted_entry__refused_as_unsafe(tmp_path):
    upload = write_zip(tmp_path / "secret.zip", [*package_entries(), ("Data/secret", b"x")])
    # General-purpose flags: offset 6 locally, 8 centrally; bit 0 means encrypted.
    rewrite_header_field(upload, "Data/secret", 6, 8, 0x1)

    error = rejected(upload)

    assert error.code == "unsafe_archive"
    assert "encrypted" in error.detail


def test_inspect_model__duplicate_entry_names__refused_as_unsafe(tmp_path):
    entries = package_entries()
    with pytest.warns(UserWarning, match="Duplicate name"):
        upload = write_zip(tmp_path / "dup.zip", [*entries, entries[0]])

    error = rejected(upload)

    assert error.code == "unsafe_archive"
    assert "name the same file" in error.detail


def test_inspect_model__names_differing_only_in_case__refused_as_unsafe(tmp_path):
    upload = write_zip(
        tmp_path / "case.zip", [*package_entries(), ("data/x", b"1"), ("Data/X", b"2")]
    )

    assert rejected(upload).code == "unsafe_archive"


def test_inspect_model__more_entries_than_limit__refused_as_too_many_files(tmp_path):
    upload = zip_package(CORPUS / DIABETES_PACKAGE, tmp_path / "p.zip", top_folder=True)

    error = rejected(upload, max_archive_files=3)

    assert error.code == "too_many_files"
    assert "at most 3" in error.detail


def test_inspect_model__zip_with_comment__counts_entries_at_the_limit(tmp_path):
    upload = write_zip(tmp_path / "p.zip", package_entries())
    with zipfile.ZipFile(upload, "a") as archive:
        archive.comment = b"made by an uploader"

    description = inspect_model(upload, max_archive_files=4)

    assert description.model_type == "pipelineClassifier"


def test_inspect_model__honest_zip_bomb__refused_as_too_large_before_extracting(tmp_path):
    bomb = ("Data/padding.bin", b"\0" * 20_000_000)
    upload = write_zip(tmp_path / "bomb.zip", [*package_entries(), bomb])

    error = rejected(upload, max_unpacked_bytes=1_000_000)

    assert upload.stat().st_size < 100_000
    assert error.code == "too_large"
    assert "limit is 1,000,000 bytes" in error.detail


def test_inspect_model__zip_bomb_with_lying_header__refused_without_unpacking_it(tmp_path):
    upload = write_zip(
        tmp_path / "liar.zip", [*package_entries(), ("Data/padding.bin", b"\0" * 20_000_000)]
    )
    # Uncompressed size: offset 22 in the local header, 24 in the central directory.
    rewrite_header_field(upload, "Data/padding.bin", 22, 24, 100)

    error = rejected(upload, max_unpacked_bytes=1_000_000)

    assert error.code == "unreadable"
    assert "'Data/padding.bin'" in error.detail
    assert "does not match" in error.detail


def test_inspect_model__zip_without_manifest__refused_as_not_mlpackage(tmp_path):
    upload = write_zip(tmp_path / "plain.zip", [("notes.txt", b"hello"), ("more/x.bin", b"1")])

    error = rejected(upload)

    assert error.code == "not_mlpackage"
    assert "Manifest.json" in error.detail


def test_inspect_model__zipped_single_mlmodel__refused_suggesting_direct_upload(tmp_path):
    upload = write_zip(tmp_path / "model.zip", [(DEMO, (CORPUS / DEMO).read_bytes())])

    error = rejected(upload)

    assert error.code == "not_mlpackage"
    assert "upload that .mlmodel file directly" in error.detail


def test_inspect_model__zip_with_two_top_level_packages__refused_as_not_mlpackage(tmp_path):
    entries = [(f"{top}/{name}", data) for top in ("a", "b") for name, data in package_entries()]
    upload = write_zip(tmp_path / "two.zip", entries)

    assert rejected(upload).code == "not_mlpackage"


def test_inspect_model__package_without_weights__refused_as_unreadable(tmp_path):
    copy = writable_copy(CORPUS / CHINESE_PACKAGE, tmp_path / CHINESE_PACKAGE)
    shutil.rmtree(copy / "Data" / "com.apple.CoreML" / "weights")
    upload = zip_package(copy, tmp_path / "no-weights.zip", top_folder=True)

    error = rejected(upload)

    assert error.code == "unreadable"
    assert "Data/com.apple.CoreML/weights (CoreML Model Weights)" in error.detail


def test_inspect_model__package_with_short_weight_file__refused_as_unreadable(tmp_path):
    entries = [
        (name, b"\0" * 8 if name.endswith("weight.bin") else data)
        for name, data in package_entries(CHINESE_PACKAGE)
    ]
    upload = write_zip(tmp_path / "short.zip", entries)

    error = rejected(upload)

    assert error.code == "unreadable"
    assert "weights/weight.bin" in error.detail


def test_inspect_model__ml_program_spec_alone__refused_suggesting_package(tmp_path):
    spec = CORPUS / CHINESE_PACKAGE / "Data" / "com.apple.CoreML" / "model.mlmodel"
    lone = tmp_path / "model.mlmodel"
    lone.write_bytes(spec.read_bytes())

    error = rejected(lone)

    assert error.code == "unreadable"
    assert ".mlpackage" in error.detail


def test_inspect_model__manifest_not_json__refused_as_unreadable(tmp_path):
    entries = [
        (name, b"{not json" if name == "Manifest.json" else data)
        for name, data in package_entries()
    ]

    error = rejected(write_zip(tmp_path / "bad-manifest.zip", entries))

    assert error.code == "unreadable"
    assert "not valid JSON" in error.detail


def test_inspect_model__manifest_root_is_not_the_model_file__reads_named_root(tmp_path):
    # The Create ML package names its root DiabetesTest.mlmodel; nothing assumes model.mlmodel.
    entries = package_entries()

    assert "Data/com.apple.CoreML/model.mlmodel" not in [name for name, _ in entries]
    assert inspect_model(write_zip(tmp_path / "p.zip", entries)).model_type == "pipelineClassifier"


def test_inspect_model__root_model_missing__refused_naming_it(tmp_path):
    entries = [(n, d) for n, d in package_entries() if not n.endswith("DiabetesTest.mlmodel")]

    error = rejected(write_zip(tmp_path / "p.zip", entries))

    assert error.code == "unreadable"
    assert "Data/com.apple.CoreML/DiabetesTest.mlmodel" in error.detail


def test_inspect_model__zip_made_by_macos_finder__ignores_macosx_folder(tmp_path):
    entries = [(f"{DIABETES_PACKAGE}/{name}", data) for name, data in package_entries()]
    entries += [
        (f"__MACOSX/{DIABETES_PACKAGE}/._Manifest.json", b"\0\x05\x16\x07"),
        (f"{DIABETES_PACKAGE}/.DS_Store", b"\0\0\0\1Bud1"),
    ]

    description = inspect_model(write_zip(tmp_path / "finder.zip", entries))

    assert description.format == MLPACKAGE
    assert description.sub_models == ("featureVectorizer", "treeEnsembleClassifier")


def test_inspect_model__damaged_zip__refused_as_unreadable(tmp_path):
    whole = zip_package(CORPUS / DIABETES_PACKAGE, tmp_path / "p.zip", top_folder=False)
    broken = tmp_path / "broken.zip"
    broken.write_bytes(whole.read_bytes()[:3000])

    assert rejected(broken).code == "unreadable"


def test_inspect_model__zip_accepted_or_refused__leaves_no_temporary_files(tmp_path, monkeypatch):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    good = zip_package(CORPUS / CHINESE_PACKAGE, tmp_path / "good.zip", top_folder=True)
    entries = [(n, d) for n, d in package_entries(CHINESE_PACKAGE) if "weights" not in n]
    bad = write_zip(tmp_path / "bad.zip", entries)

    inspect_model(good)
    with pytest.raises(ModelRejected):
        inspect_model(bad)

    assert list(scratch.iterdir()) == []


# --------------------------------------------------------------------------- trained models


def test_inspect_model__model_trained_by_training_module__round_trips_and_fits_demo_flow(
    tmp_path,
):
    rows = demo_rows(120, seed=3)
    X = [[row["Battery Level"], float(row["Phone Charging?"])] for row in rows]
    y = [row["Outcome"] for row in rows]
    result = train_outcome_classifier(
        ["Battery Level", "Phone Charging?"], X, y, seed=3, n_estimators=10
    )
    path = tmp_path / "trained.mlmodel"
    path.write_bytes(result.model_bytes)

    description = inspect_model(path)

    assert description.model_type == "treeEnsembleClassifier"
    assert features(description.inputs) == [DEMO_INPUT]
    assert features(description.outputs) == [STRING_LABEL, STRING_PROBABILITIES]
    assert description.class_labels == ("Dismissed", "Purchased")
    assert description.metadata["user_defined"]["com.cohort.features"] == json.dumps(
        ["Battery Level", "Phone Charging?"]
    )
    demo_interface = interface_from_description(describe(DEMO))
    assert interface_problems(description, demo_interface, "Purchased") == []


def test_model_rejected__str__is_the_detail():
    error = ModelRejected("empty", "The file is empty.")

    assert str(error) == "The file is empty."
    assert error.to_dict() == {"code": "empty", "detail": "The file is empty."}
