"""Which target posts next: stride scheduling over the targets that can post now.

Each post moves its target's "rotation_pass" (kept in the store) on by 1/weight and the
lowest pass posts next, so over any stretch each target's share of posts follows its
weight. A target that could not produce a post sits out for TARGET_COOLDOWN_S."""
from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from bot import clock

if TYPE_CHECKING:
    from bot.daemon import Bot

log = logging.getLogger("bot")
TARGET_COOLDOWN_S = 3600.0  # a target that could not produce a post sits out this long


def rotation(bot: Bot, now: datetime | None = None) -> list[dict]:
    """Targets that can post now, next first, by stride scheduling: each post moves
    its target's "rotation_pass" on by 1/weight and the lowest pass posts next, so
    over any stretch each target's share of posts follows its weight. A target new
    to the rotation, or back after sitting out, starts at the back of the band the
    others' passes lie in: it posts soon, then takes its share, instead of taking
    every slot to catch up."""
    now = now or clock.now()
    ready = [dict(t) for t in bot.store.targets()
             if bot.store.model_info(t["handle"]) and not bot.cooling(t["handle"], now)]
    known = [float(t["rotation_pass"]) for t in ready if t.get("rotation_pass") is not None]
    front = max(known) if known else 0.0
    # passes in turn lie within one (longest) stride of the front; below that, a target
    # was away: it comes back at the edge of that band
    floor = front - max((1.0 / float(t.get("weight") or 1) for t in ready), default=1.0)
    for t in ready:
        own = t.get("rotation_pass")
        t["rotation_pass"] = max(float(own), floor) if own is not None else floor
    return sorted(ready, key=lambda t: (t["rotation_pass"], t["handle"].lower()))


def advance(bot: Bot, target: dict) -> None:
    """`target` (as `rotation` gave it) posted: move its pass on by one stride."""
    stride = 1.0 / float(target.get("weight") or 1)
    bot.store.add_target(target["handle"], rotation_pass=target["rotation_pass"] + stride)


def pick_target(bot: Bot) -> dict | None:
    """The next target to post as (see `rotation`), or None."""
    ready = bot.rotation()
    return ready[0] if ready else None


def cooling(bot: Bot, handle: str, now: datetime) -> str | None:
    """Why `handle` sits out of the rotation now (it could not produce a post), or None."""
    entry = bot.cooldown.get(handle.lower())
    if entry is None or entry[0] <= now:
        return None
    return entry[1]


def cool(bot: Bot, handle: str, reason: str) -> None:
    until = clock.now() + timedelta(seconds=TARGET_COOLDOWN_S)
    bot.cooldown[handle.lower()] = (until, reason)
    log.warning("@%s cannot post now (%s): skipped in the rotation until %s", handle, reason, clock.iso(until))
    bot.store.record_job("post", cannot_post={k: {"until": clock.iso(u), "reason": r} for k, (u, r) in bot.cooldown.items()
                                               if u > clock.now()})
