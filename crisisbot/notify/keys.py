"""Idempotency keys: one per (incident, step, person), and the Message-ID derived from it.

A resend after a crash carries the same key and the same Message-ID, so the store
knows what was already delivered and mail clients de-duplicate the rest.
"""

from __future__ import annotations

import hashlib


def delivery_key(incident_id: str, step_id: str, person_id: str) -> str:
    return f"{incident_id}:{step_id}:{person_id}"


def message_id(key: str) -> str:
    """Stable Message-ID: a resend after a crash carries the same id, which clients de-duplicate."""
    return f"<{hashlib.sha256(key.encode()).hexdigest()[:32]}@crisisbot>"


def required(rule: str | int, total: int) -> int:
    """How many people a message must reach: `any` (one), `all`, or a number (at most everyone)."""
    if rule == "any":
        return min(1, total)
    if rule == "all":
        return total
    return min(int(rule), total)
