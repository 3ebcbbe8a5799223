"""
The in-process cache behind the poll endpoint: SDK keys and app snapshots, no query per poll.

Each process checks the shared config version at most every `ROLLOUT_CONFIG_CHECK_SECONDS`
(`controlplane.config_version.ConfigVersionWatch`: Redis at each check, the database row less
often or while Redis is unreachable); when it moved, the process drops its snapshots and
rebuilds each app's on its next poll. The version is read before the snapshot, so a change
committed during a rebuild bumps the version again and is picked up on the next check.
"""

import threading
import time
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from controlplane.config_version import ConfigVersionWatch
from controlplane.secrets import secret_digest
from registry.models import SdkKey

from .documents import AppDoc, app_doc_build


class AssignmentCache:
    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        self._watch = ConfigVersionWatch()
        self._checked_at = float("-inf")
        self._keys: dict[str, str] | None = None
        self._apps: dict[str, AppDoc] = {}

    def clear(self) -> None:
        with self._lock:
            self._watch = ConfigVersionWatch()
            self._checked_at, self._keys, self._apps = float("-inf"), None, {}

    def _refresh_if_due(self) -> None:
        now = self._clock()
        if now - self._checked_at < settings.ROLLOUT_CONFIG_CHECK_SECONDS:
            return
        with self._lock:
            if now - self._checked_at < settings.ROLLOUT_CONFIG_CHECK_SECONDS:
                return
            if self._watch.moved(now):
                self._keys, self._apps = None, {}
            self._checked_at = now

    def app_for_key(self, sdk_key: str) -> AppDoc | None:
        """Return the snapshot of the app the key belongs to, or None for an unknown key."""
        self._refresh_if_due()
        # Captured once: a refresh replaces these dicts, so a snapshot built from data older
        # than the new version is never stored under it.
        keys, apps = self._keys, self._apps
        if keys is None:
            keys = {
                digest: str(app_id)
                for digest, app_id in SdkKey.objects.filter(revoked_at__isnull=True).values_list(
                    "digest", "app_id"
                )
            }
            self._keys = keys
        app_id = keys.get(secret_digest(sdk_key))
        if app_id is None:
            return None
        doc = apps.get(app_id)
        if doc is None or _signatures_due(doc):
            doc = app_doc_build(app_id)
            apps[app_id] = doc
        return doc


def _signatures_due(doc: AppDoc) -> bool:
    """Whether a snapshot's signatures are past half their life, so it is built and signed
    anew before any device could receive an expired one."""
    if not settings.ASSIGNMENT_SIGNING_KEY or doc.built_at is None:
        return False
    half_life = timedelta(seconds=settings.ASSIGNMENT_SIGNATURE_TTL_SECONDS / 2)
    return timezone.now() - doc.built_at > half_life


assignment_cache = AssignmentCache()
