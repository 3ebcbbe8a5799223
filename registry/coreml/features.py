"""One input or output of a spec as a FeatureDescription, and what about features a device may trip on."""

from .model_description import FeatureDescription

_ARRAY_DATA_TYPES = {
    0: "invalid",
    65568: "float32",
    65600: "double",
    131104: "int32",
    131080: "int8",
    65552: "float16",
}
_COLOR_SPACES = {0: "invalid", 10: "grayscale", 20: "rgb", 30: "bgr", 40: "grayscale_float16"}


def feature_from_proto(proto) -> FeatureDescription:
    """Describe one FeatureDescription message of a spec (its type, shape, data or key type)."""
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


def feature_warnings(inputs, input_protos, outputs, spec) -> list[str]:
    """Warnings about the features: missing types, image inputs, flexible shapes, kept state."""
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
