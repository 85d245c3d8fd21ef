"""Which mentions get an answer, and as whom. Pure logic over plain values: the daemon
hands in the new mentions, what the bot already did (handled mentions, its recent
replies) and the clock; it gets back one Decision per mention.

The rules, in the order they are checked (the first that applies decides):
  1. already handled (across restarts: the store remembers)   -> nothing, ever again
  2. written by the bot itself                                  -> skip
  3. author on the blocklist                                    -> skip
  4. older than the backlog limit (after downtime)              -> skip
  5. the bot already replied `max_depth` times in that
     conversation (a guard against endless loops with bots)    -> skip
  6. the author had `budget` replies in the last hour           -> skip
  7. names no tracked target and there is no default target     -> skip
  8. the target has no model yet                                -> wait (decided again later)
  otherwise                                                     -> reply as that target
Skips are recorded as handled, so each mention is decided once; "wait" is not.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

REPLY, SKIP, WAIT = "reply", "skip", "wait"


@dataclass(frozen=True)
class ReplyRules:
    bot_user_id: str
    bot_username: str
    targets: tuple[str, ...]  # tracked handles, canonical case
    with_model: frozenset[str] = frozenset()  # lowercase handles that have a model
    default_target: str | None = None
    budget_per_hour: int = 3
    max_depth: int = 3
    backlog_seconds: float = 3600.0
    blocklist: frozenset[str] = frozenset()  # lowercase handles


@dataclass(frozen=True)
class PastReply:
    """A reply the bot sent (or is sending): who it answered, in which conversation, when."""

    author_id: str
    conversation_id: str
    at: datetime


@dataclass(frozen=True)
class Decision:
    mention: dict
    action: str  # REPLY, SKIP or WAIT
    target: str | None = None
    reason: str = ""


def pick_target(text: str, rules: ReplyRules) -> str | None:
    """The tracked target a mention names (`@handle` or the bare handle, any case),
    else the default target (if it is tracked), else None."""
    lowered = text.lower()
    for handle in rules.targets:
        if re.search(rf"(?<![\w]){re.escape(handle.lower())}(?![\w.]?\w)", lowered):
            return handle
    for handle in rules.targets:
        # a Mastodon target by its name alone: writing "@name@server" would ping it
        name, at, _server = handle.partition("@")
        if at and re.search(rf"(?<![\w@]){re.escape(name.lower())}(?![\w@])", lowered):
            return handle
    if rules.default_target:
        for handle in rules.targets:
            if handle.lower() == rules.default_target.lower():
                return handle
    return None


def decide(
    mentions: list[dict],
    rules: ReplyRules,
    *,
    now: datetime,
    handled: set[str],
    past_replies: list[PastReply],
) -> list[Decision]:
    """One decision per mention (dicts as a platform's `mentions` gives them: id,
    position, author_id, author, text, created_at, conversation_id), oldest first. Replies decided here
    count against the budget and the depth of the mentions that follow."""
    hour_ago = now - timedelta(hours=1)
    recent = Counter(p.author_id for p in past_replies if p.at >= hour_ago)
    depth = Counter(p.conversation_id for p in past_replies)
    out: list[Decision] = []
    for m in sorted(mentions, key=lambda m: int(m.get("position") or 0)):
        mid, author_id = str(m["id"]), str(m.get("author_id") or "")
        author = str(m.get("author") or "").lower()
        conversation = str(m.get("conversation_id") or mid)
        created = _parse(m.get("created_at"))
        if mid in handled:
            continue
        handled = handled | {mid}  # a mention listed twice is decided once
        if author_id == rules.bot_user_id or author == rules.bot_username.lower():
            out.append(Decision(m, SKIP, reason="the bot's own post"))
        elif author in rules.blocklist:
            out.append(Decision(m, SKIP, reason=f"@{author} is on the blocklist"))
        elif created is not None and (now - created).total_seconds() > rules.backlog_seconds:
            out.append(Decision(m, SKIP, reason=f"older than the backlog limit ({rules.backlog_seconds:g} s)"))
        elif depth[conversation] >= rules.max_depth:
            out.append(Decision(m, SKIP, reason=f"the bot replied {depth[conversation]} times in this conversation "
                                                f"(limit {rules.max_depth})"))
        elif recent[author_id] >= rules.budget_per_hour:
            out.append(Decision(m, SKIP, reason=f"reply budget spent: {recent[author_id]} replies to this account "
                                                f"in the last hour (limit {rules.budget_per_hour})"))
        else:
            target = pick_target(m.get("text", ""), rules)
            if target is None:
                out.append(Decision(m, SKIP, reason="names no target and no default target is set"))
            elif target.lower() not in rules.with_model:
                out.append(Decision(m, WAIT, target, reason=f"@{target} has no model yet"))
            else:
                out.append(Decision(m, REPLY, target))
                recent[author_id] += 1
                depth[conversation] += 1
    return out


def _parse(value: str | None) -> datetime | None:
    if not value:
        return None
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
