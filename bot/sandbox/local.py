"""Each platform on this machine, behind one small API, for the demo
(`python -m bot run --sandbox --platform P`) and the behaviour suite (tests/test_platforms.py):

  X         the project's X API sandbox (bot/sandbox/x.py), in this process
  Mastodon  the project's Mastodon sandbox (bot/sandbox/mastodon.py), in this process
  Bluesky   the reference PDS + AppView on 127.0.0.1 (bot/sandbox/bluesky.py), a Node process

  platform       "x" | "bluesky" | "mastodon"
  target         a public account with the sample timeline, as `targets add` takes it
  fan            the account that mentions the bot
  bot_username   the bot's handle
  bot_env()      the variables naming the bot's account (BOT_PLATFORM, credentials, URLs)
  mention(text, reply_to=None) -> id    the fan posts `text` naming the bot
  bot_posts()    the bot's posts as the server holds them, oldest first: id, text, in_reply_to_id
  settle()       wait until reads show every write so far
  close()
"""
from __future__ import annotations

from typing import Protocol

from bot.sandbox import mastodon as mastodon_sandbox
from bot.sandbox import x as x_sandbox


class Local(Protocol):
    platform: str
    target: str
    fan: str
    bot_username: str

    def bot_env(self) -> dict[str, str]: ...
    def mention(self, text: str, reply_to: str | None = None) -> str: ...
    def bot_posts(self) -> list[dict]: ...
    def settle(self) -> None: ...
    def close(self) -> None: ...


class LocalX:
    platform = "x"
    target = "realDonaldTrump"
    fan = x_sandbox.FAN_USERNAME
    bot_username = x_sandbox.BOT_USERNAME

    def __init__(self, sandbox: x_sandbox.Sandbox | None = None, port: int = 0):
        self.sandbox = sandbox or x_sandbox.start_sandbox(port=port)

    def bot_env(self) -> dict[str, str]:
        s = self.sandbox.settings()
        return {"BOT_PLATFORM": "x", "TWITTER_CONSUMER_KEY": s.consumer_key, "TWITTER_CONSUMER_SECRET": s.consumer_secret,
                "TWITTER_ACCESS_TOKEN": s.access_token, "TWITTER_ACCESS_TOKEN_SECRET": s.access_token_secret,
                "TWITTER_API_BASE_URL": s.api_base_url}

    def mention(self, text: str, reply_to: str | None = None) -> str:
        return self.sandbox.add_mention(text, author=self.fan, in_reply_to_id=reply_to)["id"]

    def bot_posts(self) -> list[dict]:
        return [{"id": p["id"], "text": p["text"], "in_reply_to_id": p["in_reply_to_id"]}
                for p in self.sandbox.posts_by(self.bot_username)]

    def settle(self) -> None:
        """Nothing to wait for (unless a test set a timeline lag)."""

    def close(self) -> None:
        self.sandbox.close()


class LocalMastodon:
    platform = "mastodon"
    fan = mastodon_sandbox.FAN_USERNAME  # a local account: its acct has no server part
    bot_username = mastodon_sandbox.BOT_USERNAME

    def __init__(self, sandbox: mastodon_sandbox.Sandbox | None = None, port: int = 0):
        self.sandbox = sandbox or mastodon_sandbox.start_sandbox(port=port)
        self.target = self.sandbox.handle(mastodon_sandbox.TARGET_USERNAME)  # "@realDonaldTrump@127.0.0.1:PORT"

    def bot_env(self) -> dict[str, str]:
        return {"BOT_PLATFORM": "mastodon", "MASTODON_API_BASE_URL": self.sandbox.url,
                "MASTODON_ACCESS_TOKEN": mastodon_sandbox.SANDBOX_ACCESS_TOKEN}

    def mention(self, text: str, reply_to: str | None = None) -> str:
        """The fan posts `text` naming the bot (@xmimic_bot put in front if absent)."""
        return self.sandbox.add_mention(text, author=self.fan, in_reply_to_id=reply_to)["id"]

    def bot_posts(self) -> list[dict]:
        return [{"id": s["id"], "text": s["text"], "in_reply_to_id": s["in_reply_to_id"]}
                for s in self.sandbox.statuses_by(self.bot_username)]

    def settle(self) -> None:
        """Nothing to wait for: the sandbox's timelines have no lag."""

    def close(self) -> None:
        self.sandbox.close()


def start(platform: str, port: int = 0) -> Local:
    """The platform running on this machine (BotError naming what is missing for Bluesky)."""
    if platform == "mastodon":
        return LocalMastodon(port=port)
    if platform == "bluesky":
        from bot.sandbox.bluesky import start_local

        return start_local()
    return LocalX(port=port)
