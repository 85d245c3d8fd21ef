"""Per-target backoff: a target whose fine-tune or download keeps failing waits longer
each time (base, doubling, up to a cap), while the other targets go on. The state is
kept in the store (cursor "<job>_failures:<handle>"), so a restart does not reset it,
and `status` shows it."""
from __future__ import annotations

import json
from datetime import datetime, timedelta

from bot.store import Store, parse_time


def state(store: Store, job: str, handle: str) -> dict | None:
    """{"failures", "until" (ISO), "error"} while `handle`'s `job` keeps failing, else None."""
    raw = store.get_cursor(f"{job}_failures:{handle.lower()}")
    return json.loads(raw) if raw else None


def waiting_until(store: Store, job: str, handle: str, now: datetime) -> datetime | None:
    """When `handle`'s `job` may run again after failures (None: now)."""
    entry = state(store, job, handle)
    if entry is None:
        return None
    until = parse_time(entry["until"])
    return until if until > now else None


def note_failure(store: Store, job: str, handle: str, error: str, now: datetime, base: float, cap: float) -> datetime:
    """Count a failure: the next try waits base * 2^(failures-1) seconds, at most cap."""
    failures = (state(store, job, handle) or {}).get("failures", 0) + 1
    until = now + timedelta(seconds=min(base * 2 ** (failures - 1), cap))
    store.set_cursor(f"{job}_failures:{handle.lower()}", json.dumps(
        {"failures": failures, "until": until.strftime("%Y-%m-%dT%H:%M:%SZ"), "error": error}))
    return until


def note_success(store: Store, job: str, handle: str) -> None:
    if state(store, job, handle) is not None:
        store.set_cursor(f"{job}_failures:{handle.lower()}", "")
