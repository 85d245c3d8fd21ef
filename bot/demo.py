"""`python -m bot run --sandbox [--platform P]`: the whole bot against a platform running
on this machine (bot/sandbox/local.py): X or Mastodon (the project's sandboxes, nothing
to install) or Bluesky (the reference PDS and AppView; `bash scripts/setup_bluesky.sh`
installs them).

Makes the sample account a target, and runs the daemon with demo intervals: download,
fine-tune (60 s budget), the first post as soon as the model is ready, then one every
90 s; once the model exists the fan mentions the bot, and the reply follows.
State goes to BOT_DATA_DIR/sandbox (X) or BOT_DATA_DIR/sandbox-PLATFORM, apart from a real bot's.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import replace

from bot.daemon import Bot, run
from bot.platforms import PLATFORM_NAMES, canonical
from bot.sandbox.local import start
from bot.settings import Settings
from bot.store import Store

log = logging.getLogger("bot.demo")

DEMO_MENTION = "hey @{bot}, what would {target} say about the economy and the great jobs numbers?"
# the settings that name the bot's account; the demo takes them from the local platform
ACCOUNT_FIELDS = ("platform", "consumer_key", "consumer_secret", "access_token", "access_token_secret", "bearer_token",
                  "api_base_url", "bluesky_handle", "bluesky_app_password", "bluesky_service", "bluesky_public_api",
                  "mastodon_api_base_url", "mastodon_access_token")


def demo_settings(settings: Settings, account: Settings) -> Settings:
    folder = "sandbox" if account.platform == "x" else f"sandbox-{account.platform}"
    return replace(
        settings, **{name: getattr(account, name) for name in ACCOUNT_FIELDS},
        data_dir=settings.data_dir / folder, dry_run=False,
        refresh_interval=3600, train_interval=5, post_interval=90, post_jitter=0, post_cron=None,
        first_post_delay=0, quiet_hours=None, mentions_interval=10,
        finetune_max_seconds=min(settings.finetune_max_seconds, 60),
    )


def run_demo(settings: Settings, platform: str = "x", port: int = 0) -> int:
    local = start(platform, port=port)
    try:
        settings = demo_settings(settings, Settings.from_env(local.bot_env(), dotenv_path=None))
        target_platform, target = canonical(local.target)
        log.info("local %s; bot @%s imitates @%s", PLATFORM_NAMES[platform], local.bot_username, target)
        with Store(settings.data_dir) as store:
            for old in store.targets():  # an earlier demo's sandbox on another port: not there any more
                if old["handle"].lower() != target.lower():
                    store.remove_target(old["handle"])
            if store.target(target) is None:
                bot = Bot(settings, store)
                user = bot.readers.for_target(target_platform, target).resolve(target)
                store.add_target(user["username"] if target_platform == "x" else target, user["id"],
                                 platform=target_platform)
                bot.readers.close()
                if bot.platform is not None:
                    bot.platform.close()

        def mention_when_ready(bot: Bot) -> None:
            def wait() -> None:
                while not bot.stop.wait(2):
                    if bot.store.model_info(target):
                        text = DEMO_MENTION.format(bot=local.bot_username, target=target.split("@")[0])
                        mention_id = local.mention(text)
                        log.info("demo: @%s mentioned the bot (post %s): %s", local.fan, mention_id, text)
                        return

            threading.Thread(target=wait, name="demo-mention", daemon=True).start()

        return run(settings, on_ready=mention_when_ready)
    finally:
        local.close()
