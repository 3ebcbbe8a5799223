"""Describe a parsed Core ML spec: refuse one no app could call, and note what may trouble a device."""

import re

from .features import feature_from_proto, feature_warnings
from .ml_program import blob_references, mil_class_labels
from .model_description import MLMODEL, ModelDescription
from .rejection import ModelRejected

# The newest specification version coremltools 9.0 writes (iOS 26).
KNOWN_MAX_SPEC_VERSION = 10
# Far beyond any real version: a parse that yields more is garbage that happened to decode.
_IMPLAUSIBLE_SPEC_VERSION = 100

_PIPELINE_TYPES = ("pipeline", "pipelineClassifier", "pipelineRegressor")
_NEURAL_NETWORK_TYPES = ("neuralNetwork", "neuralNetworkClassifier", "neuralNetworkRegressor")
# Types whose ClassLabels are not the classes of a prediction (object detection, word tagging).
_NOT_CLASSIFIER_LABELS = ("nonMaximumSuppression", "gazetteer")

_RESTRICTIVE_LICENCE = re.compile(
    r"private|proprietary|confidential|all rights reserved|internal use|"
    r"non[- ]?commercial|no[- ]?deriv|\bcc[- ]by[- ]n[cd]\b|do not (re)?distribute|"
    r"not for (re)?distribution",
    re.IGNORECASE,
)


def describe_spec(spec, file_format: str) -> ModelDescription:
    """The description of a parsed spec read from a `file_format` file; raise ModelRejected if unusable."""
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
    inputs = tuple(feature_from_proto(f) for f in inputs_src)
    outputs = tuple(feature_from_proto(f) for f in outputs_src)
    for role, features in (("input", inputs), ("output", outputs)):
        names = [f.name for f in features]
        if "" in names:
            raise ModelRejected("invalid_spec", f"The model has an {role} with no name.")
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ModelRejected(
                "invalid_spec", f"The model declares the {role} {duplicates[0]!r} more than once."
            )

    if model_type == "mlProgram" and file_format == MLMODEL and blob_references(spec):
        raise ModelRejected(
            "unreadable",
            "This ML program keeps its weights in separate files, so a lone .mlmodel cannot load. "
            "Zip the whole .mlpackage folder and upload that.",
        )
    metadata = _metadata(description.metadata)
    warnings += feature_warnings(inputs, inputs_src, outputs, spec)
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


def _metadata(proto) -> dict:
    return {
        "short_description": proto.shortDescription,
        "author": proto.author,
        "license": proto.license,
        "version": proto.versionString,
        "user_defined": dict(sorted(proto.userDefined.items())),
    }


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
            found = mil_class_labels(model.mlProgram)
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
