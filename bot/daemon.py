"""`python -m bot run`: the long-running bot.

What it does, job by job (APScheduler BackgroundScheduler; see `schedule_jobs`):
  at start   take the data directory's lock (one daemon per BOT_DATA_DIR), then
             reconcile: every post or reply recorded as "about to be sent" is looked
             up among the bot's recent posts (posting is not idempotent); found ->
             posted, not found -> "unknown": given up, never sent again (a missed
             slot is acceptable, a duplicate never is). Then the schedule resumes.
  refresh    every BOT_REFRESH_INTERVAL: download each target's new posts (since_id); a
             target whose download fails (protected, gone, refused) waits, doubling.
  train      every BOT_TRAIN_INTERVAL (and right after a refresh): fine-tune ONE target
             that has no model or BOT_RETRAIN_NEW_POSTS new posts, in a child process
             with a hard timeout; the new model replaces the old only if its held-out
             loss is no worse. A target whose fine-tune fails waits (1 h doubling to
             24 h) while the others train.
  post       at each slot (BOT_POST_INTERVAL +- BOT_POST_JITTER, or BOT_POST_CRON): the
             next target by stride rotation (shares follow the weights) among those
             that can post now; sample, filter, post the best. In BOT_QUIET_HOURS (checked
             when sending) the slot waits for the window's end. The slot is recorded
             before sending, so it is never posted twice, even after kill -9.
  mentions   every BOT_MENTIONS_INTERVAL: read new mentions, decide (bot/replies.py),
             reply as the target named (on the mention's topic). Each mention once; a
             reply X refuses (deleted or hidden mention) marks the mention handled.
  watchdog   every minute: the next slot is always scheduled, whatever a job raised.
  prune      daily: records older than BOT_RETENTION_DAYS are removed.
Refusals: a post refused for credentials or permissions stops posting and replying
(one log line an hour, shown by `status`) until a restart; a 429 pauses that job until
its reset (kept in the store across restarts); any job that keeps failing backs off
exponentially (at most an hour). A write to the state that fails (disk full) stops the
daemon with exit code 1: a supervisor restarts it, nothing stored is lost.
  SIGTERM/SIGINT: stop taking jobs, kill a running fine-tune, wait at most a few
             seconds for the current step, exit 0.
Without credentials (or with BOT_DRY_RUN) nothing is sent: the text is logged instead.

Threads: posts and replies share one worker thread ("posting"), refresh and fine-tunes
another ("background"), so a fine-tune never delays a post and two never overlap.
`Bot` holds the actions; the admin CLI calls the same ones (`post`, `replies --once`...).
"""
from __future__ import annotations

import fcntl
import logging
import math
import os
import random
import signal
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable
from zoneinfo import ZoneInfo

from bot import backoff, replies, training
from bot.compose import ComposeParams, Style, compose
from bot.content import DEFAULT_BANNED_WORDS_FILE, checks_from_store, known_tags, known_words
from bot.costs import Meter, SpendCapReached
from bot.errors import BotError
from bot.originality import Selection, index_from_store
from bot.settings import Settings
from bot.store import Store, StoreWriteError, parse_time
from bot.platforms.x import (
    AccessDenied,
    ApiError,
    CredentialsRejected,
    DuplicatePost,
    OutcomeUnknown,
    PostRefused,
    RateLimited,
    XClient,
)
from trainer.errors import TrainerError

log = logging.getLogger("bot")
# APScheduler logs every job run at INFO; our own job wrapper logs what matters.
logging.getLogger("apscheduler").setLevel(logging.WARNING)
logging.getLogger("apscheduler.scheduler").setLevel(logging.ERROR)  # "skipped: still running" every few s

SLOT_CURSOR = "next_slot"
MENTIONS_CURSOR = "mentions"
WAIT_FOR_MODEL_S = 15.0  # a slot that finds no model yet is tried again this much later
STOP_GRACE_S = 7.0  # after SIGTERM, wait this long for the current step, then leave anyway
DONE = ("posted", "dry-run")  # bot post statuses that mean "this slot / mention is done"
SETTLED = DONE + ("unknown",)  # ... or given up: never sent again
JOB_BACKOFF_S = (30.0, 3600.0)  # a job failing n times in a row waits 30 s * 2^(n-1), at most an hour
TARGET_COOLDOWN_S = 3600.0  # a target that could not produce a post sits out this long
REPLY_WINDOW = timedelta(days=14)  # replies this recent count for the budget and the loop guard
LOCK_NAME = "bot.lock"
# what a reply's outcome makes of its mention (anything else: "skipped")
MENTION_STATUS = {"posted": "replied", "dry-run": "replied", "unknown": "unknown", "refused": "refused"}


class Stopping(BotError):
    """The bot is shutting down: the step in progress gives up."""


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _iso(when: datetime) -> str:
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _wait_after(failures: int, exc: BaseException) -> float:
    """Seconds before the next try after `failures` in a row: 30 s doubling to an hour,
    or until a 429's reset if that is later."""
    wait = min(JOB_BACKOFF_S[0] * 2 ** (failures - 1), JOB_BACKOFF_S[1])
    if isinstance(exc, RateLimited) and exc.reset_at is not None:
        wait = max(wait, exc.reset_at - time.time() + 1)
    return wait


# --- the schedule: one screen -----------------------------------------------------------------
def schedule_jobs(scheduler: Any, bot: Bot) -> None:
    s = bot.settings
    now = _now()
    # misfire_grace_time=None: a poll that waited behind a post runs late instead of being dropped
    every = {"max_instances": 1, "coalesce": True, "misfire_grace_time": None}
    scheduler.add_job(bot.job("refresh", bot.refresh), "interval", seconds=s.refresh_interval, id="refresh", name="refresh",
                      executor="background", next_run_time=now, **every)
    scheduler.add_job(bot.job("train", bot.train_one), "interval", seconds=s.train_interval, id="train", name="train",
                      executor="background", next_run_time=now + timedelta(seconds=1), **every)
    scheduler.add_job(bot.job("mentions", bot.answer_mentions), "interval", seconds=s.mentions_interval,
                      id="mentions", name="mentions", executor="posting", next_run_time=now, **every)
    scheduler.add_job(bot.job("prune", bot.prune), "interval", days=1, id="prune", name="prune",
                      executor="background", next_run_time=now + timedelta(minutes=5), **every)
    scheduler.add_job(bot.watchdog, "interval", seconds=60, id="watchdog", name="watchdog", executor="default", **every)
    bot.schedule_slot(bot.next_slot(initial=True))  # "post": a one-off job per slot


# --- models loaded on demand ------------------------------------------------------------------
class ModelCache:
    """The few most recently used models (artifact + numpy step network), by file path:
    with many targets only those that post are in memory."""

    def __init__(self, size: int = 2):
        self.size = size
        self._items: OrderedDict[str, tuple[Any, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: str) -> tuple[Any, Any]:
        from trainer.model import load
        from trainer.sample import StepNet

        with self._lock:
            if path in self._items:
                self._items.move_to_end(path)
                return self._items[path]
        artifact = load(path)
        item = (artifact, StepNet(artifact))
        with self._lock:
            self._items[path] = item
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return item


@dataclass
class Outcome:
    """What one post or reply attempt did (for logs, `post`, `status`)."""

    status: str  # posted, dry-run, skipped, waiting, failed
    target: str | None = None
    text: str | None = None
    api_id: str | None = None
    reason: str = ""
    key: str | None = None
    latency_s: float | None = None

    def as_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}


# --- the bot's actions -----------------------------------------------------------------------
class Bot:
    def __init__(self, settings: Settings, store: Store, stop: threading.Event | None = None):
        self.settings = settings
        self.store = store
        self.stop = stop or threading.Event()
        self.models = ModelCache()
        self._styles: dict[str, tuple[int, Style, frozenset[str], frozenset[str]]] = {}  # handle -> (posts, style, words, tags)
        self.scheduler: Any = None
        self.training: list = []  # the running fine-tune child process, if any
        self.fatal: BaseException | None = None  # a failure that ends the daemon (exit 1)
        self.lock: Any = None  # the data directory's lock (run() holds it)
        self.blocked: str | None = None  # why posting stopped (credentials, permissions) until a restart
        self._failures: dict[str, tuple[int, float]] = {}  # job -> (failures in a row, monotonic time to wait for)
        self._cooldown: dict[str, tuple[datetime, str]] = {}  # lowercase target -> (until, why it cannot post)
        self._said: dict[str, float] = {}  # hourly log lines: key -> monotonic time last said
        self._in_slot = threading.Event()  # a slot's job is running (the watchdog leaves it alone)
        self._missing = 0  # watchdog checks in a row that found no post job
        self.meter = Meter(store, dict(settings.prices), settings.daily_spend_cap)
        self.client: XClient | None = None
        if settings.has_credentials or settings.bearer_token:
            self.client = XClient(settings, sleep=self._sleep, meter=self.meter)
        self._tz = ZoneInfo(settings.timezone)

    @property
    def sends(self) -> bool:
        return self.settings.sends and self.client is not None

    def _sleep(self, seconds: float) -> None:
        if self.stop.wait(seconds):
            raise Stopping("the bot is stopping")

    def say_hourly(self, key: str, message: str) -> None:
        """Log a warning that would repeat every poll at most once an hour."""
        now = time.monotonic()
        if now - self._said.get(key, -math.inf) >= 3600:
            self._said[key] = now
            log.warning("%s", message)

    def job(self, name: str, fn: Callable[[], str]) -> Callable[[], None]:
        """fn wrapped for the scheduler: its outcome (or one-line error) goes to the log
        and to the store's job table, for `status`. A job that fails again and again
        backs off; one paused by a 429 waits for its reset; a state write that fails
        stops the daemon."""

        def run() -> None:
            # (a slot's retries are timed by post_slot itself: its job is never held back here)
            if self.stop.is_set() or (name != "post" and self._held_back(name)):
                return
            started = _now()
            try:
                summary = fn()
                entry = {"ok": True, "summary": summary, "error": None, "failures": 0}
                self._failures.pop(name, None)
                if summary:
                    log.info("%s: %s", name, summary)
            except Stopping:
                return
            except StoreWriteError as exc:
                self.die(exc)
                return
            except SpendCapReached as exc:
                entry = {"ok": False, "error": str(exc), "error_at": _iso(_now())}
                self.say_hourly(f"cap:{name}", f"{name}: {exc}")
            except (BotError, OSError) as exc:
                entry = {"ok": False, "error": str(exc), "error_at": _iso(_now()), **self._failed(name, exc)}
                log.error("%s failed: %s", name, exc)
            except Exception as exc:  # a bug: keep running, but say where
                entry = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "error_at": _iso(_now()),
                         **self._failed(name, exc)}
                log.exception("%s failed unexpectedly", name)
            entry.update(last_run=_iso(started), seconds=round((_now() - started).total_seconds(), 3))
            nxt = self.scheduler.get_job(name) if self.scheduler is not None else None
            if nxt is not None and nxt.next_run_time is not None:
                entry["next_run"] = _iso(nxt.next_run_time)
            try:
                self.store.record_job(name, **entry)
            except StoreWriteError as exc:
                self.die(exc)

        return run

    def die(self, exc: BaseException) -> None:
        """Stop the daemon with exit code 1 (a supervisor restarts it)."""
        if self.fatal is None:
            log.error("%s; stopping (exit code 1): nothing stored earlier is lost", exc)
            self.fatal = exc
        self.stop.set()

    def _failed(self, name: str, exc: BaseException) -> dict:
        """Count a failure of job `name`; a 429's reset or an exponential backoff holds it."""
        count = self._failures.get(name, (0, 0.0))[0] + 1
        wait = _wait_after(count, exc)
        if isinstance(exc, RateLimited) and exc.reset_at is not None:  # survives a restart
            self.store.set_cursor(f"paused_until:{name}", _iso(datetime.fromtimestamp(exc.reset_at, timezone.utc)))
        self._failures[name] = (count, time.monotonic() + wait)
        return {"failures": count, "backoff_until": _iso(_now() + timedelta(seconds=wait))}

    def _held_back(self, name: str) -> bool:
        paused = self.store.get_cursor(f"paused_until:{name}")
        if paused and parse_time(paused) > _now():
            return True
        failures = self._failures.get(name)
        return failures is not None and time.monotonic() < failures[1]

    def watchdog(self) -> None:
        """The next slot is always scheduled: a slot whose job was lost gets one again."""
        if self.stop.is_set() or self.scheduler is None or self.scheduler.get_job("post") is not None:
            self._missing = 0
            return
        if self._in_slot.is_set():  # a running one-off job is out of the job store: not lost
            self._missing = 0
            return
        # a job that fired but waits for the posting thread is out of the store too: only
        # one missing at three checks in a row (over two minutes) is lost
        self._missing += 1
        if self._missing < 3:
            return
        self._missing = 0
        log.warning("no post was scheduled (a job failed); scheduling the next slot again")
        try:
            self.schedule_slot(self.next_slot(initial=True))
        except StoreWriteError as exc:
            self.die(exc)

    # --- refresh ------------------------------------------------------------------------
    def refresh(self, handle: str | None = None) -> str:
        """Download new posts of every target (or one). Returns a summary."""
        if self.client is None:
            return "no X credentials: targets keep their imported posts"
        targets = [self.store.target(handle)] if handle else self.store.targets()
        if handle and targets[0] is None:
            raise BotError(f"@{handle.lstrip('@')} is not a target (targets add {handle.lstrip('@')})")
        done, errors, waiting_list, now = [], [], [], _now()
        for t in targets:
            if self.stop.is_set():
                break
            waiting = backoff.waiting_until(self.store, "refresh", t["handle"], now)
            if waiting and not handle:  # (asked for by name, from the CLI: tried anyway)
                waiting_list.append(f"@{t['handle']} waits until {_iso(waiting)} after failures")
                continue
            since = self.store.newest_post_id(t["handle"])
            try:
                posts = self.client.fetch_posts(t.get("user_id") or t["handle"], since_id=since, username=t["handle"])
            except SpendCapReached:
                raise
            except ApiError as exc:
                hint = " (the API plan cannot read timelines: import an archive)" if isinstance(exc, AccessDenied) else ""
                # the target's own trouble (gone, protected, refused) waits: the interval, doubling to a week
                until = backoff.note_failure(self.store, "refresh", t["handle"], str(exc), now,
                                             self.settings.refresh_interval, 7 * 86400.0)
                errors.append(f"@{t['handle']}: {exc}{hint}; next try {_iso(until)}")
                continue
            backoff.note_success(self.store, "refresh", t["handle"])
            new = self.store.add_posts(t["handle"], posts)
            done.append(f"@{t['handle']} +{new}")
        if self.scheduler is not None and self.scheduler.get_job("train") is not None:
            self.scheduler.modify_job("train", next_run_time=_now())  # train what became stale
        if errors and not done:
            raise BotError("; ".join(errors + waiting_list))
        parts = done + ([f"errors: {'; '.join(errors)}"] if errors else []) + waiting_list
        return ", ".join(parts) if parts else "no targets"

    # --- train --------------------------------------------------------------------------
    def train_one(self) -> str:
        """Fine-tune the first target that needs it and is not backing off after failures
        (one per run: a run takes minutes). A failure is counted against that target only."""
        now, failed = _now(), []
        for t in self.store.targets():
            name = t["handle"]
            reason = training.needs_training(self.store, name, self.settings)
            if not reason or backoff.waiting_until(self.store, "train", name, now):
                continue
            log.info("@%s needs a fine-tune: %s", name, reason)
            try:
                r = training.train_target(self.store, name, self.settings, stop=self.stop, running=self.training)
            except BotError as exc:
                if self.stop.is_set():
                    raise Stopping("the bot is stopping") from None
                until = backoff.note_failure(self.store, "train", name, str(exc), now, self.settings.train_backoff,
                                             self.settings.train_backoff_max)
                log.error("%s; @%s waits until %s before the next try", exc, name, _iso(until))
                failed.append(f"@{name} failed (next try {_iso(until)})")
                continue
            backoff.note_success(self.store, "train", name)
            verdict = "registered" if r["replaced"] else "rejected (worse than the current model)"
            return "; ".join(failed + [f"@{r['handle']} model v{r['version']} {verdict}: held-out "
                                       f"{r['heldout_bits_per_char']} bits/char in {r['train_seconds']} s"])
        return "; ".join(failed)

    # --- housekeeping -------------------------------------------------------------------
    def prune(self) -> str:
        removed = self.store.prune(self.settings.retention_days)
        return f"pruned {removed}" if any(removed.values()) else ""

    # --- composing ----------------------------------------------------------------------
    def generate(self, handle: str, mention: str | None = None, n: int | None = None,
                 seed: int | None = None) -> Selection:
        """Candidates for a post as `handle` (a reply to `mention`'s text if given),
        judged and ranked: `best` is what would be posted."""
        info = self.store.model_info(handle)
        if info is None:
            raise BotError(f"@{handle.lstrip('@')} has no model yet (python -m bot train {handle.lstrip('@')})")
        artifact, net = self.models.get(info["path"])
        s = self.settings
        index = index_from_store(self.store, handle)
        style, vocabulary, tags = self._style(handle)
        checks = checks_from_store(
            self.store, now=_now(), repeat_days=s.repeat_days, mentions=s.mentions_mode, min_words=s.min_words,
            banned_words_file=s.banned_words_file or DEFAULT_BANNED_WORDS_FILE,
            known_words=vocabulary if s.real_words else None, known_tags=tags if s.real_words else None,
        )
        params = ComposeParams(n or s.candidates, s.max_batches, s.temperature, s.top_p)
        return compose(artifact, index, checks, params, mention=mention, seed=seed, net=net, style=style)

    def _style(self, handle: str) -> tuple[Style, frozenset[str], frozenset[str]]:
        """The account's lengths and word counts, and the words and #tags/@handles it
        may post: made again only when its stored posts changed."""
        key, count = handle.lstrip("@").lower(), self.store.post_count(handle)
        cached = self._styles.get(key)
        if cached is None or cached[0] != count:
            texts = [p["text"] for p in self.store.posts(handle)]
            style = Style.of(texts)
            cached = (count, style, known_words(style.word_counts), known_tags(texts))
            self._styles[key] = cached
        return cached[1], cached[2], cached[3]

    # --- rotation -----------------------------------------------------------------------
    def rotation(self, now: datetime | None = None) -> list[dict]:
        """Targets that can post now, next first, by stride scheduling: each post moves
        its target's "rotation_pass" on by 1/weight and the lowest pass posts next, so
        over any stretch each target's share of posts follows its weight. A target new
        to the rotation, or back after sitting out, starts at the back of the band the
        others' passes lie in: it posts soon, then takes its share, instead of taking
        every slot to catch up."""
        now = now or _now()
        ready = [dict(t) for t in self.store.targets()
                 if self.store.model_info(t["handle"]) and not self.cooling(t["handle"], now)]
        known = [float(t["rotation_pass"]) for t in ready if t.get("rotation_pass") is not None]
        front = max(known) if known else 0.0
        # passes in turn lie within one (longest) stride of the front; below that, a target
        # was away: it comes back at the edge of that band
        floor = front - max((1.0 / float(t.get("weight") or 1) for t in ready), default=1.0)
        for t in ready:
            own = t.get("rotation_pass")
            t["rotation_pass"] = max(float(own), floor) if own is not None else floor
        return sorted(ready, key=lambda t: (t["rotation_pass"], t["handle"].lower()))

    def _advance(self, target: dict) -> None:
        """`target` (as `rotation` gave it) posted: move its pass on by one stride."""
        stride = 1.0 / float(target.get("weight") or 1)
        self.store.add_target(target["handle"], rotation_pass=target["rotation_pass"] + stride)

    def pick_target(self) -> dict | None:
        """The next target to post as (see `rotation`), or None."""
        ready = self.rotation()
        return ready[0] if ready else None

    def cooling(self, handle: str, now: datetime) -> str | None:
        """Why `handle` sits out of the rotation now (it could not produce a post), or None."""
        entry = self._cooldown.get(handle.lower())
        if entry is None or entry[0] <= now:
            return None
        return entry[1]

    def _cool(self, handle: str, reason: str) -> None:
        until = _now() + timedelta(seconds=TARGET_COOLDOWN_S)
        self._cooldown[handle.lower()] = (until, reason)
        log.warning("@%s cannot post now (%s): skipped in the rotation until %s", handle, reason, _iso(until))
        self.store.record_job("post", cannot_post={k: {"until": _iso(u), "reason": r} for k, (u, r) in self._cooldown.items()
                                                   if u > _now()})

    # --- posting ------------------------------------------------------------------------
    def post(self, slot: str | None = None, handle: str | None = None, dry_run: bool = False,
             ticked: float | None = None) -> Outcome:
        """One post now, as `handle` or the next target. `slot` names the schedule slot.
        Without `handle`, a target that cannot produce a post sits out and the next one
        in the rotation is tried."""
        ticked = time.monotonic() if ticked is None else ticked
        if handle:
            target = self.store.target(handle)
            if target is None:
                raise BotError(f"@{handle.lstrip('@')} is not a target")
            candidates = [target] if self.store.model_info(target["handle"]) else []
        else:
            candidates = self.rotation()
        if not candidates:
            return Outcome("waiting", reason="no target has a model yet" if not handle else "no model yet")
        skipped = []
        for target in candidates:
            name = target["handle"]
            try:
                selection = self.generate(name)
            except (BotError, TrainerError, OSError) as exc:  # e.g. a model file that cannot be read
                reason = f"its model cannot be used: {exc}"
            else:
                if selection.best is not None:
                    record = {"kind": "post", "target": name, "slot": slot}
                    outcome = self._send(selection, record, None, dry_run, ticked)
                    if not handle and outcome.status in SETTLED:
                        self._advance(target)
                    return outcome
                reasons = sorted({r.split(":")[0] for v in selection.rejected for r in v.reasons})
                reason = f"no candidate passed the filter ({', '.join(reasons)})"
            skipped.append(f"@{name}: {reason}")
            if not handle:
                self._cool(name, reason)
        return Outcome("skipped", candidates[0]["handle"] if handle else None, reason="; ".join(skipped))

    def _send(self, selection: Selection, record: dict, reply_to: str | None, dry_run: bool, ticked: float) -> Outcome:
        """Record the intent, send, record the result. Tries the next candidate on a
        duplicate refusal. Dry run: log and record, send nothing."""
        target = record["target"]
        for verdict in selection.passed[:3]:
            text = verdict.final
            scores = {"novelty": verdict.novelty, "resembles": verdict.resembles}
            if dry_run or not self.sends:
                key = self.store.record_bot_post({**record, "text": text, "scores": scores, "status": "dry-run"})
                log.info("dry run: would %s as @%s: %s", f"reply to {reply_to}" if reply_to else "post", target, text)
                return Outcome("dry-run", target, text, key=key, latency_s=round(time.monotonic() - ticked, 3))
            key = self.store.record_bot_post({**record, "text": text, "scores": scores, "status": "intent"})
            try:
                api_id = self.client.reply(text, reply_to) if reply_to else self.client.post(text)
            except DuplicatePost:
                self.store.update_bot_post(key, status="refused", reason="duplicate")
                continue
            except SpendCapReached as exc:  # refused before anything was sent
                self.store.update_bot_post(key, status="not-sent", reason=str(exc))
                raise
            except OutcomeUnknown as exc:
                self.store.update_bot_post(key, status="unknown", reason=str(exc))
                log.warning("%s", exc)
                return Outcome("unknown", target, text, key=key, reason=str(exc))
            except PostRefused as exc:  # about this post (e.g. its mention was deleted): final for it only
                self.store.update_bot_post(key, status="refused", reason=str(exc))
                return Outcome("refused", target, text, key=key, reason=str(exc))
            except (CredentialsRejected, AccessDenied) as exc:  # about the account: posting stops
                self.store.update_bot_post(key, status="refused", reason=str(exc))
                self.block(str(exc))
                raise
            except ApiError as exc:
                # Only failures that certainly sent nothing reach here (a 429, no connection):
                # the record is settled as not sent.
                self.store.update_bot_post(key, status="not-sent", reason=str(exc))
                raise
            latency = round(time.monotonic() - ticked, 3)
            self.store.update_bot_post(key, status="posted", api_id=api_id, posted_at=_iso(_now()), latency_s=latency)
            log.info("posted %s as @%s%s (%.2f s after the tick): %s", api_id, target,
                     f" in reply to {reply_to}" if reply_to else "", latency, text)
            return Outcome("posted", target, text, api_id, key=key, latency_s=latency)
        return Outcome("skipped", target, reason="X refused every candidate as a duplicate")

    def block(self, reason: str) -> None:
        """Stop posting and replying until a restart (credentials or permissions refused)."""
        self.blocked = reason
        self.store.record_job("posting", ok=False, blocked=reason, since=_iso(_now()))
        self._say_blocked()

    def _say_blocked(self) -> None:
        self.say_hourly("blocked", f"posting stopped until the settings are fixed and the bot restarted: {self.blocked}")

    def reconcile(self) -> str:
        """Settle posts recorded as about to be sent whose fate a crash hid: found among
        the bot's posts -> posted; not found, or the look-up refused -> unknown (given
        up, never sent again). A look-up that fails for a while leaves them pending."""
        pending = self.store.pending_bot_posts()
        if not pending:
            return ""
        if self.client is None or not self.settings.has_credentials:
            log.warning("%d post(s) may or may not have been sent; credentials are needed to check", len(pending))
            return ""
        settled = []
        for e in pending:
            try:
                found = self.client.find_own_post(e["text"], e.get("in_reply_to"))
            except (AccessDenied, CredentialsRejected) as exc:
                found, why = None, f"the bot's timeline cannot be read ({exc})"
            except ApiError as exc:
                log.warning("cannot check whether %s was sent yet: %s", e["key"], exc)
                continue
            else:
                why = "not found among the bot's recent posts"
            if found:
                self.store.update_bot_post(e["key"], status="posted", api_id=found, posted_at=e["recorded_at"],
                                           reconciled=True)
            else:
                self.store.update_bot_post(e["key"], status="unknown", reason=why, reconciled=True)
            settled.append(f"{e['key']}: {'posted as ' + found if found else 'unknown, given up: ' + why}")
        if settled:
            log.info("reconciled %d interrupted post(s): %s", len(settled), "; ".join(settled))
        return f"reconciled {len(settled)}"

    # --- the schedule of posts ----------------------------------------------------------
    def next_slot(self, initial: bool = False, after: datetime | None = None) -> datetime:
        """The slot to post at: the stored one (a restart resumes it), else a new one."""
        stored = self.store.get_cursor(SLOT_CURSOR)
        if initial and stored:
            return parse_time(stored)
        now = after or _now()
        s = self.settings
        if initial and s.first_post_delay is not None:
            slot = now + timedelta(seconds=s.first_post_delay)
        elif s.post_cron:
            from apscheduler.triggers.cron import CronTrigger

            slot = CronTrigger.from_crontab(s.post_cron, timezone=self._tz).get_next_fire_time(None, now)
        else:
            slot = now + timedelta(seconds=max(1.0, s.post_interval + random.uniform(-s.post_jitter, s.post_jitter)))
        self.store.set_cursor(SLOT_CURSOR, _iso(slot))
        return slot

    def schedule_slot(self, slot: datetime, run_at: datetime | None = None) -> None:
        run_at = max(run_at or slot, _now())
        self.scheduler.add_job(self.job("post", lambda: self.post_slot(slot)), "date", run_date=run_at, id="post",
                               name="post", executor="posting", replace_existing=True, misfire_grace_time=None)
        self.store.record_job("post", next_run=_iso(run_at), slot=_iso(slot))
        log.info("next scheduled post: %s", slot.astimezone(self._tz).strftime("%Y-%m-%d %H:%M:%S %Z"))

    def post_slot(self, slot: datetime) -> str:
        ticked = time.monotonic()
        name = _iso(slot)
        retry_at = None
        self._in_slot.set()
        try:
            self.reconcile()
            earlier = self.store.slot_records(name)
            settled = [e for e in earlier if e.get("status") in SETTLED]
            if settled:
                return f"slot {name} was already {settled[0]['status']} ({settled[0].get('api_id') or '-'})"
            if any(e.get("status") == "intent" for e in earlier):
                retry_at = _now() + timedelta(seconds=60)
                return f"slot {name} waits: whether its earlier try was sent is not known yet"
            if self.blocked:
                self._say_blocked()
                return f"slot {name} skipped: posting stopped ({self.blocked})"
            quiet_end = self.quiet_until(_now())
            if quiet_end is not None:
                retry_at = quiet_end
                return f"slot {name} waits for the end of quiet hours ({_iso(quiet_end)})"
            outcome = self.post(slot=name, ticked=ticked)
            if outcome.status == "waiting":
                retry_at = _now() + timedelta(seconds=WAIT_FOR_MODEL_S)
                return f"slot {name} waits: {outcome.reason}"
            if outcome.status == "skipped":
                log.warning("slot %s skipped: %s", name, outcome.reason)
            return f"slot {name}: {outcome.status}" + (f" {outcome.api_id}" if outcome.api_id else "")
        except (ApiError, SpendCapReached, Stopping) as exc:
            if isinstance(exc, (CredentialsRejected, AccessDenied)) and self.blocked:
                raise  # the slot is skipped: posting stopped
            # nothing was sent (see _send): the same slot is tried again, later each time
            retry_at = _now() + timedelta(seconds=_wait_after(self._failures.get("post", (0, 0.0))[0] + 1, exc))
            raise
        finally:
            if not self.stop.is_set():
                try:
                    self.schedule_slot(slot, run_at=retry_at) if retry_at is not None else self.schedule_slot(self.next_slot())
                except Exception as exc:  # the watchdog schedules it again within a minute
                    log.error("could not schedule the next post: %s", exc)
            self._in_slot.clear()

    def quiet_until(self, when: datetime) -> datetime | None:
        """The end of the quiet hours `when` falls in, or None when posting is allowed."""
        if not self.settings.quiet_hours:
            return None
        start, end = self.settings.quiet_hours
        local = when.astimezone(self._tz)
        hour = local.hour
        inside = start <= hour < end if start < end else (hour >= start or hour < end)
        if not inside:
            return None
        day = local.date() if hour < end else local.date() + timedelta(days=1)
        return datetime(day.year, day.month, day.day, end, tzinfo=self._tz)

    # --- mentions and replies -----------------------------------------------------------
    def answer_mentions(self, dry_run: bool = False) -> str:
        if self.client is None or not self.settings.has_credentials:
            return "no X credentials: mentions are not read"
        if self.blocked and not dry_run:
            # unanswered mentions stay unread: after a restart with good settings they are answered
            self._say_blocked()
            return ""
        self.reconcile()
        me = self.client.me()
        since = self.store.get_cursor(MENTIONS_CURSOR)
        mentions = self.client.mentions(since_id=since)
        if not mentions:
            return ""
        targets = self.store.targets()
        names = tuple(t["handle"] for t in targets)
        rules = replies.ReplyRules(
            bot_user_id=me["id"], bot_username=me["username"], targets=names,
            with_model=frozenset(n.lower() for n in names if self.store.model_info(n)),
            default_target=self.settings.default_target or (names[0] if names else None),
            budget_per_hour=self.settings.reply_budget, max_depth=self.settings.reply_max_depth,
            backlog_seconds=self.settings.reply_backlog, blocklist=self.settings.blocklist,
        )
        past, handled = [], self.store.handled_mentions()
        for e in self.store.recent_bot_posts(kind="reply", since=_now() - REPLY_WINDOW):
            if e.get("status") in SETTLED + ("intent",):
                handled.add(str(e["in_reply_to"]))
                past.append(replies.PastReply(str(e.get("reply_to_author_id")), str(e.get("conversation_id")),
                                              parse_time(e.get("posted_at") or e["recorded_at"])))
        decisions = replies.decide(mentions, rules, now=_now(), handled=handled, past_replies=past)
        counts = {"replied": 0, "skipped": 0, "waiting": 0}
        waiting: list[int] = []
        for d in decisions:
            if self.stop.is_set():
                raise Stopping("the bot is stopping")
            m = d.mention
            if d.action == replies.WAIT:
                waiting.append(int(m["id"]))
                counts["waiting"] += 1
                continue
            if d.action == replies.SKIP:
                log.info("mention %s by @%s: no reply (%s)", m["id"], m.get("author"), d.reason)
                self.store.mark_mention(m["id"], "skipped", reason=d.reason, author_id=m.get("author_id"))
                counts["skipped"] += 1
                continue
            try:
                outcome = self.reply(m, d.target, dry_run=dry_run)
            except (TrainerError, OSError) as exc:  # e.g. the target's model file is broken
                reason = f"@{d.target}'s model cannot be used: {exc}"
                log.error("mention %s: no reply (%s)", m["id"], reason)
                self.store.mark_mention(m["id"], "skipped", reason=reason, author_id=m.get("author_id"))
                counts["skipped"] += 1
                continue
            counts["replied" if outcome.status in DONE else "skipped"] += 1
        newest = max(int(m["id"]) for m in mentions)
        cursor = min(waiting) - 1 if waiting else newest
        if since is None or cursor > int(since):
            self.store.set_cursor(MENTIONS_CURSOR, str(cursor))
        return ", ".join(f"{v} {k}" for k, v in counts.items() if v)

    def reply(self, mention: dict, target: str, dry_run: bool = False) -> Outcome:
        ticked = time.monotonic()
        selection = self.generate(target, mention=mention.get("text") or "")
        if selection.best is None:
            reason = "no candidate passed the filter"
            self.store.mark_mention(mention["id"], "skipped", reason=reason, author_id=mention.get("author_id"))
            log.warning("mention %s: no reply (%s)", mention["id"], reason)
            return Outcome("skipped", target, reason=reason)
        record = {"kind": "reply", "target": target, "in_reply_to": str(mention["id"]),
                  "reply_to_author_id": str(mention.get("author_id")),
                  "conversation_id": str(mention.get("conversation_id") or mention["id"])}
        outcome = self._send(selection, record, str(mention["id"]), dry_run, ticked)
        status = MENTION_STATUS.get(outcome.status, "skipped")
        if status in ("unknown", "refused"):
            log.warning("mention %s: no reply (%s)", mention["id"], outcome.reason)
        self.store.mark_mention(mention["id"], status, target=target, reply_key=outcome.key, reason=outcome.reason,
                                author_id=mention.get("author_id"), conversation_id=record["conversation_id"])
        return outcome


# --- running ----------------------------------------------------------------------------------
def hold_lock(data_dir: Path) -> Any:
    """Take the data directory's lock for this process's life (the OS drops it when the
    process ends, even after kill -9), or BotError naming the daemon that holds it."""
    path = Path(data_dir) / LOCK_NAME
    handle = open(path, "a+", encoding="utf-8")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise BotError(f"another bot is already running on {data_dir} (pid {holder}); stop it first") from None
    os.chmod(path, 0o600)
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def run(settings: Settings, on_ready: Callable[[Bot], None] | None = None) -> int:
    """Run until SIGTERM/SIGINT; returns the exit code (0, or 1 when a state write failed)."""
    from apscheduler.executors.pool import ThreadPoolExecutor
    from apscheduler.schedulers.background import BackgroundScheduler

    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("%s received: stopping", signal.Signals(signum).name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    store = Store(settings.data_dir)
    try:
        lock = hold_lock(settings.data_dir)
    except BotError:
        store.close()
        raise
    bot = Bot(settings, store, stop)
    bot.lock = lock
    store.record_job("posting", ok=True, blocked=None, since=_iso(_now()))  # a restart lifts a stop
    mode = "live" if bot.sends else "DRY RUN (nothing is sent)"
    log.info("bot starting: %s, %d target(s), state in %s, API %s", mode, len(store.targets()), store.path,
             settings.api_base_url)
    if not store.targets():
        log.warning("no targets yet: add one with `python -m bot targets add HANDLE`")
    try:
        if bot.sends:
            bot.reconcile()
    except StoreWriteError as exc:
        bot.die(exc)
        store.close()
        return 1
    except BotError as exc:
        log.error("reconcile failed (will retry before posting): %s", exc)
    scheduler = BackgroundScheduler(
        executors={"posting": ThreadPoolExecutor(1), "background": ThreadPoolExecutor(1),
                   "default": ThreadPoolExecutor(1)},
        timezone=settings.timezone,
    )
    bot.scheduler = scheduler
    scheduler.start(paused=True)
    schedule_jobs(scheduler, bot)
    scheduler.resume()
    if on_ready is not None:
        on_ready(bot)
    while not stop.wait(0.5):
        pass
    return shutdown(bot)


def shutdown(bot: Bot) -> int:
    """Stop the scheduler, abandon a fine-tune, give the current step STOP_GRACE_S."""
    bot.stop.set()
    for child in list(bot.training):
        child.kill()  # the half-trained model was never registered: nothing is lost
    done = threading.Thread(target=bot.scheduler.shutdown, kwargs={"wait": True}, daemon=True)
    done.start()
    done.join(STOP_GRACE_S)
    if done.is_alive():
        # A step still waits on the network. Every store change is one committed
        # transaction and a pending post is reconciled at the next start: leaving is safe.
        log.warning("a step did not finish within %.0f s; leaving it (it is reconciled at the next start)", STOP_GRACE_S)
        logging.shutdown()
        sys.stdout.flush()
        os._exit(1 if bot.fatal else 0)
    bot.store.close()
    if bot.client is not None:
        bot.client.close()
    log.info("bot stopped" + (" after a failure (exit code 1)" if bot.fatal else ""))
    return 1 if bot.fatal else 0
