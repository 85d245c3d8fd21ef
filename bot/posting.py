"""Writing and sending one post or reply: sample candidates with the target's model,
judge and rank them (bot/compose.py, bot/content.py, bot/originality.py), record the
intent, send it on the bot's platform, record the outcome. And `reconcile`: settle what
a crash left "about to be sent" by looking among the bot's own posts.

Outcomes of a send: posted | dry-run | unknown (may have landed: never sent again) |
refused (final for this post) | not-sent (certainly nothing sent: the slot is tried again)."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot import clock
from bot.compose import ComposeParams, Style, compose
from bot.content import DEFAULT_BANNED_WORDS_FILE, checks_from_store, known_marks, known_words, word_forms
from bot.costs import SpendCapReached
from bot.errors import BotError
from bot.originality import Selection, index_from_store
from bot.platforms.base import (
    AccessDenied,
    ApiError,
    CredentialsRejected,
    DuplicatePost,
    OutcomeUnknown,
    PostRefused,
)
from trainer.errors import TrainerError

if TYPE_CHECKING:
    from bot.daemon import Bot

log = logging.getLogger("bot")
DONE = ("posted", "dry-run")  # bot post statuses that mean "this slot / mention is done"
SETTLED = DONE + ("unknown",)  # ... or given up: never sent again


@dataclass
class Outcome:
    """What one post or reply attempt did (for logs, `post`, `status`)."""

    status: str  # posted, dry-run, skipped, waiting, unknown, refused
    target: str | None = None
    text: str | None = None
    api_id: str | None = None
    reason: str = ""
    key: str | None = None
    latency_s: float | None = None

    def as_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}


def generate(bot: Bot, handle: str, mention: str | None = None, n: int | None = None,
             seed: int | None = None) -> Selection:
    """Candidates for a post as `handle` (a reply to `mention`'s text if given),
    judged and ranked: `best` is what would be posted."""
    info = bot.store.model_info(handle)
    if info is None:
        raise BotError(f"@{handle.lstrip('@')} has no model yet (python -m bot train {handle.lstrip('@')})")
    artifact, net = bot.models.get(info["path"])
    s = bot.settings
    index = index_from_store(bot.store, handle)
    style, vocabulary, marks, forms = bot.style_of(handle)
    checks = checks_from_store(
        bot.store, now=clock.now(), repeat_days=s.repeat_days, mentions=s.mentions_mode, min_words=s.min_words,
        banned_words_file=s.banned_words_file or DEFAULT_BANNED_WORDS_FILE,
        known_words=vocabulary if s.real_words else None, known_marks=marks if s.real_words else None,
        word_forms=forms if s.real_words else None,
    )
    params = ComposeParams(n or s.candidates, s.max_batches, s.temperature, s.top_p, s.compose_seconds)
    return compose(artifact, index, checks, params, mention=mention, seed=seed, net=net, style=style)


def style_of(bot: Bot, handle: str) -> tuple[Style, frozenset[str], frozenset[str], dict[str, str]]:
    """The account's lengths and word counts, the words, #tags, @handles and digit words it may
    post, and the words' usual forms: made again only when its stored posts changed."""
    key, count = handle.lstrip("@").lower(), bot.store.post_count(handle)
    cached = bot.styles.get(key)
    if cached is None or cached[0] != count:
        texts = [p["text"] for p in bot.store.posts(handle)]
        style = Style.of(texts)
        cached = (count, style, known_words(style.word_counts), known_marks(texts), word_forms(texts))
        bot.styles[key] = cached
    return cached[1:]


def post(bot: Bot, slot: str | None = None, handle: str | None = None, dry_run: bool = False,
         ticked: float | None = None) -> Outcome:
    """One post now, as `handle` or the next target. `slot` names the schedule slot.
    Without `handle`, a target that cannot produce a post sits out and the next one
    in the rotation is tried."""
    ticked = time.monotonic() if ticked is None else ticked
    if handle:
        target = bot.store.target(handle)
        if target is None:
            raise BotError(f"@{handle.lstrip('@')} is not a target")
        candidates = [target] if bot.store.model_info(target["handle"]) else []
    else:
        candidates = bot.rotation()
    if not candidates:
        return Outcome("waiting", reason="no target has a model yet" if not handle else "no model yet")
    skipped = []
    for target in candidates:
        name = target["handle"]
        try:
            selection = bot.generate(name)
        except (BotError, TrainerError, OSError) as exc:  # e.g. a model file that cannot be read
            reason = f"its model cannot be used: {exc}"
        else:
            if selection.best is not None:
                record = {"kind": "post", "target": name, "slot": slot}
                outcome = bot.send(selection, record, None, dry_run, ticked)
                if not handle and outcome.status in SETTLED:
                    bot.advance(target)
                return outcome
            reasons = sorted({r.split(":")[0] for v in selection.rejected for r in v.reasons})
            reason = f"no candidate passed the filter ({', '.join(reasons)})"
        skipped.append(f"@{name}: {reason}")
        if not handle:
            bot.cool(name, reason)
    return Outcome("skipped", candidates[0]["handle"] if handle else None, reason="; ".join(skipped))


def send(bot: Bot, selection: Selection, record: dict, reply_to: str | None, dry_run: bool, ticked: float) -> Outcome:
    """Record the intent, send, record the result. Tries the next candidate on a
    duplicate refusal. Dry run: log and record, send nothing."""
    target = record["target"]
    for verdict in selection.passed[:3]:
        text = verdict.final
        if bot.platform is not None and not bot.platform.fits(text):
            continue  # longer than the platform takes (Bluesky 300 graphemes, a Mastodon server's limit)
        scores = {"novelty": verdict.novelty, "resembles": verdict.resembles}
        if dry_run or not bot.sends:
            key = bot.store.record_bot_post({**record, "text": text, "scores": scores, "status": "dry-run"})
            log.info("dry run: would %s as @%s: %s", f"reply to {reply_to}" if reply_to else "post", target, text)
            return Outcome("dry-run", target, text, key=key, latency_s=round(time.monotonic() - ticked, 3))
        key = bot.store.record_bot_post({**record, "text": text, "scores": scores, "status": "intent"})
        try:
            api_id = (bot.platform.reply(text, reply_to, key=key) if reply_to else
                      bot.platform.post(text, key=key))
        except DuplicatePost:
            bot.store.update_bot_post(key, status="refused", reason="duplicate")
            continue
        except SpendCapReached as exc:  # refused before anything was sent
            bot.store.update_bot_post(key, status="not-sent", reason=str(exc))
            raise
        except OutcomeUnknown as exc:
            bot.store.update_bot_post(key, status="unknown", reason=str(exc))
            log.warning("%s", exc)
            return Outcome("unknown", target, text, key=key, reason=str(exc))
        except PostRefused as exc:  # about this post (e.g. its mention was deleted): final for it only
            bot.store.update_bot_post(key, status="refused", reason=str(exc))
            return Outcome("refused", target, text, key=key, reason=str(exc))
        except (CredentialsRejected, AccessDenied) as exc:  # about the account: posting stops
            bot.store.update_bot_post(key, status="refused", reason=str(exc))
            bot.block(str(exc))
            raise
        except ApiError as exc:
            # Only failures that certainly sent nothing reach here (a 429, no connection):
            # the record is settled as not sent.
            bot.store.update_bot_post(key, status="not-sent", reason=str(exc))
            raise
        latency = round(time.monotonic() - ticked, 3)
        bot.store.update_bot_post(key, status="posted", api_id=api_id, posted_at=clock.iso(clock.now()), latency_s=latency)
        log.info("posted %s as @%s%s (%.2f s after the tick): %s", api_id, target,
                 f" in reply to {reply_to}" if reply_to else "", latency, text)
        return Outcome("posted", target, text, api_id, key=key, latency_s=latency)
    return Outcome("skipped", target, reason=f"{bot.where} refused every candidate as a duplicate or too long")


def block(bot: Bot, reason: str) -> None:
    """Stop posting and replying until a restart (credentials or permissions refused)."""
    bot.blocked = reason
    bot.store.record_job("posting", ok=False, blocked=reason, since=clock.iso(clock.now()))
    bot.say_blocked()


def say_blocked(bot: Bot) -> None:
    bot.say_hourly("blocked", f"posting stopped until the settings are fixed and the bot restarted: {bot.blocked}")


def reconcile(bot: Bot) -> str:
    """Settle posts recorded as about to be sent whose fate a crash hid: found among
    the bot's posts -> posted; not found, or the look-up refused -> unknown (given
    up, never sent again). A look-up that fails for a while leaves them pending."""
    pending = bot.store.pending_bot_posts()
    if not pending:
        return ""
    if bot.platform is None or not bot.settings.has_credentials:
        log.warning("%d post(s) may or may not have been sent; credentials are needed to check", len(pending))
        return ""
    settled = []
    for e in pending:
        try:
            found = bot.platform.find_own_post(e["text"], e.get("in_reply_to"), key=e["key"])
        except (AccessDenied, CredentialsRejected) as exc:
            found, why = None, f"the bot's timeline cannot be read ({exc})"
        except ApiError as exc:
            log.warning("cannot check whether %s was sent yet: %s", e["key"], exc)
            continue
        else:
            why = "not found among the bot's recent posts"
        if found:
            bot.store.update_bot_post(e["key"], status="posted", api_id=found, posted_at=e["recorded_at"],
                                       reconciled=True)
        else:
            bot.store.update_bot_post(e["key"], status="unknown", reason=why, reconciled=True)
        settled.append(f"{e['key']}: {'posted as ' + found if found else 'unknown, given up: ' + why}")
    if settled:
        log.info("reconciled %d interrupted post(s): %s", len(settled), "; ".join(settled))
    return f"reconciled {len(settled)}"
