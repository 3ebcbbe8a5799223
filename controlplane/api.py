"""Small helpers shared by the API views."""


def validated(serializer_class, data, **kwargs) -> dict:
    """Validate request data with a serializer class; a failure becomes the contract's 400."""
    serializer = serializer_class(data=data, **kwargs)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)
