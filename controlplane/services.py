"""State changes of access control: API tokens."""

from django.contrib.auth import get_user_model
from django.utils import timezone

from .models import ApiToken
from .secrets import secret_new

API_TOKEN_PREFIX = "cohort_pat_"


def api_token_create(*, user, name: str = "") -> tuple[ApiToken, str]:
    """Create a token for a user; return it with its plaintext, which is never stored."""
    plaintext, digest = secret_new(API_TOKEN_PREFIX)
    token = ApiToken.objects.create(
        user=user, name=name, digest=digest, prefix=plaintext[: len(API_TOKEN_PREFIX) + 4]
    )
    return token, plaintext


def api_token_create_for_username(*, username: str, name: str = "") -> tuple[ApiToken, str]:
    user = get_user_model().objects.get(username=username)
    return api_token_create(user=user, name=name)


def api_token_revoke(*, token: ApiToken) -> ApiToken:
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
    return token


def api_token_rename(*, token: ApiToken, name: str) -> ApiToken:
    """Change a token's name, the one thing about it that may change."""
    ApiToken.objects.filter(pk=token.pk).update(name=name)
    token.name = name
    return token


def api_token_delete(*, token: ApiToken) -> None:
    """Delete a token; it stops authenticating at once (every request reads it)."""
    token.delete()
