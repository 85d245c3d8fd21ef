"""Downloading the targets' new posts and fine-tuning one target, the two background
jobs. Plain functions of the bot (its store, settings and readers): the daemon schedules
them, the CLI's `fetch` calls `refresh` directly."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from bot import backoff, clock, slots, training
from bot.costs import SpendCapReached
from bot.errors import BotError, Stopping
from bot.platforms.base import AccessDenied, ApiError

if TYPE_CHECKING:
    from bot.daemon import Bot

log = logging.getLogger("bot")


def refresh(bot: Bot, handle: str | None = None) -> str:
    """Download new posts of every target (or one). Returns a summary."""
    targets = [bot.store.target(handle)] if handle else bot.store.targets()
    if handle and targets[0] is None:
        raise BotError(f"@{handle.lstrip('@')} is not a target (targets add {handle.lstrip('@')})")
    done, errors, waiting_list, now = [], [], [], clock.now()
    for t in targets:
        if bot.stop.is_set():
            break
        waiting = backoff.waiting_until(bot.store, "refresh", t["handle"], now)
        if waiting and not handle:  # (asked for by name, from the CLI: tried anyway)
            waiting_list.append(f"@{t['handle']} waits until {clock.iso(waiting)} after failures")
            continue
        since = bot.store.newest_post_id(t["handle"])
        try:
            reader = bot.readers.for_target(t.get("platform") or "x", t["handle"])
            posts = reader.fetch_posts(t.get("user_id") or t["handle"], since_id=since, username=t["handle"])
        except SpendCapReached:
            raise
        except ApiError as exc:
            hint = " (the API plan cannot read timelines: import an archive)" if isinstance(exc, AccessDenied) else ""
            # the target's own trouble (gone, protected, refused) waits: the interval, doubling to a week
            until = backoff.note_failure(bot.store, "refresh", t["handle"], str(exc), now,
                                         bot.settings.refresh_interval, 7 * 86400.0)
            errors.append(f"@{t['handle']}: {exc}{hint}; next try {clock.iso(until)}")
            continue
        backoff.note_success(bot.store, "refresh", t["handle"])
        new = bot.store.add_posts(t["handle"], posts)
        done.append(f"@{t['handle']} +{new}")
    if bot.scheduler is not None and bot.scheduler.get_job("train") is not None:
        bot.scheduler.modify_job("train", next_run_time=clock.now())  # train what became stale
    if errors and not done:
        raise BotError("; ".join(errors + waiting_list))
    parts = done + ([f"errors: {'; '.join(errors)}"] if errors else []) + waiting_list
    return ", ".join(parts) if parts else "no targets"


def train_one(bot: Bot) -> str:
    """Fine-tune the first target that needs it and is not backing off after failures
    (one per run: a run takes minutes). A failure is counted against that target only."""
    now, failed = clock.now(), []
    for t in bot.store.targets():
        name = t["handle"]
        reason = training.needs_training(bot.store, name, bot.settings)
        if not reason or backoff.waiting_until(bot.store, "train", name, now):
            continue
        log.info("@%s needs a fine-tune: %s", name, reason)
        try:
            r = training.train_target(bot.store, name, bot.settings, stop=bot.stop, running=bot.training)
        except BotError as exc:
            if bot.stop.is_set():
                raise Stopping("the bot is stopping") from None
            until = backoff.note_failure(bot.store, "train", name, str(exc), now, bot.settings.train_backoff,
                                         bot.settings.train_backoff_max)
            log.error("%s; @%s waits until %s before the next try", exc, name, clock.iso(until))
            failed.append(f"@{name} failed (next try {clock.iso(until)})")
            continue
        backoff.note_success(bot.store, "train", name)
        if r["replaced"]:
            slots.hurry_due_slot(bot)  # a slot that waited for this model posts now
        verdict = "registered" if r["replaced"] else "rejected (worse than the current model)"
        return "; ".join(failed + [f"@{r['handle']} model v{r['version']} {verdict}: held-out "
                                   f"{r['heldout_bits_per_char']} bits/char in {r['train_seconds']} s"])
    return "; ".join(failed)
