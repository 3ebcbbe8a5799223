"""Opaque bearer secrets (API tokens, SDK keys): made once, shown once, stored only as a digest."""

import hashlib
import secrets

SECRET_BYTES = 32


def secret_digest(plaintext: str) -> str:
    """Return the hex SHA-256 of a secret.

    The secrets carry 256 random bits, so a plain digest is as strong as a slow password hash
    and can be looked up by equality.
    """
    return hashlib.sha256(plaintext.encode()).hexdigest()


def secret_new(prefix: str) -> tuple[str, str]:
    """Return a new `(plaintext, digest)`; the prefix says what the secret is when it leaks."""
    plaintext = f"{prefix}{secrets.token_urlsafe(SECRET_BYTES)}"
    return plaintext, secret_digest(plaintext)
