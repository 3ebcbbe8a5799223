"""Reading an ML program (MIL) inside a spec: its operations, its classify labels, its weight-file references."""


def mil_operations(program):
    """Every operation of every function and block specialisation, nested blocks included."""

    def in_block(block):
        for operation in block.operations:
            yield operation
            for inner in operation.blocks:
                yield from in_block(inner)

    for function in program.functions.values():
        for block in function.block_specializations.values():
            yield from in_block(block)


def mil_class_labels(program) -> tuple[str, ...]:
    """The classes of the program's `classify` operation, given inline or through a constant; () if none."""
    operations = list(mil_operations(program))
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


def blob_references(spec) -> list[tuple[str, int]]:
    """(file name, offset) of every weight an ML program keeps in a separate file; [] for other models."""
    if spec.WhichOneof("Type") != "mlProgram":
        return []
    references = []
    for operation in mil_operations(spec.mlProgram):
        for value in operation.attributes.values():
            if value.WhichOneof("value") == "blobFileValue":
                references.append((value.blobFileValue.fileName, value.blobFileValue.offset))
    return references
