"""Mastodon: the bot's door to a Mastodon server, through Mastodon.py, with timeouts,
bounded retries and typed errors, returning plain dicts (see bot/platforms/base.py).

- Servers: the bot's own account lives on MASTODON_API_BASE_URL (with its access token);
  a target is read on its *home* server, without a token (`home_server` gives its URL):
  another server holds only the remote posts it happened to receive.
- Library: Mastodon.py with `version_check_mode="none"` (no instance request at start),
  `ratelimit_method="throw"` (it would otherwise sleep inside the call with time.sleep,
  for up to 5 minutes, out of our control) and our own requests session (a timeout on
  every request, no proxy for a loopback server, and the last answer kept so that a 429's
  X-RateLimit-Reset is read from that answer). tenacity retries 429s (until the reset, at
  most `rate_limit_max_wait`), 5xx answers, timeouts and dropped connections, at most
  `max_attempts` tries.
- Posting is idempotent: every POST /api/v1/statuses carries an Idempotency-Key derived
  from the `key` the daemon gives (the store's record key of the slot or mention; a fresh
  one per call without it), and Mastodon answers the same key within an hour with the
  status it already made. So an unclear try (an answer lost, a timeout, a 5xx) is simply
  sent again. Only when every try failed and one of them was unclear is the status looked
  for among the bot's own (by text and parent); not found: OutcomeUnknown, never resent.
- Mentions in generated text arrive defused ("@\u200bname"): Mastodon's mention pattern
  needs a letter, digit or "_" right after "@", so they stay text and notify nobody. A
  reply names the author of the status it answers ("@acct " in front), as Mastodon's own
  clients do: without it the author is not notified.
- Threads: Mastodon's API names no thread root. `conversation_id` of a mention is the root
  of its in_reply_to chain, read once from GET /api/v1/statuses/:id/context and cached for
  the statuses of that thread (the bot's own replies included); a status that answers
  nothing is its own root; if the context cannot be read, the parent's id stands in.
- Mentions answered: public and unlisted ones. A followers-only or direct mention is left
  out: a public reply would put a private exchange in view.
- Training data: public and unlisted statuses of the account itself; reblogs left out,
  replies to other accounts only with BOT_INCLUDE_REPLIES, statuses behind a content warning
  left out (their authors marked them as not for every reader). HTML is turned back into
  the text as written (see `html_to_text`).
"""
from __future__ import annotations

import hashlib
import logging
import re
import time
import unicodedata
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

import requests
import tenacity
from mastodon import Mastodon
from mastodon.errors import (
    MastodonAPIError,
    MastodonError,
    MastodonNetworkError,
    MastodonRatelimitError,
    MastodonServerError,
    MastodonUnauthorizedError,
)

from bot.errors import BotError
from bot.platforms.base import (
    AccessDenied,
    AccountUnavailable,
    ApiError,
    CredentialsMissing,
    CredentialsRejected,
    PostRefused,
    RateLimited,
    ServiceUnavailable,
    look_for_lost_post,
    retrying,
)
from bot.platforms.text import comparable, html_to_text
from bot.settings import Settings, is_loopback

log = logging.getLogger(__name__)

STATUSES_PAGE = 40  # Mastodon's most per page of an account's statuses
NOTIFICATIONS_PAGE = 80
MENTIONS_CAP = 800
LOOKUP_POSTS = 40  # own statuses read to find one whose answer was lost
MAX_PAGES = 250  # a safety net against a server that never stops handing out pages
DEFAULT_MAX_CHARACTERS = 500
DEFAULT_URL_LENGTH = 23
USER_AGENT = "xmimic-bot"
USERNAME_RE = re.compile(r"[A-Za-z0-9_]+(?:[.-]+[A-Za-z0-9_]+)*")
SERVER_RE = re.compile(r"(?:[A-Za-z0-9-]+\.)*[A-Za-z0-9-]+(?::\d{1,5})?|\[[0-9A-Fa-f:.]+\](?::\d{1,5})?")
# How Mastodon finds mentions and links in a status' text (Account::MENTION_RE, twitter-text).
MENTION_RE = re.compile(r"(?<![=/\w])@([a-z0-9_]+(?:[.-]+[a-z0-9_]+)*)(?:@(\w+(?:[.-]+\w+)*))?", re.IGNORECASE)
URL_RE = re.compile(r"(?<![\w/])https?://[^\s<>\"']+", re.IGNORECASE)
LEADING_MENTIONS_RE = re.compile(r"^(?:@[\w.-]+(?:@[\w.:\[\]-]+)?\s+)+")
_TRAILING = ".,;:!?'\")]}"


# --- servers and handles --------------------------------------------------------------------
def home_server(acct: str, settings: Settings) -> tuple[str, str]:
    """(base URL, local username) of the server an account lives on, from "@name@server"
    or "name@server" ("name" alone: the bot's server). The bot's own server is named by
    its configured URL (so http://127.0.0.1:PORT stays http); any other is https://server,
    http:// only for a server on this machine."""
    handle = acct.strip().lstrip("@")
    name, _, server = handle.partition("@")
    if not USERNAME_RE.fullmatch(name) or (server and not SERVER_RE.fullmatch(server)):
        raise BotError(f"{acct!r} is not a Mastodon handle such as @name@mastodon.social")
    own = settings.mastodon_api_base_url
    if not server:
        if not own:
            raise BotError(f"{acct!r} names no server: write it as @{name}@server")
        return own.rstrip("/"), name
    if own and urlsplit(own).netloc.lower() == server.lower():
        return own.rstrip("/"), name
    host = urlsplit(f"//{server}").hostname or ""
    return f"{'http' if is_loopback(host) else 'https'}://{server.lower()}", name


# --- text -------------------------------------------------------------------------------------
def status_length(text: str, spoiler_text: str = "", url_length: int = DEFAULT_URL_LENGTH) -> int:
    """Characters a status counts towards the server's limit: each link `url_length`,
    "@name@server" as "@name", combining marks nothing; the content warning counts too."""
    pieces, last = [], 0
    for match in URL_RE.finditer(text):
        core = match.group(0).rstrip(_TRAILING)
        if len(core) <= len("https://"):
            continue
        pieces += [text[last:match.start()], "x" * url_length]
        last = match.start() + len(core)
    pieces.append(text[last:])
    countable = MENTION_RE.sub(lambda m: "@" + m.group(1), "".join(pieces))
    return _characters(countable) + _characters(spoiler_text)


def _characters(text: str) -> int:
    # user-perceived characters, near enough: marks, variation selectors and what a
    # zero-width joiner joins add nothing
    count, joined = 0, False
    for ch in text:
        if ch == "\u200d":
            joined = True
        elif joined or unicodedata.category(ch) in ("Mn", "Me") or 0xFE00 <= ord(ch) <= 0xFE0F:
            joined = False
        else:
            count += 1
    return count


def _same_text(served: str, sent: str) -> bool:
    # the server shows "@name@server" as "@name" and a reply starts with the mention we put in front
    def core(text: str) -> str:
        return comparable(LEADING_MENTIONS_RE.sub("", text.strip()))
    return core(served) == core(sent)


# --- the session Mastodon.py sends through -------------------------------------------------
class _Session(requests.Session):
    def __init__(self, base_url: str, timeout: float):
        super().__init__()
        self.timeout = timeout
        self.last_response: requests.Response | None = None
        if is_loopback(urlsplit(base_url).hostname or ""):
            self.trust_env = False  # no proxy from the environment for a local server

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.timeout
        self.last_response = None
        response = super().request(method, url, *args, **kwargs)
        self.last_response = response
        return response


# --- the client -------------------------------------------------------------------------------
class MastodonClient:
    """One Mastodon server for the bot: its own account there (with the access token) or
    public reads only (a target's home server, no token). Methods return plain dicts, str
    or bool, or raise the errors of bot.platforms.base.

    `sleep` and `clock` are the waits and the time used for retries (tests pass a recorder)."""

    name = "mastodon"

    def __init__(self, settings: Settings, *, api_base_url: str | None = None, access_token: str | None = None,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.time):
        if api_base_url is None:
            api_base_url = settings.mastodon_api_base_url
            access_token = access_token or settings.mastodon_access_token
            if not api_base_url:
                raise CredentialsMissing("no Mastodon server: set MASTODON_API_BASE_URL and MASTODON_ACCESS_TOKEN")
        parts = urlsplit(api_base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc or (
                parts.scheme == "http" and not is_loopback(parts.hostname or "")):
            raise BotError(f"a Mastodon server must be an https:// URL (http:// only on this machine), not {api_base_url!r}")
        self.settings = settings
        self.base_url = api_base_url.rstrip("/")
        self.server = parts.netloc.lower()  # host[:port]: the server part of its accounts' handles
        self._token = access_token
        self._sleep = sleep
        self._clock = clock
        self._session = _Session(self.base_url, settings.request_timeout)
        self._api = Mastodon(
            api_base_url=self.base_url, access_token=access_token, session=self._session,
            request_timeout=settings.request_timeout, ratelimit_method="throw", version_check_mode="none",
            user_agent=USER_AGENT,
        )
        self._me: dict | None = None
        self._rejected: CredentialsRejected | None = None
        self._limits: tuple[int, int] | None = None
        self._roots: dict[str, str] = {}  # status id -> id of its thread's root
        self._backoff = tenacity.wait_random_exponential(multiplier=settings.backoff_base, max=settings.backoff_max)

    @property
    def can_post(self) -> bool:
        return self._token is not None

    def close(self) -> None:
        self._session.close()

    # --- accounts ---------------------------------------------------------------------------
    def me(self) -> dict:
        """The bot's own account: {"id", "username", "name"} (cached). On the first call the
        account is marked as a bot (update_credentials bot=true) if it is not yet."""
        if self._me is None:
            self._need_token("read the bot's own account")
            account = self._call("read the bot's own account", self._api.account_verify_credentials)
            self._me = {"id": str(account["id"]), "username": str(account["acct"]),
                        "name": str(account.get("display_name") or "")}
            if not account.get("bot"):
                try:
                    self._call("mark the account as a bot", self._api.account_update_credentials, bot=True)
                    log.info("marked @%s as a bot account", self._me["username"])
                except CredentialsRejected:
                    raise
                except ApiError as exc:  # the bot can work without the flag; said once
                    log.warning("could not mark @%s as a bot account: %s", self._me["username"], exc)
        return dict(self._me)

    def resolve(self, handle: str) -> dict:
        """{"id", "username"} of an account, looked up on this server. `username` is the
        handle without "@": "name" for an account of the bot's server, else "name@server"."""
        name, _, server = handle.strip().lstrip("@").partition("@")
        if not USERNAME_RE.fullmatch(name) or (server and not SERVER_RE.fullmatch(server)):
            raise BotError(f"{handle!r} is not a Mastodon handle such as @name@mastodon.social")
        local = not server or server.lower() == self.server
        acct = name if local else f"{name}@{server}"
        shown = f"{name}@{server or self.server}"
        try:
            account = self._call(f"look up @{shown}", self._api.account_lookup, acct)
        except ApiError as exc:
            raise self._account_error(exc, shown) from None
        if account.get("suspended"):
            raise AccountUnavailable(shown, "suspended", platform="mastodon")
        return {"id": str(account["id"]), "username": self._handle_of(str(account["acct"]))}

    def _handle_of(self, acct: str) -> str:
        if "@" in acct:
            return acct
        own = self.settings.mastodon_api_base_url
        if own and urlsplit(own).netloc.lower() == self.server:
            return acct  # an account of the bot's own server: as Mastodon writes it there
        return f"{acct}@{self.server}"

    @staticmethod
    def _account_error(exc: ApiError, shown: str) -> ApiError:
        if exc.status == 404:
            return AccountUnavailable(shown, "unknown", platform="mastodon")
        if exc.status == 410:
            return AccountUnavailable(shown, "suspended", platform="mastodon")
        return exc

    # --- reading ----------------------------------------------------------------------------
    def fetch_posts(self, user_id: str, since_id: str | None = None, username: str | None = None,
                    limit: int | None = None) -> list[dict]:
        """The account's own public and unlisted statuses newer than `since_id`, oldest first
        (at most the newest `limit`): {"id", "created_at", "text", "user", "kind"}.
        `user_id` is the account's id on this server, or its handle (looked up first)."""
        if str(user_id).isdigit():
            account_id, name = str(user_id), username or str(user_id)
        else:
            account = self.resolve(str(user_id))
            account_id, name = account["id"], username or account["username"]
        include_replies = self.settings.include_replies
        posts: list[dict] = []
        max_id: str | None = None
        for _ in range(MAX_PAGES):
            try:
                page = self._call(f"download @{name}'s posts", self._api.account_statuses, account_id,
                                  limit=STATUSES_PAGE, max_id=max_id, since_id=since_id,
                                  exclude_replies=not include_replies, exclude_reblogs=True)
            except ApiError as exc:
                raise self._account_error(exc, name) from None
            done = not page
            for status in page or []:
                if since_id is not None and int(status["id"]) <= int(since_id):
                    done = True  # a server that ignores since_id: stop at what we have
                    break
                post = self._training_post(status, account_id, name, include_replies)
                if post is not None:
                    posts.append(post)
                    if limit is not None and len(posts) >= limit:
                        done = True
                        break
            following = getattr(page, "_pagination_next", None)
            if done or not following:
                break
            max_id = str(following.get("max_id") or page[-1]["id"])
        log.info("fetched %d posts of @%s%s", len(posts), name, f" newer than {since_id}" if since_id else "")
        return posts[::-1]

    @staticmethod
    def _training_post(status: Any, account_id: str, name: str, include_replies: bool) -> dict | None:
        if status.get("reblog") or status.get("visibility") not in ("public", "unlisted"):
            return None
        if status.get("spoiler_text"):
            return None  # behind a content warning: not for every reader, not for the model
        to_other = status.get("in_reply_to_id") is not None and str(status.get("in_reply_to_account_id")) != account_id
        if to_other and not include_replies:
            return None
        text = html_to_text(status.get("content") or "")
        if not text:
            return None  # media only
        return {"id": str(status["id"]), "created_at": _iso(status.get("created_at")), "text": text,
                "user": name, "kind": "reply" if to_other else "post"}

    def mentions(self, since: int | None = None) -> list[dict]:
        """Public and unlisted statuses naming the bot, from its mention notifications newer
        than notification id `since`, oldest first: {"id" (the status), "position" (the
        notification id), "author_id", "author" (acct), "text", "created_at",
        "conversation_id", "in_reply_to_id", "in_reply_to_user_id"}."""
        me = self.me()
        found: list[dict] = []
        max_id: str | None = None
        for _ in range(MAX_PAGES):
            page = self._call("read the bot's mentions", self._api.notifications, types=["mention"],
                              since_id=str(since) if since is not None else None, max_id=max_id,
                              limit=NOTIFICATIONS_PAGE)
            done = len(page or []) < NOTIFICATIONS_PAGE  # a short page is the last: no empty one after it
            for notification in page or []:
                if since is not None and int(notification["id"]) <= since:
                    done = True
                    break
                status = notification.get("status")
                if notification.get("type") != "mention" or not status:
                    continue
                if status.get("visibility") not in ("public", "unlisted") or str(status["account"]["id"]) == me["id"]:
                    continue
                found.append({
                    "id": str(status["id"]), "position": int(notification["id"]),
                    "author_id": str(status["account"]["id"]), "author": str(status["account"]["acct"]),
                    "text": html_to_text(status.get("content") or ""), "created_at": _iso(status.get("created_at")),
                    "in_reply_to_id": _str_or_none(status.get("in_reply_to_id")),
                    "in_reply_to_user_id": _str_or_none(status.get("in_reply_to_account_id")),
                })
                if len(found) >= MENTIONS_CAP:
                    done = True
                    break
            following = getattr(page, "_pagination_next", None)
            if done or not following:
                break
            max_id = str(following.get("max_id") or page[-1]["id"])
        found.reverse()
        for mention in found:  # oldest first: an answer to an earlier mention finds its root cached
            mention["conversation_id"] = self._root(mention["id"], mention["in_reply_to_id"])
        return found

    def _root(self, status_id: str, in_reply_to_id: str | None) -> str:
        """The id of the thread's first status (see the module's notes), cached."""
        if in_reply_to_id is None:
            self._roots[status_id] = status_id
            return status_id
        if in_reply_to_id in self._roots:
            self._roots[status_id] = self._roots[in_reply_to_id]
            return self._roots[status_id]
        try:
            context = self._call(f"read the thread of status {status_id}", self._api.status_context, status_id)
        except (CredentialsRejected, RateLimited):
            raise
        except ApiError as exc:
            log.debug("thread of status %s unknown (%s); its parent stands in", status_id, exc)
            return in_reply_to_id
        ancestors = context.get("ancestors") or []
        if not ancestors:
            return in_reply_to_id  # the parent is gone or hidden: it is as far back as we can see
        root = str(ancestors[0]["id"])
        for status in ancestors:
            self._roots[str(status["id"])] = root
        self._roots[status_id] = root
        return root

    def recent_own_posts(self, limit: int = 100) -> list[dict]:
        """The bot's newest statuses, oldest first: {"id", "text", "created_at",
        "conversation_id", "in_reply_to_id"} (conversation_id as far as known without
        further requests: the cached root, else the parent, else the status itself)."""
        me = self.me()
        out: list[dict] = []
        max_id: str | None = None
        while len(out) < limit:
            page = self._call("read the bot's own recent posts", self._api.account_statuses, me["id"],
                              limit=min(STATUSES_PAGE, limit - len(out)), max_id=max_id, exclude_reblogs=True)
            for status in page or []:
                status_id, parent = str(status["id"]), _str_or_none(status.get("in_reply_to_id"))
                out.append({
                    "id": status_id, "text": html_to_text(status.get("content") or ""),
                    "created_at": _iso(status.get("created_at")), "in_reply_to_id": parent,
                    "conversation_id": self._roots.get(status_id) or (self._roots.get(parent, parent) if parent else status_id),
                })
            if not page or not getattr(page, "_pagination_next", None):
                break
            max_id = str(page[-1]["id"])
        return out[:limit][::-1]

    def find_own_post(self, text: str, in_reply_to_id: str | None = None, key: str | None = None) -> str | None:
        """The id of a recent status of the bot with this text (and parent), or None.
        Compared as the server shows text: HTML stripped, entities decoded, links whole,
        leading mentions (the one a reply puts in front) not counted."""
        for post in reversed(self.recent_own_posts(limit=LOOKUP_POSTS)):
            if in_reply_to_id is not None and post["in_reply_to_id"] != str(in_reply_to_id):
                continue
            if _same_text(post["text"], text):
                return post["id"]
        return None

    # --- writing --------------------------------------------------------------------------
    def post(self, text: str, key: str | None = None) -> str:
        """Post `text` as the bot (visibility and content warning from the settings); its id."""
        return self._create(text, None, key)

    def reply(self, text: str, in_reply_to_id: str, key: str | None = None) -> str:
        """Reply to status `in_reply_to_id`, naming its author in front; the reply's id.
        PostRefused when that status is gone or not visible."""
        parent_id = str(in_reply_to_id)
        self._check_can_write(f"reply to status {parent_id}")
        try:
            parent = self._call(f"read status {parent_id} to reply to it", self._api.status, parent_id)
        except ApiError as exc:
            if exc.status == 404:
                raise PostRefused(f"cannot reply to status {parent_id}: it is deleted or not visible (404)",
                                  status=404) from None
            raise
        author = str(parent["account"]["acct"])
        if str(parent["account"]["id"]) != self.me()["id"] and not re.match(rf"@{re.escape(author)}\b", text, re.I):
            text = f"@{author} {text}"
        if not self.fits(text):
            raise PostRefused(f"the reply to status {parent_id} is too long for the server with @{author} in front")
        reply_id = self._create(text, parent_id, key)
        root = self._roots.get(parent_id) or (parent_id if parent.get("in_reply_to_id") is None else None)
        if root:
            self._roots[reply_id] = root
        return reply_id

    def delete(self, post_id: str) -> bool:
        """Delete one of the bot's statuses; False when it was already gone."""
        self._check_can_write("delete a post")
        try:
            self._call(f"delete status {post_id}", self._api.status_delete, str(post_id))
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def fits(self, text: str) -> bool:
        """Whether the server takes `text` (with the configured content warning) as one status:
        its configuration.statuses.max_characters (500 by default), each link counting as its
        characters_reserved_per_url (23)."""
        most, per_url = self._length_rule()
        return status_length(text, self.settings.mastodon_spoiler_text or "", per_url) <= most

    def _length_rule(self) -> tuple[int, int]:
        if self._limits is None:
            try:
                instance = self._call("read the server's limits", self._api.instance_v2)
                statuses = (instance.get("configuration") or {}).get("statuses") or {}
                self._limits = (int(statuses.get("max_characters") or DEFAULT_MAX_CHARACTERS),
                                int(statuses.get("characters_reserved_per_url") or DEFAULT_URL_LENGTH))
            except ApiError as exc:  # not cached: asked again next time
                log.warning("Mastodon: %s; assuming %d characters", exc, DEFAULT_MAX_CHARACTERS)
                return DEFAULT_MAX_CHARACTERS, DEFAULT_URL_LENGTH
        return self._limits

    def _create(self, text: str, in_reply_to_id: str | None, key: str | None) -> str:
        what = f"reply to status {in_reply_to_id}" if in_reply_to_id else "post"
        self._check_can_write(what)
        idempotency_key = _idempotency_key(key)
        unclear: list[BaseException] = []  # tries after which the status may exist

        def attempt() -> Any:
            try:
                return self._api.status_post(
                    text, in_reply_to_id=in_reply_to_id, visibility=self.settings.mastodon_visibility,
                    spoiler_text=self.settings.mastodon_spoiler_text or None, idempotency_key=idempotency_key)
            except (MastodonNetworkError, MastodonServerError) as exc:
                if not _never_sent(exc):
                    unclear.append(exc)
                    log.warning("Mastodon: the %s may have been sent (%s); sending it again with the same "
                                "Idempotency-Key", what, _describe(exc))
                raise

        try:
            status = self._call(what, attempt)
        except ApiError as exc:
            if unclear:
                # one try may have landed: look for it rather than report "not sent"
                return look_for_lost_post(lambda: self.find_own_post(text, in_reply_to_id), what=what,
                                          cause=str(exc), place="the bot's statuses",
                                          window=self.settings.lookup_window, sleep=self._sleep)
            if exc.status in (404, 422) and not isinstance(exc, (AccessDenied, CredentialsRejected)):
                raise PostRefused(str(exc), status=exc.status) from None
            raise
        status_id = str(status["id"])
        log.info("posted %s%s", status_id, f" in reply to {in_reply_to_id}" if in_reply_to_id else "")
        return status_id

    # --- plumbing ---------------------------------------------------------------------------
    def _need_token(self, what: str) -> None:
        if self._token is None:
            raise CredentialsMissing(f"cannot {what}: it needs MASTODON_API_BASE_URL and MASTODON_ACCESS_TOKEN")

    def _check_can_write(self, what: str) -> None:
        self._need_token(what)
        if self._rejected is not None:  # posting stops after a 401 until restarted with a good token
            raise CredentialsRejected(f"not trying to {what}: {self._rejected}", status=401)

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """fn(*args, **kwargs) with bounded retries; any failure becomes an ApiError."""
        def attempt() -> Any:
            try:
                return fn(*args, **kwargs)
            except MastodonRatelimitError as exc:
                exc.reset_at = self._reset_at()  # type: ignore[attr-defined]  (read from that 429)
                raise

        retry = retrying(log, "Mastodon", what, self.settings.max_attempts, self._retryable, self._wait, self._sleep,
                         _describe)
        try:
            return retry(attempt)
        except BotError:
            raise
        except Exception as exc:  # noqa: BLE001 (Mastodon.py's, requests' or a cast's: all become ours)
            error = self._translate(exc, what)
            if isinstance(error, CredentialsRejected):
                self._rejected = error
            raise error from None

    def _reset_at(self) -> float | None:
        response = self._session.last_response
        value = response.headers.get("X-RateLimit-Reset") if response is not None else None
        if not value:
            return None
        try:
            return float(value)
        except ValueError:
            pass
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None

    def _retryable(self, exc: BaseException) -> bool:
        if isinstance(exc, MastodonRatelimitError):
            reset = getattr(exc, "reset_at", None)
            return reset is None or reset - self._clock() <= self.settings.rate_limit_max_wait
        return isinstance(exc, (MastodonNetworkError, MastodonServerError))

    def _wait(self, state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        reset = getattr(exc, "reset_at", None)
        if isinstance(exc, MastodonRatelimitError) and reset is not None:
            # until the window resets (+1 s for clock skew), never longer than allowed
            return min(max(reset - self._clock(), 0) + 1, self.settings.rate_limit_max_wait)
        return self._backoff(state)

    def _translate(self, exc: BaseException, what: str) -> ApiError:
        tries = self.settings.max_attempts
        if isinstance(exc, MastodonUnauthorizedError):
            if self._token is None:
                return AccessDenied(f"{self.server} requires a login to {what} (401)", status=401)
            return CredentialsRejected(f"Mastodon rejected the access token (401) trying to {what}: "
                                       f"check MASTODON_ACCESS_TOKEN", status=401)
        if isinstance(exc, MastodonRatelimitError):
            reset = getattr(exc, "reset_at", None)
            if reset is not None and reset - self._clock() > self.settings.rate_limit_max_wait:
                at = datetime.fromtimestamp(reset, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
                return RateLimited(f"Mastodon rate limit hit trying to {what}; it resets at {at}, too far away to wait",
                                   reset)
            return RateLimited(f"Mastodon rate limit hit trying to {what} ({tries} tries)", reset)
        if isinstance(exc, MastodonServerError):
            status = _status_of(exc)
            return ServiceUnavailable(f"Mastodon server {self.server} failed to {what}: {_describe(exc)} "
                                      f"({tries} tries)", status=status)
        if isinstance(exc, MastodonNetworkError):
            if isinstance(exc.__context__, requests.Timeout):
                return ServiceUnavailable(f"Mastodon server {self.server} did not answer within "
                                          f"{self.settings.request_timeout:g} s trying to {what} ({tries} tries)")
            return ServiceUnavailable(f"cannot reach {self.base_url} to {what} ({tries} tries): {_short(exc.__context__ or exc)}")
        if isinstance(exc, MastodonAPIError) and _status_of(exc) is not None:
            status = _status_of(exc)
            if status == 403:
                return AccessDenied(f"Mastodon refused to {what} (403): {_error_text(exc)}", status=403)
            return ApiError(f"Mastodon refused to {what} ({status}): {_error_text(exc)}", status=status)
        if isinstance(exc, MastodonAPIError):
            return ApiError(f"{self.base_url} answered {what} with something that is not the Mastodon API; "
                            f"is the server's URL right?")
        if isinstance(exc, MastodonError):
            return ApiError(f"Mastodon call failed ({what}): {_short(exc)}")
        return ApiError(f"Mastodon answer to {what} could not be read: {_short(exc)}")


# --- helpers ------------------------------------------------------------------------------------
def _idempotency_key(key: str | None) -> str:
    """The Idempotency-Key of a post: the same record key gives the same header, so a
    re-sent request lands once (a call without a key still gets one for its own retries)."""
    if key is None:
        return "xmimic-" + uuid.uuid4().hex
    return "xmimic-" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:40]


def _status_of(exc: BaseException) -> int | None:
    # Mastodon.py raises ('Mastodon API returned error', status, reason, error text)
    return exc.args[1] if len(exc.args) >= 2 and isinstance(exc.args[1], int) else None


def _error_text(exc: BaseException) -> str:
    if len(exc.args) >= 4 and exc.args[3]:
        return " ".join(str(exc.args[3]).split())
    return str(exc.args[2]) if len(exc.args) >= 3 else _short(exc)


def _never_sent(exc: BaseException) -> bool:
    """True when the request certainly never reached the server (no connection was made)."""
    cause = exc.__context__
    if isinstance(cause, requests.ConnectTimeout):
        return True
    reason = getattr(cause.args[0], "reason", None) if cause is not None and cause.args else None
    return isinstance(cause, requests.ConnectionError) and "NewConnectionError" in type(reason).__name__


def _describe(exc: BaseException | None) -> str:
    """A failure of Mastodon.py as one short line: "503 <the server's error>" or the network's."""
    if exc is not None and _status_of(exc) is not None:
        return f"{_status_of(exc)} {_error_text(exc)}"
    if isinstance(exc, MastodonNetworkError) and exc.__context__ is not None:
        return _short(exc.__context__)
    return _short(exc)


def _short(exc: BaseException | None) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def _iso(value: Any) -> str | None:
    """A status' created_at (Mastodon.py gives a datetime) as "YYYY-MM-DDTHH:MM:SS.ffffffZ" UTC."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
