"""The three platforms behind one interface (base.py): which platform a handle names,
how a handle is written canonically, and the clients the bot uses: one for its own
account (where it posts) and readers for the targets' public posts, on any platform.

  X         @name or name (1-15 letters, digits, _)     bot/platforms/x.py (tweepy)
  Bluesky   name.bsky.social, any domain handle         bot/platforms/bluesky.py (atproto)
  Mastodon  @name@server                                bot/platforms/mastodon.py (Mastodon.py)
"""
from __future__ import annotations

import re
import threading
from typing import TYPE_CHECKING, Any, Callable

from bot.errors import BotError
from bot.platforms.base import PLATFORM_NAMES, PLATFORMS, CredentialsMissing, Platform

if TYPE_CHECKING:
    from bot.settings import Settings

X_HANDLE_RE = re.compile(r"[A-Za-z0-9_]{1,15}")
# a domain name: labels of letters, digits and hyphens (bsky.social, alice.example.com, trump.test)
BLUESKY_HANDLE_RE = re.compile(r"(?=.{3,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z][A-Za-z0-9-]*")
# name@server, the server a host name or address with an optional port
MASTODON_HANDLE_RE = re.compile(r"([A-Za-z0-9_]{1,30})@([A-Za-z0-9.-]+(:[0-9]{1,5})?)")

__all__ = ["PLATFORMS", "PLATFORM_NAMES", "Platform", "guess_platform", "canonical", "own_account", "Readers"]


def guess_platform(handle: str) -> str:
    """The platform a handle's form names: @name@server -> mastodon, a dotted name ->
    bluesky, else x."""
    cleaned = str(handle).strip().lstrip("@")
    if "@" in cleaned:
        return "mastodon"
    if "." in cleaned:
        return "bluesky"
    return "x"


def canonical(handle: str, platform: str | None = None) -> tuple[str, str]:
    """(platform, handle as stored): X "Name" (case kept), Bluesky "name.bsky.social"
    (lowercase), Mastodon "name@server" (server lowercase). BotError naming the rule
    when the handle cannot be one of that platform."""
    cleaned = str(handle).strip().lstrip("@")
    platform = platform or guess_platform(handle)
    if platform not in PLATFORMS:
        raise BotError(f"unknown platform {platform!r} (one of {', '.join(PLATFORMS)})")
    if platform == "x" and X_HANDLE_RE.fullmatch(cleaned):
        return platform, cleaned
    if platform == "bluesky" and BLUESKY_HANDLE_RE.fullmatch(cleaned):
        return platform, cleaned.lower()
    match = MASTODON_HANDLE_RE.fullmatch(cleaned)
    if platform == "mastodon" and match:
        return platform, f"{match[1]}@{match[2].lower()}"
    rule = {
        "x": "an X handle (1-15 letters, digits or _)",
        "bluesky": "a Bluesky handle (a domain name such as name.bsky.social)",
        "mastodon": "a Mastodon handle (@name@server)",
    }[platform]
    raise BotError(f"{handle!r} is not {rule}")


def own_account(settings: Settings, *, store: Any = None, sleep: Callable[[float], None] | None = None,
                meter: Any = None) -> Platform | None:
    """The client of the bot's own account on settings.platform, or None when nothing is
    configured for it (the bot then runs dry). On X a bearer token alone gives a reader."""
    kwargs = {"sleep": sleep} if sleep is not None else {}
    if settings.platform == "bluesky":
        from bot.platforms.bluesky import BlueskyClient

        return BlueskyClient(settings, store, **kwargs) if settings.has_credentials else None
    if settings.platform == "mastodon":
        from bot.platforms.mastodon import MastodonClient

        return MastodonClient(settings, **kwargs) if settings.has_credentials else None
    from bot.platforms.x import XClient

    if settings.has_x_credentials or settings.bearer_token:
        return XClient(settings, meter=meter, **kwargs)
    return None


class Readers:
    """Clients that read targets' public posts, one per platform (Mastodon: per home
    server), made on first use. Reading Bluesky and Mastodon needs no login; X needs the
    bot's X keys or a bearer token, whatever platform the bot posts on."""

    def __init__(self, settings: Settings, own: Platform | None, *, sleep: Callable[[float], None] | None = None,
                 meter: Any = None):
        self.settings = settings
        self.own = own
        self._sleep = sleep
        self._meter = meter
        self._clients: dict[str, Platform] = {}
        self._lock = threading.Lock()

    def for_target(self, platform: str, handle: str) -> Platform:
        """The reader of `handle` on `platform`; CredentialsMissing when X cannot be read."""
        s, kwargs = self.settings, ({"sleep": self._sleep} if self._sleep is not None else {})
        key = platform
        if platform == "mastodon":
            from bot.platforms.mastodon import home_server

            key = f"mastodon:{home_server(handle, s)[0]}"
        with self._lock:
            if key in self._clients:
                return self._clients[key]
            if self.own is not None and self.own.name == platform and platform != "mastodon":
                client = self.own
            elif platform == "x":
                if not (s.has_x_credentials or s.bearer_token):
                    raise CredentialsMissing("no X credentials: an X target's posts cannot be downloaded "
                                             "(set TWITTER_BEARER_TOKEN, or import an archive)")
                from bot.platforms.x import XClient

                client = XClient(s, meter=self._meter, **kwargs)
            elif platform == "bluesky":
                from bot.platforms.bluesky import BlueskyClient

                client = BlueskyClient(s, None, **kwargs)
            else:
                from bot.platforms.mastodon import MastodonClient

                client = MastodonClient(s, api_base_url=home_server(handle, s)[0], **kwargs)
            self._clients[key] = client
            return client

    def close(self) -> None:
        for client in self._clients.values():
            if client is not self.own:
                client.close()
        self._clients.clear()
