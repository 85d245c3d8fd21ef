"""Bluesky: the bot's only door to the AT Protocol, over the `atproto` SDK (MarshalX), with
bounded retries and the typed errors of bot/platforms/base.py, returning plain dicts.

- Two clients. Reads of public accounts go to the AppView (`settings.bluesky_public_api`)
  without login. The bot's own account goes to its PDS (`settings.bluesky_service`); after
  login the SDK follows the PDS named in the account's DID document.
- Login: Bluesky rate-limits `createSession` hard, so the bot logs in with its app password
  once and keeps the session string in the store (cursor "bluesky_session"), saved again on
  every refresh (`on_session_change`). The next start reuses it; only when the server
  refuses it (expired or revoked) is the password used again. An auth failure during a call
  gets one fresh login, then CredentialsRejected.
- Posting is made idempotent with the record key: each post gets a TID rkey chosen before
  the first try and kept for every retry, so a retried create can land only once (the PDS
  refuses a second record under the same key). After an unclear try (timeout, dropped
  answer, 5xx) the record is looked up by that key on the bot's own PDS (which does not lag):
  there: sent; not there: retried with the same key. When the tries run out after an
  unclear one and the record never shows up within `settings.lookup_window`:
  OutcomeUnknown, never sent again. The key derives from the daemon's record of the slot
  or mention (`tid_for`), so after a crash reconcile finds the post by its key.
- No facets are ever created: generated text may contain "@name", and on Bluesky only a
  mention facet pings someone. No link facets either.
- Reads (not creates) are retried on 5xx, timeouts and dropped connections, at most
  `settings.max_attempts` tries with doubling waits; then ServiceUnavailable. A 429 is
  RateLimited with the `ratelimit-reset` time.
- Length: 300 graphemes and 3,000 UTF-8 bytes (the lexicon's limits for a post's text).
  Graphemes are counted with the `regex` module's \\X when it is installed, else with an
  approximation of Unicode's extended grapheme clusters (see `graphemes`).
"""
from __future__ import annotations

import logging
import random
import re
import threading
import time
import unicodedata
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

import httpx
from atproto_client import Client, models
from atproto_client import exceptions as at_exc
from atproto_client.client.session import Session, SessionEvent
from atproto_client.request import Request
from atproto_core.exceptions import AtProtocolError

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
)
from bot.platforms.text import comparable
from bot.settings import Settings, is_loopback

try:  # exact extended grapheme clusters when available
    import regex as _regex
except ImportError:  # pragma: no cover - depends on the environment
    _regex = None

log = logging.getLogger(__name__)
# httpx logs every request line at INFO; the SDK puts tokens in headers, never in URLs, but
# keep the noise down.
logging.getLogger("httpx").setLevel(logging.WARNING)

POST = "app.bsky.feed.post"
PROFILE = "app.bsky.actor.profile"
SESSION_CURSOR = "bluesky_session"
PAGE_SIZE = 100
MAX_PAGES = 64  # safety net against a server that never stops handing out cursors
LOOKUP_POSTS = 20  # own posts compared by find_own_post
MAX_GRAPHEMES = 300
MAX_BYTES = 3000
MENTION_REASONS = ("mention", "reply")
# errors that mean "this session's tokens are no good" (a 400 for an expired refresh token)
_TOKEN_ERRORS = {"ExpiredToken", "InvalidToken", "AuthRequired", "AuthMissing", "AuthenticationRequired"}
_ACCOUNT_GONE = {"AccountTakedown": "suspended", "AccountDeactivated": "suspended", "RepoTakendown": "suspended",
                 "RepoDeactivated": "suspended", "RepoSuspended": "suspended"}


class BlueskyClient:
    """Bluesky for the bot. Every method returns plain dicts/str/bool, or raises an ApiError.

    `store` keeps the login session between runs (without one: one login per process).
    `sleep` is used for retry waits (tests pass a recorder). `transport` replaces the HTTP
    transport of both clients (tests put a spying or fault-injecting one there).
    """

    name = "bluesky"

    def __init__(self, settings: Settings, store: Any | None = None, *,
                 sleep: Callable[[float], None] = time.sleep, transport: httpx.BaseTransport | None = None):
        self.settings = settings
        self.store = store
        self._sleep = sleep
        self._transport = transport
        self._public = Client(base_url=settings.bluesky_public_api, request=self._request(settings.bluesky_public_api))
        self._bot: Client | None = None
        self._me: dict | None = None
        self._relogged = False  # one fresh login per client after an auth failure
        self._rejected: CredentialsRejected | None = None
        self._lock = threading.RLock()

    @property
    def can_post(self) -> bool:
        return bool(self.settings.bluesky_handle and self.settings.bluesky_app_password)

    def fits(self, text: str) -> bool:
        """Bluesky's rule: at most 300 graphemes and 3,000 UTF-8 bytes."""
        return len(text.encode("utf-8")) <= MAX_BYTES and graphemes(text) <= MAX_GRAPHEMES

    def close(self) -> None:
        self._public.request.close()
        if self._bot is not None:
            self._bot.request.close()

    # --- accounts ---------------------------------------------------------------------------
    def me(self) -> dict:
        """The bot's own account: {"id" (DID), "username" (handle)}; logs in if needed."""
        self._logged_in()
        assert self._me is not None
        return dict(self._me)

    def resolve(self, handle: str) -> dict:
        """{"id" (DID), "username", "name", "protected"} for a handle (or a DID).

        AccountUnavailable for an unknown or taken-down account; an account that asked not to
        be shown to logged-out viewers (`!no-unauthenticated`) counts as protected."""
        handle = handle.strip().lstrip("@").lower()
        if not handle:
            raise AccountUnavailable(handle, "unknown", platform="bluesky")
        try:
            did = handle if handle.startswith("did:") else self._call(
                f"resolve @{handle}", self._public.com.atproto.identity.resolve_handle, {"handle": handle}).did
            profile = self._call(f"look up @{handle}", self._public.app.bsky.actor.get_profile, {"actor": did})
        except ApiError as exc:
            raise self._account_error(exc, handle) from None
        labels = {lab.val for lab in (profile.labels or [])}
        return {"id": profile.did, "username": profile.handle, "name": profile.display_name or "",
                "protected": "!no-unauthenticated" in labels}

    @staticmethod
    def _account_error(exc: ApiError, handle: str) -> ApiError:
        error = getattr(exc, "xrpc_error", None)
        if error in _ACCOUNT_GONE:
            return AccountUnavailable(handle, _ACCOUNT_GONE[error], platform="bluesky")
        if exc.status in (400, 404) and type(exc) is ApiError:
            return AccountUnavailable(handle, "unknown", platform="bluesky")
        return exc

    # --- reading posts --------------------------------------------------------------------
    def fetch_posts(self, user_id: str, since_id: str | None = None, username: str | None = None,
                    limit: int | None = None) -> list[dict]:
        """The account's own posts newer than `since_id` (a post URI), oldest first, at most
        the newest `limit`. Reposts and others' posts are left out, and so are quotes of
        others' posts and posts without text; replies to other accounts unless
        settings.include_replies (a reply to itself continues a thread: kept).

        The feed is newest first by the AppView's sort time (the earlier of createdAt and
        indexedAt); paging stops at `since_id` or at the first post older than it."""
        name = username or user_id
        if not user_id.startswith("did:"):
            account = self.resolve(user_id)
            user_id, name = account["id"], account["username"]
        stop_at = self._sort_time_of(since_id) if since_id else None
        try:
            posts = self._feed(user_id, name, since_id, stop_at, limit)
        except ApiError as exc:  # taken down, deactivated or gone since it was added
            raise self._account_error(exc, name) from None
        log.info("fetched %d posts of @%s%s", len(posts), name, f" newer than {since_id}" if since_id else "")
        return posts[::-1]

    def _feed(self, user_id: str, name: str, since_id: str | None, stop_at: datetime | None,
              limit: int | None) -> list[dict]:
        """The account's own posts, newest first, down to `since_id` / `stop_at`."""
        posts: list[dict] = []
        done = False
        for page in self._pages(f"download @{name}'s posts", self._public.app.bsky.feed.get_author_feed,
                                {"actor": user_id, "filter": "posts_with_replies"}, "feed", name):
            for item in page.feed:
                post = item.post
                if since_id and post.uri == since_id:
                    done = True
                    break
                if stop_at is not None and _sort_time(post) < stop_at:
                    done = True
                    break
                if item.reason is not None or post.author.did != user_id:
                    continue  # a repost (or pin) of someone's post
                record = post.record
                text = getattr(record, "text", "") or ""
                reply = getattr(record, "reply", None)
                if reply is not None and _did_of(reply.parent.uri) != user_id and not self.settings.include_replies:
                    continue
                if _quotes_other(record, user_id) or not text.strip():
                    continue
                posts.append({"id": post.uri, "user": post.author.handle or name, "text": text,
                              "created_at": _iso(getattr(record, "created_at", None) or post.indexed_at),
                              "kind": "reply" if reply is not None else "post"})
                if limit is not None and len(posts) >= limit:
                    done = True
                    break
            if done:
                break
        return posts

    def _sort_time_of(self, uri: str) -> datetime | None:
        """When the post `uri` sorts in feeds; from its TID when the post is gone."""
        try:
            found = self._call("look up the newest stored post", self._public.app.bsky.feed.get_posts, {"uris": [uri]})
            if found.posts:
                return _sort_time(found.posts[0])
        except (ApiError, ValueError) as exc:
            log.info("could not look up %s (%s); using its record key's time", uri, exc)
        return _tid_time(uri.rsplit("/", 1)[-1])

    def mentions(self, since: int | None = None) -> list[dict]:
        """Posts mentioning or answering the bot with `position` (the notification's indexed
        time in microseconds) greater than `since`, oldest first."""
        found: dict[str, dict] = {}
        for page in self._pages("read the bot's mentions", None,
                                {"reasons": list(MENTION_REASONS)}, "notifications", None):
            older = False
            for note in page.notifications:
                position = _micros(note.indexed_at)
                if since is not None and position <= since:
                    older = True
                    continue
                if note.reason not in MENTION_REASONS or note.uri in found:
                    continue  # a reply that also names the bot comes as two notifications
                record = note.record
                reply = getattr(record, "reply", None)
                found[note.uri] = {
                    "id": note.uri, "position": position, "author_id": note.author.did,
                    "author": note.author.handle, "text": getattr(record, "text", "") or "",
                    "created_at": _iso(getattr(record, "created_at", None) or note.indexed_at),
                    "conversation_id": reply.root.uri if reply is not None else note.uri,
                    "in_reply_to_id": reply.parent.uri if reply is not None else None,
                }
            if older:
                break
        return sorted(found.values(), key=lambda m: m["position"])

    def recent_own_posts(self, limit: int = 100) -> list[dict]:
        """The bot's newest posts as its PDS holds them (no index lag), oldest first."""
        me = self.me()
        out: list[dict] = []
        for page in self._pages("read the bot's own posts", None, {"repo": me["id"], "collection": POST},
                                "records", me["username"], limit=min(PAGE_SIZE, max(1, limit))):
            for rec in page.records:
                out.append(_own_post(rec.uri, rec.value))
                if len(out) >= limit:
                    break
            if len(out) >= limit:
                break
        return out[::-1]

    def find_own_post(self, text: str, in_reply_to_id: str | None = None, key: str | None = None) -> str | None:
        """The URI of a recent post of the bot with this text (and parent), or None. With the
        `key` it was sent under, its record is looked up by that key first."""
        if key is not None and (rkey := tid_for(key)) is not None:
            if self._own_record(POST, rkey) is not None:
                return f"at://{self.me()['id']}/{POST}/{rkey}"
        wanted = comparable(text)
        for post in reversed(self.recent_own_posts(limit=LOOKUP_POSTS)):
            if in_reply_to_id is not None and post["in_reply_to_id"] != in_reply_to_id:
                continue
            if comparable(post["text"]) == wanted:
                return post["id"]
        return None

    # --- writing --------------------------------------------------------------------------
    def post(self, text: str, key: str | None = None) -> str:
        """Post `text` as the bot; the new post's URI. The record key comes from `key` (the
        store's record of the slot), so the post can be sent and found under one key only."""
        return self._create(text, None, key)

    def reply(self, text: str, in_reply_to_id: str, key: str | None = None) -> str:
        """Reply to post `in_reply_to_id` (an at:// URI) in its thread; the reply's URI."""
        return self._create(text, in_reply_to_id, key)

    def delete(self, post_id: str) -> bool:
        """Delete one of the bot's posts; False when it was already gone."""
        me = self.me()
        did, collection, rkey = _split_uri(post_id)
        if did != me["id"]:
            raise PostRefused(f"{post_id} is not a post of @{me['username']}: not deleting it")
        if self._own_record(collection, rkey) is None:
            return False
        self._as_bot(f"delete post {post_id}", lambda c: c.com.atproto.repo.delete_record(
            {"repo": did, "collection": collection, "rkey": rkey}))
        return True

    def _create(self, text: str, in_reply_to_id: str | None, key: str | None = None) -> str:
        what = f"reply to {in_reply_to_id}" if in_reply_to_id else "post"
        me = self.me()
        record: dict[str, Any] = {"$type": POST, "text": text, "createdAt": _now_iso()}
        if in_reply_to_id:
            record["reply"] = self._reply_refs(in_reply_to_id)
        rkey = (tid_for(key) if key else None) or new_tid()  # kept for every retry: a second create cannot land
        uri = f"at://{me['id']}/{POST}/{rkey}"
        data = {"repo": me["id"], "collection": POST, "rkey": rkey, "record": record, "validate": True}
        unclear: BaseException | None = None
        tries = self.settings.max_attempts
        for attempt in range(1, tries + 1):
            try:
                answer = self._as_bot(what, lambda c: c.com.atproto.repo.create_record(data), read=False, raw=True)
                log.info("posted %s%s", answer.uri, f" in reply to {in_reply_to_id}" if in_reply_to_id else "")
                return answer.uri
            except _Raw as raw:
                exc = raw.exc
            if _transient(exc):
                if not _never_sent(exc):
                    unclear = exc
                    log.warning("Bluesky: the %s may have been sent (%s); looking for it", what, _short(exc))
                    if self._own_record(POST, rkey, quiet=True) is not None:
                        return uri
                if attempt < tries:
                    self._sleep(self._backoff(attempt))
                    continue
                break
            if unclear is not None and self._own_record(POST, rkey, quiet=True) is not None:
                return uri  # an earlier try landed: this one was refused as a second record
            error = self._translate(exc, what)
            if type(error) is ApiError and error.status in (400, 404):
                raise PostRefused(str(error), status=error.status) from None
            raise error from None
        if unclear is None:
            raise self._translate(exc, what) from None
        return look_for_lost_post(lambda: uri if self._own_record(POST, rkey) is not None else None, what=what,
                                  cause=_short(unclear), place="the bot's repository",
                                  window=self.settings.lookup_window, sleep=self._sleep)

    def _reply_refs(self, parent_uri: str) -> dict:
        """{root, parent} strong refs for a reply to `parent_uri` (its root is the parent's own)."""
        try:
            did, collection, rkey = _split_uri(parent_uri)
        except ValueError:
            raise PostRefused(f"cannot reply to {parent_uri!r}: not a post URI") from None
        try:
            got = self._as_bot(f"look up {parent_uri}", lambda c: c.com.atproto.repo.get_record(
                {"repo": did, "collection": collection, "rkey": rkey}))
        except ApiError as exc:
            if type(exc) is ApiError and exc.status in (400, 404):
                raise PostRefused(f"cannot reply to {parent_uri}: the post is gone ({exc})", status=exc.status) from None
            raise
        parent = {"uri": got.uri, "cid": got.cid}
        reply = getattr(got.value, "reply", None)
        root = {"uri": reply.root.uri, "cid": reply.root.cid} if reply is not None else parent
        return {"root": root, "parent": parent}

    def _own_record(self, collection: str, rkey: str, quiet: bool = False) -> Any | None:
        """A record of the bot's repo, or None when there is none (the PDS does not lag)."""
        me = self.me()
        try:
            return self._as_bot(f"look up record {rkey}", lambda c: c.com.atproto.repo.get_record(
                {"repo": me["id"], "collection": collection, "rkey": rkey}))
        except ApiError as exc:
            if type(exc) is ApiError and exc.status in (400, 404):
                return None
            if quiet:  # a first quick look: the caller retries or looks again
                return None
            raise

    # --- the bot's session ------------------------------------------------------------------
    def _logged_in(self, fresh: bool = False) -> Client:
        """The bot's client, logged in: the stored session if the server still takes it, else
        one password login (saved). `fresh`: drop the session, log in with the password."""
        with self._lock:
            if self._bot is not None and not fresh:
                return self._bot
            if not self.can_post:
                raise CredentialsMissing("no Bluesky credentials: set BLUESKY_HANDLE and BLUESKY_APP_PASSWORD")
            if self._rejected is not None:  # no more logins until restarted with a good password
                raise CredentialsRejected(str(self._rejected), status=401)
            if self._bot is not None:
                self._bot.request.close()
                self._bot = None
            client = Client(base_url=self.settings.bluesky_service, request=self._request(self.settings.bluesky_service))
            client.on_session_change(self._save_session)
            session = None if fresh else self._resume(client)
            if session is None:
                session = self._password_login(client)
            self._me = {"id": session.did, "username": session.handle}
            self._bot = client
            self._ensure_bot_label(client)
            return client

    def _resume(self, client: Client) -> Session | None:
        stored = self.store.get_cursor(SESSION_CURSOR) if self.store is not None else None
        if not stored:
            return None
        try:
            client.login(session_string=stored, fetch_bsky_profile=False)
        except Exception as exc:  # a damaged or foreign string: log in anew
            log.warning("the stored Bluesky session cannot be read (%s); logging in again", type(exc).__name__)
            return None
        session = client._session
        wanted = (self.settings.bluesky_handle or "").lower()
        if session is None or wanted not in (session.handle.lower(), session.did):
            log.info("the stored Bluesky session is for another account; logging in as @%s", wanted)
            return None
        try:
            # refreshes first when the access token is (nearly) expired; proves the session works
            self._call("check the stored session", client.com.atproto.server.get_session)
        except CredentialsRejected:
            log.info("the stored Bluesky session was refused; logging in with the app password")
            return None
        return session

    def _password_login(self, client: Client) -> Session:
        handle = self.settings.bluesky_handle or ""
        try:
            self._call(f"log in as @{handle}", client.login, handle, self.settings.bluesky_app_password,
                       fetch_bsky_profile=False, read=False)
        except CredentialsRejected as exc:
            self._rejected = CredentialsRejected(
                f"Bluesky refused the login of @{handle} ({exc.status or 401}): check BLUESKY_HANDLE and "
                f"BLUESKY_APP_PASSWORD (an app password, from Settings > App passwords)", status=401)
            raise self._rejected from None
        log.info("logged in to Bluesky as @%s (session saved for the next start)", handle)
        assert client._session is not None
        return client._session

    def _save_session(self, event: SessionEvent, session: Session) -> None:
        if self.store is not None and event in (SessionEvent.CREATE, SessionEvent.REFRESH):
            self.store.set_cursor(SESSION_CURSOR, session.export())

    def _ensure_bot_label(self, client: Client) -> None:
        """The profile carries the self-label "bot"; the rest of it is left as it is."""
        did = client._session.did
        try:
            got = self._call("read the bot's profile", client.com.atproto.repo.get_record,
                             {"repo": did, "collection": PROFILE, "rkey": "self"})
            value, swap = models.get_model_as_dict(got.value), got.cid
        except ApiError as exc:
            if not (type(exc) is ApiError and exc.status in (400, 404)):
                raise
            value, swap = {"$type": PROFILE}, None
        labels = value.get("labels") or {"$type": "com.atproto.label.defs#selfLabels", "values": []}
        if any(lab.get("val") == "bot" for lab in labels.get("values", [])):
            return
        labels["values"] = [*labels.get("values", []), {"val": "bot"}]
        value["labels"] = labels
        data = {"repo": did, "collection": PROFILE, "rkey": "self", "record": value}
        if swap:
            data["swapRecord"] = swap  # someone else's edit in between is not overwritten
        self._call("label the bot's profile as a bot", client.com.atproto.repo.put_record, data, read=False)
        log.info("labelled @%s's profile as a bot", client._session.handle)

    # --- plumbing ---------------------------------------------------------------------------
    def _request(self, base_url: str) -> Request:
        kwargs: dict[str, Any] = {"timeout": self.settings.request_timeout}
        if self._transport is not None:
            kwargs["transport"] = self._transport
        if is_loopback(urlsplit(base_url).hostname or ""):
            kwargs["trust_env"] = False  # no proxy from the environment for a local network
        return Request(**kwargs)

    def _pages(self, what: str, method: Callable[..., Any] | None, params: dict, field: str, name: str | None,
               limit: int = PAGE_SIZE) -> Iterator[Any]:
        """Each page of a cursor-paged list. `method` None: a call on the bot's client
        (notifications via the PDS, or listRecords of the bot's repo)."""
        cursor = None
        for _ in range(MAX_PAGES):
            query = {**params, "limit": limit, **({"cursor": cursor} if cursor else {})}
            if method is not None:
                page = self._call(what, method, query)
            elif field == "notifications":
                page = self._as_bot(what, lambda c: c.app.bsky.notification.list_notifications(query))
            else:
                page = self._as_bot(what, lambda c: c.com.atproto.repo.list_records(query))
            yield page
            cursor = getattr(page, "cursor", None)
            if not cursor or not getattr(page, field):
                return

    def _as_bot(self, what: str, fn: Callable[[Client], Any], read: bool = True, raw: bool = False) -> Any:
        """fn(bot client), logged in; after an auth failure one fresh login, then CredentialsRejected.
        `raw`: the SDK's exception comes back wrapped in _Raw (the caller decides)."""
        client = self._logged_in()
        for fresh_login_done in (False, True):
            try:
                return self._call(what, fn, client, read=read, raw=raw)
            except CredentialsRejected:
                if fresh_login_done or self._relogged:
                    raise
                self._relogged = True
                log.warning("Bluesky refused the session on %s; logging in again", what)
                client = self._logged_in(fresh=True)
            except _Raw as wrapped:
                if not _is_auth(wrapped.exc) or fresh_login_done or self._relogged:
                    raise
                self._relogged = True
                client = self._logged_in(fresh=True)
        raise AssertionError("unreachable")

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, read: bool = True, raw: bool = False,
              **kwargs: Any) -> Any:
        """fn(*args, **kwargs); reads retried on transient failures. Errors become ApiErrors."""
        tries = self.settings.max_attempts if read else 1
        for attempt in range(1, tries + 1):
            try:
                return fn(*args, **kwargs)
            except (AtProtocolError, httpx.HTTPError, ValueError) as exc:
                if raw:
                    raise _Raw(exc) from None
                if read and _transient(exc) and attempt < tries:
                    delay = self._backoff(attempt)
                    log.warning("Bluesky: %s failed (%s); try %d of %d in %.1f s", what, _short(exc),
                                attempt + 1, tries, delay)
                    self._sleep(delay)
                    continue
                raise self._translate(exc, what, tries if read else 1) from None
        raise AssertionError("unreachable")

    def _backoff(self, attempt: int) -> float:
        return min(self.settings.backoff_base * 2 ** (attempt - 1), self.settings.backoff_max)

    def _translate(self, exc: BaseException, what: str, tries: int = 1) -> ApiError:
        status, error, message = _details(exc)
        detail = f"{status} {error}: {message}" if message else f"{status} {error}"
        times = f" ({tries} tries)" if tries > 1 else ""
        if isinstance(exc, at_exc.LoginRequiredError) or error in _TOKEN_ERRORS or status == 401:
            return CredentialsRejected(f"Bluesky refused the bot's credentials on {what} ({detail})", status=401)
        if isinstance(exc, at_exc.RateLimitExceededError):
            reset_at = exc.reset_at.timestamp() if exc.reset_at else None
            if reset_at is None and exc.retry_after is not None:
                reset_at = time.time() + exc.retry_after
            when = (f"; it resets at {datetime.fromtimestamp(reset_at, timezone.utc):%Y-%m-%d %H:%M:%S} UTC"
                    if reset_at else "")
            return RateLimited(f"Bluesky rate limit hit trying to {what}{when}", reset_at)
        if status == 403 or error in _ACCOUNT_GONE:
            result = AccessDenied(f"Bluesky refused to {what} ({detail})", status=status or 403)
            result.xrpc_error = error
            return result
        if isinstance(exc, (at_exc.InvokeTimeoutError, httpx.TimeoutException)):
            return ServiceUnavailable(f"Bluesky did not answer within {self.settings.request_timeout:g} s trying "
                                      f"to {what}{times}")
        if _transient(exc):
            return ServiceUnavailable(f"Bluesky failed to {what}{times}: {detail}", status=status)
        if isinstance(exc, (ValueError, at_exc.ModelError)) and status is None:
            return ApiError(f"Bluesky answered {what} with something unexpected: {_short(exc)}")
        result = ApiError(f"Bluesky refused to {what} ({detail})", status=status)
        result.xrpc_error = error
        return result


class _Raw(Exception):
    """An SDK failure handed back as it is (posting decides itself what it means)."""

    def __init__(self, exc: BaseException):
        super().__init__(str(exc))
        self.exc = exc


# --- helpers ------------------------------------------------------------------------------------
def _details(exc: BaseException) -> tuple[int | None, str, str]:
    """(HTTP status, XRPC error name, message) of an SDK failure, one line each."""
    response = getattr(exc, "response", None)
    if response is None:
        cause = exc.__cause__ or exc.__context__
        return None, type(cause or exc).__name__, _short(cause) if cause else ""
    content = response.content
    error = getattr(content, "error", None) or ""
    message = getattr(content, "message", None) or ""
    return response.status_code, str(error), " ".join(str(message).split())[:300]


def _is_auth(exc: BaseException) -> bool:
    status, error, _ = _details(exc)
    return status == 401 or error in _TOKEN_ERRORS or isinstance(exc, at_exc.LoginRequiredError)


def _transient(exc: BaseException) -> bool:
    """5xx answers, timeouts and dropped connections: worth another try."""
    if isinstance(exc, (at_exc.NetworkError, httpx.TransportError)):
        response = getattr(exc, "response", None)
        return response is None or response.status_code >= 500  # not a 409/413
    response = getattr(exc, "response", None)
    return isinstance(exc, at_exc.RequestErrorBase) and response is not None and response.status_code >= 500


def _never_sent(exc: BaseException) -> bool:
    """True when the request certainly never reached the server (no connection was made)."""
    cause = exc if isinstance(exc, httpx.HTTPError) else exc.__cause__
    return isinstance(cause, (httpx.ConnectError, httpx.ConnectTimeout))


def _short(exc: BaseException | None) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _split_uri(uri: str) -> tuple[str, str, str]:
    """at://did/collection/rkey -> (did, collection, rkey); ValueError otherwise."""
    match = re.fullmatch(r"at://([^/]+)/([^/]+)/([^/]+)", uri or "")
    if not match:
        raise ValueError(f"not an at:// record URI: {uri!r}")
    return match[1], match[2], match[3]


def _did_of(uri: str) -> str:
    return uri[len("at://"):].split("/", 1)[0] if uri.startswith("at://") else ""


def _quotes_other(record: Any, did: str) -> bool:
    embed = getattr(record, "embed", None)
    inner = getattr(embed, "record", None)
    inner = getattr(inner, "record", inner)  # recordWithMedia nests one level deeper
    uri = getattr(inner, "uri", None)
    return bool(uri) and _did_of(uri) != did


def _own_post(uri: str, value: Any) -> dict:
    reply = getattr(value, "reply", None)
    return {"id": uri, "text": getattr(value, "text", "") or "", "created_at": _iso(getattr(value, "created_at", None)),
            "conversation_id": reply.root.uri if reply is not None else uri,
            "in_reply_to_id": reply.parent.uri if reply is not None else None}


def _parse_time(value: str) -> datetime:
    parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _iso(value: str | None) -> str | None:
    """An AT Protocol datetime as "YYYY-MM-DDTHH:MM:SS.ffffffZ" (UTC)."""
    if not value:
        return None
    try:
        return _parse_time(value).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    except ValueError:
        return None


def _micros(value: str) -> int:
    delta = _parse_time(value) - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def _sort_time(post: Any) -> datetime:
    """Where a post sorts in the AppView's feeds: the earlier of createdAt and indexedAt."""
    indexed = _parse_time(post.indexed_at)
    try:
        created = _parse_time(post.record.created_at)
    except (AttributeError, ValueError, TypeError):
        return indexed
    return min(created, indexed)


def _now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


# --- record keys (TIDs) -------------------------------------------------------------------------
_TID_ALPHABET = "234567abcdefghijklmnopqrstuvwxyz"
_tid_lock = threading.Lock()
_last_tid = 0


def new_tid() -> str:
    """A fresh TID (13 chars: microseconds since the epoch and a random clock id), growing
    within this process, as the PDS would pick for a post's record key."""
    global _last_tid
    with _tid_lock:
        value = (time.time_ns() // 1000) << 10 | random.getrandbits(10)
        value = max(value, _last_tid + 1)
        _last_tid = value
    return _encode_tid(value)


def tid_for(key: str) -> str | None:
    """The TID of a store record key ("20261201T151200123456-1a2b3c4d": its recording time
    and 10 bits of its random part), or None for a key of another form. The same record
    always gets the same TID, so a post sent under it is found by it after a restart."""
    match = re.fullmatch(r"(\d{8}T\d{12})-([0-9a-f]{8})", key)
    if match is None:
        return None
    when = datetime.strptime(match[1], "%Y%m%dT%H%M%S%f").replace(tzinfo=timezone.utc)
    value = (int(when.timestamp()) * 1_000_000 + when.microsecond) << 10 | (int(match[2], 16) & 1023)
    return _encode_tid(value)


def _encode_tid(value: int) -> str:
    out = ""
    for _ in range(13):
        out = _TID_ALPHABET[value & 31] + out
        value >>= 5
    return out


def _tid_time(rkey: str) -> datetime | None:
    if len(rkey) != 13 or any(c not in _TID_ALPHABET for c in rkey):
        return None
    value = 0
    for c in rkey:
        value = value * 32 + _TID_ALPHABET.index(c)
    return datetime.fromtimestamp((value >> 10) / 1e6, timezone.utc)


# --- graphemes ----------------------------------------------------------------------------------
def _joins_previous(ch: str, prev: str) -> bool:
    """Approximate extended-grapheme rules (UAX #29) for when `regex` is not installed:
    combining marks, ZWJ sequences, variation selectors, emoji modifiers, tag characters,
    regional-indicator pairs (handled by the caller), Hangul jamo and CR LF."""
    cp, pp = ord(ch), ord(prev)
    if prev == "\r" and ch == "\n":
        return True
    if unicodedata.category(ch) in ("Mn", "Me", "Mc"):
        return True
    if cp == 0x200D or pp == 0x200D:  # ZWJ joins what is around it
        return True
    if 0xFE00 <= cp <= 0xFE0F or 0xE0100 <= cp <= 0xE01EF or 0x1F3FB <= cp <= 0x1F3FF or 0xE0020 <= cp <= 0xE007F:
        return True
    if 0x1160 <= cp <= 0x11FF or 0xD7B0 <= cp <= 0xD7FF:  # Hangul vowel/trailing jamo
        return 0x1100 <= pp <= 0x11FF or 0xAC00 <= pp <= 0xD7A3 or 0xD7B0 <= pp <= 0xD7FF
    return False


def graphemes(text: str) -> int:
    """How many user-perceived characters `text` has (as Bluesky counts a post's length)."""
    if _regex is not None:
        return len(_regex.findall(r"\X", text))
    count, prev, flags = 0, "", 0
    for ch in text:
        if 0x1F1E6 <= ord(ch) <= 0x1F1FF:  # regional indicators pair up into flags
            flags += 1
            if flags % 2 == 0:
                prev = ch
                continue
        else:
            flags = 0
        if not prev or not _joins_previous(ch, prev):
            count += 1
        prev = ch
    return count
