"""X: the bot's only door to the X API: tweepy's v2 Client with timeouts, bounded retries
and typed errors, returning plain dicts.

- Host: tweepy hard-codes https://api.twitter.com, so every request goes through a
  `requests.Session` that rewrites it to `settings.api_base_url` (the sandbox in tests);
  the OAuth 1.0a signature is computed over the rewritten URL.
- Auth: posting, `me()` and our own timeline use OAuth 1.0a user context; reads use the
  bearer token when there is one, else the user context (tweepy would send "Bearer None").
- Faults: tweepy's `wait_on_rate_limit` is off (it recurses without end when a 429 has no
  reset header). Instead tenacity (well kept, bounded attempts, backoff with jitter)
  retries 429s (sleeping until x-rate-limit-reset, or backing off when it is absent),
  5xx answers, dropped connections and timeouts, at most `settings.max_attempts` tries.
- Posting is not idempotent (X takes no idempotency key): after a timeout, a dropped
  connection or a 5xx, the post may have landed anyway. So a POST is retried only when
  it certainly did not arrive (429, no connection made). After an unclear try the post
  is looked for among the bot's recent posts, by normalized text (X rewrites links to
  t.co, escapes HTML, normalizes Unicode and puts a reply's @handle in front), a few
  times over `settings.lookup_window` seconds because timelines lag. Found: sent. Not
  found: `OutcomeUnknown`, and the caller gives the post up: a missed slot is
  acceptable, a duplicate never is.
- Cost: every call is counted by kind in a `bot.costs.Meter` (when given one), which
  can also refuse calls once a daily spending cap is reached.
"""
from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

import requests
import tenacity
import tweepy

from bot.costs import Meter
from bot.errors import BotError
from bot.platforms.base import (
    AccessDenied,
    AccountUnavailable,
    ApiError,
    CredentialsMissing,
    CredentialsRejected,
    DuplicatePost,
    PostRefused,
    RateLimited,
    ServiceUnavailable,
    look_for_lost_post,
    retrying,
)
from bot.platforms.text import comparable
from bot.settings import Settings, is_loopback
from trainer.text import MAX_WEIGHTED_LENGTH, has_link, is_retweet, weighted_length

log = logging.getLogger(__name__)

# tweepy logs request headers (the bearer token) and requests-oauthlib/oauthlib log OAuth
# parameters at DEBUG: keep them quiet even under `-v`, secrets never reach the logs.
for _name in ("tweepy", "requests_oauthlib", "oauthlib"):
    logging.getLogger(_name).setLevel(logging.INFO)

X_HOST = "https://api.twitter.com"
PAGE_SIZE = 100
TIMELINE_CAP = 3200
MENTIONS_CAP = 800
LOOKUP_POSTS = 20  # own posts read to find one whose answer was lost ($0.001 each)
MAX_PAGES = 64  # a safety net against a server that never stops handing out next_token
HANDLE_RE = re.compile(r"[A-Za-z0-9_]{1,15}")
TWEET_FIELDS = ["created_at", "author_id", "conversation_id", "in_reply_to_user_id", "referenced_tweets"]


# --- the session that sends tweepy's requests to another host --------------------------------
class _RedirectingSession(requests.Session):
    def __init__(self, base_url: str, timeout: float):
        super().__init__()
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        if is_loopback(urlsplit(self.base_url).hostname or ""):
            self.trust_env = False  # no proxy from the environment for a local sandbox

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        if isinstance(url, str) and url.startswith(X_HOST):
            url = self.base_url + url[len(X_HOST):]
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.timeout  # tweepy sets none: without one a call can hang forever
        return super().request(method, url, *args, **kwargs)


# --- the client -------------------------------------------------------------------------------
class XClient:
    """X API v2 for the bot. Every method returns plain dicts/str/bool, or raises an ApiError.

    `settings` gives credentials, base URL, timeout and retry limits; keyword overrides
    replace single fields (`XClient(settings, max_attempts=2)`). `sleep` and `clock` are
    the waits and the time used for retries (tests pass a recorder so nothing really waits).
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        meter: Meter | None = None,
        **overrides: Any,
    ):
        settings = settings or Settings()
        if overrides:
            settings = replace(settings, **overrides)
        if not settings.has_credentials and not settings.bearer_token:
            raise CredentialsMissing(
                "no X credentials: set TWITTER_CONSUMER_KEY, TWITTER_CONSUMER_SECRET, TWITTER_ACCESS_TOKEN "
                "and TWITTER_ACCESS_TOKEN_SECRET (and optionally TWITTER_BEARER_TOKEN)"
            )
        self.settings = settings
        self.meter = meter
        self._sleep = sleep
        self._clock = clock
        self._client = tweepy.Client(
            bearer_token=settings.bearer_token,
            consumer_key=settings.consumer_key,
            consumer_secret=settings.consumer_secret,
            access_token=settings.access_token,
            access_token_secret=settings.access_token_secret,
            return_type=dict,
            wait_on_rate_limit=False,
        )
        self._client.session = _RedirectingSession(settings.api_base_url, settings.request_timeout)
        # Reads go app-only when there is a bearer token, else as the bot's user.
        self._read_as_user = settings.bearer_token is None
        self._me: dict | None = None
        self._rejected: CredentialsRejected | None = None
        self._backoff = tenacity.wait_random_exponential(multiplier=settings.backoff_base, max=settings.backoff_max)

    name = "x"

    @property
    def can_post(self) -> bool:
        return self.settings.has_credentials

    def fits(self, text: str) -> bool:
        """X's rule: at most 280, counted by twitter-text weights (a link counts 23)."""
        return weighted_length(text) <= MAX_WEIGHTED_LENGTH

    def close(self) -> None:
        self._client.session.close()

    # --- accounts ---------------------------------------------------------------------------
    def me(self) -> dict:
        """The bot's own account: {"id", "username", "name"} (cached after the first call)."""
        if self._me is None:
            self._need_user_context("read the bot's own account")
            self._allow("owned_read")
            answer = self._call("read the bot's own account", self._client.get_me, user_context=True, user_auth=True)
            self._spent("owned_read")
            data = answer.get("data")
            if not data:
                raise ApiError(f"X API answered GET /2/users/me without an account: {_errors_text(answer)}")
            self._me = {"id": str(data["id"]), "username": data["username"], "name": data.get("name", "")}
        return dict(self._me)

    def resolve(self, handle: str) -> dict:
        """{"id", "username" (X's spelling), "name", "protected"} for a handle.

        Raises AccountUnavailable for an unknown or suspended account. A protected one is
        returned with protected=True (fetch_posts refuses it)."""
        handle = _check_handle(handle)
        self._allow("user_read")
        answer = self._call(
            f"look up @{handle}", self._client.get_user, username=handle,
            user_fields=["protected", "created_at"], user_auth=self._read_as_user,
        )
        self._spent("user_read")
        return self._user_from(answer, handle)

    def _user_by_id(self, user_id: str) -> dict:
        self._allow("user_read")
        answer = self._call(
            f"look up user {user_id}", self._client.get_user, id=user_id,
            user_fields=["protected", "created_at"], user_auth=self._read_as_user,
        )
        self._spent("user_read")
        return self._user_from(answer, user_id)

    @staticmethod
    def _user_from(answer: dict, asked: str) -> dict:
        data = answer.get("data")
        if not data:
            raise _account_error(asked, answer.get("errors") or [])
        return {
            "id": str(data["id"]), "username": data["username"], "name": data.get("name", ""),
            "protected": bool(data.get("protected", False)),
        }

    # --- reading posts --------------------------------------------------------------------
    def fetch_posts(
        self,
        handle_or_id: str | int,
        since_id: str | None = None,
        include_replies: bool | None = None,
        include_retweets: bool = False,
        limit: int = TIMELINE_CAP,
        username: str | None = None,
    ) -> list[dict]:
        """An account's posts newer than `since_id`, oldest first, at most the newest `limit`
        (the API reaches only the newest 3,200). Dicts: id (str), user, created_at (ISO), text.

        A handle is resolved first; an int or an all-digit string is taken as a user id
        (looked up too, unless its `username` is given).
        Replies to other accounts are dropped unless include_replies (default: the setting);
        the API is asked for replies anyway, because exclude=replies cuts its reach to 800.
        """
        if include_replies is None:
            include_replies = self.settings.include_replies
        if (isinstance(handle_or_id, int) or str(handle_or_id).isdigit()) and username:
            # a known account: no look-up ($0.01 each); a protected or gone one errors below
            user = {"id": str(handle_or_id), "username": username, "protected": False}
        elif isinstance(handle_or_id, int) or str(handle_or_id).isdigit():
            user = self._user_by_id(str(handle_or_id))
        else:
            user = self.resolve(str(handle_or_id))
        name = user["username"]
        if user["protected"]:
            raise AccountUnavailable(name, "protected")
        params: dict[str, Any] = {"max_results": PAGE_SIZE, "tweet_fields": TWEET_FIELDS, "since_id": since_id}
        if not include_retweets:
            params["exclude"] = ["retweets"]
        posts: list[dict] = []
        pages = self._pages(f"download @{name}'s posts", self._client.get_users_tweets, user["id"], params, name, "post_read")
        for answer in pages:
            for tweet in answer.get("data", []):
                if not include_retweets and (is_retweet(tweet["text"]) or _refers(tweet, "retweeted")):
                    continue
                if not include_replies and tweet.get("in_reply_to_user_id") not in (None, user["id"]):
                    continue  # a reply to someone else (a self-reply continues a thread: kept)
                posts.append({"id": str(tweet["id"]), "user": name, "created_at": _iso(tweet.get("created_at")),
                              "text": tweet["text"]})
                if len(posts) >= limit:
                    break
            if len(posts) >= limit:
                break
        log.info("fetched %d posts of @%s%s", len(posts), name, f" newer than {since_id}" if since_id else "")
        return posts[::-1]

    def mentions(self, since: int | None = None, limit: int = MENTIONS_CAP) -> list[dict]:
        """Posts naming the bot newer than tweet id `since`, oldest first, at most the newest `limit`.

        Dicts: id, position (the tweet id as an int), author_id, author (username), text,
        created_at, conversation_id, in_reply_to_user_id, in_reply_to_id, referenced_tweets."""
        me = self.me()
        params: dict[str, Any] = {
            "max_results": PAGE_SIZE, "tweet_fields": TWEET_FIELDS, "since_id": str(since) if since else None,
            "expansions": ["author_id"], "user_fields": ["username"],
        }
        found: list[dict] = []
        pages = self._pages("read the bot's mentions", self._client.get_users_mentions, me["id"], params, me["username"],
                            "owned_read")
        for answer in pages:
            authors = {str(u["id"]): u["username"] for u in answer.get("includes", {}).get("users", [])}
            for tweet in answer.get("data", []):
                refs = [{"type": r["type"], "id": str(r["id"])} for r in tweet.get("referenced_tweets", [])]
                found.append({
                    "id": str(tweet["id"]),
                    "position": int(tweet["id"]),
                    "author_id": str(tweet.get("author_id", "")),
                    "author": authors.get(str(tweet.get("author_id", ""))),
                    "text": tweet["text"],
                    "created_at": _iso(tweet.get("created_at")),
                    "conversation_id": str(tweet.get("conversation_id") or tweet["id"]),
                    "in_reply_to_user_id": tweet.get("in_reply_to_user_id"),
                    "in_reply_to_id": next((r["id"] for r in refs if r["type"] == "replied_to"), None),
                    "referenced_tweets": refs,
                })
                if len(found) >= limit:
                    break
            if len(found) >= limit:
                break
        return found[::-1]

    def recent_own_posts(self, limit: int = 100) -> list[dict]:
        """The bot's newest posts (at most 100), oldest first: id, text, created_at,
        conversation_id, in_reply_to_id. Used to find out whether a post landed."""
        me = self.me()
        self._allow("owned_read")
        answer = self._call(
            "read the bot's own recent posts", self._client.get_users_tweets, me["id"],
            max_results=max(5, min(PAGE_SIZE, limit)), tweet_fields=TWEET_FIELDS, user_auth=True, user_context=True,
        )
        self._spent("owned_read", len(answer.get("data", [])))
        if "data" not in answer and answer.get("errors"):
            raise _account_error(me["username"], answer["errors"])
        out = []
        for tweet in answer.get("data", [])[:limit]:
            out.append({
                "id": str(tweet["id"]), "text": tweet["text"], "created_at": _iso(tweet.get("created_at")),
                "conversation_id": str(tweet.get("conversation_id") or tweet["id"]),
                "in_reply_to_id": next((str(r["id"]) for r in tweet.get("referenced_tweets", []) if r["type"] == "replied_to"), None),
            })
        return out[::-1]

    def find_own_post(self, text: str, in_reply_to_id: str | None = None, key: str | None = None) -> str | None:
        """The id of a recent post of the bot with this text (and parent), or None.

        Compared as X changes text (see `comparable`): links, HTML escaping, Unicode
        form, whitespace and a reply's leading @handles do not count."""
        wanted = comparable(text, reply=in_reply_to_id is not None)
        # the newest 20: a post being looked for is among them, and each one read is billed
        for post in reversed(self.recent_own_posts(limit=LOOKUP_POSTS)):
            if in_reply_to_id is not None and post["in_reply_to_id"] != str(in_reply_to_id):
                continue
            if comparable(post["text"], reply=post["in_reply_to_id"] is not None) == wanted:
                return post["id"]
        return None

    # --- writing --------------------------------------------------------------------------
    def post(self, text: str, key: str | None = None) -> str:
        """Post `text` as the bot; returns the new post's id. (X takes no idempotency key.)"""
        return self._create(text, None)

    def reply(self, text: str, in_reply_to_id: str, key: str | None = None) -> str:
        """Post `text` as a reply to post `in_reply_to_id`; returns the new post's id."""
        return self._create(text, str(in_reply_to_id))

    def delete(self, post_id: str) -> bool:
        """Delete one of the bot's posts; False if it was already gone."""
        self._check_can_write("delete a post")
        self._allow("delete")
        answer = self._call(f"delete post {post_id}", self._client.delete_tweet, str(post_id), user_auth=True, user_context=True)
        self._spent("delete")
        return bool(answer.get("data", {}).get("deleted"))

    def _create(self, text: str, in_reply_to_id: str | None) -> str:
        what = f"reply to post {in_reply_to_id}" if in_reply_to_id else "post"
        self._check_can_write(what)
        kind = "post_link" if has_link(text) else "post"
        self._allow(kind)

        def attempt() -> dict:
            try:
                return self._client.create_tweet(text=text, in_reply_to_tweet_id=in_reply_to_id, user_auth=True)
            except (requests.ConnectionError, requests.Timeout, tweepy.TwitterServerError) as exc:
                if _never_sent(exc):
                    raise  # retried: nothing reached X
                log.warning("X API: the %s may have been sent (%s); looking for it", what, _short(exc))
                found = look_for_lost_post(lambda: self.find_own_post(text, in_reply_to_id), what=what,
                                           cause=_short(exc), place="the bot's timeline",
                                           window=self.settings.lookup_window, sleep=self._sleep)
                return {"data": {"id": found}}

        try:
            answer = self._call(what, attempt, user_context=True)
        except AccessDenied as exc:
            if _ABOUT_THE_POST_RE.search(str(exc)):
                raise PostRefused(str(exc), status=403) from None
            raise  # the app or account may not post: every post would be refused
        except ApiError as exc:
            if exc.status == 400 and type(exc) is ApiError:
                raise PostRefused(str(exc), status=400) from None
            raise
        self._spent(kind)
        post_id = str(answer["data"]["id"])
        log.info("posted %s%s", post_id, f" in reply to {in_reply_to_id}" if in_reply_to_id else "")
        return post_id

    # --- plumbing ---------------------------------------------------------------------------
    def _need_user_context(self, what: str) -> None:
        if not self.settings.has_credentials:
            raise CredentialsMissing(
                f"cannot {what}: it needs TWITTER_CONSUMER_KEY, TWITTER_CONSUMER_SECRET, "
                "TWITTER_ACCESS_TOKEN and TWITTER_ACCESS_TOKEN_SECRET"
            )

    def _check_can_write(self, what: str) -> None:
        self._need_user_context(what)
        if self._rejected is not None:  # posting stops after a 401 until restarted with good keys
            raise CredentialsRejected(f"not trying to {what}: {self._rejected}", status=401)

    def _pages(self, what: str, method: Callable[..., dict], user_id: str, params: dict, name: str, kind: str):
        """Yield each page of a paged timeline, following meta.next_token."""
        token = None
        for _ in range(MAX_PAGES):
            self._allow(kind)
            answer = self._call(what, method, user_id, pagination_token=token, user_auth=self._read_as_user, **params)
            self._spent(kind, len(answer.get("data", [])))
            if "data" not in answer and answer.get("errors"):
                raise _account_error(name, answer["errors"])
            yield answer
            token = answer.get("meta", {}).get("next_token")
            if not token:
                return

    def _allow(self, kind: str) -> None:
        if self.meter is not None:
            self.meter.check(kind)

    def _spent(self, kind: str, units: int = 1) -> None:
        if self.meter is not None:
            self.meter.record(kind, units)

    def _call(self, what: str, fn: Callable[..., dict], *args: Any, user_context: bool = False, **kwargs: Any) -> dict:
        """fn(*args, **kwargs) with bounded retries; any failure becomes an ApiError."""
        if kwargs.get("user_auth"):
            user_context = True
        retry = retrying(log, "X API", what, self.settings.max_attempts, self._retryable, self._wait, self._sleep, _short)
        try:
            return retry(fn, *args, **kwargs)
        except BotError:  # ours already (an ApiError, or the daemon stopping during a wait)
            raise
        except Exception as exc:
            error = self._translate(exc, what, user_context)
            if isinstance(error, CredentialsRejected) and user_context:
                self._rejected = error
            raise error from None

    def _retryable(self, exc: BaseException) -> bool:
        if isinstance(exc, tweepy.TooManyRequests):
            if _is_usage_cap(exc):
                return False  # a monthly cap does not reset within minutes
            reset = exc.reset_time
            return reset is None or reset - self._clock() <= self.settings.rate_limit_max_wait
        return isinstance(exc, (tweepy.TwitterServerError, requests.ConnectionError, requests.Timeout))

    def _wait(self, state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, tweepy.TooManyRequests) and exc.reset_time is not None:
            # Sleep until the window resets (+1 s for clock skew), never longer than allowed.
            return min(max(exc.reset_time - self._clock(), 0) + 1, self.settings.rate_limit_max_wait)
        return self._backoff(state)

    def _translate(self, exc: BaseException, what: str, user_context: bool) -> ApiError:
        tries = self.settings.max_attempts
        if isinstance(exc, tweepy.Unauthorized):
            names = ("TWITTER_CONSUMER_KEY/SECRET and TWITTER_ACCESS_TOKEN/SECRET" if user_context
                     else "TWITTER_BEARER_TOKEN")
            return CredentialsRejected(f"X rejected the credentials (401) on {what}: check {names}", status=401)
        if isinstance(exc, tweepy.Forbidden):
            if _is_duplicate(exc):
                return DuplicatePost(f"X refused the {what} as a duplicate of an earlier post (403)", status=403)
            return AccessDenied(f"X refused to {what} (403): {_api_text(exc)}", status=403)
        if isinstance(exc, tweepy.TooManyRequests):
            if _is_usage_cap(exc):
                return RateLimited(f"X refused to {what}: the API's usage cap is exhausted ({_api_text(exc)})")
            if exc.reset_time is not None and exc.reset_time - self._clock() > self.settings.rate_limit_max_wait:
                at = datetime.fromtimestamp(exc.reset_time, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
                return RateLimited(f"X rate limit hit trying to {what}; it resets at {at}, too far away to wait", exc.reset_time)
            return RateLimited(f"X rate limit hit trying to {what} ({tries} tries)", exc.reset_time)
        if isinstance(exc, tweepy.TwitterServerError):
            return ServiceUnavailable(f"X API failed to {what}: {_short(exc)} ({tries} tries)", status=exc.response.status_code)
        if isinstance(exc, requests.Timeout):
            return ServiceUnavailable(f"X API did not answer within {self.settings.request_timeout:g} s trying to {what} ({tries} tries)")
        if isinstance(exc, requests.ConnectionError):
            return ServiceUnavailable(f"cannot reach {self.settings.api_base_url} to {what} ({tries} tries): {_short(exc)}")
        if isinstance(exc, tweepy.HTTPException):
            return ApiError(f"X API refused to {what}: {_short(exc)}", status=exc.response.status_code)
        if isinstance(exc, ValueError):  # requests.JSONDecodeError: not the X API answering?
            return ApiError(f"X API answered {what} with something that is not JSON; is TWITTER_API_BASE_URL "
                            f"({self.settings.api_base_url}) right?")
        return ApiError(f"X API call failed ({what}): {_short(exc)}")


# --- helpers ------------------------------------------------------------------------------------
def _check_handle(handle: str) -> str:
    handle = handle.strip().lstrip("@")
    if not HANDLE_RE.fullmatch(handle):
        raise BotError(f"{handle!r} is not an X handle (1-15 letters, digits or _)")
    return handle


def _account_error(asked: str, errors: list[dict]) -> ApiError:
    """The error for a 200 answer that carries only `errors` about an account."""
    first = errors[0] if errors else {}
    detail = str(first.get("detail", ""))
    if "suspended" in detail.lower():
        return AccountUnavailable(asked, "suspended")
    if "not-authorized" in str(first.get("type", "")) or first.get("title") == "Authorization Error":
        return AccountUnavailable(asked, "protected")
    if "resource-not-found" in str(first.get("type", "")) or first.get("title") == "Not Found Error":
        return AccountUnavailable(asked, "unknown")
    return ApiError(f"X API refused the request about @{asked}: {detail or errors}")


def _refers(tweet: dict, kind: str) -> bool:
    return any(r.get("type") == kind for r in tweet.get("referenced_tweets", []))


def _is_duplicate(exc: tweepy.HTTPException) -> bool:
    return any("duplicate" in str(m).lower() for m in exc.api_messages) or "duplicate" in str(exc).lower()


def _is_usage_cap(exc: tweepy.HTTPException) -> bool:
    try:
        return "UsageCapExceeded" in str(exc.response.json().get("title", ""))
    except ValueError:
        return False


def _api_text(exc: tweepy.HTTPException) -> str:
    try:
        body = exc.response.json()
    except ValueError:
        return _short(exc)
    return str(body.get("detail") or body.get("title") or _short(exc))


def _errors_text(answer: dict) -> str:
    return "; ".join(str(e.get("detail") or e.get("message") or e) for e in answer.get("errors", [])) or "no data"


def _short(exc: BaseException | None) -> str:
    """An exception as one line (tweepy's messages span several)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def _iso(value: str | None) -> str | None:
    """X's "2018-01-01T12:12:00.000Z" as the store's "2018-01-01T12:12:00Z"."""
    if not value:
        return None
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _never_sent(exc: BaseException) -> bool:
    """True when the request certainly never reached X (no connection was made)."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(exc, requests.ConnectionError) and "NewConnectionError" in type(reason).__name__


# X's 403 bodies that are about the post replied to, not about the bot's permissions
_ABOUT_THE_POST_RE = re.compile(r"deleted or not visible|reply to this conversation|not allowed to reply|"
                                r"not visible to you|has been deleted", re.IGNORECASE)
