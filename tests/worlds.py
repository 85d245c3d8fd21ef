"""Test drivers, one per platform, with one API, so that one behaviour suite
(tests/test_platforms.py) runs against X (the project's sandbox), Mastodon (the project's
sandbox) and Bluesky (the reference implementation on 127.0.0.1):

  platform       "x" | "bluesky" | "mastodon"
  target         a public account with the sample timeline, as `targets add` takes it
  fan            the account that mentions the bot
  bot_username   the bot's handle
  bot_env()      the variables naming the bot's account (BOT_PLATFORM, credentials, URLs)
  mention(text, reply_to=None) -> id    the fan posts `text` naming the bot
  bot_posts()    the bot's posts as the server holds them, oldest first: id, text, in_reply_to_id
  settle()       wait until reads show every write so far
"""
from __future__ import annotations

from bot.sandbox.x import BOT_USERNAME, FAN_USERNAME, Sandbox


class XWorld:
    platform = "x"
    target = "realDonaldTrump"
    fan = FAN_USERNAME
    bot_username = BOT_USERNAME

    def __init__(self, sandbox: Sandbox):
        self.sandbox = sandbox

    def bot_env(self) -> dict[str, str]:
        s = self.sandbox.settings()
        return {"BOT_PLATFORM": "x", "TWITTER_CONSUMER_KEY": s.consumer_key, "TWITTER_CONSUMER_SECRET": s.consumer_secret,
                "TWITTER_ACCESS_TOKEN": s.access_token, "TWITTER_ACCESS_TOKEN_SECRET": s.access_token_secret,
                "TWITTER_API_BASE_URL": s.api_base_url}

    def mention(self, text: str, reply_to: str | None = None) -> str:
        return self.sandbox.add_mention(text, author=self.fan, in_reply_to_id=reply_to)["id"]

    def bot_posts(self) -> list[dict]:
        return [{"id": p["id"], "text": p["text"], "in_reply_to_id": p["in_reply_to_id"]}
                for p in self.sandbox.posts_by(BOT_USERNAME)]

    def settle(self) -> None:
        pass
