"""Answering mentions: read the new ones on the bot's platform, decide each once
(bot/replies.py: blocklist, backlog, loop guard, budget, target), reply in its thread as
the target it names, on the mention's topic. Each mention's outcome is kept in the store,
so it is never answered twice, across restarts."""
from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import TYPE_CHECKING

from bot import clock, replies
from bot.errors import Stopping
from bot.posting import DONE, SETTLED, Outcome
from bot.store import parse_time
from trainer.errors import TrainerError

if TYPE_CHECKING:
    from bot.daemon import Bot

log = logging.getLogger("bot")
MENTIONS_CURSOR = "mentions"
REPLY_WINDOW = timedelta(days=14)  # replies this recent count for the budget and the loop guard
# what a reply's outcome makes of its mention (anything else: "skipped")
MENTION_STATUS = {"posted": "replied", "dry-run": "replied", "unknown": "unknown", "refused": "refused"}


def answer_mentions(bot: Bot, dry_run: bool = False) -> str:
    if bot.platform is None or not bot.settings.has_credentials:
        return f"no {bot.where} credentials: mentions are not read"
    if bot.blocked and not dry_run:
        # unanswered mentions stay unread: after a restart with good settings they are answered
        bot.say_blocked()
        return ""
    bot.reconcile()
    me = bot.platform.me()
    since = bot.store.get_cursor(MENTIONS_CURSOR)
    mentions = bot.platform.mentions(since=int(since) if since else None)
    if not mentions:
        return ""
    targets = bot.store.targets()
    names = tuple(t["handle"] for t in targets)
    rules = replies.ReplyRules(
        bot_user_id=me["id"], bot_username=me["username"], targets=names,
        with_model=frozenset(n.lower() for n in names if bot.store.model_info(n) and bot.store.post_count(n)),
        default_target=bot.settings.default_target or (names[0] if names else None),
        budget_per_hour=bot.settings.reply_budget, max_depth=bot.settings.reply_max_depth,
        backlog_seconds=bot.settings.reply_backlog, blocklist=bot.settings.blocklist,
    )
    past, handled, threads = [], bot.store.handled_mentions(), {}
    for e in bot.store.recent_bot_posts(since=clock.now() - REPLY_WINDOW):
        if e.get("api_id"):  # the thread each of the bot's own posts is in
            threads[str(e["api_id"])] = str(e.get("conversation_id") or e["api_id"])
        if e.get("kind") == "reply" and e.get("status") in SETTLED + ("intent",):
            handled.add(str(e["in_reply_to"]))
            past.append(replies.PastReply(str(e.get("reply_to_author_id")), str(e.get("conversation_id")),
                                          parse_time(e.get("posted_at") or e["recorded_at"])))
    for m in mentions:
        # An answer to the bot's own post is in that post's thread, whatever the platform
        # says (Mastodon names no thread root): the loop guard counts it there.
        parent = m.get("in_reply_to_id")
        if parent is not None and str(parent) in threads:
            m["conversation_id"] = threads[str(parent)]
    decisions = replies.decide(mentions, rules, now=clock.now(), handled=handled, past_replies=past)
    counts = {"replied": 0, "skipped": 0, "waiting": 0}
    waiting: list[int] = []
    for d in decisions:
        if bot.stop.is_set():
            raise Stopping("the bot is stopping")
        m = d.mention
        if d.action == replies.WAIT:
            waiting.append(int(m["position"]))
            counts["waiting"] += 1
            continue
        if d.action == replies.SKIP:
            log.info("mention %s by @%s: no reply (%s)", m["id"], m.get("author"), d.reason)
            bot.store.mark_mention(m["id"], "skipped", reason=d.reason, author_id=m.get("author_id"))
            counts["skipped"] += 1
            continue
        try:
            outcome = bot.reply(m, d.target, dry_run=dry_run)
        except (TrainerError, OSError) as exc:  # e.g. the target's model file is broken
            reason = f"@{d.target}'s model cannot be used: {exc}"
            log.error("mention %s: no reply (%s)", m["id"], reason)
            bot.store.mark_mention(m["id"], "skipped", reason=reason, author_id=m.get("author_id"))
            counts["skipped"] += 1
            continue
        counts["replied" if outcome.status in DONE else "skipped"] += 1
    newest = max(int(m["position"]) for m in mentions)
    cursor = min(waiting) - 1 if waiting else newest
    if since is None or cursor > int(since):
        bot.store.set_cursor(MENTIONS_CURSOR, str(cursor))
    return ", ".join(f"{v} {k}" for k, v in counts.items() if v)


def reply(bot: Bot, mention: dict, target: str, dry_run: bool = False) -> Outcome:
    ticked = time.monotonic()
    selection = bot.generate(target, mention=mention.get("text") or "")
    if selection.best is None:
        reason = "no candidate passed the filter"
        bot.store.mark_mention(mention["id"], "skipped", reason=reason, author_id=mention.get("author_id"))
        log.warning("mention %s: no reply (%s)", mention["id"], reason)
        return Outcome("skipped", target, reason=reason)
    record = {"kind": "reply", "target": target, "in_reply_to": str(mention["id"]),
              "reply_to_author_id": str(mention.get("author_id")),
              "conversation_id": str(mention.get("conversation_id") or mention["id"])}
    outcome = bot.send(selection, record, str(mention["id"]), dry_run, ticked)
    status = MENTION_STATUS.get(outcome.status, "skipped")
    if status in ("unknown", "refused"):
        log.warning("mention %s: no reply (%s)", mention["id"], outcome.reason)
    bot.store.mark_mention(mention["id"], status, target=target, reply_key=outcome.key, reason=outcome.reason,
                            author_id=mention.get("author_id"), conversation_id=record["conversation_id"])
    return outcome
