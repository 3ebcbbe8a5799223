"""Public identifiers: time-ordered UUIDs (version 7), so a newer model's id sorts after an older one's."""

import uuid

import uuid6


def time_ordered_uuid() -> uuid.UUID:
    return uuid.UUID(int=uuid6.uuid7().int)
