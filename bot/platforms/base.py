"""What a platform must do for the bot, and the errors every platform raises.

The daemon, the CLI and the tests talk to X, Bluesky and Mastodon only through this
interface (`Platform`); each platform's client lives in one file beside this one.
Everything the daemon guarantees (a slot posted once, each mention answered once, the
loop guard, budgets, kill -9 safety) is built on these methods and these errors, so it
holds on every platform.

Plain dicts cross the interface:
  account  {"id", "username"}: `id` is the platform's stable id (X user id, Bluesky DID,
           Mastodon account id), `username` the handle without "@" (Mastodon: "name@server"
           for an account of another server, as the platform writes it).
  post     {"id", "created_at" (ISO 8601 UTC), "text"} (plus "kind": "post" | "reply"):
           a target's own public posts, reposts and quotes of others left out.
  mention  {"id", "position", "author_id", "author", "text", "created_at",
           "conversation_id", "in_reply_to_id"}: `position` is an int that grows with
           newer mentions (X: the tweet id; Mastodon: the notification id; Bluesky: the
           notification's indexed time in microseconds); the daemon keeps the greatest it
           handled and asks for newer ones (`mentions(since=...)`).
  own post {"id", "text", "created_at", "conversation_id", "in_reply_to_id"}.

The error model (what the caller does with each):
  PostRefused         final for this post only (deleted or hidden parent, too long...)
  DuplicatePost       the platform refuses the text as a repeat: try another candidate
  CredentialsRejected / AccessDenied   about the account or app: posting stops
  RateLimited         wait until `.reset_at` (epoch seconds) when it is known
  OutcomeUnknown      a post may or may not exist and was not found: never send it again
  ServiceUnavailable  nothing happened that we know of; retried later
  AccountUnavailable  a target that does not exist, is private or suspended
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

import tenacity

from bot.errors import BotError

log = logging.getLogger("bot.platforms")

PLATFORMS = ("x", "bluesky", "mastodon")
PLATFORM_NAMES = {"x": "X", "bluesky": "Bluesky", "mastodon": "Mastodon"}


# --- errors ---------------------------------------------------------------------------------
class ApiError(BotError):
    """The platform refused or failed a call; the message says which call and why."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class CredentialsMissing(ApiError):
    """The call needs credentials that are not configured."""


class CredentialsRejected(ApiError):
    """401: the keys, tokens or password are wrong or revoked. Posting stops until they are fixed."""


class AccessDenied(ApiError):
    """The API plan, the app's permissions or the token's scopes do not allow the call."""


class PostRefused(ApiError):
    """The platform refused this post itself (replying to a deleted or hidden post, to a
    conversation the bot may not join, a text it will not take): final for this post,
    not for the bot."""


class DuplicatePost(ApiError):
    """The platform refuses the text as a duplicate: the caller should pick another candidate."""


class AccountUnavailable(ApiError):
    """An unknown, protected or suspended account; `.handle` and `.reason` say which."""

    def __init__(self, handle: str, reason: str, platform: str = "x"):
        what = {
            "unknown": f"does not exist on {PLATFORM_NAMES.get(platform, platform)}",
            "protected": "is protected: its posts are not public",
            "suspended": "is suspended",
        }[reason]
        super().__init__(f"@{handle} {what}")
        self.handle = handle
        self.reason = reason


class OutcomeUnknown(ApiError):
    """A post or reply may or may not have been created: the answer was lost and the
    post was not found among the bot's posts within the look-up window (or the look-up
    was refused). It must never be sent again."""


class RateLimited(ApiError):
    """429 after the allowed retries, or a reset too far away to wait for (`.reset_at`)."""

    def __init__(self, message: str, reset_at: float | None = None):
        super().__init__(message, status=429)
        self.reset_at = reset_at


class ServiceUnavailable(ApiError):
    """5xx answers, timeouts or dropped connections on every try."""


# --- the interface --------------------------------------------------------------------------
class Platform(Protocol):
    """One platform as the bot uses it: the bot's own account (when logged in) and the
    public accounts it reads. Methods raise the errors above, never a library's own."""

    name: str  # "x", "bluesky" or "mastodon"
    can_post: bool  # logged in as the bot's account (else: reads only)

    def me(self) -> dict:
        """The bot's own account (cached)."""

    def resolve(self, handle: str) -> dict:
        """A public account by handle: {"id", "username"} or AccountUnavailable."""

    def fetch_posts(self, user_id: str, since_id: str | None = None, username: str | None = None,
                    limit: int | None = None) -> list[dict]:
        """The account's public posts newer than `since_id`, oldest first (at most `limit`,
        the newest ones; None: as many as the platform serves)."""

    def mentions(self, since: int | None = None) -> list[dict]:
        """Posts naming or answering the bot with `position` greater than `since`, oldest first."""

    def recent_own_posts(self, limit: int = 100) -> list[dict]:
        """The bot's newest posts, oldest first."""

    def find_own_post(self, text: str, in_reply_to_id: str | None = None, key: str | None = None) -> str | None:
        """The id of a recent post of the bot with this text (and parent), or None. `key`
        names the record it was sent under (Bluesky finds a post by it)."""

    def post(self, text: str, key: str | None = None) -> str:
        """Post `text` as the bot; its id. `key` names the slot, for platforms that take an
        idempotency key. OutcomeUnknown when it may or may not have landed."""

    def reply(self, text: str, in_reply_to_id: str, key: str | None = None) -> str:
        """Reply to post `in_reply_to_id` in its thread; the reply's id."""

    def delete(self, post_id: str) -> bool:
        """Delete one of the bot's posts; False when it was already gone."""

    def fits(self, text: str) -> bool:
        """Whether the platform takes `text` as one post (its length rule)."""

    def close(self) -> None:
        """Release connections."""


def look_for_lost_post(find: Callable[[], str | None], *, what: str, cause: str, place: str, window: float,
                       sleep: Callable[[float], None]) -> str:
    """The id of a post whose answer was lost: `find()` (None: not there) tried over
    `window` seconds with doubling waits, because timelines lag. OutcomeUnknown when it
    never shows up or `place` (the bot's own posts) cannot be read: never send it again."""
    waited, wait = 0.0, 1.0  # counted, not clocked: a test's sleep records instead of waiting
    why = f"it did not show up in {place}"
    while True:
        try:
            landed = find()
        except (AccessDenied, CredentialsRejected, AccountUnavailable) as exc:
            why = f"{place} cannot be read ({exc})"
            break
        except ApiError as exc:
            landed, why = None, f"looking for it failed ({exc})"
        if landed:
            log.info("the %s landed as %s despite the lost answer", what, landed)
            return landed
        left = window - waited
        if left <= 0:
            break
        sleep(min(wait, left))
        waited += min(wait, left)
        wait *= 2
    raise OutcomeUnknown(f"the {what} may or may not have been sent ({cause}); {why} within {window:g} s, "
                         "so it is given up, never sent again")


def retrying(logger: logging.Logger, name: str, what: str, attempts: int, retryable: Callable[[BaseException], bool],
             wait: Callable[[Any], float], sleep: Callable[[float], None],
             describe: Callable[[BaseException | None], str]) -> tenacity.Retrying:
    """The bounded retries of a client's calls (tenacity): at most `attempts` tries while
    `retryable(exc)`, waiting as `wait` says; each retry is logged as "<name>: <what>
    failed (<describe(exc)>); try n of m in s s"; the last failure is raised as it is."""
    return tenacity.Retrying(
        stop=tenacity.stop_after_attempt(attempts),
        retry=tenacity.retry_if_exception(retryable),
        wait=wait,
        sleep=sleep,
        before_sleep=lambda state: logger.warning(
            "%s: %s failed (%s); try %d of %d in %.1f s", name, what, describe(state.outcome.exception()),
            state.attempt_number + 1, attempts, state.next_action.sleep),
        reraise=True,
    )
