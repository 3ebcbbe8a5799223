"""The interface a flow declares (the inputs its SDK sends), and whether a model fits it.

An interface has the shape `registry.coreml` gives a model's inputs: `{"inputs": [feature, ...]}`,
each feature as `FeatureDescription.to_dict()` writes it, optionally with the `output` the flow
reads. Pure: no Django.
"""

from .coreml import FeatureDescription, ModelDescription
from .sdk_versions import InvalidSdkVersion, parse_sdk_version

FEATURE_TYPES = frozenset(
    {"double", "int64", "string", "multiArray", "dictionary", "image", "sequence"}
)


class InvalidInterface(ValueError):
    pass


def interface_validate(interface) -> dict:
    """Return the interface normalised, or raise InvalidInterface naming what is wrong."""
    if not isinstance(interface, dict) or not isinstance(interface.get("inputs"), list):
        raise InvalidInterface('The interface must be an object {"inputs": [ {...}, ... ]}.')
    if not interface["inputs"]:
        raise InvalidInterface("The interface must list at least one input.")
    seen: set[str] = set()
    inputs = []
    for index, feature in enumerate(interface["inputs"]):
        where = f"Input {index + 1}"
        if not isinstance(feature, dict):
            raise InvalidInterface(f"{where} must be an object with a name and a type.")
        name = feature.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidInterface(f"{where} needs a non-empty 'name'.")
        if name in seen:
            raise InvalidInterface(f"Input '{name}' is listed twice.")
        seen.add(name)
        if feature.get("type") not in FEATURE_TYPES:
            raise InvalidInterface(
                f"Input '{name}' has type {feature.get('type')!r}; "
                f"expected one of {', '.join(sorted(FEATURE_TYPES))}."
            )
        shape = feature.get("shape")
        if shape is not None and (
            not isinstance(shape, list)
            or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)
        ):
            raise InvalidInterface(f"Input '{name}' has a shape that is not a list of sizes.")
        inputs.append(dict(feature))
    return {**interface, "inputs": inputs}


def signals_validate(signals) -> dict[str, str]:
    """Return a signal catalog `{input name: first SDK version sending it}`, or raise InvalidInterface."""
    if signals is None:
        return {}
    if not isinstance(signals, dict):
        raise InvalidInterface('Signals must be an object {"input name": "1.4.0", ...}.')
    for name, version in signals.items():
        try:
            parse_sdk_version(version if isinstance(version, str) else "")
        except InvalidSdkVersion as error:
            raise InvalidInterface(f"Signal '{name}': {error}") from None
    return dict(signals)


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
