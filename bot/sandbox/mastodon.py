"""A local server that speaks the part of the Mastodon API the bot uses, over real HTTP.

It lets the tests, the demo and a new user run the bot on Mastodon with no server of
their own: set MASTODON_API_BASE_URL to its URL and MASTODON_ACCESS_TOKEN to
SANDBOX_ACCESS_TOKEN below. It answers the real Mastodon.py client with the JSON shapes,
status codes and error bodies (`{"error": "..."}`) of Mastodon 4.3:

  GET    /api/v1/instance, /api/v2/instance    (version, configuration.statuses)
  GET    /api/v1/accounts/verify_credentials   (token)
  PATCH  /api/v1/accounts/update_credentials   (token, write: bot, display_name, note)
  GET    /api/v1/accounts/lookup?acct=
  GET    /api/v1/accounts/:id
  GET    /api/v1/accounts/:id/statuses         (limit <= 40, max_id/since_id/min_id,
                                                exclude_replies, exclude_reblogs, Link)
  POST   /api/v1/statuses                      (token, write; Idempotency-Key kept an hour)
  GET    /api/v1/statuses/:id, /api/v1/statuses/:id/context
  DELETE /api/v1/statuses/:id                  (token, write)
  GET    /api/v1/notifications                 (token; types[], exclude_types[], since_id,
                                                min_id, max_id, limit <= 80, Link)

As on Mastodon: status ids are time-ordered snowflakes (strings), content is HTML built from
the text (escaped, paragraphs and <br />, links with invisible spans, hashtags, and mentions
of known accounts as h-card links); a mention is `@name` or `@name@domain` after the start
or a character that is not a word character, "=" or "/" (so "@\u200bname" is no mention);
a mention notifies the account named; the length limit is 500 characters with each link
counting 23, a remote mention counting as its local part and the content warning counting
too (422 beyond); a reply to a deleted or invisible status is refused with 404; private and
direct statuses are shown only to their author (and direct ones to the accounts named);
public reads need no token; rate limits of 300 requests per 5 minutes per token (per
address without one) with X-RateLimit-* headers and 429.

Test helpers (Python, or HTTP under /sandbox/ for loopback clients only, 404 to anyone
else): add accounts, statuses and mentions of the bot, delete statuses, inject faults
("429", "500", "503", "slow", "disconnect", "lost", "401", "read_only"), read back what the
bot posted and the requests made.
"""
from __future__ import annotations

import bisect
import hashlib
import html
import json
import re
import threading
import time
import unicodedata
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

from bot.sandbox.common import (Answer, Fault, RateWindows, Reply, SandboxHandle, SandboxHandler, SandboxServer,
                                 World, iso_to_ms, match_route, open_server, read_jsonl, run_in_thread,
                                 serve_until_stopped)
from bot.settings import Settings, is_loopback

# --- fixed sandbox identities (fake, public on purpose) ----------------------------------
BOT_USERNAME = "xmimic_bot"
FAN_USERNAME = "sandbox_fan"
TARGET_USERNAME = "realDonaldTrump"
LOCKED_USERNAME = "locked_acct"  # followers-only posts: nothing public to read
SUSPENDED_USERNAME = "suspended_acct"
SANDBOX_ACCESS_TOKEN = "sandbox-mastodon-access-token"  # the bot's, scopes "read write"
SANDBOX_READ_TOKEN = "sandbox-mastodon-read-token"  # the bot's, scope "read" only
FAN_ACCESS_TOKEN = "sandbox-mastodon-fan-token"

SAMPLE_DIR = Path(__file__).resolve().parent.parent / "sample_data"
DEFAULT_SEED: tuple[Path, ...] = (SAMPLE_DIR / "realDonaldTrump.jsonl.gz",)
RT_DOMAIN = "birdsite.example"  # the home of accounts an archive's "RT @name:" reblogs

VERSION = "4.3.2"
MAX_CHARACTERS = 500
URL_LENGTH = 23
STATUSES_PAGE_MAX, STATUSES_PAGE_DEFAULT = 40, 20
NOTIFICATIONS_PAGE_MAX, NOTIFICATIONS_PAGE_DEFAULT = 80, 40
RATE_LIMIT, RATE_WINDOW_S = 300, 5 * 60
IDEMPOTENCY_TTL_S = 3600.0
VISIBILITIES = ("public", "unlisted", "private", "direct")
NOTIFICATION_TYPES = ("mention", "status", "reblog", "follow", "follow_request", "favourite", "poll", "update")
FAULT_KINDS = ("429", "500", "503", "slow", "disconnect", "lost", "401", "read_only")

# --- error bodies, as Mastodon writes them --------------------------------------------------
TOKEN_INVALID = {"error": "The access token is invalid"}
OUTSIDE_SCOPES = {"error": "This action is outside the authorized scopes"}
NOT_FOUND = {"error": "Record not found"}
ROUTE_NOT_FOUND = {"error": "Not Found"}
TOO_MANY = {"error": "Too many requests"}
REPLY_NOT_FOUND = {"error": "The post you are trying to reply to does not appear to exist."}
SERVER_ERROR = {"error": "We're sorry, but something went wrong on our end."}

# --- how Mastodon reads a status' text ----------------------------------------------------
# Account::MENTION_RE: the lookbehind refuses a word character, "=" and "/" (so neither
# "mail@example.com" nor "@\u200bname" mentions anyone).
MENTION_RE = re.compile(r"(?<![=/\w])@([a-z0-9_]+(?:[.-]+[a-z0-9_]+)*)(?:@(\w+(?:[.-]+\w+)*))?", re.IGNORECASE)
HASHTAG_RE = re.compile(r"(?<![=/)\w])#(\w*[^\W\d]\w*)")
URL_RE = re.compile(r"(?<![\w/])https?://[^\s<>\"']+", re.IGNORECASE)
_TRAILING = ".,;:!?'\")]}"


def _urls(text: str) -> list[tuple[int, int]]:
    spans = []
    for match in URL_RE.finditer(text):
        core = match.group(0).rstrip(_TRAILING)
        if len(core) > len("https://"):
            spans.append((match.start(), match.start() + len(core)))
    return spans


def status_length(text: str, spoiler_text: str = "") -> int:
    """Characters a status counts towards the limit, as Mastodon counts them: a link is
    23, `@name@domain` is `@name`, combining marks and joined emoji add nothing, and the
    content warning counts too."""
    countable, last = [], 0
    for start, end in _urls(text):
        countable += [text[last:start], "x" * URL_LENGTH]
        last = end
    countable.append(text[last:])
    counted = MENTION_RE.sub(lambda m: "@" + m.group(1), "".join(countable))
    return _graphemes(counted) + _graphemes(spoiler_text)


def _graphemes(text: str) -> int:
    # Close enough to grapheme clusters for a limit check: marks, variation selectors and
    # what a zero-width joiner joins do not start a new character.
    count, joined = 0, False
    for ch in text:
        if ch == "\u200d":
            joined = True
            continue
        if joined or unicodedata.category(ch) in ("Mn", "Me") or 0xFE00 <= ord(ch) <= 0xFE0F:
            joined = False
            continue
        count += 1
    return count


# --- the server's state ----------------------------------------------------------------------
class _World(World):
    """Accounts, statuses, notifications, faults and rate windows; every access holds `lock`."""

    fault_kinds = FAULT_KINDS

    def __init__(self, domain: str) -> None:
        super().__init__()
        self.domain = domain  # host[:port], as the accounts' URLs and remote mentions name it
        self.accounts: dict[str, dict] = {}
        self.by_acct: dict[str, str] = {}  # lowercase acct ("name", or "name@domain" if remote) -> id
        self.statuses: dict[str, dict] = {}
        self.timelines: dict[str, list[int]] = {}  # account id -> status ids, ascending
        self.notifications: list[dict] = []  # ascending ids
        self.tokens: dict[str, tuple[str, frozenset[str]]] = {}  # token -> (account id, scopes)
        self.idempotency: dict[tuple[str, str], tuple[str, float]] = {}  # (account, key) -> (status, until)
        self.windows = RateWindows()  # keyed by caller: token's account, or "ip:" and the address
        self._last_status_id = 0
        self._last_notification_id = 1000
        self._last_account_id = 109_000_000_000_000_000

    # ids -----------------------------------------------------------------------------------
    def new_status_id(self, when_ms: int | None = None) -> str:
        """A Mastodon snowflake: milliseconds << 16 plus a sequence, larger than every id so far."""
        ms = int(time.time() * 1000) if when_ms is None else when_ms
        self._last_status_id = max(ms << 16, self._last_status_id + 1)
        return str(self._last_status_id)

    # accounts ------------------------------------------------------------------------------
    def add_account(self, username: str, *, domain: str | None = None, display_name: str | None = None,
                    bot: bool = False, locked: bool = False, suspended: bool = False) -> dict:
        acct = username if domain is None else f"{username}@{domain}"
        known = self.by_acct.get(acct.lower())
        if known:
            return self.accounts[known]
        self._last_account_id += 1 + int(hashlib.sha1(acct.lower().encode()).hexdigest()[:4], 16)
        account = {
            "id": str(self._last_account_id), "username": username, "acct": acct, "domain": domain,
            "display_name": display_name if display_name is not None else username, "bot": bot,
            "locked": locked, "suspended": suspended, "note": "", "created_at": "2016-11-24T00:00:00.000Z",
            "statuses_count": 0,
        }
        self.accounts[account["id"]] = account
        self.by_acct[acct.lower()] = account["id"]
        self.timelines[account["id"]] = []
        return account

    def account_named(self, acct: str) -> dict | None:
        """An account by "name", "@name", "name@domain" (this server's domain: local)."""
        acct = acct.lstrip("@")
        name, _, domain = acct.partition("@")
        if domain and self._is_local_domain(domain):
            acct = name
        found = self.by_acct.get(acct.lower())
        return self.accounts[found] if found else None

    def _is_local_domain(self, domain: str) -> bool:
        return domain.lower() in (self.domain.lower(), self.domain.lower().rsplit(":", 1)[0])

    # statuses ------------------------------------------------------------------------------
    def add_status(self, author: dict, text: str, *, created_at: str | None = None, visibility: str = "public",
                   spoiler_text: str = "", in_reply_to: dict | None = None, reply_to_account_id: str | None = None,
                   reblog_of: dict | None = None, content: str | None = None, notify: bool = True) -> dict:
        when_ms = iso_to_ms(created_at) if created_at else None
        status_id = self.new_status_id(when_ms)
        mentioned = [] if reblog_of else self._mentioned(text)
        if in_reply_to is not None:
            reply_to_account_id = in_reply_to["account_id"]
        status = {
            "id": status_id, "account_id": author["id"], "text": text,
            "content": "" if reblog_of else (content if content is not None else self.render(text)),
            "created_at": _ms_to_iso(when_ms if when_ms is not None else status_id_ms(status_id)),
            "visibility": visibility, "spoiler_text": spoiler_text,
            # a reply to a remote status the server never fetched: an id from a second earlier
            "in_reply_to_id": in_reply_to["id"] if in_reply_to else (
                str((status_id_ms(status_id) - 1000) << 16 | 0xFFFF) if reply_to_account_id else None),
            "in_reply_to_account_id": reply_to_account_id,
            "reblog_id": reblog_of["id"] if reblog_of else None,
            "mentions": [a["id"] for a in mentioned], "deleted": False,
        }
        self.statuses[status_id] = status
        bisect.insort(self.timelines.setdefault(author["id"], []), int(status_id))
        author["statuses_count"] += 1
        if notify:
            for account in mentioned:
                if account["id"] != author["id"] and account["domain"] is None:
                    self._notify(account, "mention", author, status)
        return status

    def delete(self, status: dict) -> None:
        if not status["deleted"]:
            status["deleted"] = True
            self.accounts[status["account_id"]]["statuses_count"] -= 1

    def _mentioned(self, text: str) -> list[dict]:
        found: dict[str, dict] = {}
        for match in MENTION_RE.finditer(text):
            account = self.account_named(match.group(0))
            if account is not None:
                found.setdefault(account["id"], account)
        return list(found.values())

    def _notify(self, to: dict, kind: str, by: dict, status: dict | None) -> None:
        self._last_notification_id += 1
        self.notifications.append({
            "id": str(self._last_notification_id), "type": kind, "to": to["id"], "account_id": by["id"],
            "status_id": status["id"] if status else None, "created_at": _ms_to_iso(int(time.time() * 1000)),
        })

    def render(self, text: str) -> str:
        """Mastodon's HTML for a plain-text status (TextFormatter)."""
        pieces: list[tuple[int, int, str]] = []
        for start, end in _urls(text):
            pieces.append((start, end, _link_html(text[start:end])))
        taken = [(s, e) for s, e, _ in pieces]

        def free(start: int, end: int) -> bool:
            return all(end <= s or start >= e for s, e in taken)

        for match in MENTION_RE.finditer(text):
            account = self.account_named(match.group(0))
            if account is not None and free(match.start(), match.end()):
                url = self.account_url(account)
                pieces.append((match.start(), match.end(), f'<span class="h-card" translate="no"><a href="{url}" '
                               f'class="u-url mention">@<span>{html.escape(account["username"])}</span></a></span>'))
        for match in HASHTAG_RE.finditer(text):
            if free(match.start(), match.end()):
                tag = match.group(1)
                pieces.append((match.start(), match.end(), f'<a href="http://{self.domain}/tags/{html.escape(tag.lower())}" '
                               f'class="mention hashtag" rel="tag">#<span>{html.escape(tag)}</span></a>'))
        pieces.sort()
        out, last = [], 0
        for start, end, markup in pieces:
            out += [html.escape(text[last:start], quote=False), markup]
            last = end
        out.append(html.escape(text[last:], quote=False))
        body = "".join(out).strip("\n")
        paragraphs = [p.replace("\n", "<br />") for p in re.split(r"\n{2,}", body)]
        return "".join(f"<p>{p}</p>" for p in paragraphs)

    def account_url(self, account: dict) -> str:
        if account["domain"] is None:
            return f"http://{self.domain}/@{account['username']}"
        return f"https://{account['domain']}/@{account['username']}"

    def visible(self, status: dict, viewer: str | None) -> bool:
        """Whether `viewer` (an account id, None: no token) may see the status."""
        if status["deleted"] or self.accounts[status["account_id"]]["suspended"]:
            return False
        if status["visibility"] in ("public", "unlisted") or viewer == status["account_id"]:
            return True
        # followers-only: nobody in the sandbox follows anyone; direct: the accounts named
        return status["visibility"] == "direct" and viewer in status["mentions"]

    def root_of(self, status: dict) -> list[dict]:
        """The status' ancestors, oldest first, as far as they are stored and not deleted."""
        chain, seen = [], {status["id"]}
        parent_id = status["in_reply_to_id"]
        while parent_id and parent_id in self.statuses and parent_id not in seen:
            parent = self.statuses[parent_id]
            if parent["deleted"]:
                break
            chain.append(parent)
            seen.add(parent_id)
            parent_id = parent["in_reply_to_id"]
        return chain[::-1]

    # faults and limits -----------------------------------------------------------------------
    def fault_applies(self, fault: Fault, method: str, path: str) -> bool:
        if fault.kind == "read_only" and method == "GET":
            return False  # the lost scope shows on writes only
        return fault.matches(method, path)

    def spend(self, caller: str) -> dict[str, str]:
        """Count one request: the X-RateLimit-* headers, or Reply(429) once the window is spent."""
        # Mastodon's windows are aligned to the clock (every 5 minutes)
        reset, remaining = self.windows.spend(
            caller, RATE_LIMIT, lambda now: float((int(now) // RATE_WINDOW_S + 1) * RATE_WINDOW_S))
        headers = {"X-RateLimit-Limit": str(RATE_LIMIT), "X-RateLimit-Reset": _epoch_to_iso(reset),
                   "X-RateLimit-Remaining": str(max(remaining, 0))}
        if remaining < 0:
            raise Reply(429, TOO_MANY, headers)
        return headers


def _link_html(url: str) -> str:
    scheme, _, rest = url.partition("://")
    shown, hidden = rest[:30], rest[30:]
    return (f'<a href="{html.escape(url)}" target="_blank" rel="nofollow noopener noreferrer" translate="no">'
            f'<span class="invisible">{html.escape(scheme)}://</span>'
            f'<span class="{"ellipsis" if hidden else ""}">{html.escape(shown)}</span>'
            f'<span class="invisible">{html.escape(hidden)}</span></a>')


# --- JSON shapes --------------------------------------------------------------------------------
def _account_json(world: _World, account: dict) -> dict:
    timeline = world.timelines.get(account["id"], [])
    out = {
        "id": account["id"], "username": account["username"], "acct": account["acct"],
        "display_name": account["display_name"], "locked": account["locked"], "bot": account["bot"],
        "discoverable": True, "indexable": True, "group": False, "created_at": account["created_at"],
        "note": account["note"], "url": world.account_url(account),
        "uri": (f"http://{world.domain}/users/{account['username']}" if account["domain"] is None
                else f"https://{account['domain']}/users/{account['username']}"),
        "avatar": f"http://{world.domain}/avatars/original/missing.png",
        "avatar_static": f"http://{world.domain}/avatars/original/missing.png",
        "header": f"http://{world.domain}/headers/original/missing.png",
        "header_static": f"http://{world.domain}/headers/original/missing.png",
        "followers_count": 0, "following_count": 0, "statuses_count": account["statuses_count"],
        "last_status_at": world.statuses[str(timeline[-1])]["created_at"][:10] if timeline else None,
        "hide_collections": False, "noindex": False, "emojis": [], "roles": [], "fields": [],
    }
    if account["suspended"]:
        out["suspended"] = True
    return out


def _status_json(world: _World, status: dict) -> dict:
    account = world.accounts[status["account_id"]]
    url = f"{world.account_url(account)}/{status['id']}"
    mentions = []
    for account_id in status["mentions"]:
        named = world.accounts[account_id]
        mentions.append({"id": named["id"], "username": named["username"], "url": world.account_url(named),
                         "acct": named["acct"]})
    reblog = world.statuses.get(status["reblog_id"]) if status["reblog_id"] else None
    return {
        "id": status["id"], "created_at": status["created_at"],
        "in_reply_to_id": status["in_reply_to_id"], "in_reply_to_account_id": status["in_reply_to_account_id"],
        "sensitive": bool(status["spoiler_text"]), "spoiler_text": status["spoiler_text"],
        "visibility": status["visibility"], "language": "en",
        "uri": f"http://{world.domain}/users/{account['username']}/statuses/{status['id']}",
        "url": url, "replies_count": 0, "reblogs_count": 0, "favourites_count": 0, "edited_at": None,
        "content": status["content"], "reblog": _status_json(world, reblog) if reblog else None,
        "application": None, "account": _account_json(world, account), "media_attachments": [],
        "mentions": mentions,
        "tags": [{"name": t.lower(), "url": f"http://{world.domain}/tags/{t.lower()}"}
                 for t in dict.fromkeys(HASHTAG_RE.findall(status["text"]))] if not reblog else [],
        "emojis": [], "card": None, "poll": None,
    }


def _notification_json(world: _World, notification: dict) -> dict:
    status = world.statuses.get(notification["status_id"]) if notification["status_id"] else None
    return {
        "id": notification["id"], "type": notification["type"], "created_at": notification["created_at"],
        "group_key": f"ungrouped-{notification['id']}",
        "account": _account_json(world, world.accounts[notification["account_id"]]),
        "status": _status_json(world, status) if status else None,
    }


def _instance_v1(world: _World) -> dict:
    return {
        "uri": world.domain, "title": "xmimic sandbox", "short_description": "A local Mastodon-compatible sandbox.",
        "description": "", "email": "", "version": VERSION, "urls": {"streaming_api": f"ws://{world.domain}"},
        "stats": {"user_count": len(world.accounts), "status_count": len(world.statuses), "domain_count": 1},
        "thumbnail": None, "languages": ["en"], "registrations": False, "approval_required": False,
        "invites_enabled": False,
        "configuration": {
            "accounts": {"max_featured_tags": 10},
            "statuses": {"max_characters": MAX_CHARACTERS, "max_media_attachments": 4,
                         "characters_reserved_per_url": URL_LENGTH},
            "media_attachments": {"supported_mime_types": ["image/png"], "image_size_limit": 16777216,
                                  "image_matrix_limit": 33177600, "video_size_limit": 103809024,
                                  "video_frame_rate_limit": 120, "video_matrix_limit": 8294400},
            "polls": {"max_options": 4, "max_characters_per_option": 50, "min_expiration": 300,
                      "max_expiration": 2629746},
        },
        "contact_account": None, "rules": [],
    }


def _instance_v2(world: _World) -> dict:
    v1 = _instance_v1(world)
    return {
        "domain": world.domain, "title": v1["title"], "version": VERSION, "source_url": "https://github.com/mastodon/mastodon",
        "description": v1["short_description"], "usage": {"users": {"active_month": len(world.accounts)}},
        "thumbnail": {"url": f"http://{world.domain}/packs/media/images/preview.png"}, "languages": ["en"],
        "configuration": {
            "urls": {"streaming": f"ws://{world.domain}"},
            "accounts": {"max_featured_tags": 10, "max_pinned_statuses": 5},
            "statuses": v1["configuration"]["statuses"],
            "media_attachments": v1["configuration"]["media_attachments"],
            "polls": v1["configuration"]["polls"], "translation": {"enabled": False},
        },
        "registrations": {"enabled": False, "approval_required": False, "message": None},
        "api_versions": {"mastodon": 2},
        "contact": {"email": "", "account": None}, "rules": [],
    }


# --- HTTP ------------------------------------------------------------------------------------
class _Server(SandboxServer):
    label = "mastodon sandbox"

    def __init__(self, address: tuple[str, int], world_domain: str | None = None):
        super().__init__(address, _Handler)
        # the world's domain is the address bound, which port 0 leaves to the system
        host, port = self.server_address[:2]
        host = f"[{host}]" if ":" in host else host
        self.world: _World = _World(world_domain or f"{host}:{port}")


_ID = r"(?P<id>\d+)"
ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("GET", re.compile(r"/api/v1/instance"), "instance_v1"),
    ("GET", re.compile(r"/api/v2/instance"), "instance_v2"),
    ("GET", re.compile(r"/api/v1/accounts/verify_credentials"), "verify_credentials"),
    ("PATCH", re.compile(r"/api/v1/accounts/update_credentials"), "update_credentials"),
    ("GET", re.compile(r"/api/v1/accounts/lookup"), "lookup"),
    ("GET", re.compile(rf"/api/v1/accounts/{_ID}/statuses"), "account_statuses"),
    ("GET", re.compile(rf"/api/v1/accounts/{_ID}"), "account"),
    ("POST", re.compile(r"/api/v1/statuses"), "create_status"),
    ("GET", re.compile(rf"/api/v1/statuses/{_ID}/context"), "context"),
    ("GET", re.compile(rf"/api/v1/statuses/{_ID}"), "status"),
    ("DELETE", re.compile(rf"/api/v1/statuses/{_ID}"), "delete_status"),
    ("GET", re.compile(r"/api/v1/notifications"), "notifications"),
]
WRITES = {"update_credentials", "create_status", "delete_status"}
NEEDS_TOKEN = WRITES | {"verify_credentials", "notifications"}


class _Handler(SandboxHandler):
    server: _Server
    server_version = "xmimic-mastodon-sandbox"
    route_not_found = ROUTE_NOT_FOUND
    server_error = admin_error = SERVER_ERROR
    passive_faults = ("slow", "lost", "read_only")  # read_only: refused by the scope check, in _api

    def do_PATCH(self) -> None:  # noqa: N802 (stdlib's names)
        self._dispatch("PATCH")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    def _fault_reply(self, fault: Fault) -> Answer:
        return _fault_reply(fault)

    def _admin(self, method: str, path: str, query: dict[str, list[str]], request: dict) -> tuple[int, Any] | None:
        return _admin(self.server.world, method, path, query, request)

    # the API -------------------------------------------------------------------------------
    def _api(self, method: str, path: str, query: dict[str, list[str]], raw: bytes,
             fault: Fault | None) -> Answer:
        route = match_route(ROUTES, method, path)
        if route is None:
            raise Reply(404, ROUTE_NOT_FOUND)
        name, match = route
        world = self.server.world
        with world.lock:
            viewer, scopes = self._authenticate()
            headers = world.spend(viewer or f"ip:{self.client_address[0]}")
            try:
                if name in NEEDS_TOKEN and viewer is None:
                    raise Reply(401, TOKEN_INVALID)
                if name in WRITES and ("write" not in scopes or (fault is not None and fault.kind == "read_only")):
                    raise Reply(403, OUTSIDE_SCOPES)
                params = {**_flatten(query), **self._body(raw)}
                status, payload, extra = getattr(self, "_r_" + name)(viewer=viewer, params=params, **match.groupdict())
            except Reply as reply:
                reply.headers = {**headers, **reply.headers}
                raise
        return status, payload, {**headers, **extra}

    def _authenticate(self) -> tuple[str | None, frozenset[str]]:
        auth = self.headers.get("Authorization", "")
        if not auth:
            return None, frozenset()
        token = auth[len("Bearer "):] if auth.startswith("Bearer ") else None
        found = self.server.world.tokens.get(token or "")
        if found is None:
            raise Reply(401, TOKEN_INVALID)
        return found

    def _body(self, raw: bytes) -> dict[str, Any]:
        if not raw:
            return {}
        kind = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        try:
            if kind == "application/json":
                body = json.loads(raw)
                if not isinstance(body, dict):
                    raise ValueError
                return body
            if kind in ("application/x-www-form-urlencoded", ""):
                return _flatten(parse_qs(raw.decode("utf-8"), keep_blank_values=True))
        except (ValueError, UnicodeDecodeError):
            raise Reply(400, {"error": "Error occurred while parsing request parameters"}) from None
        raise Reply(422, {"error": f"Unsupported content type {kind}"})

    # routes --------------------------------------------------------------------------------
    def _r_instance_v1(self, **_: Any) -> tuple[int, Any, dict]:
        return 200, _instance_v1(self.server.world), {}

    def _r_instance_v2(self, **_: Any) -> tuple[int, Any, dict]:
        return 200, _instance_v2(self.server.world), {}

    def _r_verify_credentials(self, viewer: str, **_: Any) -> tuple[int, Any, dict]:
        world = self.server.world
        return 200, _credential_json(world, world.accounts[viewer]), {}

    def _r_update_credentials(self, viewer: str, params: dict, **_: Any) -> tuple[int, Any, dict]:
        world = self.server.world
        account = world.accounts[viewer]
        if "bot" in params:
            account["bot"] = _truthy(params["bot"])
        if "locked" in params:
            account["locked"] = _truthy(params["locked"])
        for name in ("display_name", "note"):
            if name in params:
                account[name] = str(params[name])
        return 200, _credential_json(world, account), {}

    def _r_lookup(self, params: dict, **_: Any) -> tuple[int, Any, dict]:
        world = self.server.world
        account = world.account_named(str(params.get("acct", "")))
        if account is None:
            raise Reply(404, NOT_FOUND)
        return 200, _account_json(world, account), {}

    def _r_account(self, id: str, **_: Any) -> tuple[int, Any, dict]:  # noqa: A002
        world = self.server.world
        if id not in world.accounts:
            raise Reply(404, NOT_FOUND)
        return 200, _account_json(world, world.accounts[id]), {}

    def _r_account_statuses(self, viewer: str | None, params: dict, id: str, **_: Any) -> tuple[int, Any, dict]:  # noqa: A002
        world = self.server.world
        account = world.accounts.get(id)
        if account is None:
            raise Reply(404, NOT_FOUND)
        if account["suspended"]:
            raise Reply(410, {"error": "Gone"})
        limit = _limit(params, STATUSES_PAGE_DEFAULT, STATUSES_PAGE_MAX)
        exclude_replies, exclude_reblogs = _truthy(params.get("exclude_replies")), _truthy(params.get("exclude_reblogs"))

        def shown(status: dict) -> bool:
            if not world.visible(status, viewer) or (exclude_reblogs and status["reblog_id"]):
                return False
            # Mastodon's without_replies keeps a thread's self-replies
            return not (exclude_replies and status["in_reply_to_id"] and status["in_reply_to_account_id"] != id)

        page = _timeline_page(world, world.timelines.get(id, []), params, limit, shown)
        link = _link_header(self._base(), f"/api/v1/accounts/{id}/statuses", params, page)
        return 200, [_status_json(world, s) for s in page], link

    def _r_create_status(self, viewer: str, params: dict, **_: Any) -> tuple[int, Any, dict]:
        world = self.server.world
        key = self.headers.get("Idempotency-Key")
        now = time.time()
        for stale in [k for k, (_, until) in world.idempotency.items() if until <= now]:
            del world.idempotency[stale]
        if key and (viewer, key) in world.idempotency:
            # the same request again within the hour: the status it made, nothing new
            return 200, _status_json(world, world.statuses[world.idempotency[(viewer, key)][0]]), {}
        text = str(params.get("status") or "")
        spoiler = str(params.get("spoiler_text") or "")
        visibility = str(params.get("visibility") or "public").lower()
        if not text.strip():
            raise Reply(422, {"error": "Validation failed: Text can't be blank"})
        if visibility not in VISIBILITIES:
            raise Reply(422, {"error": "Validation failed: Visibility is not included in the list"})
        if status_length(text, spoiler) > MAX_CHARACTERS:
            raise Reply(422, {"error": f"Validation failed: Text character limit of {MAX_CHARACTERS} exceeded"})
        parent = None
        if params.get("in_reply_to_id"):
            parent = world.statuses.get(str(params["in_reply_to_id"]))
            if parent is None or not world.visible(parent, viewer):
                raise Reply(404, REPLY_NOT_FOUND)
        status = world.add_status(world.accounts[viewer], text, visibility=visibility, spoiler_text=spoiler,
                                  in_reply_to=parent)
        if key:
            world.idempotency[(viewer, key)] = (status["id"], now + IDEMPOTENCY_TTL_S)
        return 200, _status_json(world, status), {}

    def _r_status(self, viewer: str | None, id: str, **_: Any) -> tuple[int, Any, dict]:  # noqa: A002
        world = self.server.world
        status = world.statuses.get(id)
        if status is None or not world.visible(status, viewer):
            raise Reply(404, NOT_FOUND)
        return 200, _status_json(world, status), {}

    def _r_context(self, viewer: str | None, id: str, **_: Any) -> tuple[int, Any, dict]:  # noqa: A002
        world = self.server.world
        status = world.statuses.get(id)
        if status is None or not world.visible(status, viewer):
            raise Reply(404, NOT_FOUND)
        ancestors = [s for s in world.root_of(status) if world.visible(s, viewer)]
        descendants = sorted((s for s in world.statuses.values() if s["in_reply_to_id"] == id and world.visible(s, viewer)),
                             key=lambda s: int(s["id"]))
        return 200, {"ancestors": [_status_json(world, s) for s in ancestors],
                     "descendants": [_status_json(world, s) for s in descendants]}, {}

    def _r_delete_status(self, viewer: str, id: str, **_: Any) -> tuple[int, Any, dict]:  # noqa: A002
        world = self.server.world
        status = world.statuses.get(id)
        if status is None or status["deleted"] or status["account_id"] != viewer:
            raise Reply(404, NOT_FOUND)  # another account's status is "not found" to you
        world.delete(status)
        out = _status_json(world, status)
        out["text"] = status["text"]  # Mastodon answers a delete with the source, for "delete & redraft"
        return 200, out, {}

    def _r_notifications(self, viewer: str, params: dict, **_: Any) -> tuple[int, Any, dict]:
        world = self.server.world
        types = set(_as_list(params.get("types[]", params.get("types"))))
        excluded = set(_as_list(params.get("exclude_types[]", params.get("exclude_types"))))
        limit = _limit(params, NOTIFICATIONS_PAGE_DEFAULT, NOTIFICATIONS_PAGE_MAX)
        chosen = []
        for notification in reversed(world.notifications):
            if notification["to"] != viewer or (types and notification["type"] not in types):
                continue
            if notification["type"] in excluded:
                continue
            status = world.statuses.get(notification["status_id"]) if notification["status_id"] else None
            if notification["status_id"] and (status is None or status["deleted"]):
                continue  # Mastodon removes a deleted status' notifications
            chosen.append(notification)
        page = _id_window(chosen, params, limit)
        link = _link_header(self._base(), "/api/v1/notifications", params, page)
        return 200, [_notification_json(world, n) for n in page], link

    def _base(self) -> str:
        return f"http://{self.headers.get('Host') or self.server.world.domain}"


def _credential_json(world: _World, account: dict) -> dict:
    out = _account_json(world, account)
    out["source"] = {"privacy": "public", "sensitive": False, "language": "en", "note": account["note"],
                     "fields": [], "follow_requests_count": 0}
    out["role"] = {"id": "-99", "name": "", "permissions": "0", "color": "", "highlighted": False}
    return out


def _fault_reply(fault: Fault) -> Answer:
    """What Mastodon answers for an injected fault that stops the request (not slow, lost
    or read_only)."""
    if fault.kind == "429":
        headers = {"X-RateLimit-Limit": str(RATE_LIMIT), "X-RateLimit-Remaining": "0"}
        if fault.reset_in is not None:
            headers["X-RateLimit-Reset"] = _epoch_to_iso(time.time() + fault.reset_in)
        return 429, TOO_MANY, headers
    if fault.kind in ("500", "503"):
        return int(fault.kind), SERVER_ERROR, {}
    if fault.kind == "401":
        return 401, TOKEN_INVALID, {}
    raise AssertionError(fault.kind)


# --- query parameters ------------------------------------------------------------------------
def _flatten(values: dict[str, list[str]]) -> dict[str, Any]:
    # "types[]" keeps every value; any other parameter its last one, as Rails reads them
    return {k: (v if k.endswith("[]") else v[-1]) for k, v in values.items()}


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def _truthy(value: Any) -> bool:
    return str(value).lower() in ("1", "true", "t", "on", "yes")


def _limit(params: dict, default: int, most: int) -> int:
    try:
        limit = int(params.get("limit", default))
    except (TypeError, ValueError):
        limit = default
    return max(1, min(limit, most))  # Mastodon clamps, it does not refuse


def _id_param(params: dict, name: str) -> int | None:
    value = params.get(name)
    if value in (None, ""):
        return None
    try:
        return int(str(value))
    except ValueError:
        return None  # Mastodon ignores an id it cannot read


def _id_window(items: list[dict], params: dict, limit: int) -> list[dict]:
    """A page of newest-first items, as Mastodon's paginate_by_id: max_id and since_id give
    the newest below max_id; min_id gives the oldest above it (then served newest first)."""
    max_id, since_id, min_id = _id_param(params, "max_id"), _id_param(params, "since_id"), _id_param(params, "min_id")
    newest_first = sorted(items, key=lambda x: int(x["id"]), reverse=True)
    chosen = [x for x in newest_first if (max_id is None or int(x["id"]) < max_id)
              and (since_id is None or int(x["id"]) > since_id)]
    if min_id is not None:
        above = [x for x in chosen if int(x["id"]) > min_id][::-1][:limit]
        return above[::-1]
    return chosen[:limit]


def _timeline_page(world: _World, timeline: list[int], params: dict, limit: int, shown: Any) -> list[dict]:
    """_id_window over an ascending list of status ids, reading only what the page needs."""
    max_id, since_id, min_id = _id_param(params, "max_id"), _id_param(params, "since_id"), _id_param(params, "min_id")
    low = bisect.bisect_right(timeline, since_id) if since_id is not None else 0
    high = bisect.bisect_left(timeline, max_id) if max_id is not None else len(timeline)
    if min_id is not None:
        low = max(low, bisect.bisect_right(timeline, min_id))
        indexes: Iterable[int] = range(low, high)  # the oldest above min_id...
    else:
        indexes = range(high - 1, low - 1, -1)  # ...else the newest below max_id
    page = []
    for index in indexes:
        status = world.statuses[str(timeline[index])]
        if shown(status):
            page.append(status)
            if len(page) >= limit:
                break
    return sorted(page, key=lambda x: int(x["id"]), reverse=True)


def _link_header(base: str, path: str, params: dict, page: list[dict]) -> dict[str, str]:
    """Mastodon's Link header: next (older, max_id) and prev (newer, min_id) around the page."""
    if not page:
        return {}
    keep = {k: v for k, v in params.items() if k in ("limit", "exclude_replies", "exclude_reblogs", "types[]",
                                                      "exclude_types[]", "only_media", "pinned")}
    def url(extra: dict) -> str:
        return f"{base}{path}?{urlencode({**keep, **extra}, doseq=True)}"
    return {"Link": f'<{url({"max_id": page[-1]["id"]})}>; rel="next", <{url({"min_id": page[0]["id"]})}>; rel="prev"'}


# --- admin endpoints (/sandbox/...) --------------------------------------------------------
def _admin(world: _World, method: str, path: str, query: dict[str, list[str]],
           request: dict) -> tuple[int, Any] | None:
    """Mastodon's own admin routes (the faults' are common): (status, body), or None for no route."""
    params = _flatten(query)
    if (method, path) == ("POST", "/sandbox/mentions"):
        status = _add_mention(world, request["text"], request.get("author", FAN_USERNAME),
                              request.get("in_reply_to_id"), request.get("visibility", "public"))
        return 201, _public_status(world, status)
    if (method, path) == ("POST", "/sandbox/statuses"):
        status = _add_status(world, request["username"], request["text"], **{
            k: request[k] for k in ("visibility", "spoiler_text", "in_reply_to_id", "created_at") if k in request})
        return 201, _public_status(world, status)
    if (method, path) == ("GET", "/sandbox/statuses"):
        with world.lock:
            return 200, _statuses_by(world, params["username"], _truthy(params.get("include_deleted")))
    status_route = re.fullmatch(r"/sandbox/statuses/(\d+)", path)
    if status_route and method == "DELETE":
        with world.lock:
            status = world.statuses.get(status_route[1])
            if status is None:
                raise Reply(404, {"error": f"no status {status_route[1]}"})
            world.delete(status)
            return 200, _public_status(world, status)
    return None


def _add_status(world: _World, username: str, text: str, *, visibility: str = "public", spoiler_text: str = "",
                in_reply_to_id: str | None = None, created_at: str | None = None) -> dict:
    if visibility not in VISIBILITIES:
        raise ValueError(f"visibility must be one of {', '.join(VISIBILITIES)}")
    with world.lock:
        author = world.account_named(username) or world.add_account(username)
        parent = None
        if in_reply_to_id is not None:
            parent = world.statuses.get(str(in_reply_to_id))
            if parent is None:
                raise ValueError(f"no status {in_reply_to_id}")
        return world.add_status(author, text, visibility=visibility, spoiler_text=spoiler_text, in_reply_to=parent,
                                created_at=created_at)


def _add_mention(world: _World, text: str, author: str, in_reply_to_id: str | None, visibility: str = "public") -> dict:
    if not re.search(rf"(?<![=/\w])@{BOT_USERNAME}\b", text, re.IGNORECASE):
        text = f"@{BOT_USERNAME} {text}"
    return _add_status(world, author, text, visibility=visibility, in_reply_to_id=in_reply_to_id)


def _public_status(world: _World, status: dict) -> dict:
    """A status as the tests read it: its source text besides the API's fields."""
    return {
        "id": status["id"], "acct": world.accounts[status["account_id"]]["acct"], "text": status["text"],
        "content": status["content"], "created_at": status["created_at"], "visibility": status["visibility"],
        "spoiler_text": status["spoiler_text"], "in_reply_to_id": status["in_reply_to_id"],
        "reblog_id": status["reblog_id"], "mentions": [world.accounts[a]["acct"] for a in status["mentions"]],
        "deleted": status["deleted"],
    }


def _statuses_by(world: _World, acct: str, include_deleted: bool) -> list[dict]:
    account = world.account_named(acct)
    if account is None:
        return []
    statuses = [world.statuses[str(i)] for i in world.timelines.get(account["id"], [])]
    return [_public_status(world, s) for s in statuses if include_deleted or not s["deleted"]]


# --- time helpers ----------------------------------------------------------------------------
def status_id_ms(status_id: str) -> int:
    return int(status_id) >> 16


def _ms_to_iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _epoch_to_iso(seconds: float) -> str:
    return _ms_to_iso(int(seconds * 1000))


# --- the Python API ----------------------------------------------------------------------------
class Sandbox(SandboxHandle):
    """A running Mastodon sandbox (see start_sandbox). Thread-safe; close() when done.

    Faults for inject(kind, count=, method=, path=, reset_in=, delay=):
      "429"         429 Too many requests; X-RateLimit-Reset `reset_in` s ahead, none when None
      "500", "503"  server errors
      "slow"        the request is served, its answer held back `delay` s
      "disconnect"  the connection is closed before any work: nothing happened
      "lost"        the request is served in full (a POST creates its status), then the
                    connection is closed with no answer -- the ambiguous failure
      "401"         401 The access token is invalid
      "read_only"   403 outside the authorized scopes on a write (the token lost "write")
    count_requests counts paths under /api/ unless told another prefix.
    """

    api_prefix = "/api/"
    _world: _World

    def __init__(self, server: _Server, thread: threading.Thread):
        super().__init__(server, thread)
        self.domain = server.world.domain  # host:port, the server part of its accounts' handles
        self.url = f"http://{self.domain}"

    def settings(self, **overrides: Any) -> Settings:
        """Settings for the bot's account on this sandbox (overrides: other fields)."""
        values: dict[str, Any] = {"platform": "mastodon", "mastodon_api_base_url": self.url,
                                  "mastodon_access_token": SANDBOX_ACCESS_TOKEN}
        values.update(overrides)
        return Settings(**values)

    def handle(self, username: str) -> str:
        """The full handle of a local account, as another server names it: "@name@host:port"."""
        return f"@{username}@{self.domain}"

    # content --------------------------------------------------------------------------------
    def add_account(self, username: str, *, domain: str | None = None, bot: bool = False, locked: bool = False,
                    suspended: bool = False) -> dict:
        with self._world.lock:
            return dict(self._world.add_account(username, domain=domain, bot=bot, locked=locked, suspended=suspended))

    def account(self, acct: str) -> dict | None:
        """An account's stored fields (id, username, acct, bot, locked, suspended...), or None."""
        with self._world.lock:
            found = self._world.account_named(acct)
            return dict(found) if found else None

    def add_status(self, username: str, text: str, *, visibility: str = "public", spoiler_text: str = "",
                   in_reply_to_id: str | None = None, created_at: str | None = None) -> dict:
        """A status by `username` (created if needed), rendered to HTML as Mastodon does;
        its mentions notify the local accounts named."""
        status = _add_status(self._world, username, text, visibility=visibility, spoiler_text=spoiler_text,
                             in_reply_to_id=in_reply_to_id, created_at=created_at)
        with self._world.lock:
            return _public_status(self._world, status)

    def add_html_status(self, username: str, content: str, *, text: str = "", created_at: str | None = None) -> str:
        """A public status whose HTML content is given as is (as another server sent it)."""
        with self._world.lock:
            author = self._world.account_named(username) or self._world.add_account(username)
            return self._world.add_status(author, text, content=content, created_at=created_at, notify=False)["id"]

    def add_reblog(self, username: str, status_id: str) -> str:
        """`username` boosts a status: a status of its own whose `reblog` is that one."""
        with self._world.lock:
            author = self._world.account_named(username) or self._world.add_account(username)
            return self._world.add_status(author, "", reblog_of=self._world.statuses[str(status_id)])["id"]

    def add_mention(self, text: str, author: str = FAN_USERNAME, in_reply_to_id: str | None = None,
                    visibility: str = "public") -> dict:
        """A status by `author` naming the bot (@xmimic_bot put in front if absent), optionally
        replying to a status; the bot gets a mention notification. Returns it."""
        status = _add_mention(self._world, text, author, in_reply_to_id, visibility)
        with self._world.lock:
            return _public_status(self._world, status)

    def delete_status(self, status_id: str) -> None:
        """Delete any status, as its author would: it leaves timelines and notifications,
        and a reply to it is refused (404). KeyError if there is no such status."""
        with self._world.lock:
            self._world.delete(self._world.statuses[str(status_id)])

    def statuses_by(self, acct: str, include_deleted: bool = False) -> list[dict]:
        """An account's statuses, oldest first: id, acct, text (the source), content (HTML),
        visibility, spoiler_text, in_reply_to_id, reblog_id, mentions (accts), deleted."""
        with self._world.lock:
            return _statuses_by(self._world, acct, include_deleted)

    def status(self, status_id: str) -> dict:
        with self._world.lock:
            return _public_status(self._world, self._world.statuses[str(status_id)])

    def notifications_of(self, acct: str) -> list[dict]:
        """Every notification of an account, oldest first: id, type, from (acct), status_id."""
        with self._world.lock:
            account = self._world.account_named(acct)
            return [{"id": n["id"], "type": n["type"], "from": self._world.accounts[n["account_id"]]["acct"],
                     "status_id": n["status_id"]} for n in self._world.notifications if account and n["to"] == account["id"]]


def _load_archive(world: _World, path: Path) -> int:
    """An X archive as Mastodon statuses: "RT @name: ..." becomes a reblog of a status by
    name@birdsite.example, a post opening with "@name" a reply to a status of that account
    (not stored, as a remote parent the server never fetched)."""
    posts = sorted(read_jsonl(path), key=lambda p: p.get("created_at") or "")
    with world.lock:
        for post in posts:
            author = world.account_named(post.get("user") or TARGET_USERNAME) or world.add_account(post.get("user") or TARGET_USERNAME)
            text = post["text"]
            retweet = re.match(r"RT @(\w+): ?(.*)", text, re.DOTALL)
            if retweet:
                source = world.add_account(retweet[1], domain=RT_DOMAIN)
                original = world.add_status(source, retweet[2], created_at=post.get("created_at"), notify=False)
                world.add_status(author, "", created_at=post.get("created_at"), reblog_of=original)
                continue
            replied = re.match(r"@(\w+)", text)
            reply_to = None
            if replied and replied[1].lower() != author["username"].lower():
                reply_to = (world.account_named(replied[1]) or world.add_account(replied[1], domain=RT_DOMAIN))["id"]
            world.add_status(author, text, created_at=post.get("created_at"), reply_to_account_id=reply_to, notify=False)
    return len(posts)


def start_sandbox(port: int = 0, seed: Iterable[str | Path] | None = DEFAULT_SEED, host: str = "127.0.0.1") -> Sandbox:
    """Start a Mastodon sandbox on host:port (0: any free port) in a background thread.

    Accounts: the bot (BOT_USERNAME, tokens SANDBOX_ACCESS_TOKEN "read write" and
    SANDBOX_READ_TOKEN "read"), a fan who mentions it (FAN_ACCESS_TOKEN), an account with
    only followers-only statuses, a suspended one, and the accounts of the JSON Lines files
    in `seed` (default: the shipped sample of realDonaldTrump, as public statuses). On a
    non-loopback host the /sandbox/ routes still answer only loopback clients.
    """
    server = open_server(lambda: _Server((host, port)), host, port, "Mastodon sandbox")
    world = server.world
    with world.lock:
        bot = world.add_account(BOT_USERNAME, display_name="xmimic sandbox bot")
        fan = world.add_account(FAN_USERNAME, display_name="A sandbox fan")
        world.add_account(TARGET_USERNAME, display_name="Donald J. Trump")
        world.tokens[SANDBOX_ACCESS_TOKEN] = (bot["id"], frozenset({"read", "write"}))
        world.tokens[SANDBOX_READ_TOKEN] = (bot["id"], frozenset({"read"}))
        world.tokens[FAN_ACCESS_TOKEN] = (fan["id"], frozenset({"read", "write"}))
        locked = world.add_account(LOCKED_USERNAME, locked=True)
        suspended = world.add_account(SUSPENDED_USERNAME)
        for n in range(5):
            when = f"2020-01-01T00:0{n}:00Z"
            world.add_status(locked, f"For my followers only, number {n}.", visibility="private", created_at=when)
            world.add_status(suspended, f"A post of a suspended account, number {n}.", created_at=when)
        suspended["suspended"] = True
    for path in seed or ():
        _load_archive(world, Path(path))
    return Sandbox(server, run_in_thread(server, "mastodon-sandbox"))


def serve(port: int = 8081, host: str = "127.0.0.1") -> int:
    """`python -m bot sandbox --platform mastodon`: serve until SIGINT or SIGTERM, then exit 0."""
    sandbox = start_sandbox(port=port, host=host)
    lines = [
        f"Mastodon sandbox serving on {sandbox.url} (Ctrl-C to stop). Use these settings:",
        "BOT_PLATFORM=mastodon",
        f"MASTODON_API_BASE_URL={sandbox.url}",
        f"MASTODON_ACCESS_TOKEN={SANDBOX_ACCESS_TOKEN}",
        f"Bot account: @{BOT_USERNAME}; sample account: {sandbox.handle(TARGET_USERNAME)} "
        f"({len(sandbox.statuses_by(TARGET_USERNAME))} statuses)",
    ]
    if not is_loopback(host):
        lines.append("Reachable from the network with the public sandbox token above; "
                     "the /sandbox/ admin routes answer only this machine.")
    return serve_until_stopped(sandbox, lines)
