"""The interface a flow declares: the inputs its SDK sends, in the shape `registry.coreml` reads from models."""

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
