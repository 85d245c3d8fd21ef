"""One behaviour suite, run against every platform: X (the project's sandbox), Mastodon
(the project's sandbox, the real Mastodon.py client) and Bluesky (the reference PDS and
AppView on 127.0.0.1, the real atproto SDK). What the daemon guarantees must hold on
each: a target read by its handle, a slot posted once (across restarts and a kill
between sending and recording), each mention answered once in its thread, the loop
guard, the reply budget, the blocklist and the backlog limit.

The bot runs in this process (`Bot`, a real SQLite store) against real HTTP servers."""
from __future__ import annotations

import gzip
import os
import itertools
import json
import random
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from bot.daemon import Bot
from bot.platforms import canonical
from bot.sandbox.x import SAMPLE_DIR
from bot.settings import Settings
from bot.store import Store
from tests.bot_helpers import bot_env, kill9, register_model, start_bot, stop, wait_for
from bot.sandbox.local import LocalX

PLATFORMS = ["x", "mastodon", "bluesky"]


@pytest.fixture(params=PLATFORMS)
def world(request, sandbox):
    if request.param == "x":
        return LocalX(sandbox)
    return request.getfixturevalue(f"{request.param}_world")


def world_env(world, data_dir: Path, base_model: Path, **extra: str) -> dict[str, str]:
    return {**bot_env(None, data_dir, base_model), **world.bot_env(), **extra}


def make_bot(world, data_dir: Path, base_model: Path, **extra: str) -> Bot:
    env = world_env(world, data_dir, base_model, **extra)
    bot = Bot(Settings.from_env(env, dotenv_path=None), Store(data_dir))
    # a world may be shared by several tests: mentions made before this bot existed are not its business
    mentions = bot.platform.mentions()
    if mentions:
        bot.store.set_cursor("mentions", str(max(m["position"] for m in mentions)))
    return bot


def add_target(bot: Bot, world) -> str:
    platform, name = canonical(world.target)
    user = bot.readers.for_target(platform, name).resolve(name)
    handle = user["username"] if platform == "x" else name
    bot.store.add_target(handle, user["id"], platform=platform)
    return handle


@pytest.fixture
def ready(world, tmp_path, tiny_base_path):
    """A bot with the world's target added, its posts downloaded and a (tiny) model."""
    bot = make_bot(world, tmp_path / "data", tiny_base_path)
    handle = add_target(bot, world)
    # the sample timeline stored as the target's posts (downloading it is the first test's
    # business: on Mastodon 3,200 statuses take Mastodon.py ~16 s to parse)
    with gzip.open(SAMPLE_DIR / "realDonaldTrump.jsonl.gz", "rt", encoding="utf-8") as f:
        bot.store.add_posts(handle, [json.loads(line) for line in itertools.islice(f, 600)])
    register_model(bot.store, handle, tiny_base_path)
    yield bot, handle
    bot.store.close()


def restart(bot: Bot, world, tmp_path, tiny_base_path, **extra: str) -> Bot:
    bot.store.close()
    return make_bot(world, tmp_path / "data", tiny_base_path, **extra)


def test_a_target_is_read_by_its_handle_and_refreshed_incrementally(world, tmp_path, tiny_base_path):
    bot = make_bot(world, tmp_path / "data", tiny_base_path)
    handle = add_target(bot, world)
    assert bot.store.target(handle)["platform"] == canonical(world.target)[0]
    first = bot.refresh()
    count = bot.store.post_count(handle)
    assert count >= 200, first
    texts = [p["text"] for p in bot.store.posts(handle)]
    assert not any("<p>" in t or "<br" in t for t in texts)  # text, not the HTML a platform serves
    assert "+0" in bot.refresh()  # since the newest stored post: nothing new
    assert bot.store.post_count(handle) == count
    bot.store.close()


def test_a_slot_is_posted_once_even_after_a_restart(world, ready, tmp_path, tiny_base_path):
    bot, handle = ready
    before = len(world.bot_posts())
    slot = datetime.now(timezone.utc).replace(microsecond=0)
    summary = bot.post_slot(slot)
    world.settle()
    posts = world.bot_posts()
    assert len(posts) == before + 1, summary
    assert "already posted" in bot.post_slot(slot)
    bot = restart(bot, world, tmp_path, tiny_base_path)
    assert "already posted" in bot.post_slot(slot)
    world.settle()
    assert len(world.bot_posts()) == before + 1
    recorded = [e for e in bot.store.slot_records(slot.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))]
    assert [e["status"] for e in recorded] == ["posted"]
    assert recorded[0]["api_id"] == posts[-1]["id"]
    bot.store.close()


def test_a_post_sent_before_a_crash_is_found_and_never_sent_again(world, ready, tmp_path, tiny_base_path):
    bot, handle = ready
    slot = (datetime.now(timezone.utc) + timedelta(minutes=5)).replace(microsecond=0)
    name = slot.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    text = f"A slot that was sent just before the bot died, number {slot.minute}"
    # what a kill -9 between "sent" and "recorded" leaves: an intent, and the post on the platform
    key = bot.store.record_bot_post({"kind": "post", "target": handle, "slot": name, "text": text, "status": "intent"})
    landed = bot.platform.post(text, key=key)
    world.settle()
    before = len(world.bot_posts())
    bot = restart(bot, world, tmp_path, tiny_base_path)
    assert "reconciled 1" in bot.reconcile()
    assert bot.store.slot_records(name)[0]["status"] == "posted"
    assert bot.store.slot_records(name)[0]["api_id"] == landed
    assert "already posted" in bot.post_slot(slot)
    world.settle()
    assert len(world.bot_posts()) == before
    bot.store.close()


def _replies_to(world, post_id: str) -> list[dict]:
    world.settle()
    return [p for p in world.bot_posts() if p["in_reply_to_id"] == post_id]


def test_each_mention_is_answered_once_in_its_thread(world, ready, tmp_path, tiny_base_path):
    bot, handle = ready
    name = handle.split("@")[0]
    mention = world.mention(f"@{world.bot_username} what would {name} say about the economy and jobs?")
    world.settle()
    assert "1 replied" in bot.answer_mentions()
    assert len(_replies_to(world, mention)) == 1
    assert bot.answer_mentions() == ""  # nothing new
    bot = restart(bot, world, tmp_path, tiny_base_path)
    bot.store.set_cursor("mentions", "0")  # even with the cursor lost, the store remembers the mention
    bot.answer_mentions()
    assert len(_replies_to(world, mention)) == 1
    bot.store.close()


def test_the_loop_guard_stops_a_conversation_with_another_bot(world, ready, tmp_path, tiny_base_path):
    bot, handle = ready
    bot = restart(bot, world, tmp_path, tiny_base_path, BOT_REPLY_MAX_DEPTH="1")
    name = handle.split("@")[0]
    first = world.mention(f"@{world.bot_username} {name}, talk to me")
    world.settle()
    assert "1 replied" in bot.answer_mentions()
    reply = _replies_to(world, first)[0]
    # the other side answers the bot's reply, in the same thread
    second = world.mention(f"@{world.bot_username} {name}, and again", reply_to=reply["id"])
    world.settle()
    summary = bot.answer_mentions()
    assert "1 skipped" in summary and "replied" not in summary
    assert _replies_to(world, second) == []
    assert "conversation" in bot.store.mention(second)["reason"]
    bot.store.close()


@pytest.mark.parametrize("rule", ["budget", "blocklist", "backlog"])
def test_the_reply_rules_hold(rule, world, ready, tmp_path, tiny_base_path):
    bot, handle = ready
    extra = {"budget": {"BOT_REPLY_BUDGET": "2"}, "blocklist": {"BOT_BLOCKLIST": world.fan},
             "backlog": {"BOT_REPLY_BACKLOG": "0"}}[rule]
    bot = restart(bot, world, tmp_path, tiny_base_path, **extra)
    name = handle.split("@")[0]
    mentions = [world.mention(f"@{world.bot_username} {name} number {n}, what about jobs?") for n in range(3)]
    world.settle()
    bot.answer_mentions()
    answered = [m for m in mentions if _replies_to(world, m)]
    assert len(answered) == (2 if rule == "budget" else 0)
    reasons = " ".join(bot.store.mention(m)["reason"] for m in mentions if m not in answered)
    assert {"budget": "budget", "blocklist": "blocklist", "backlog": "backlog"}[rule] in reasons
    bot.store.close()


def test_kill_9_at_any_moment_never_posts_twice(world, ready, tmp_path, tiny_base_path):
    """The daemon, posting every second and answering mentions, killed -9 at random
    moments three times, then run to the end: no slot on the platform twice, no mention
    answered twice, no post the state does not know of."""
    bot, handle = ready
    bot.store.close()
    env = world_env(world, tmp_path / "data", tiny_base_path, BOT_FIRST_POST_DELAY="0", BOT_POST_INTERVAL="1",
                    BOT_REPLY_BUDGET="100")
    log = tmp_path / "bot.log"
    name, rng = handle.split("@")[0], random.Random(14)
    before = {p["id"] for p in world.bot_posts()}

    def new_posts() -> list[dict]:
        world.settle()
        return [p for p in world.bot_posts() if p["id"] not in before]

    mentions = []
    for n in range(3):
        mentions.append(world.mention(f"@{world.bot_username} {name}, round {n}: what about jobs?"))
        world.settle()
        proc = start_bot(env, tmp_path, log)
        count = len(new_posts())
        wait_for("a new post", lambda: len(new_posts()) > count, 90, proc, log)
        time.sleep(rng.uniform(0, 1.5))
        kill9(proc)
    proc = start_bot(env, tmp_path, log)
    count = len(new_posts())
    try:
        wait_for("a post of this run, and every mention answered", lambda: len(new_posts()) > count and all(
            any(p["in_reply_to_id"] == m for p in new_posts()) for m in mentions), 90, proc, log)
        assert stop(proc) < 10
    finally:
        if proc.poll() is None:
            kill9(proc)
    posts = new_posts()
    replies = Counter(p["in_reply_to_id"] for p in posts if p["in_reply_to_id"])
    assert all(replies[m] == 1 for m in mentions), replies
    scheduled = [p for p in posts if not p["in_reply_to_id"]]
    assert len({p["text"] for p in scheduled}) == len(scheduled)  # no slot sent twice
    with Store(tmp_path / "data") as store:
        records = store.bot_posts()
    slots = Counter(e["slot"] for e in records if e["kind"] == "post" and e["status"] == "posted")
    assert slots and max(slots.values()) == 1
    known = {e["api_id"] for e in records if e.get("api_id")}
    # a post the bot could not confirm is recorded "unknown" (given up, never resent); any other is known
    unknown = sum(e["status"] == "unknown" for e in records)
    assert len([p for p in posts if p["id"] not in known]) <= unknown


def test_the_cli_adds_a_target_by_its_handle_on_any_platform(world, tmp_path, tiny_base_path, monkeypatch, capsys):
    from bot.cli import main

    for key in [k for k in os.environ if k.startswith(("TWITTER_", "BOT_", "BLUESKY_", "MASTODON_"))]:
        monkeypatch.delenv(key)
    for key, value in world_env(world, tmp_path / "data", tiny_base_path).items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)  # no stray .env
    platform = canonical(world.target)[0]
    assert main(["targets", "add", world.target]) == 0
    assert main(["targets", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [(r["platform"], r["handle"].lower()) for r in rows] == [(platform, canonical(world.target)[1].lower())]
    assert main(["status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["platform"] == world.platform
    # a handle of the wrong form for the platform asked for: one line, nothing added
    assert main(["targets", "add", "no_dots_here", "--platform", "bluesky"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a Bluesky handle" in err
    assert main(["targets", "add", "someone@nowhere.invalid", "--platform", "x"]) == 1
    assert "not an X handle" in capsys.readouterr().err


def test_an_account_of_one_platform_is_imitated_on_another(sandbox, mastodon_world, tmp_path, tiny_base_path):
    """The bot posts on Mastodon as an X account, whose posts it reads from X."""
    x = LocalX(sandbox)
    bot = make_bot(mastodon_world, tmp_path / "data", tiny_base_path, **{k: v for k, v in x.bot_env().items()
                                                                          if k.startswith("TWITTER_")})
    assert bot.platform.name == "mastodon"
    handle = add_target(bot, x)
    assert bot.store.target(handle)["platform"] == "x"
    assert "+" in bot.refresh() and bot.store.post_count(handle) > 3000
    register_model(bot.store, handle, tiny_base_path)
    before = len(mastodon_world.bot_posts())
    assert "posted" in bot.post_slot(datetime.now(timezone.utc))
    assert len(mastodon_world.bot_posts()) == before + 1
    assert sandbox.posts_by(x.bot_username) == []  # nothing was posted on X
    bot.store.close()
