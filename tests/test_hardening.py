"""What X does that a kind sandbox would not, and the daemon's answer to each: a post
whose outcome is unknown is never sent again, refusals are final for the item (or stop
posting, for the bot's own permissions), 429s wait for their reset, failing jobs and
fine-tunes back off, the rotation stays fair, the schedule cannot die quietly, one
daemon per data directory, a failing disk stops the daemon cleanly.

The bot runs in this process (`Bot` over a real store and the sandbox over real HTTP)
unless the behaviour is about the process itself."""
from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from apscheduler.schedulers.background import BackgroundScheduler

from bot import backoff, training
from bot.cli import main
from bot.daemon import Bot, schedule_jobs, shutdown
from bot.sandbox.x import BOT_USERNAME
from bot.settings import Settings
from bot.store import Store
from tests.bot_helpers import REPO, kill9, register_model, start_bot, tiny_base_path, wait_for  # noqa: F401
from trainer.model import load

TARGET = "realDonaldTrump"


def own(sandbox, replies: bool = False) -> list[dict]:
    return [p for p in sandbox.posts_by(BOT_USERNAME, include_deleted=True) if bool(p["in_reply_to_id"]) == replies]


@pytest.fixture
def ready(env, monkeypatch, tiny_base_path):
    """A target with posts and a model; the bot's settings with a short look-up window."""
    monkeypatch.setenv("BOT_LOOKUP_WINDOW", "1")
    assert main(["targets", "add", TARGET]) == 0
    assert main(["fetch"]) == 0
    settings = Settings.from_env(dotenv_path=None)
    with Store(settings.data_dir) as store:
        register_model(store, TARGET, tiny_base_path)
    return settings


@pytest.fixture
def bot(ready):
    """A Bot with a (paused) scheduler, as `run` builds it, without the process around it."""
    b = Bot(ready, Store(ready.data_dir))
    b.scheduler = BackgroundScheduler(timezone="UTC")
    b.scheduler.start(paused=True)
    yield b
    if b.scheduler.running:
        b.scheduler.shutdown(wait=False)
    b.store.close()


def slot_now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


# --- 1. sent, not sent or unknown -------------------------------------------------------------
def test_a_lost_answer_on_a_lagging_timeline_is_never_posted_again(bot, sandbox):
    sandbox.set_timeline_lag(30)  # the bot's own timeline shows the post only after its look-up window
    sandbox.inject("lost", method="POST", path="/2/tweets")  # X creates the post; the answer never comes
    slot = slot_now()
    print(bot.post_slot(slot))
    assert len(own(sandbox)) == 1
    [record] = bot.store.recent_bot_posts(kind="post")
    assert record["status"] == "unknown" and "never sent again" in record["reason"]
    assert "already unknown" in bot.post_slot(slot)  # the same slot again (a retry, a restart)
    bot.reconcile()
    assert len(own(sandbox)) == 1 and sandbox.count_requests("POST") == 1


def test_recorded_then_killed_before_sending_is_given_up_at_restart(bot, sandbox):
    slot = slot_now()
    bot.store.record_bot_post({"kind": "post", "target": TARGET, "slot": slot.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                               "text": "Written down, never sent", "status": "intent"})
    assert "reconciled 1" in bot.reconcile()
    assert [e["status"] for e in bot.store.recent_bot_posts()] == ["unknown"]
    assert "already unknown" in bot.post_slot(slot) and own(sandbox) == []


def test_reconcile_when_the_timeline_cannot_be_read_gives_up_and_posting_goes_on(bot, sandbox):
    bot.store.record_bot_post({"kind": "post", "target": TARGET, "slot": "2026-01-01T00:00:00.000000Z",
                               "text": "Fate unknown", "status": "intent"})
    sandbox.inject("tier", method="GET", path=f"/2/users/{bot.platform.me()['id']}/tweets")
    bot.reconcile()
    assert bot.store.pending_bot_posts() == []
    assert "posted" in bot.post_slot(slot_now()) and len(own(sandbox)) == 1


# --- 3. refusals --------------------------------------------------------------------------------
def test_a_mention_deleted_before_the_reply_is_marked_and_the_next_is_answered(bot, sandbox):
    doomed = sandbox.add_mention(f"@{TARGET} what do you think about the wall?")
    later = sandbox.add_mention(f"@{TARGET} and about the economy?", author="another_fan")
    # the mentions are read, then the first is deleted while the bot is composing
    sandbox.inject("slow", method="GET", path=f"/2/users/{bot.platform.me()['id']}/mentions", delay=1.0)
    threading.Timer(0.5, sandbox.delete_post, args=(doomed["id"],)).start()
    summary = bot.answer_mentions()
    assert "1 replied" in summary
    assert bot.store.mention(doomed["id"])["status"] == "refused"
    assert "deleted or not visible" in bot.store.mention(doomed["id"])["reason"]
    assert [p["in_reply_to_id"] for p in own(sandbox, replies=True)] == [later["id"]]
    bot.answer_mentions()
    assert sandbox.count_requests("POST") == 2  # the refused one is never tried again


def test_a_read_only_app_stops_posting_with_one_line_an_hour(bot, sandbox, caplog):
    sandbox.inject("write_forbidden", method="POST", path="/2/tweets", count=100)
    run = bot.job("post", lambda: bot.post_slot(slot_now()))
    for _ in range(3):
        run()
    assert sandbox.count_requests("POST") == 1 and bot.blocked
    assert bot.store.jobs()["posting"]["blocked"] == bot.blocked
    sandbox.add_mention(f"@{TARGET} hello?")
    assert bot.answer_mentions() == "" and sandbox.count_requests("POST") == 1  # replies wait too
    assert sum("posting stopped" in r.getMessage() for r in caplog.records) == 1


def test_a_429_far_ahead_pauses_the_job_until_its_reset_across_restarts(bot, ready, sandbox):
    me = bot.platform.me()["id"]
    sandbox.inject("429", method="GET", path=f"/2/users/{me}/mentions", reset_in=7200)
    run = bot.job("mentions", bot.answer_mentions)
    run()
    paused = bot.store.get_cursor("paused_until:mentions")
    assert paused is not None and datetime.fromisoformat(paused.replace("Z", "+00:00")) > \
        datetime.now(timezone.utc) + timedelta(hours=1.9)
    before = sandbox.count_requests("GET")
    run()
    restarted = Bot(ready, bot.store)
    restarted.job("mentions", restarted.answer_mentions)()
    assert sandbox.count_requests("GET") == before  # neither asked X again
    assert bot.store.jobs()["mentions"]["ok"] is False


def test_a_job_that_keeps_failing_backs_off_exponentially(bot, sandbox):
    me = bot.platform.me()["id"]
    sandbox.inject("503", method="GET", path=f"/2/users/{me}/mentions", count=1000)
    run = bot.job("mentions", bot.answer_mentions)
    waits = []
    for _ in range(4):
        bot.failures.get("mentions") and bot.failures.__setitem__("mentions", (bot.failures["mentions"][0], 0.0))
        run()  # (the wait is cut short so that each run counts)
        entry = bot.store.jobs()["mentions"]
        waits.append((datetime.fromisoformat(entry["backoff_until"].replace("Z", "+00:00"))
                      - datetime.fromisoformat(entry["last_run"].replace("Z", "+00:00"))).total_seconds())
    assert [round(w / 30) for w in waits] == [1, 2, 4, 8]
    held = sandbox.count_requests("GET")
    run()  # within its backoff: no request at all
    assert sandbox.count_requests("GET") == held


# --- 4. training never blocks the bot ----------------------------------------------------------
def test_a_failing_finetune_backs_off_while_the_others_train(bot, sandbox, tmp_path):
    assert main(["targets", "add", "empty_acct"]) == 0
    bot.store.add_posts("empty_acct", [dict(p, user="empty_acct") for p in bot.store.posts(TARGET)[:400]])
    now = datetime.now(timezone.utc)
    first = backoff.note_failure(bot.store, "train", "empty_acct", "boom", now, 3600, 86400)
    second = backoff.note_failure(bot.store, "train", "empty_acct", "boom", now, 3600, 86400)
    assert (first - now).total_seconds() == pytest.approx(3600) and (second - now).total_seconds() == pytest.approx(7200)
    bot.store.register_model(TARGET, {**bot.store.model_info(TARGET), "posts": 0})
    bot.store.set_cursor(f"trained_on:{TARGET.lower()}", "0")  # stale: needs a fine-tune too
    summary = bot.train_one()
    assert "@realDonaldTrump model v2" in summary  # the failing target waited, the other trained


def test_a_target_that_cannot_be_downloaded_backs_off_while_the_others_refresh(bot, sandbox):
    bot.store.add_target("private_acct")  # protected since it was added
    sandbox.add_posts(TARGET, ["A brand new post about the great economy"])
    assert "@realDonaldTrump +1" in bot.refresh()
    state = backoff.state(bot.store, "refresh", "private_acct")
    assert state["failures"] == 1 and "protected" in state["error"]
    before = sandbox.count_requests("GET", "/2/users/")
    summary = bot.refresh()
    assert "@private_acct waits until" in summary
    assert sandbox.count_requests("GET", "/2/users/") == before + 1  # only the other target's timeline


def test_a_hung_finetune_child_is_stopped(ready, monkeypatch):
    monkeypatch.setattr(training, "CHILD_MARGIN_S", 0.0)  # the budget alone: the child needs longer to start
    with Store(ready.data_dir) as store:
        t0 = time.monotonic()
        with pytest.raises(Exception, match="did not finish within 0.5 s"):
            training.train_target(store, TARGET, ready, max_seconds=0.5)
        assert time.monotonic() - t0 < 10


def test_a_new_model_is_compared_with_the_current_one_as_the_base_vocabulary_scores_them(ready):
    """Each model adds the account's own characters to the vocabulary (🇺🇸 ...), and naming
    them costs bits the base's UNK does not: the models are compared with them as UNK."""
    with Store(ready.data_dir) as store:
        first = training.train_target(store, TARGET, ready, max_seconds=1)
        made = load(first["path"]).meta
        assert first["replaced"] and made["vocab_added"] > 0
        assert made["heldout_bits_per_char_base_vocab"] < made["heldout_bits_per_char"]
        second = training.train_target(store, TARGET, ready, max_seconds=1)
        assert second["current_bits_per_char"] == pytest.approx(made["heldout_bits_per_char_base_vocab"], abs=2e-4)


# --- 5. rotation ---------------------------------------------------------------------------------
def test_rotation_is_fair_and_a_new_target_does_not_take_every_slot(bot, tiny_base_path):
    for name in ("alpha", "beta"):
        bot.store.add_target(name)
        register_model(bot.store, name, tiny_base_path)
    bot.store.add_target("beta", weight=2)

    def slots(n: int) -> list[str]:
        picks = []
        for _ in range(n):
            target = bot.rotation()[0]
            bot.advance(target)
            picks.append(target["handle"])
        return picks

    picks = slots(40)
    assert (picks.count("alpha"), picks.count("beta"), picks.count(TARGET)) == (10, 20, 10)  # by weight
    assert all(len(set(picks[i:i + 4])) == 3 for i in range(0, 40, 4))  # interleaved, never bunched
    bot.store.add_target("gamma")
    register_model(bot.store, "gamma", tiny_base_path)
    picks = slots(10)
    assert picks[0] == "gamma" and 2 <= picks.count("gamma") <= 3  # joins at once; no catch-up on history


def test_a_target_that_cannot_post_sits_out_and_the_slot_goes_to_the_next(bot, sandbox, tiny_base_path, tmp_path):
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"not a model")
    bot.store.add_target("aaa_broken")
    register_model(bot.store, "aaa_broken", broken)
    bot.store.add_posts("aaa_broken", [dict(p, user="aaa_broken") for p in bot.store.posts(TARGET)[:200]])
    outcome = bot.post(slot="s1")
    assert outcome.status == "posted" and outcome.target == TARGET
    assert "aaa_broken" in bot.store.jobs()["post"]["cannot_post"]
    assert bot.pick_target()["handle"] == TARGET  # still sitting out


# --- 6. the schedule -----------------------------------------------------------------------------
def test_the_schedule_survives_a_failing_job_and_late_polls_still_run(bot):
    schedule_jobs(bot.scheduler, bot)
    for job in bot.scheduler.get_jobs():
        assert job.misfire_grace_time is None, job.id  # late runs happen instead of being dropped
    bot.scheduler.remove_job("post")  # whatever removed it (an exception in the finally of a slot)
    bot.watchdog()
    bot.watchdog()
    assert bot.scheduler.get_job("post") is None  # (a job waiting for the posting thread looks the same)
    bot.watchdog()
    job = bot.scheduler.get_job("post")
    assert job is not None and job.executor == "posting"
    assert bot.store.jobs()["post"]["slot"] == bot.store.get_cursor("next_slot")  # the same slot, resumed


def test_a_due_slot_that_waits_for_a_model_runs_as_soon_as_one_is_registered(bot):
    from bot import slots

    due = datetime.now(timezone.utc) - timedelta(seconds=5)
    bot.store.set_cursor("next_slot", due.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    bot.schedule_slot(due, run_at=datetime.now(timezone.utc) + timedelta(seconds=15))  # its next retry
    slots.hurry_due_slot(bot)  # what a registered model does
    assert bot.scheduler.get_job("post").next_run_time <= datetime.now(timezone.utc)
    later = datetime.now(timezone.utc) + timedelta(hours=1)  # a slot not due yet keeps its time
    bot.store.set_cursor("next_slot", later.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    bot.schedule_slot(later)
    slots.hurry_due_slot(bot)
    assert bot.scheduler.get_job("post").next_run_time >= later - timedelta(seconds=1)


def test_quiet_hours_are_checked_when_sending_and_defer_to_the_windows_end(ready, sandbox):
    started = datetime.now(timezone.utc)
    hour = started.hour
    quiet = Settings(**{**ready.__dict__, "quiet_hours": (hour, (hour + 2) % 24)})
    b = Bot(quiet, Store(quiet.data_dir))
    b.scheduler = BackgroundScheduler(timezone="UTC")
    b.scheduler.start(paused=True)
    try:
        slot = slot_now() - timedelta(hours=1)  # planned before the window, sent inside it
        assert "waits for the end of quiet hours" in b.post_slot(slot)
        job = b.scheduler.get_job("post")
        end = started.replace(minute=0, second=0, microsecond=0) + timedelta(hours=2)  # (the window's end)
        assert job.next_run_time == end and own(sandbox) == []
    finally:
        b.scheduler.shutdown(wait=False)
        b.store.close()


# --- 2. one daemon per data directory; 7. a failing disk --------------------------------------
def test_a_second_daemon_on_the_same_data_dir_exits_1_naming_the_first(env, tmp_path):
    log = tmp_path / "bot.log"
    first = start_bot(env, tmp_path, log)
    try:
        wait_for("the first bot to start", lambda: "bot starting" in log.read_text(), 30, first, log)
        second = subprocess.run([sys.executable, "-m", "bot", "run"], env={**env, "PYTHONPATH": str(REPO)},
                                cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert second.returncode == 1
        assert second.stderr.strip().splitlines() == [
            f"error: another bot is already running on {env['BOT_DATA_DIR']} (pid {first.pid}); stop it first"]
    finally:
        kill9(first)
    again = start_bot(env, tmp_path, tmp_path / "again.log")  # kill -9 released the lock
    try:
        wait_for("a restart after kill -9", lambda: "bot starting" in (tmp_path / "again.log").read_text(), 30, again,
                 tmp_path / "again.log")
    finally:
        kill9(again)


def test_a_state_write_that_fails_stops_the_daemon_with_exit_1_and_loses_nothing(bot, sandbox):
    bot.post_slot(slot_now())
    kept = bot.store.recent_bot_posts()
    conn = bot.store._conn  # the disk fills up: no more pages, and the free ones used up
    conn.execute("CREATE TABLE IF NOT EXISTS filler (x BLOB)")
    conn.execute(f"PRAGMA max_page_count={conn.execute('PRAGMA page_count').fetchone()[0]}")
    for size in (2000, 400, 80, 16):  # down to the last gaps in the pages
        with pytest.raises(sqlite3.OperationalError, match="full"):
            while True:
                conn.execute(f"INSERT INTO filler VALUES (randomblob({size}))")
    sandbox.add_posts(TARGET, [f"New post number {n} about the economy and jobs, jobs, jobs!" for n in range(200)])
    done = threading.Event()
    threading.Thread(target=lambda: (bot.job("refresh", bot.refresh)(), done.set()), daemon=True).start()
    assert done.wait(10), "the daemon hung on a failing write"
    assert bot.stop.is_set() and bot.fatal is not None
    assert shutdown(bot) == 1
    check = sqlite3.connect(Path(bot.settings.data_dir) / "state.sqlite")
    assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    check.close()
    with Store(bot.settings.data_dir) as store:
        assert store.recent_bot_posts() == kept
