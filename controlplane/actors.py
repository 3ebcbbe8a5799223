"""Who did something, as written in audit logs: `user:<name>`, `token:<name>/<prefix>` or `system`."""

from .models import ApiToken

SYSTEM = "system"


def actor_for_user(user) -> str:
    return f"user:{user.get_username()}"


def actor_for_request(request) -> str:
    """Name the person or token behind an API or admin request."""
    user = getattr(request, "user", None)
    auth = getattr(request, "auth", None)
    if isinstance(auth, ApiToken):
        return f"token:{user.get_username()}/{auth.prefix}"
    if user is not None and user.is_authenticated:
        return actor_for_user(user)
    return "anonymous"
