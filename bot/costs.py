"""What the bot's X API calls cost: counted as they are made, priced, and capped per day.

Since 2026 the X API is pay-per-use (../shared/reference/x-api-v2.md, "Access and
cost"): a post costs $0.015 and a post with a link $0.20; reading another account's
posts $0.005 a post, a user $0.010; the bot's own timeline and mentions ("owned
reads") $0.001 a post. The counts are kept per UTC day in the store (cursor
"usage:YYYY-MM-DD"), so `status` can show the spend per day and month after restarts.

X deduplicates charges for the same resource within a UTC day; we count every
resource returned, so the estimate is an upper bound.

With a daily cap, reads stop first (at READ_SHARE of the cap), so that what is left
of the day's money goes to posts and replies; posts stop at the cap itself.
"""
from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from datetime import datetime, timezone

from bot.errors import BotError

DEFAULT_PRICES: dict[str, float] = {
    "post": 0.015,  # POST /2/tweets
    "post_link": 0.200,  # POST /2/tweets whose text has a URL (the content check rejects them)
    "delete": 0.010,
    "post_read": 0.005,  # each post read from another account's timeline
    "user_read": 0.010,  # each user looked up
    "owned_read": 0.001,  # each post read from the bot's own timeline or mentions
}
READS = frozenset({"post_read", "user_read", "owned_read"})
READ_SHARE = 0.8


class SpendCapReached(BotError):
    """Today's spending cap does not allow this kind of call."""


def _today() -> datetime:
    return datetime.now(timezone.utc)


class Meter:
    """Counts calls by kind per UTC day in `store`, prices them, and enforces a daily cap."""

    def __init__(self, store, prices: Mapping[str, float] | None = None, daily_cap: float | None = None,
                 clock: Callable[[], datetime] = _today):
        self.store = store
        self.prices = {**DEFAULT_PRICES, **(prices or {})}
        self.daily_cap = daily_cap
        self._clock = clock
        self._lock = threading.Lock()

    def record(self, kind: str, units: int = 1) -> None:
        if units <= 0:
            return
        with self._lock:
            key = f"usage:{self._clock():%Y-%m-%d}"
            counts = self._counts(key)
            counts[kind] = counts.get(kind, 0) + int(units)
            self.store.set_cursor(key, json.dumps(counts, sort_keys=True))

    def check(self, kind: str) -> None:
        """Raise SpendCapReached if today's cap leaves no room for a call of `kind`."""
        if self.daily_cap is None:
            return
        spent = self.cost(self.day())
        limit = self.daily_cap * (READ_SHARE if kind in READS else 1.0)
        if spent + self.prices.get(kind, 0.0) > limit + 1e-9:
            what = "reads" if kind in READS else "posts"
            raise SpendCapReached(
                f"daily spending cap: {what} paused until 00:00 UTC (${spent:.3f} of ${self.daily_cap:.2f} spent today; "
                f"reads stop at {READ_SHARE:.0%} of the cap, posts at the cap)"
            )

    def day(self, when: datetime | None = None) -> dict[str, int]:
        return self._counts(f"usage:{(when or self._clock()):%Y-%m-%d}")

    def month(self, when: datetime | None = None) -> dict[str, int]:
        when = when or self._clock()
        total: dict[str, int] = {}
        for day in range(1, when.day + 1):
            for kind, n in self.day(when.replace(day=day)).items():
                total[kind] = total.get(kind, 0) + n
        return total

    def cost(self, counts: Mapping[str, int]) -> float:
        return sum(self.prices.get(kind, 0.0) * n for kind, n in counts.items())

    def summary(self) -> dict:
        """For `status`: calls and estimated spend today and this month, and the cap."""
        today, month = self.day(), self.month()
        return {
            "today": {"calls": today, "usd": round(self.cost(today), 4)},
            "month": {"calls": month, "usd": round(self.cost(month), 4)},
            "daily_cap_usd": self.daily_cap,
            "prices_usd": self.prices,
        }

    def _counts(self, key: str) -> dict[str, int]:
        raw = self.store.get_cursor(key)
        return {k: int(v) for k, v in json.loads(raw).items()} if raw else {}
