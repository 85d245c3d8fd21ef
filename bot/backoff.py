"""Backoff. A job that keeps failing waits 30 s, doubling to an hour (`wait_after`).
Per target: a target whose fine-tune or download keeps failing waits longer each time
(base, doubling, up to a cap), while the other targets go on. The state is
kept in the store (cursor "<job>_failures:<handle>"), so a restart does not reset it,
and `status` shows it."""
from __future__ import annotations

import json
import time
from datetime import datetime, timedelta

from bot.platforms.base import RateLimited
from bot.store import Store, parse_time

JOB_BACKOFF_S = (30.0, 3600.0)  # a job failing n times in a row waits 30 s * 2^(n-1), at most an hour


def wait_after(failures: int, exc: BaseException) -> float:
    """Seconds before a job's next try after `failures` in a row: 30 s doubling to an
    hour, or until a 429's reset if that is later."""
    wait = min(JOB_BACKOFF_S[0] * 2 ** (failures - 1), JOB_BACKOFF_S[1])
    if isinstance(exc, RateLimited) and exc.reset_at is not None:
        wait = max(wait, exc.reset_at - time.time() + 1)
    return wait


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
