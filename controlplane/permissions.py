"""Role-based permission of the management API: reads need any role, writes the view's roles."""

from rest_framework.permissions import SAFE_METHODS, BasePermission

from .roles import ADMINS, ANY_ROLE, user_has_role


class HasRole(BasePermission):
    """Allow a request when the user holds a role the view names for that kind of request.

    A view sets `write_roles` (default: admin only) and may set `read_roles` (default: any role).
    """

    message = "Your role does not allow this."

    def has_permission(self, request, view):
        if request.method in SAFE_METHODS:
            allowed = getattr(view, "read_roles", ANY_ROLE)
        else:
            allowed = getattr(view, "write_roles", ADMINS)
        return user_has_role(request.user, frozenset(allowed))
