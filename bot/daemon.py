"""`python -m bot run`: the long-running bot.

What it does, job by job (APScheduler BackgroundScheduler; see `schedule_jobs`):
  at start   reconcile: every post or reply recorded as "about to be sent" is looked
             up among the bot's recent posts (posting is not idempotent); found ->
             posted, not found -> not sent. Then the schedule resumes from the store.
  refresh    every BOT_REFRESH_INTERVAL: download each target's new posts (since_id).
  train      every BOT_TRAIN_INTERVAL (and right after a refresh): fine-tune ONE target
             that has no model or BOT_RETRAIN_NEW_POSTS new posts, in a child process;
             the new model replaces the old only if its held-out loss is no worse.
  post       at each slot (BOT_POST_INTERVAL +- BOT_POST_JITTER, or BOT_POST_CRON;
             none in BOT_QUIET_HOURS): the next target by rotation/weight; sample,
             filter, post the best. The slot is recorded before sending, so a slot is
             never posted twice, even after kill -9.
  mentions   every BOT_MENTIONS_INTERVAL: read new mentions, decide (bot/replies.py),
             reply as the target named (on the mention's topic). Each mention once.
  SIGTERM/SIGINT: stop taking jobs, kill a running fine-tune, wait at most a few
             seconds for the current step, exit 0.
Without credentials (or with BOT_DRY_RUN) nothing is sent: the text is logged instead.

Threads: posts and replies share one worker thread ("posting"), refresh and fine-tunes
another ("background"), so a fine-tune never delays a post and two never overlap.
`Bot` holds the actions; the admin CLI calls the same ones (`post`, `replies --once`...).
"""
from __future__ import annotations

import logging
import os
import random
import signal
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable
from zoneinfo import ZoneInfo

from bot import replies
from bot.compose import ComposeParams, Style, compose
from bot.content import DEFAULT_BANNED_WORDS_FILE, checks_from_store, known_words
from bot.errors import BotError
from bot.originality import Selection, index_from_store
from bot.settings import Settings
from bot.store import Store
from bot.training import needs_training, train_target
from bot.xclient import AccessDenied, ApiError, CredentialsRejected, DuplicatePost, XClient

log = logging.getLogger("bot")
# APScheduler logs every job run at INFO; our own job wrapper logs what matters.
logging.getLogger("apscheduler").setLevel(logging.WARNING)
logging.getLogger("apscheduler.scheduler").setLevel(logging.ERROR)  # "skipped: still running" every few s

SLOT_CURSOR = "next_slot"
MENTIONS_CURSOR = "mentions"
WAIT_FOR_MODEL_S = 15.0  # a slot that finds no model yet is tried again this much later
STOP_GRACE_S = 7.0  # after SIGTERM, wait this long for the current step, then leave anyway
DONE = ("posted", "dry-run")  # bot post statuses that mean "this slot / mention is done"


class Stopping(BotError):
    """The bot is shutting down: the step in progress gives up."""


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _iso(when: datetime) -> str:
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(value: str) -> datetime:
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


# --- the schedule: one screen -----------------------------------------------------------------
def schedule_jobs(scheduler: Any, bot: Bot) -> None:
    s = bot.settings
    now = _now()
    scheduler.add_job(bot.job("refresh", bot.refresh), "interval", seconds=s.refresh_interval, id="refresh", name="refresh",
                      executor="background", next_run_time=now, max_instances=1, coalesce=True)
    scheduler.add_job(bot.job("train", bot.train_one), "interval", seconds=s.train_interval, id="train", name="train",
                      executor="background", next_run_time=now + timedelta(seconds=1), max_instances=1, coalesce=True)
    scheduler.add_job(bot.job("mentions", bot.answer_mentions), "interval", seconds=s.mentions_interval,
                      id="mentions", name="mentions", executor="posting", next_run_time=now, max_instances=1, coalesce=True)
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
        self._styles: dict[str, tuple[int, Style, frozenset[str]]] = {}  # handle -> (posts, style, words)
        self.scheduler: Any = None
        self.training: list = []  # the running fine-tune child process, if any
        self.client: XClient | None = None
        if settings.has_credentials or settings.bearer_token:
            self.client = XClient(settings, sleep=self._sleep)
        self._tz = ZoneInfo(settings.timezone)

    @property
    def sends(self) -> bool:
        return self.settings.sends and self.client is not None

    def _sleep(self, seconds: float) -> None:
        if self.stop.wait(seconds):
            raise Stopping("the bot is stopping")

    def job(self, name: str, fn: Callable[[], str]) -> Callable[[], None]:
        """fn wrapped for the scheduler: its outcome (or one-line error) goes to the log
        and to the store's job table, for `status`."""

        def run() -> None:
            if self.stop.is_set():
                return
            started = _now()
            try:
                summary = fn()
                entry = {"ok": True, "summary": summary, "error": None}
                if summary:
                    log.info("%s: %s", name, summary)
            except Stopping:
                return
            except (BotError, OSError) as exc:
                entry = {"ok": False, "error": str(exc), "error_at": _iso(_now())}
                log.error("%s failed: %s", name, exc)
            except Exception as exc:  # a bug: keep running, but say where
                entry = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "error_at": _iso(_now())}
                log.exception("%s failed unexpectedly", name)
            entry.update(last_run=_iso(started), seconds=round((_now() - started).total_seconds(), 3))
            nxt = self.scheduler.get_job(name) if self.scheduler is not None else None
            if nxt is not None and nxt.next_run_time is not None:
                entry["next_run"] = _iso(nxt.next_run_time)
            self.store.record_job(name, **entry)

        return run

    # --- refresh ------------------------------------------------------------------------
    def refresh(self, handle: str | None = None) -> str:
        """Download new posts of every target (or one). Returns a summary."""
        if self.client is None:
            return "no X credentials: targets keep their imported posts"
        targets = [self.store.target(handle)] if handle else self.store.targets()
        if handle and targets[0] is None:
            raise BotError(f"@{handle.lstrip('@')} is not a target (targets add {handle.lstrip('@')})")
        done, errors = [], []
        for t in targets:
            if self.stop.is_set():
                break
            since = self.store.newest_post_id(t["handle"])
            try:
                posts = self.client.fetch_posts(t.get("user_id") or t["handle"], since_id=since)
            except AccessDenied as exc:
                errors.append(f"@{t['handle']}: {exc} (the free API tier cannot read timelines: import an archive)")
                continue
            except ApiError as exc:
                errors.append(f"@{t['handle']}: {exc}")
                continue
            new = self.store.add_posts(t["handle"], posts)
            done.append(f"@{t['handle']} +{new}")
        if self.scheduler is not None and self.scheduler.get_job("train") is not None:
            self.scheduler.modify_job("train", next_run_time=_now())  # train what became stale
        if errors and not done:
            raise BotError("; ".join(errors))
        return ", ".join(done) + (f" (errors: {'; '.join(errors)})" if errors else "") if done else "no targets"

    # --- train --------------------------------------------------------------------------
    def train_one(self) -> str:
        """Fine-tune the first target that needs it (one per run: a run takes minutes)."""
        for t in self.store.targets():
            reason = needs_training(self.store, t["handle"], self.settings)
            if reason:
                log.info("@%s needs a fine-tune: %s", t["handle"], reason)
                r = train_target(self.store, t["handle"], self.settings, stop=self.stop, running=self.training)
                verdict = "registered" if r["replaced"] else "rejected (worse than the current model)"
                return (f"@{r['handle']} model v{r['version']} {verdict}: held-out {r['heldout_bits_per_char']} "
                        f"bits/char in {r['train_seconds']} s")
        return ""

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
        style, vocabulary = self._style(handle)
        checks = checks_from_store(
            self.store, now=_now(), repeat_days=s.repeat_days, mentions=s.mentions_mode, min_words=s.min_words,
            banned_words_file=s.banned_words_file or DEFAULT_BANNED_WORDS_FILE,
            known_words=vocabulary if s.real_words else None,
        )
        params = ComposeParams(n or s.candidates, s.max_batches, s.temperature, s.top_p)
        return compose(artifact, index, checks, params, mention=mention, seed=seed, net=net, style=style)

    def _style(self, handle: str) -> tuple[Style, frozenset[str]]:
        """The account's lengths and word counts, and the words it may post: made again
        only when its stored posts changed."""
        key, count = handle.lstrip("@").lower(), self.store.post_count(handle)
        cached = self._styles.get(key)
        if cached is None or cached[0] != count:
            texts = [p["text"] for p in self.store.posts(handle)]
            style = Style.of(texts)
            cached = (count, style, known_words(style.word_counts))
            self._styles[key] = cached
        return cached[1], cached[2]

    def pick_target(self) -> dict | None:
        """The next target to post as: the fewest posts per unit of weight (equal weights:
        plain rotation), among targets with a model."""
        ready = [t for t in self.store.targets() if self.store.model_info(t["handle"])]
        if not ready:
            return None
        counts: dict[str, int] = {}
        last: dict[str, str] = {}
        for e in self.store.bot_posts():
            if e.get("kind", "post") == "post" and e.get("status") in DONE and e.get("target"):
                key = e["target"].lower()
                counts[key] = counts.get(key, 0) + 1
                last[key] = e["recorded_at"]
        return min(ready, key=lambda t: (counts.get(t["handle"].lower(), 0) / float(t.get("weight") or 1),
                                         last.get(t["handle"].lower(), ""), t["handle"].lower()))

    # --- posting ------------------------------------------------------------------------
    def post(self, slot: str | None = None, handle: str | None = None, dry_run: bool = False,
             ticked: float | None = None) -> Outcome:
        """One post now, as `handle` or the next target. `slot` names the schedule slot."""
        ticked = time.monotonic() if ticked is None else ticked
        target = self.store.target(handle) if handle else self.pick_target()
        if handle and target is None:
            raise BotError(f"@{handle.lstrip('@')} is not a target")
        if target is None or self.store.model_info(target["handle"]) is None:
            return Outcome("waiting", reason="no target has a model yet")
        name = target["handle"]
        selection = self.generate(name)
        if selection.best is None:
            reasons = sorted({r.split(":")[0] for v in selection.rejected for r in v.reasons})
            return Outcome("skipped", name, reason=f"no candidate passed the filter ({', '.join(reasons)})")
        record = {"kind": "post", "target": name, "slot": slot}
        return self._send(selection, record, None, dry_run, ticked)

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
            except ApiError as exc:
                # After a timeout or 5xx the post may have landed anyway: stay "intent"
                # so reconcile() looks for it, unless X answered with a clear refusal.
                if exc.status in (400, 401, 403):
                    self.store.update_bot_post(key, status="refused", reason=str(exc))
                raise
            latency = round(time.monotonic() - ticked, 3)
            self.store.update_bot_post(key, status="posted", api_id=api_id, posted_at=_iso(_now()), latency_s=latency)
            log.info("posted %s as @%s%s (%.2f s after the tick): %s", api_id, target,
                     f" in reply to {reply_to}" if reply_to else "", latency, text)
            return Outcome("posted", target, text, api_id, key=key, latency_s=latency)
        return Outcome("skipped", target, reason="X refused every candidate as a duplicate")

    def reconcile(self) -> str:
        """Settle posts recorded as about to be sent whose fate a crash hid."""
        pending = self.store.pending_bot_posts()
        if not pending:
            return ""
        if self.client is None or not self.settings.has_credentials:
            log.warning("%d post(s) may or may not have been sent; credentials are needed to check", len(pending))
            return ""
        settled = []
        for e in pending:
            found = self.client.find_own_post(e["text"], e.get("in_reply_to"))
            if found:
                self.store.update_bot_post(e["key"], status="posted", api_id=found, posted_at=e["recorded_at"],
                                           reconciled=True)
            else:
                self.store.update_bot_post(e["key"], status="not-sent", reconciled=True)
            settled.append(f"{e['key']}: {'posted as ' + found if found else 'not sent'}")
        log.info("reconciled %d interrupted post(s): %s", len(settled), "; ".join(settled))
        return f"reconciled {len(settled)}"

    # --- the schedule of posts ----------------------------------------------------------
    def next_slot(self, initial: bool = False, after: datetime | None = None) -> datetime:
        """The slot to post at: the stored one (a restart resumes it), else a new one."""
        stored = self.store.get_cursor(SLOT_CURSOR)
        if initial and stored:
            return _parse(stored)
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
        try:
            self.reconcile()
            done = [e for e in self.store.bot_posts() if e.get("slot") == name and e.get("status") in DONE]
            if done:
                return f"slot {name} was already posted ({done[0].get('api_id') or done[0]['status']})"
            if self.in_quiet_hours(slot):
                return f"slot {name} skipped: quiet hours"
            outcome = self.post(slot=name, ticked=ticked)
            if outcome.status == "waiting":
                retry_at = _now() + timedelta(seconds=WAIT_FOR_MODEL_S)
                return f"slot {name} waits: {outcome.reason}"
            if outcome.status == "skipped":
                log.warning("slot %s skipped: %s", name, outcome.reason)
            return f"slot {name}: {outcome.status}" + (f" {outcome.api_id}" if outcome.api_id else "")
        except (ApiError, Stopping):
            # the slot's fate may be unknown (a pending intent): try the same slot again soon
            retry_at = _now() + timedelta(seconds=min(self.settings.post_interval, 60))
            raise
        finally:
            if not self.stop.is_set():
                if retry_at is not None:
                    self.schedule_slot(slot, run_at=retry_at)
                else:
                    self.schedule_slot(self.next_slot())

    def in_quiet_hours(self, when: datetime) -> bool:
        if not self.settings.quiet_hours:
            return False
        start, end = self.settings.quiet_hours
        hour = when.astimezone(self._tz).hour
        return start <= hour < end if start < end else (hour >= start or hour < end)

    # --- mentions and replies -----------------------------------------------------------
    def answer_mentions(self, dry_run: bool = False) -> str:
        if self.client is None or not self.settings.has_credentials:
            return "no X credentials: mentions are not read"
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
        for e in self.store.bot_posts():
            if e.get("kind") == "reply" and e.get("status") in DONE + ("intent",):
                handled.add(str(e["in_reply_to"]))
                past.append(replies.PastReply(str(e.get("reply_to_author_id")), str(e.get("conversation_id")),
                                              _parse(e.get("posted_at") or e["recorded_at"])))
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
            outcome = self.reply(m, d.target, dry_run=dry_run)
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
        self.store.mark_mention(mention["id"], "replied" if outcome.status in DONE else "skipped",
                                target=target, reply_key=outcome.key, reason=outcome.reason,
                                author_id=mention.get("author_id"), conversation_id=record["conversation_id"])
        return outcome


# --- running ----------------------------------------------------------------------------------
def run(settings: Settings, on_ready: Callable[[Bot], None] | None = None) -> int:
    """Run until SIGTERM/SIGINT; returns the exit code (0)."""
    from apscheduler.executors.pool import ThreadPoolExecutor
    from apscheduler.schedulers.background import BackgroundScheduler

    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("%s received: stopping", signal.Signals(signum).name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    store = Store(settings.data_dir)
    bot = Bot(settings, store, stop)
    mode = "live" if bot.sends else "DRY RUN (nothing is sent)"
    log.info("bot starting: %s, %d target(s), state in %s, API %s", mode, len(store.targets()), store.path,
             settings.api_base_url)
    if not store.targets():
        log.warning("no targets yet: add one with `python -m bot targets add HANDLE`")
    try:
        if bot.sends:
            bot.reconcile()
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
        os._exit(0)
    bot.store.close()
    if bot.client is not None:
        bot.client.close()
    log.info("bot stopped")
    return 0
