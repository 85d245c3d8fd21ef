"""The schedule of posts: when the next slot is, and what happens at one.

At a slot: settle interrupted sends (reconcile); a slot already settled is never posted
again, one whose earlier try is still unclear waits; posting stopped or quiet hours ->
wait; else post as the next target in the rotation. Whatever happens, the next slot (or
the same one, later) is scheduled again. The slot is recorded before sending, so it is
never posted twice, even after kill -9."""
from __future__ import annotations

import logging
import random
import time
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from bot.backoff import wait_after
from bot import clock
from bot.costs import SpendCapReached
from bot.errors import Stopping
from bot.platforms.base import AccessDenied, ApiError, CredentialsRejected
from bot.posting import SETTLED
from bot.store import parse_time

if TYPE_CHECKING:
    from bot.daemon import Bot

log = logging.getLogger("bot")
SLOT_CURSOR = "next_slot"
WAIT_FOR_MODEL_S = 15.0  # a slot that finds no model yet is tried again this much later


def next_slot(bot: Bot, initial: bool = False, after: datetime | None = None) -> datetime:
    """The slot to post at: the stored one (a restart resumes it), else a new one."""
    stored = bot.store.get_cursor(SLOT_CURSOR)
    if initial and stored:
        return parse_time(stored)
    now = after or clock.now()
    s = bot.settings
    if initial and s.first_post_delay is not None:
        slot = now + timedelta(seconds=s.first_post_delay)
    elif s.post_cron:
        from apscheduler.triggers.cron import CronTrigger

        slot = CronTrigger.from_crontab(s.post_cron, timezone=bot.tz).get_next_fire_time(None, now)
    else:
        slot = now + timedelta(seconds=max(1.0, s.post_interval + random.uniform(-s.post_jitter, s.post_jitter)))
    bot.store.set_cursor(SLOT_CURSOR, clock.iso(slot))
    return slot


def schedule_slot(bot: Bot, slot: datetime, run_at: datetime | None = None) -> None:
    run_at = max(run_at or slot, clock.now())
    bot.scheduler.add_job(bot.job("post", lambda: bot.post_slot(slot)), "date", run_date=run_at, id="post",
                           name="post", executor="posting", replace_existing=True, misfire_grace_time=None)
    bot.store.record_job("post", next_run=clock.iso(run_at), slot=clock.iso(slot))
    log.info("next scheduled post: %s", slot.astimezone(bot.tz).strftime("%Y-%m-%d %H:%M:%S %Z"))


def hurry_due_slot(bot: Bot) -> None:
    """A slot that is due but waits (for a model, say) runs now, not at its next retry."""
    stored = bot.store.get_cursor(SLOT_CURSOR)
    job = bot.scheduler.get_job("post") if bot.scheduler is not None else None
    if stored and job is not None and parse_time(stored) <= clock.now():
        bot.scheduler.modify_job("post", next_run_time=clock.now())


def post_slot(bot: Bot, slot: datetime) -> str:
    ticked = time.monotonic()
    name = clock.iso(slot)
    retry_at = None
    bot.in_slot.set()
    try:
        bot.reconcile()
        earlier = bot.store.slot_records(name)
        settled = [e for e in earlier if e.get("status") in SETTLED]
        if settled:
            return f"slot {name} was already {settled[0]['status']} ({settled[0].get('api_id') or '-'})"
        if any(e.get("status") == "intent" for e in earlier):
            retry_at = clock.now() + timedelta(seconds=60)
            return f"slot {name} waits: whether its earlier try was sent is not known yet"
        if bot.blocked:
            bot.say_blocked()
            return f"slot {name} skipped: posting stopped ({bot.blocked})"
        quiet_end = bot.quiet_until(clock.now())
        if quiet_end is not None:
            retry_at = quiet_end
            return f"slot {name} waits for the end of quiet hours ({clock.iso(quiet_end)})"
        outcome = bot.post(slot=name, ticked=ticked)
        if outcome.status == "waiting":
            retry_at = clock.now() + timedelta(seconds=WAIT_FOR_MODEL_S)
            return f"slot {name} waits: {outcome.reason}"
        if outcome.status == "skipped":
            log.warning("slot %s skipped: %s", name, outcome.reason)
        return f"slot {name}: {outcome.status}" + (f" {outcome.api_id}" if outcome.api_id else "")
    except (ApiError, SpendCapReached, Stopping) as exc:
        if isinstance(exc, (CredentialsRejected, AccessDenied)) and bot.blocked:
            raise  # the slot is skipped: posting stopped
        # nothing was sent (see posting.send): the same slot is tried again, later each time
        retry_at = clock.now() + timedelta(seconds=wait_after(bot.failures.get("post", (0, 0.0))[0] + 1, exc))
        raise
    finally:
        if not bot.stop.is_set():
            try:
                bot.schedule_slot(slot, run_at=retry_at) if retry_at is not None else bot.schedule_slot(bot.next_slot())
            except Exception as exc:  # the watchdog schedules it again within a minute
                log.error("could not schedule the next post: %s", exc)
        bot.in_slot.clear()


def quiet_until(bot: Bot, when: datetime) -> datetime | None:
    """The end of the quiet hours `when` falls in, or None when posting is allowed."""
    if not bot.settings.quiet_hours:
        return None
    start, end = bot.settings.quiet_hours
    local = when.astimezone(bot.tz)
    hour = local.hour
    inside = start <= hour < end if start < end else (hour >= start or hour < end)
    if not inside:
        return None
    day = local.date() if hour < end else local.date() + timedelta(days=1)
    return datetime(day.year, day.month, day.day, end, tzinfo=bot.tz)
