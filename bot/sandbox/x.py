"""A local server that speaks the part of X API v2 the bot uses, over real HTTP.

It lets the tests, the demo and a new user run the whole bot with no X account: point
`TWITTER_API_BASE_URL` at it and use the SANDBOX_* credentials below.

What it implements, with the live API's paths, JSON shapes, status codes and error bodies
(see shared/reference/x-api-v2.md):
  GET    /2/users/me                     (user context only)
  GET    /2/users/by/username/{username}
  GET    /2/users/{id}
  GET    /2/users/{id}/tweets            (newest 3,200 reachable, 800 with exclude=replies)
  GET    /2/users/{id}/mentions          (newest 800 reachable)
  POST   /2/tweets                       (201; 403 on duplicate content; user context only)
  DELETE /2/tweets/{id}                  (user context only)
As on X, a created post's links (URLs and bare domains such as example.com) are stored and
served as https://t.co/<10 characters> links, each counting 23 towards the 280 limit; the
duplicate check compares normalized text (HTML entities, NFC, whitespace, any t.co link
equal to any other); a reply to a deleted or hidden post is refused with 403; and with a
timeline lag a new post reaches timelines and mentions only some seconds after it was made.
Paging (max_results 5-100, pagination_token, meta.next_token/newest_id/oldest_id/
result_count), since_id/until_id, exclude=retweets,replies, tweet.fields, user.fields,
expansions=author_id; unknown/protected/suspended accounts answered as X does (HTTP 200
with an `errors` list); x-rate-limit-* headers and real 15-minute rate limits; OAuth 1.0a
HMAC-SHA1 signatures verified with oauthlib; app-only bearer token checked.

Test helpers (Python, or HTTP under /sandbox/ with no auth): add posts and mentions,
delete or hide posts, set the timeline lag, inject faults (429 with or without a reset
header, 5xx, slow answers, dropped connections before or after the work is done,
duplicate-content 403, 401, a tier refusal, a read-only app), read back what the bot
posted. The /sandbox/ routes answer only loopback clients (404 to anyone else), so a
sandbox served on the network cannot be steered from outside.
"""
from __future__ import annotations

import base64
import binascii
import bisect
import hashlib
import html
import itertools
import json
import re
import secrets
import string
import threading
import time
import unicodedata
from collections import deque
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from oauthlib.common import Request as OAuthRequest
from oauthlib.oauth1.rfc5849 import signature as oauth_signature

from bot.sandbox.common import (Answer, Fault, RateWindows, Reply, SandboxHandle, SandboxHandler, SandboxServer,
                                 World, iso_to_ms, match_route, open_server, read_jsonl, run_in_thread,
                                 serve_until_stopped)
from bot.settings import Settings, is_loopback
from trainer.text import LINK_RE, MAX_WEIGHTED_LENGTH, is_retweet, weighted_length

# --- fixed sandbox identities (fake, public on purpose) ----------------------------------
BOT_USERNAME = "xmimic_bot"
BOT_USER_ID = "1500000000000000001"
SANDBOX_CONSUMER_KEY = "sandbox-consumer-key"
SANDBOX_CONSUMER_SECRET = "sandbox-consumer-secret"
# tweepy reads the user id from the access token's prefix, as X's tokens have it.
SANDBOX_ACCESS_TOKEN = f"{BOT_USER_ID}-sandbox-access-token"
SANDBOX_ACCESS_TOKEN_SECRET = "sandbox-access-token-secret"
SANDBOX_BEARER_TOKEN = "sandbox-bearer-token"

PROTECTED_USERNAME = "private_acct"
SUSPENDED_USERNAME = "suspended_acct"
EMPTY_USERNAME = "empty_acct"
FAN_USERNAME = "sandbox_fan"  # default author of mentions of the bot

SAMPLE_DIR = Path(__file__).resolve().parent.parent / "sample_data"
DEFAULT_SEED: tuple[Path, ...] = (SAMPLE_DIR / "realDonaldTrump.jsonl.gz",)
KNOWN_USER_IDS = {"realdonaldtrump": "25073877"}  # the real id, so ids look familiar

TIMELINE_CAP = 3200
TIMELINE_CAP_NO_REPLIES = 800
MENTIONS_CAP = 800
RATE_WINDOW_S = 15 * 60
# Requests per 15-minute window, per endpoint and per caller (X's published limits).
RATE_LIMITS = {"me": 75, "user": 300, "tweets": 1500, "mentions": 450, "create": 200, "delete": 50}
TWITTER_EPOCH_MS = 1288834974657
FAULT_KINDS = ("429", "usage_cap", "500", "503", "slow", "disconnect", "lost", "duplicate", "401", "tier",
               "write_forbidden")

TWEET_FIELDS = {
    "attachments", "author_id", "context_annotations", "conversation_id", "created_at",
    "edit_controls", "edit_history_tweet_ids", "entities", "geo", "id", "in_reply_to_user_id",
    "lang", "non_public_metrics", "note_tweet", "organic_metrics", "possibly_sensitive",
    "promoted_metrics", "public_metrics", "referenced_tweets", "reply_settings", "source",
    "text", "withheld",
}
USER_FIELDS = {
    "created_at", "description", "entities", "id", "location", "most_recent_tweet_id", "name",
    "pinned_tweet_id", "profile_image_url", "protected", "public_metrics", "url", "username",
    "verified", "verified_type", "withheld",
}
EXPANSIONS = {
    "author_id", "referenced_tweets.id", "referenced_tweets.id.author_id", "in_reply_to_user_id",
    "entities.mentions.username", "attachments.media_keys", "attachments.poll_ids", "geo.place_id",
    "edit_history_tweet_ids", "pinned_tweet_id", "most_recent_tweet_id",
}

# --- error bodies, as the live API writes them ---------------------------------------------
PROBLEM = "https://api.twitter.com/2/problems/"


def _problem(status: int, title: str, detail: str, type_: str = "about:blank", **extra: Any) -> dict:
    return {"title": title, "detail": detail, "type": type_, "status": status, **extra}


UNAUTHORIZED = _problem(401, "Unauthorized", "Unauthorized")
TOO_MANY = _problem(429, "Too Many Requests", "Too Many Requests")
DUPLICATE = _problem(403, "Forbidden", "You are not allowed to create a Tweet with duplicate content.")
REPLY_REFUSED = _problem(403, "Forbidden", "You attempted to reply to a Tweet that is deleted or not visible to you.")
# An app whose keys were made while it was read-only (X: "oauth1-permissions").
WRITE_FORBIDDEN = _problem(
    403, "Forbidden", "Your client app is not configured with the appropriate oauth1 app permissions for this endpoint.",
    PROBLEM + "oauth1-permissions",
)
USAGE_CAPPED = {
    "title": "UsageCapExceeded", "detail": "Usage cap exceeded: Monthly product cap",
    "type": PROBLEM + "usage-capped", "period": "Monthly", "scope": "Product",
}
TIER_REFUSED = {
    "client_id": "0", "detail": "When authenticating requests to the Twitter API v2 endpoints, you must "
    "use keys and tokens from a Twitter developer App that is attached to a Project. You can create a "
    "project via the developer portal.", "registration_url": "https://developer.twitter.com/en/docs/"
    "projects/overview", "title": "Client Forbidden", "required_enrollment": "Appropriate Level of API "
    "Access", "reason": "client-not-enrolled", "type": PROBLEM + "client-forbidden",
}
APP_ONLY_FORBIDDEN = _problem(
    403, "Unsupported Authentication",
    "Authenticating with OAuth 2.0 Application-Only is forbidden for this endpoint.  Supported "
    "authentication types are [OAuth 1.0a User Context, OAuth 2.0 User Context].",
    PROBLEM + "unsupported-authentication",
)
NOT_FOUND_ROUTE = _problem(404, "Not Found Error", "Sorry, that page does not exist.")


def _invalid_request(parameter: str, value: str, message: str) -> dict:
    return {
        "errors": [{"parameters": {parameter: [value]}, "message": message}],
        "title": "Invalid Request",
        "detail": "One or more parameters to your request was invalid.",
        "type": PROBLEM + "invalid-request",
    }


def _user_error(kind: str, parameter: str, value: str) -> dict:
    """The HTTP 200 `errors` entry for a user that cannot be shown."""
    if kind == "suspended":
        title, detail, type_ = "Forbidden", f"User has been suspended: [{value}].", "resource-not-found"
    elif kind == "protected":
        title = "Authorization Error"
        detail, type_ = f"Sorry, you are not authorized to see the user with id: [{value}].", "not-authorized-for-resource"
    else:
        title, detail, type_ = "Not Found Error", f"Could not find user with {parameter}: [{value}].", "resource-not-found"
    return {
        "value": value, "detail": detail, "title": title, "resource_type": "user",
        "parameter": parameter, "resource_id": value, "type": PROBLEM + type_,
    }


# --- links and duplicate text, as X treats them -------------------------------------------
_TRAILING_PUNCTUATION = ".,;:!?'\")]}"  # ends a sentence, not the link
TCO_RE = re.compile(r"https://t\.co/[A-Za-z0-9]+")
_TCO_CHARS = string.ascii_letters + string.digits


def new_tco_link() -> str:
    return "https://t.co/" + "".join(secrets.choice(_TCO_CHARS) for _ in range(10))


def shorten_links(text: str) -> str:
    """`text` with every link replaced by a fresh t.co link, as X stores a new post."""

    def replace(match: re.Match[str]) -> str:
        link = match.group(0)
        if match.group("country") and not match.group("path") and link.count(".") == 1:
            return link  # a short country-TLD domain with no path stays text
        core = link.rstrip(_TRAILING_PUNCTUATION)
        if core.endswith("://"):
            return link  # "https://." is no link
        return new_tco_link() + link[len(core):]

    return LINK_RE.sub(replace, text)


def duplicate_key(text: str) -> str:
    """What X compares to refuse a duplicate: entities decoded, NFC, whitespace collapsed,
    and every t.co link the same (two posts that differ only in their links are duplicates)."""
    text = unicodedata.normalize("NFC", html.unescape(text))
    return " ".join(TCO_RE.sub("https://t.co/", text).split())


# --- the server's state ----------------------------------------------------------------------
class _World(World):
    """Users, posts, faults and rate-limit windows; every access holds `lock`."""

    fault_kinds = FAULT_KINDS

    def __init__(self) -> None:
        super().__init__()
        self.users: dict[str, dict] = {}  # id -> user
        self.by_name: dict[str, str] = {}  # lowercase username -> id
        self.posts: dict[str, dict] = {}  # id -> post
        self.timeline: dict[str, list[int]] = {}  # author id -> post ids, ascending
        self.mentioning: dict[str, list[int]] = {}  # lowercase username -> ids of posts naming it
        self.windows = RateWindows()  # keyed by (endpoint, caller)
        self.nonces: deque[tuple[str, str]] = deque(maxlen=10000)
        # Seconds before a post made through POST /2/tweets reaches timelines and mentions
        # (X's timelines are eventually consistent); read at query time, so changing it
        # applies to posts already made.
        self.timeline_lag = 0.0
        self._last_id = 0

    # ids -----------------------------------------------------------------------------------
    def new_id(self, when_ms: int | None = None) -> str:
        """A snowflake-like id, larger than every id seen so far (ids order posts in time)."""
        ms = int(time.time() * 1000) if when_ms is None else when_ms
        candidate = (ms - TWITTER_EPOCH_MS) << 22
        self._last_id = max(candidate, self._last_id + 1)
        return str(self._last_id)

    # users ---------------------------------------------------------------------------------
    def add_user(self, username: str, *, user_id: str | None = None, name: str | None = None,
                 protected: bool = False, suspended: bool = False) -> dict:
        key = username.lower()
        if key in self.by_name:
            user = self.users[self.by_name[key]]
            user.update(protected=protected or user["protected"], suspended=suspended or user["suspended"])
            return user
        uid = user_id or KNOWN_USER_IDS.get(key) or _stable_user_id(key)
        user = {
            "id": uid, "username": username, "name": name or username, "protected": protected,
            "suspended": suspended, "created_at": "2010-01-01T00:00:00.000Z",
        }
        self.users[uid] = user
        self.by_name[key] = uid
        self.timeline.setdefault(uid, [])
        return user

    def user_named(self, username: str) -> dict | None:
        uid = self.by_name.get(username.lower())
        return self.users[uid] if uid else None

    # posts ---------------------------------------------------------------------------------
    def add_post(self, author: dict, text: str, *, post_id: str | None = None, created_at: str | None = None,
                 in_reply_to: dict | None = None, in_reply_to_user_id: str | None = None,
                 retweet_of: str | None = None) -> dict:
        if post_id is not None and post_id in self.posts:
            return self.posts[post_id]  # loading overlapping files adds each post once
        if post_id is None or not post_id.isdigit():
            post_id = self.new_id(iso_to_ms(created_at) if created_at else None)
        else:
            self._last_id = max(self._last_id, int(post_id))
        refs = []
        conversation_id = post_id
        if in_reply_to is not None:
            refs.append({"type": "replied_to", "id": in_reply_to["id"]})
            conversation_id = in_reply_to["conversation_id"]
            in_reply_to_user_id = in_reply_to["author_id"]
        if retweet_of is not None:
            refs.append({"type": "retweeted", "id": retweet_of})
        post = {
            "id": post_id, "author_id": author["id"], "text": text,
            "created_at": _ms_to_iso(_snowflake_ms(post_id)) if created_at is None else _api_time(created_at),
            "conversation_id": conversation_id, "in_reply_to_user_id": in_reply_to_user_id,
            "referenced_tweets": refs, "deleted": False,
            "hidden": False,  # not visible to the bot: its author blocked it or went private
            "posted_at": None,  # time.time() when made through POST /2/tweets (timeline lag)
        }
        self.posts[post_id] = post
        bisect.insort(self.timeline.setdefault(author["id"], []), int(post_id))
        for name in set(re.findall(r"(?<![\w@])@(\w{1,15})", text)):
            bisect.insort(self.mentioning.setdefault(name.lower(), []), int(post_id))
        return post

    def readable(self, post: dict, now: float) -> bool:
        """Whether the API shows this post to the bot now: not deleted, not hidden, and
        past the timeline lag if it was made through the API."""
        if post["deleted"] or post["hidden"]:
            return False
        return post["posted_at"] is None or now >= post["posted_at"] + self.timeline_lag

    def live(self, ids: list[int]) -> list[dict]:
        """The readable posts for these ids, newest first."""
        now = time.time()
        return [post for post in (self.posts[str(pid)] for pid in reversed(ids)) if self.readable(post, now)]

    def post(self, post_id: str) -> dict:
        post = self.posts.get(str(post_id))
        if post is None:
            raise KeyError(f"no post {post_id}")
        return post

    # faults --------------------------------------------------------------------------------
    def make_fault(self, kind: str, count: int = 1, method: str | None = None, path: str | None = None,
                   reset_in: float | None = None, delay: float = 1.0) -> Fault:
        """A Fault; "duplicate" and "write_forbidden" default to the endpoints they refuse."""
        if kind == "duplicate":
            method, path = method or "POST", path or "/2/tweets"
        if kind == "write_forbidden":
            path = path or "/2/tweets"  # the write endpoints: POST /2/tweets, DELETE /2/tweets/{id}
        return super().make_fault(kind, count=count, method=method, path=path, reset_in=reset_in, delay=delay)

    # rate limits ---------------------------------------------------------------------------
    def spend(self, endpoint: str, caller: str) -> dict[str, str]:
        """Count one request; the x-rate-limit-* headers, or Reply(429) when the window is spent."""
        limit = RATE_LIMITS[endpoint]
        # X's window starts with its first request
        reset, remaining = self.windows.spend((endpoint, caller), limit, lambda now: float(int(now) + RATE_WINDOW_S))
        headers = {"x-rate-limit-limit": str(limit), "x-rate-limit-reset": str(int(reset)),
                   "x-rate-limit-remaining": str(max(remaining, 0))}
        if remaining < 0:
            raise Reply(429, TOO_MANY, headers)
        return headers


# --- HTTP ------------------------------------------------------------------------------------
class _Server(SandboxServer):
    def __init__(self, address: tuple[str, int], world: _World):
        super().__init__(address, _Handler)
        self.world: _World = world


ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("GET", re.compile(r"/2/users/me"), "me"),
    ("GET", re.compile(r"/2/users/by/username/(?P<username>[^/]+)"), "user_by_name"),
    ("GET", re.compile(r"/2/users/(?P<id>\d+)/tweets"), "user_tweets"),
    ("GET", re.compile(r"/2/users/(?P<id>\d+)/mentions"), "user_mentions"),
    ("GET", re.compile(r"/2/users/(?P<id>\d+)"), "user_by_id"),
    ("POST", re.compile(r"/2/tweets"), "create_tweet"),
    ("DELETE", re.compile(r"/2/tweets/(?P<id>\d+)"), "delete_tweet"),
]


class _Handler(SandboxHandler):
    server: _Server
    server_version = "xmimic-sandbox"
    route_not_found = NOT_FOUND_ROUTE
    server_error = _problem(500, "Internal Server Error", "Internal Server Error")
    admin_error = {"error": "internal error"}

    def _read_query(self, values: dict[str, list[str]]) -> dict[str, str]:
        return {k: v[-1] for k, v in values.items()}  # X reads a repeated parameter's last value

    def _fault_reply(self, fault: Fault) -> Answer:
        return _fault_reply(fault)

    def _admin(self, method: str, path: str, query: dict[str, str], request: dict) -> tuple[int, Any] | None:
        return _admin(self.server.world, method, path, query, request)

    def _admin_body(self, data: Any) -> dict:
        return {"data": data}

    # the API -------------------------------------------------------------------------------
    def _api(self, method: str, path: str, query: dict[str, str], body: bytes, fault: Fault | None) -> Answer:
        route = match_route(ROUTES, method, path)
        if route is None:
            raise Reply(404, NOT_FOUND_ROUTE)
        name, match = route
        caller = self._authenticate(method)  # user id, or "app" for the bearer token
        world = self.server.world
        with world.lock:
            handler = getattr(self, "_r_" + name)
            endpoint = {"me": "me", "user_by_name": "user", "user_by_id": "user", "user_tweets": "tweets",
                        "user_mentions": "mentions", "create_tweet": "create", "delete_tweet": "delete"}[name]
            headers = world.spend(endpoint, caller)
            headers["x-access-level"] = "read" if caller == "app" else "read-write"
            try:
                status, payload = handler(caller=caller, query=query, body=body, **match.groupdict())
            except Reply as reply:
                reply.headers = {**headers, **reply.headers}
                raise
        return status, payload, headers

    def _authenticate(self, method: str) -> str:
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            if auth[len("Bearer "):] == SANDBOX_BEARER_TOKEN:
                return "app"
            raise Reply(401, UNAUTHORIZED)
        if auth.startswith("OAuth "):
            uri = f"http://{self.headers.get('Host', '')}{self.path}"
            user_id = _verify_oauth1(self.server.world, method, uri, auth)
            if user_id:
                return user_id
        raise Reply(401, UNAUTHORIZED)

    # routes --------------------------------------------------------------------------------
    def _r_me(self, caller: str, query: dict, **_: Any) -> tuple[int, dict]:
        if caller == "app":
            raise Reply(403, APP_ONLY_FORBIDDEN)
        return 200, {"data": _user_json(self.server.world.users[caller], _fields(query, "user.fields", USER_FIELDS))}

    def _r_user_by_name(self, caller: str, query: dict, username: str, **_: Any) -> tuple[int, dict]:
        if not re.fullmatch(r"\w{1,15}", username):
            raise Reply(400, _invalid_request("username", username, f"The `username` query parameter value [{username}] does not match ^[A-Za-z0-9_]{{1,15}}$"))
        fields = _fields(query, "user.fields", USER_FIELDS)
        user = self.server.world.user_named(username)
        if user is None:
            return 200, {"errors": [_user_error("unknown", "username", username)]}
        if user["suspended"]:
            return 200, {"errors": [_user_error("suspended", "username", username)]}
        return 200, {"data": _user_json(user, fields)}

    def _r_user_by_id(self, caller: str, query: dict, id: str, **_: Any) -> tuple[int, dict]:  # noqa: A002
        fields = _fields(query, "user.fields", USER_FIELDS)
        user = self.server.world.users.get(id)
        if user is None:
            return 200, {"errors": [_user_error("unknown", "id", id)]}
        if user["suspended"]:
            return 200, {"errors": [_user_error("suspended", "id", id)]}
        return 200, {"data": _user_json(user, fields)}

    def _visible_user(self, caller: str, user_id: str) -> dict | tuple[int, dict]:
        user = self.server.world.users.get(user_id)
        if user is None:
            return 200, {"errors": [_user_error("unknown", "id", user_id)]}
        if user["suspended"]:
            return 200, {"errors": [_user_error("suspended", "id", user_id)]}
        if user["protected"] and caller != user_id:
            return 200, {"errors": [_user_error("protected", "id", user_id)]}
        return user

    def _r_user_tweets(self, caller: str, query: dict, id: str, **_: Any) -> tuple[int, dict]:  # noqa: A002
        user = self._visible_user(caller, id)
        if isinstance(user, tuple):
            return user
        world = self.server.world
        exclude = _exclude(query)
        cap = TIMELINE_CAP_NO_REPLIES if "replies" in exclude else TIMELINE_CAP
        posts = world.live(world.timeline.get(id, []))[:cap]
        posts = [p for p in posts if not _excluded(p, exclude)]
        return 200, _page(world, posts, query)

    def _r_user_mentions(self, caller: str, query: dict, id: str, **_: Any) -> tuple[int, dict]:  # noqa: A002
        user = self._visible_user(caller, id)
        if isinstance(user, tuple):
            return user
        world = self.server.world
        ids = world.mentioning.get(user["username"].lower(), [])
        posts = [p for p in world.live(ids) if p["author_id"] != id][:MENTIONS_CAP]
        return 200, _page(world, posts, query)

    def _r_create_tweet(self, caller: str, body: bytes, **_: Any) -> tuple[int, dict]:
        if caller == "app":
            raise Reply(403, APP_ONLY_FORBIDDEN)
        world = self.server.world
        try:
            request = json.loads(body or b"{}")
            if not isinstance(request, dict):
                raise ValueError
        except ValueError:
            raise Reply(400, {"errors": [{"message": "Request body is not valid JSON."}], "title": "Invalid Request",
                               "detail": "One or more parameters to your request was invalid.",
                               "type": PROBLEM + "invalid-request"}) from None
        text = request.get("text")
        if not isinstance(text, str) or not text.strip():
            raise Reply(400, _invalid_request("text", str(text), "Tweet text is empty or missing."))
        linked = shorten_links(text)  # X stores t.co links, and each counts 23
        if weighted_length(linked) > MAX_WEIGHTED_LENGTH:
            raise Reply(400, {"errors": [{"message": "Your Tweet text is too long. For more information on how "
                                           "Twitter determines text length see https://github.com/twitter/twitter-text."}],
                               "title": "Invalid Request", "detail": "One or more parameters to your request was invalid.",
                               "type": PROBLEM + "invalid-request"})
        author = world.users[caller]
        stored = html.escape(linked, quote=False)  # X stores and serves &amp; &lt; &gt;
        parent = None
        reply = request.get("reply") or {}
        if reply.get("in_reply_to_tweet_id") is not None:
            parent = world.posts.get(str(reply["in_reply_to_tweet_id"]))
            if parent is None or parent["deleted"] or parent["hidden"] or (
                world.users[parent["author_id"]]["protected"] and parent["author_id"] != caller
            ):
                raise Reply(403, REPLY_REFUSED)
            parent_name = world.users[parent["author_id"]]["username"]
            # X puts the replied-to account's @handle in front of a reply's text.
            if parent["author_id"] != caller and not stored.lower().startswith("@" + parent_name.lower()):
                stored = f"@{parent_name} {stored}"
        # The check sees posts still inside the timeline lag, as X's does.
        key = duplicate_key(stored)
        for pid in reversed(world.timeline.get(caller, [])[-200:]):
            own = world.posts[str(pid)]
            if not own["deleted"] and duplicate_key(own["text"]) == key:
                raise Reply(403, DUPLICATE)
        post = world.add_post(author, stored, in_reply_to=parent)
        post["posted_at"] = time.time()
        # X answers with the text as stored: t.co links, entities, the reply's @handle.
        return 201, {"data": {"id": post["id"], "text": post["text"]}}

    def _r_delete_tweet(self, caller: str, id: str, **_: Any) -> tuple[int, dict]:  # noqa: A002
        if caller == "app":
            raise Reply(403, APP_ONLY_FORBIDDEN)
        post = self.server.world.posts.get(id)
        if post is None or post["deleted"]:
            return 200, {"data": {"deleted": False}}
        if post["author_id"] != caller:
            raise Reply(403, _problem(403, "Forbidden", "You are not allowed to delete this Tweet."))
        post["deleted"] = True
        return 200, {"data": {"deleted": True}}


def _fault_reply(fault: Fault) -> Answer:
    """What X answers for an injected fault that stops the request (not slow or lost)."""
    if fault.kind == "429":
        headers = {"x-rate-limit-limit": "1500", "x-rate-limit-remaining": "0"}
        if fault.reset_in is not None:
            headers["x-rate-limit-reset"] = str(int(time.time() + fault.reset_in))
        return 429, TOO_MANY, headers
    if fault.kind == "usage_cap":
        return 429, USAGE_CAPPED, {}
    if fault.kind in ("500", "503"):
        status = int(fault.kind)
        title = "Internal Server Error" if status == 500 else "Service Unavailable"
        return status, _problem(status, title, title), {}
    if fault.kind == "duplicate":
        return 403, DUPLICATE, {}
    if fault.kind == "401":
        return 401, UNAUTHORIZED, {}
    if fault.kind == "tier":
        return 403, TIER_REFUSED, {}
    if fault.kind == "write_forbidden":
        return 403, WRITE_FORBIDDEN, {"x-access-level": "read"}
    raise AssertionError(fault.kind)


def _verify_oauth1(world: _World, method: str, uri: str, authorization: str) -> str | None:
    """The user id of a correctly signed OAuth 1.0a request, else None."""
    try:
        params = oauth_signature.collect_parameters(
            uri_query=urlsplit(uri).query, headers={"Authorization": authorization}, exclude_oauth_signature=False
        )
    except ValueError:
        return None
    oauth = dict(p for p in params if p[0].startswith("oauth_"))
    if (
        oauth.get("oauth_consumer_key") != SANDBOX_CONSUMER_KEY
        or oauth.get("oauth_token") != SANDBOX_ACCESS_TOKEN
        or oauth.get("oauth_signature_method") != "HMAC-SHA1"
        or not oauth.get("oauth_signature")
    ):
        return None
    try:
        if abs(time.time() - int(oauth.get("oauth_timestamp", "0"))) > 300:
            return None
    except ValueError:
        return None
    request = OAuthRequest(uri, http_method=method)
    request.params = [(k, v) for k, v in params if k != "oauth_signature"]
    request.signature = oauth["oauth_signature"]
    if not oauth_signature.verify_hmac_sha1(request, SANDBOX_CONSUMER_SECRET, SANDBOX_ACCESS_TOKEN_SECRET):
        return None
    nonce = (oauth.get("oauth_nonce", ""), oauth["oauth_timestamp"])
    with world.lock:
        if nonce in world.nonces:  # a replayed request
            return None
        world.nonces.append(nonce)
    return BOT_USER_ID


# --- query parameters ------------------------------------------------------------------------
def _fields(query: dict[str, str], name: str, allowed: set[str]) -> set[str]:
    value = query.get(name)
    if not value:
        return set()
    fields = set(value.split(","))
    for item in fields:
        if item not in allowed:
            raise Reply(400, _invalid_request(name, item, f"The `{name}` query parameter value [{item}] is not one of [{','.join(sorted(allowed))}]"))
    return fields


def _exclude(query: dict[str, str]) -> set[str]:
    value = query.get("exclude")
    if not value:
        return set()
    items = set(value.split(","))
    for item in items:
        if item not in ("replies", "retweets"):
            raise Reply(400, _invalid_request("exclude", item, f"The `exclude` query parameter value [{item}] is not one of [replies,retweets]"))
    return items


def _excluded(post: dict, exclude: set[str]) -> bool:
    if "retweets" in exclude and any(r["type"] == "retweeted" for r in post["referenced_tweets"]):
        return True
    return "replies" in exclude and post["in_reply_to_user_id"] is not None


def _id_param(query: dict[str, str], name: str) -> int | None:
    value = query.get(name)
    if value is None:
        return None
    if not re.fullmatch(r"[0-9]{1,19}", value):
        raise Reply(400, _invalid_request(name, value, f"The `{name}` query parameter value [{value}] does not match ^[0-9]{{1,19}}$"))
    return int(value)


def _encode_token(last_id: str) -> str:
    return base64.b32encode(f"xs1:{last_id}".encode()).decode().rstrip("=").lower()


def _decode_token(token: str) -> int:
    try:
        raw = base64.b32decode(token.upper() + "=" * (-len(token) % 8)).decode()
        tag, _, last = raw.partition(":")
        if tag != "xs1" or not last.isdigit():
            raise ValueError
        return int(last)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise Reply(400, _invalid_request("pagination_token", token, f"The `pagination_token` query parameter value [{token}] is not valid")) from None


def _page(world: _World, posts: list[dict], query: dict[str, str]) -> dict:
    """One page of a newest-first list of posts, with the live API's meta and includes."""
    raw_max = query.get("max_results", "10")
    if not raw_max.isdigit() or not 5 <= int(raw_max) <= 100:
        raise Reply(400, _invalid_request("max_results", raw_max, f"The `max_results` query parameter value [{raw_max}] is not between 5 and 100"))
    tweet_fields = _fields(query, "tweet.fields", TWEET_FIELDS)
    user_fields = _fields(query, "user.fields", USER_FIELDS)
    expansions = _fields(query, "expansions", EXPANSIONS)
    since_id, until_id = _id_param(query, "since_id"), _id_param(query, "until_id")
    before = _decode_token(query["pagination_token"]) if query.get("pagination_token") else None
    chosen = [
        p for p in posts
        if (since_id is None or int(p["id"]) > since_id)
        and (until_id is None or int(p["id"]) < until_id)
        and (before is None or int(p["id"]) < before)
    ]
    page, more = chosen[: int(raw_max)], len(chosen) > int(raw_max)
    if not page:
        return {"meta": {"result_count": 0}}
    out: dict[str, Any] = {"data": [_tweet_json(p, tweet_fields) for p in page]}
    includes: dict[str, list] = {}
    if "author_id" in expansions:
        authors = {p["author_id"]: world.users[p["author_id"]] for p in page}
        includes["users"] = [_user_json(u, user_fields) for u in authors.values()]
    if "referenced_tweets.id" in expansions:
        refs = {r["id"] for p in page for r in p["referenced_tweets"]}
        now = time.time()
        found = [world.posts[r] for r in sorted(refs) if r in world.posts and world.readable(world.posts[r], now)]
        if found:
            includes["tweets"] = [_tweet_json(p, tweet_fields) for p in found]
    if includes:
        out["includes"] = includes
    meta: dict[str, Any] = {"result_count": len(page), "newest_id": page[0]["id"], "oldest_id": page[-1]["id"]}
    if more:
        meta["next_token"] = _encode_token(page[-1]["id"])
    out["meta"] = meta
    return out


def _tweet_json(post: dict, fields: set[str]) -> dict:
    out: dict[str, Any] = {"edit_history_tweet_ids": [post["id"]], "id": post["id"], "text": post["text"]}
    for name in ("created_at", "author_id", "conversation_id", "in_reply_to_user_id"):
        if name in fields and post.get(name) is not None:
            out[name] = post[name]
    if "referenced_tweets" in fields and post["referenced_tweets"]:
        out["referenced_tweets"] = [dict(r) for r in post["referenced_tweets"]]
    return out


def _user_json(user: dict, fields: set[str]) -> dict:
    out: dict[str, Any] = {"id": user["id"], "name": user["name"], "username": user["username"]}
    if "protected" in fields:
        out["protected"] = user["protected"]
    if "created_at" in fields:
        out["created_at"] = user["created_at"]
    if "description" in fields:
        out["description"] = ""
    if "verified" in fields:
        out["verified"] = False
    return out


# --- admin endpoints (/sandbox/...) --------------------------------------------------------
def _admin(world: _World, method: str, path: str, query: dict[str, str], request: dict) -> tuple[int, Any] | None:
    """X's own admin routes (the faults' are common): (status, data), or None for no route."""
    if (method, path) == ("POST", "/sandbox/mentions"):
        post = _add_mention(world, request["text"], request.get("author", FAN_USERNAME), request.get("in_reply_to_id"))
        return 201, _public_post(world, post)
    if (method, path) == ("POST", "/sandbox/posts"):
        with world.lock:
            return 201, _add_posts(world, request["username"], request["posts"])
    if (method, path) == ("GET", "/sandbox/posts"):
        with world.lock:
            return 200, _posts_by(world, query["username"], query.get("include_deleted") == "true")
    if (method, path) == ("POST", "/sandbox/config"):
        with world.lock:
            if "timeline_lag" in request:
                world.timeline_lag = _lag(request["timeline_lag"])
            return 200, {"timeline_lag": world.timeline_lag}
    post_route = re.fullmatch(r"/sandbox/posts/(\d+)(/hide)?", path)
    if post_route and (method, bool(post_route[2])) in (("DELETE", False), ("POST", True)):
        with world.lock:
            post = world.posts.get(post_route[1])
            if post is None:
                raise Reply(404, {"error": f"no post {post_route[1]}"})
            post["hidden" if post_route[2] else "deleted"] = True
            return 200, _public_post(world, post)
    return None


def _lag(value: Any) -> float:
    seconds = float(value)
    if not seconds >= 0:  # also refuses NaN
        raise ValueError(f"timeline_lag must be >= 0 seconds, not {value!r}")
    return seconds


def _add_mention(world: _World, text: str, author: str, in_reply_to_id: str | None) -> dict:
    with world.lock:
        user = world.user_named(author) or world.add_user(author)
        parent = None
        if in_reply_to_id is not None:
            parent = world.posts.get(str(in_reply_to_id))
            if parent is None:
                raise ValueError(f"no post {in_reply_to_id}")
        if not re.search(rf"(?<![\w@])@{BOT_USERNAME}\b", text, re.IGNORECASE):
            text = f"@{BOT_USERNAME} {text}"
        return world.add_post(user, html.escape(text, quote=False), in_reply_to=parent)


def _add_posts(world: _World, username: str, posts: Iterable[dict | str]) -> list[str]:
    user = world.user_named(username) or world.add_user(username)
    ids = []
    for item in posts:
        post = {"text": item} if isinstance(item, str) else item
        text = post["text"]
        reply_to_user = post.get("in_reply_to_user_id")
        if reply_to_user is None and text.startswith("@"):
            # An archive post that opens with a mention is (almost always) a reply.
            replied = re.match(r"@(\w*)", text).group(1)
            known = world.user_named(replied)
            reply_to_user = known["id"] if known else KNOWN_USER_IDS.get(replied.lower(), _stable_user_id(replied.lower()))
        retweet_of = world.new_id() if is_retweet(text) else None
        created = world.add_post(user, text, post_id=str(post.get("id") or "") or None,
                                 created_at=post.get("created_at"), in_reply_to_user_id=reply_to_user,
                                 retweet_of=retweet_of)
        ids.append(created["id"])
    return ids


def _public_post(world: _World, post: dict) -> dict:
    replied = next((r["id"] for r in post["referenced_tweets"] if r["type"] == "replied_to"), None)
    return {
        "id": post["id"], "user": world.users[post["author_id"]]["username"], "text": post["text"],
        "created_at": post["created_at"], "conversation_id": post["conversation_id"],
        "in_reply_to_id": replied, "deleted": post["deleted"], "hidden": post["hidden"],
    }


def _posts_by(world: _World, username: str, include_deleted: bool) -> list[dict]:
    user = world.user_named(username)
    if user is None:
        return []
    posts = [world.posts[str(pid)] for pid in world.timeline.get(user["id"], [])]
    return [_public_post(world, p) for p in posts if include_deleted or not p["deleted"]]


# --- time helpers ----------------------------------------------------------------------------
def _stable_user_id(username_lower: str) -> str:
    return str(10**15 + int(hashlib.sha1(username_lower.encode()).hexdigest()[:12], 16) % 10**15)


def _snowflake_ms(post_id: str) -> int:
    return (int(post_id) >> 22) + TWITTER_EPOCH_MS


def _ms_to_iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _api_time(value: str) -> str:
    return _ms_to_iso(iso_to_ms(value))


# --- the Python API ----------------------------------------------------------------------------
class Sandbox(SandboxHandle):
    """A running sandbox server (see start_sandbox). Thread-safe; close() when done.

    Faults for inject(kind, count=, method=, path=, reset_in=, delay=):
      "429"         429 Too Many Requests; x-rate-limit-reset `reset_in` s ahead (any
                    distance, hours included), no reset header when None
      "usage_cap"   429 UsageCapExceeded (monthly product cap)
      "500", "503"  X's server errors
      "slow"        the request is served, its answer held back `delay` s
      "disconnect"  the connection is closed before any work: nothing happened
      "lost"        the request is served in full (a POST creates its post), then the
                    connection is closed with no answer (the client sees
                    RemoteDisconnected) -- the ambiguous failure of a real network
      "duplicate"   403 duplicate content (default: POST /2/tweets)
      "401"         401 Unauthorized
      "tier"        403 client-not-enrolled (the plan does not include the endpoint)
      "write_forbidden"  403 oauth1-permissions: the app is read-only (default: the
                    write endpoints, path /2/tweets)
    count_requests counts paths under /2/ unless told another prefix.
    """

    api_prefix = "/2/"
    _world: _World

    def __init__(self, server: _Server, thread: threading.Thread):
        super().__init__(server, thread)
        host, port = server.server_address[:2]
        self.url = f"http://{host}:{port}"

    def settings(self, **overrides: Any) -> Settings:
        """Settings that reach this sandbox as the bot's account (overrides: other fields)."""
        values: dict[str, Any] = {
            "consumer_key": SANDBOX_CONSUMER_KEY, "consumer_secret": SANDBOX_CONSUMER_SECRET,
            "access_token": SANDBOX_ACCESS_TOKEN, "access_token_secret": SANDBOX_ACCESS_TOKEN_SECRET,
            "api_base_url": self.url,
        }
        values.update(overrides)
        return Settings(**values)

    # content --------------------------------------------------------------------------------
    def add_user(self, username: str, *, protected: bool = False, suspended: bool = False) -> dict:
        with self._world.lock:
            return dict(self._world.add_user(username, protected=protected, suspended=suspended))

    def add_posts(self, username: str, posts: Iterable[dict | str]) -> list[str]:
        """Add posts (texts, or dicts with text and optional id/created_at/in_reply_to_user_id)
        to an account, creating it if needed. Returns their ids."""
        with self._world.lock:
            return _add_posts(self._world, username, posts)

    def load_jsonl(self, path: str | Path) -> int:
        """Add every post of a JSON Lines file (gzip or not; keys id, user, created_at, text)."""
        by_user: dict[str, list[dict]] = {}
        for post in read_jsonl(Path(path)):
            by_user.setdefault(post["user"], []).append(post)
        for user, posts in by_user.items():
            self.add_posts(user, posts)
        return sum(len(p) for p in by_user.values())

    def add_mention(self, text: str, author: str = FAN_USERNAME, in_reply_to_id: str | None = None) -> dict:
        """A post by `author` naming the bot (@xmimic_bot is put in front if absent),
        optionally replying to a post. Returns it (id, user, text, conversation_id...)."""
        post = _add_mention(self._world, text, author, in_reply_to_id)
        with self._world.lock:
            return _public_post(self._world, post)

    def posts_by(self, username: str, include_deleted: bool = False) -> list[dict]:
        """An account's posts, oldest first, as the API stores them (text HTML-escaped,
        links as t.co), whatever the timeline lag; hidden posts included."""
        with self._world.lock:
            return _posts_by(self._world, username, include_deleted)

    def delete_post(self, post_id: str) -> None:
        """Delete any post, as its author would: it leaves timelines and mentions, and a
        reply to it is refused (403). KeyError if there is no such post."""
        with self._world.lock:
            self._world.post(post_id)["deleted"] = True

    def hide_post(self, post_id: str) -> None:
        """Make a post invisible to the bot (its author blocked the bot or protected the
        account): it leaves what the API shows, and a reply to it is refused (403)."""
        with self._world.lock:
            self._world.post(post_id)["hidden"] = True

    def set_timeline_lag(self, seconds: float) -> None:
        """From now on, a post made through POST /2/tweets reaches GET .../tweets and
        .../mentions only `seconds` after it was made (posts already made included);
        the duplicate check still sees it at once."""
        lag = _lag(seconds)
        with self._world.lock:
            self._world.timeline_lag = lag


def start_sandbox(port: int = 0, seed: Iterable[str | Path] | None = DEFAULT_SEED, host: str = "127.0.0.1",
                  timeline_lag: float = 0.0) -> Sandbox:
    """Start a sandbox on host:port (0: any free port) in a background thread.

    Seeded with the JSON Lines files in `seed` (default: the shipped sample account) and
    the special accounts: the bot (BOT_USERNAME), a protected one, a suspended one, an
    empty one and a fan who mentions the bot. `timeline_lag`: see Sandbox.set_timeline_lag.
    On a non-loopback host the /sandbox/ routes still answer only loopback clients.
    """
    world = _World()
    world.timeline_lag = _lag(timeline_lag)
    with world.lock:
        world.add_user(BOT_USERNAME, user_id=BOT_USER_ID, name="xmimic sandbox bot")
        world.add_user(EMPTY_USERNAME)
        world.add_user(FAN_USERNAME)
        private = world.add_user(PROTECTED_USERNAME, protected=True)
        suspended = world.add_user(SUSPENDED_USERNAME, suspended=True)
        base_ms = iso_to_ms("2020-01-01T00:00:00Z")
        for n, who in enumerate(itertools.islice(itertools.cycle([private, suspended]), 20)):
            world.add_post(who, f"A post nobody outside may read, number {n}.", post_id=world.new_id(base_ms + n * 60000))
    server = open_server(lambda: _Server((host, port), world), host, port, "sandbox")
    sandbox = Sandbox(server, run_in_thread(server, "x-sandbox"))
    for path in seed or ():
        sandbox.load_jsonl(path)
    return sandbox


def serve(port: int = 8080, host: str = "127.0.0.1") -> int:
    """`python -m bot sandbox`: serve until SIGINT or SIGTERM, then exit 0."""
    sandbox = start_sandbox(port=port, host=host)
    lines = [
        f"X API sandbox serving on {sandbox.url} (Ctrl-C to stop). Use these settings:",
        f"TWITTER_API_BASE_URL={sandbox.url}",
        f"TWITTER_CONSUMER_KEY={SANDBOX_CONSUMER_KEY}",
        f"TWITTER_CONSUMER_SECRET={SANDBOX_CONSUMER_SECRET}",
        f"TWITTER_ACCESS_TOKEN={SANDBOX_ACCESS_TOKEN}",
        f"TWITTER_ACCESS_TOKEN_SECRET={SANDBOX_ACCESS_TOKEN_SECRET}",
        f"TWITTER_BEARER_TOKEN={SANDBOX_BEARER_TOKEN}",
        f"Bot account: @{BOT_USERNAME}; sample account: @realDonaldTrump "
        f"({len(sandbox.posts_by('realDonaldTrump'))} posts)",
    ]
    if not is_loopback(host):
        lines.append("Reachable from the network with the public sandbox credentials above; "
                     "the /sandbox/ admin routes answer only this machine.")
    return serve_until_stopped(sandbox, lines)
