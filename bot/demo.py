"""`python -m bot run --sandbox`: the whole bot against the built-in X API sandbox.

Starts the sandbox in this process (real HTTP on 127.0.0.1), makes the shipped sample
account @realDonaldTrump a target, and runs the daemon with demo intervals: download,
fine-tune (60 s budget), the first post as soon as the model is ready, then one every
90 s; once the model exists a sandbox user mentions the bot, and the reply follows.
State goes to BOT_DATA_DIR/sandbox, apart from a real bot's.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import replace

from bot.daemon import Bot, run
from bot.sandbox.x import BOT_USERNAME, FAN_USERNAME, start_sandbox
from bot.settings import Settings
from bot.store import Store

log = logging.getLogger("bot.demo")

DEMO_TARGET = "realDonaldTrump"
DEMO_MENTION = "hey @{bot}, what would @realDonaldTrump say about the economy and the great jobs numbers?"


def demo_settings(settings: Settings, url: str, sandbox_settings: Settings) -> Settings:
    return replace(
        settings,
        consumer_key=sandbox_settings.consumer_key, consumer_secret=sandbox_settings.consumer_secret,
        access_token=sandbox_settings.access_token, access_token_secret=sandbox_settings.access_token_secret,
        bearer_token=None, api_base_url=url, data_dir=settings.data_dir / "sandbox", dry_run=False,
        refresh_interval=3600, train_interval=5, post_interval=90, post_jitter=0, post_cron=None,
        first_post_delay=0, quiet_hours=None, mentions_interval=10,
        finetune_max_seconds=min(settings.finetune_max_seconds, 60),
    )


def run_demo(settings: Settings, port: int = 0) -> int:
    sandbox = start_sandbox(port=port)
    try:
        settings = demo_settings(settings, sandbox.url, sandbox.settings())
        log.info("sandbox X API on %s; bot @%s imitates @%s (%d sample posts)", sandbox.url, BOT_USERNAME,
                 DEMO_TARGET, len(sandbox.posts_by(DEMO_TARGET)))
        with Store(settings.data_dir) as store:
            if store.target(DEMO_TARGET) is None:
                bot = Bot(settings, store)
                user = bot.platform.resolve(DEMO_TARGET)
                store.add_target(user["username"], user["id"], platform="x")
                bot.platform.close()

        def mention_when_ready(bot: Bot) -> None:
            def wait() -> None:
                while not bot.stop.wait(2):
                    if bot.store.model_info(DEMO_TARGET):
                        m = sandbox.add_mention(DEMO_MENTION.format(bot=BOT_USERNAME), author=FAN_USERNAME)
                        log.info("demo: @%s mentioned the bot (post %s): %s", FAN_USERNAME, m["id"], m["text"])
                        return

            threading.Thread(target=wait, name="demo-mention", daemon=True).start()

        return run(settings, on_ready=mention_when_ready)
    finally:
        sandbox.close()
