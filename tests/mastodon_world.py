"""The Mastodon world of the shared behaviour suite: a fresh Mastodon sandbox (real HTTP on
127.0.0.1) with the bot's account, a fan, and the sample target's public statuses.

The same API exists for X and Bluesky, so one suite runs against all three platforms."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from bot.sandbox.mastodon import (
    BOT_USERNAME,
    FAN_USERNAME,
    SANDBOX_ACCESS_TOKEN,
    TARGET_USERNAME,
    Sandbox,
    start_sandbox,
)


class MastodonWorld:
    platform = "mastodon"

    def __init__(self, sandbox: Sandbox | None = None):
        self.sandbox = sandbox or start_sandbox(port=0)
        self.target = self.sandbox.handle(TARGET_USERNAME)  # "@realDonaldTrump@127.0.0.1:PORT"
        self.fan = FAN_USERNAME  # a local account: its acct has no server part
        self.bot_username = BOT_USERNAME

    def bot_env(self) -> dict[str, str]:
        return {"BOT_PLATFORM": "mastodon", "MASTODON_API_BASE_URL": self.sandbox.url,
                "MASTODON_ACCESS_TOKEN": SANDBOX_ACCESS_TOKEN}

    def mention(self, text: str, reply_to: str | None = None) -> str:
        """The fan posts `text` naming the bot (@xmimic_bot put in front if absent),
        optionally in reply to status `reply_to`; the bot gets a mention notification."""
        return self.sandbox.add_mention(text, author=FAN_USERNAME, in_reply_to_id=reply_to)["id"]

    def bot_posts(self) -> list[dict]:
        """The bot's statuses as the server holds them (the source text), oldest first."""
        return [{"id": s["id"], "text": s["text"], "in_reply_to_id": s["in_reply_to_id"]}
                for s in self.sandbox.statuses_by(BOT_USERNAME)]

    def settle(self) -> None:
        """Nothing to wait for: the sandbox's timelines have no lag."""

    def close(self) -> None:
        self.sandbox.close()


@pytest.fixture
def mastodon_world() -> Iterator[MastodonWorld]:
    world = MastodonWorld()
    try:
        yield world
    finally:
        world.close()
