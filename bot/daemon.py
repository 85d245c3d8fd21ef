"""`python -m bot run`: the long-running bot.

The daemon is a thin layer of jobs (APScheduler BackgroundScheduler; see `schedule_jobs`)
over plain functions, one module per concern, that take the bot (its platform, store
and settings): bot/refresh.py (download, fine-tune), bot/slots.py (what happens at a
slot), bot/rotation.py (which target posts), bot/posting.py (write, send, reconcile),
bot/answering.py (mentions). The platform is the bot account's (bot/platforms/): X,
Bluesky or Mastodon; targets may be on any of the three.

What it does, job by job:
  at start   take the data directory's lock (one daemon per BOT_DATA_DIR), then
             reconcile: every post or reply recorded as "about to be sent" is looked
             up among the bot's recent posts (posting is not idempotent); found ->
             posted, not found -> "unknown": given up, never sent again (a missed
             slot is acceptable, a duplicate never is). Then the schedule resumes.
  refresh    every BOT_REFRESH_INTERVAL: download each target's new posts (since the
             newest stored) from the target's own platform; a
             target whose download fails (protected, gone, refused) waits, doubling.
  train      every BOT_TRAIN_INTERVAL (and right after a refresh): fine-tune ONE target
             that has no model or BOT_RETRAIN_NEW_POSTS new posts, in a child process
             with a hard timeout; the new model replaces the old only if its loss is
             no worse on the held-out posts the old never learnt. A target whose
             fine-tune fails waits (1 h doubling to 24 h) while the others train.
  post       at each slot (BOT_POST_INTERVAL +- BOT_POST_JITTER, or BOT_POST_CRON): the
             next target by stride rotation (shares follow the weights) among those
             that can post now; sample, filter, post the best. In BOT_QUIET_HOURS (checked
             when sending) the slot waits for the window's end. The slot is recorded
             before sending, so it is never posted twice, even after kill -9.
  mentions   every BOT_MENTIONS_INTERVAL: read new mentions, decide (bot/replies.py),
             reply as the target named (on the mention's topic). Each mention once; a
             reply the platform refuses (deleted or hidden mention) marks it handled.
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
`Bot` holds the state the jobs share and lists the actions; the admin CLI calls the same
ones (`post`, `replies --once`...).
"""
from __future__ import annotations

import fcntl
import logging
import math
import os
import signal
import sys
import threading
import time
from collections import OrderedDict
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable
from zoneinfo import ZoneInfo

from bot import answering, clock, posting, slots
from bot import refresh as refresh_job
from bot import rotation as rotation_rules
from bot.backoff import wait_after
from bot.compose import Style
from bot.costs import Meter, SpendCapReached
from bot.errors import BotError, Stopping
from bot.platforms import PLATFORM_NAMES, Platform, Readers, own_account
from bot.platforms.base import RateLimited
from bot.settings import Settings
from bot.store import Store, StoreWriteError, parse_time

log = logging.getLogger("bot")
# APScheduler logs every job run at INFO; our own job wrapper logs what matters.
logging.getLogger("apscheduler").setLevel(logging.WARNING)
logging.getLogger("apscheduler.scheduler").setLevel(logging.ERROR)  # "skipped: still running" every few s

STOP_GRACE_S = 7.0  # after SIGTERM, wait this long for the current step, then leave anyway
LOCK_NAME = "bot.lock"


# --- the schedule: one screen -----------------------------------------------------------------
def schedule_jobs(scheduler: Any, bot: Bot) -> None:
    s = bot.settings
    now = clock.now()
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


# --- the bot's actions -----------------------------------------------------------------------
class Bot:
    def __init__(self, settings: Settings, store: Store, stop: threading.Event | None = None):
        self.settings = settings
        self.store = store
        self.stop = stop or threading.Event()
        self.models = ModelCache()
        self.styles: dict[str, tuple[int, Style, frozenset[str], frozenset[str]]] = {}  # handle -> (posts, style, words, tags)
        self.scheduler: Any = None
        self.training: list = []  # the running fine-tune child process, if any
        self.fatal: BaseException | None = None  # a failure that ends the daemon (exit 1)
        self.lock: Any = None  # the data directory's lock (run() holds it)
        self.blocked: str | None = None  # why posting stopped (credentials, permissions) until a restart
        self.failures: dict[str, tuple[int, float]] = {}  # job -> (failures in a row, monotonic time to wait for)
        self.cooldown: dict[str, tuple[datetime, str]] = {}  # lowercase target -> (until, why it cannot post)
        self._said: dict[str, float] = {}  # hourly log lines: key -> monotonic time last said
        self.in_slot = threading.Event()  # a slot's job is running (the watchdog leaves it alone)
        self._missing = 0  # watchdog checks in a row that found no post job
        self.meter = Meter(store, dict(settings.prices), settings.daily_spend_cap)
        # the bot's own account (None: nothing configured, the bot runs dry) and the
        # readers of the targets' public posts, on whichever platform each target is
        self.platform: Platform | None = own_account(settings, store=store, sleep=self._sleep, meter=self.meter)
        self.readers = Readers(settings, self.platform, sleep=self._sleep, meter=self.meter)
        self.where = PLATFORM_NAMES[settings.platform]
        self.tz = ZoneInfo(settings.timezone)

    @property
    def sends(self) -> bool:
        return self.settings.sends and self.platform is not None

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
            started = clock.now()
            try:
                summary = fn()
                entry = {"ok": True, "summary": summary, "error": None, "failures": 0}
                self.failures.pop(name, None)
                if summary:
                    log.info("%s: %s", name, summary)
            except Stopping:
                return
            except StoreWriteError as exc:
                self.die(exc)
                return
            except SpendCapReached as exc:
                entry = {"ok": False, "error": str(exc), "error_at": clock.iso(clock.now())}
                self.say_hourly(f"cap:{name}", f"{name}: {exc}")
            except (BotError, OSError) as exc:
                entry = {"ok": False, "error": str(exc), "error_at": clock.iso(clock.now()), **self._failed(name, exc)}
                log.error("%s failed: %s", name, exc)
            except Exception as exc:  # a bug: keep running, but say where
                entry = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "error_at": clock.iso(clock.now()),
                         **self._failed(name, exc)}
                log.exception("%s failed unexpectedly", name)
            entry.update(last_run=clock.iso(started), seconds=round((clock.now() - started).total_seconds(), 3))
            nxt = self.scheduler.get_job(name) if self.scheduler is not None else None
            if nxt is not None and nxt.next_run_time is not None:
                entry["next_run"] = clock.iso(nxt.next_run_time)
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
        count = self.failures.get(name, (0, 0.0))[0] + 1
        wait = wait_after(count, exc)
        if isinstance(exc, RateLimited) and exc.reset_at is not None:  # survives a restart
            self.store.set_cursor(f"paused_until:{name}", clock.iso(datetime.fromtimestamp(exc.reset_at, timezone.utc)))
        self.failures[name] = (count, time.monotonic() + wait)
        return {"failures": count, "backoff_until": clock.iso(clock.now() + timedelta(seconds=wait))}

    def _held_back(self, name: str) -> bool:
        paused = self.store.get_cursor(f"paused_until:{name}")
        if paused and parse_time(paused) > clock.now():
            return True
        failures = self.failures.get(name)
        return failures is not None and time.monotonic() < failures[1]

    def watchdog(self) -> None:
        """The next slot is always scheduled: a slot whose job was lost gets one again."""
        if self.stop.is_set() or self.scheduler is None or self.scheduler.get_job("post") is not None:
            self._missing = 0
            return
        if self.in_slot.is_set():  # a running one-off job is out of the job store: not lost
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

    def prune(self) -> str:
        removed = self.store.prune(self.settings.retention_days)
        return f"pruned {removed}" if any(removed.values()) else ""

    # --- what the bot does: plain functions of the bot, one module per concern ----------
    refresh = refresh_job.refresh  # download the targets' new posts
    train_one = refresh_job.train_one  # fine-tune one target that needs it
    rotation = rotation_rules.rotation  # the targets that can post now, next first
    pick_target = rotation_rules.pick_target
    advance = rotation_rules.advance
    cooling = rotation_rules.cooling
    cool = rotation_rules.cool
    generate = posting.generate  # candidates for a post or reply, judged and ranked
    style_of = posting.style_of
    post = posting.post  # one post now
    send = posting.send  # record the intent, send, record the outcome
    block = posting.block  # posting stops until a restart
    say_blocked = posting.say_blocked
    reconcile = posting.reconcile  # settle sends a crash interrupted
    next_slot = slots.next_slot  # the schedule of posts
    schedule_slot = slots.schedule_slot
    post_slot = slots.post_slot  # what happens at a slot
    quiet_until = slots.quiet_until
    answer_mentions = answering.answer_mentions  # read new mentions, answer each once
    reply = answering.reply


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
    store.record_job("posting", ok=True, blocked=None, since=clock.iso(clock.now()))  # a restart lifts a stop
    mode = "live" if bot.sends else "DRY RUN (nothing is sent)"
    log.info("bot starting on %s: %s, %d target(s), state in %s", bot.where, mode, len(store.targets()), store.path)
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
    bot.readers.close()
    if bot.platform is not None:
        bot.platform.close()
    log.info("bot stopped" + (" after a failure (exit code 1)" if bot.fatal else ""))
    return 1 if bot.fatal else 0
