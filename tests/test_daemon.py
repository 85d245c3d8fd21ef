"""The daemon as users run it: `python -m bot run` in a subprocess, against the sandbox
over real HTTP, with its state in a real SQLite file; killed with SIGTERM and kill -9."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from bot.cli import main
from bot.sandbox.x import BOT_USERNAME
from bot.store import Store
from tests.bot_helpers import bot_env, kill9, register_model, start_bot, stop, tiny_base_path, wait_for  # noqa: F401

TARGET = "realDonaldTrump"


def own_posts(sandbox):
    posts = sandbox.posts_by(BOT_USERNAME)
    return [p for p in posts if p["in_reply_to_id"] is None], [p for p in posts if p["in_reply_to_id"]]


def test_end_to_end_add_fetch_finetune_post_reply(sandbox, env, tmp_path):
    assert main(["targets", "add", TARGET]) == 0
    assert main(["fetch"]) == 0
    with Store(tmp_path / "data") as store:
        assert store.post_count(TARGET) > 1000

    log = tmp_path / "bot.log"
    proc = start_bot({**env, "BOT_FIRST_POST_DELAY": "0", "BOT_POST_INTERVAL": "3600"}, tmp_path, log)
    try:
        with Store(tmp_path / "data") as store:
            info = wait_for("a fine-tuned model", lambda: store.model_info(TARGET), 120, proc, log)
        assert info["version"] == 1 and info["heldout_bits_per_char"] > 0
        assert Path(info["path"]).is_file()
        posts = wait_for("a scheduled post in the sandbox", lambda: own_posts(sandbox)[0], 60, proc, log)
        assert len(posts) == 1 and len(posts[0]["text"].split()) >= 4

        m = sandbox.add_mention(f"what does @{TARGET} think about the economy?")
        replies = wait_for("a reply", lambda: own_posts(sandbox)[1], 60, proc, log)
        assert replies[0]["in_reply_to_id"] == m["id"]
        assert replies[0]["conversation_id"] == m["conversation_id"]  # threaded under the mention
        assert replies[0]["text"].startswith("@sandbox_fan ")  # X names the account replied to
        time.sleep(2.5)  # more mention polls: still one reply
        assert len(own_posts(sandbox)[1]) == 1
        assert stop(proc) < 10
    finally:
        if proc.poll() is None:
            kill9(proc)
    with Store(tmp_path / "data") as store:
        kinds = sorted((e["kind"], e["status"]) for e in store.bot_posts())
        assert kinds == [("post", "posted"), ("reply", "posted")]
        assert store.mention(m["id"])["status"] == "replied"
        assert store.jobs()["train"]["ok"] is True


def test_kill_9_mid_post_and_mid_reply_never_duplicates(sandbox, env, tmp_path, tiny_base_path):
    assert main(["targets", "add", TARGET]) == 0
    assert main(["fetch"]) == 0
    with Store(tmp_path / "data") as store:
        register_model(store, TARGET, tiny_base_path)
    env = {**env, "BOT_FIRST_POST_DELAY": "0", "BOT_POST_INTERVAL": "3600", "BOT_REQUEST_TIMEOUT": "60"}
    log = tmp_path / "bot.log"

    # 1. X creates the post but its answer is held back; the bot is killed while waiting.
    sandbox.inject("slow", method="POST", path="/2/tweets", delay=30)
    proc = start_bot(env, tmp_path, log)
    wait_for("the post to land", lambda: own_posts(sandbox)[0], 60, proc, log)
    kill9(proc)
    with Store(tmp_path / "data") as store:
        assert [e["status"] for e in store.bot_posts()] == ["intent"]  # sent, fate unknown to the bot

    # 2. Restart: the slot is reconciled (not posted again); then a reply is cut the same way.
    m = sandbox.add_mention(f"@{TARGET} what about jobs?")
    sandbox.inject("slow", method="POST", path="/2/tweets", delay=30)
    proc = start_bot(env, tmp_path, log)
    wait_for("the reply to land", lambda: own_posts(sandbox)[1], 60, proc, log)
    kill9(proc)

    # 3. Restart again: the reply is reconciled, nothing is repeated; SIGTERM exits 0 promptly.
    before = sandbox.count_requests("GET", f"/2/users/")
    proc = start_bot(env, tmp_path, log)
    try:
        wait_for("a few mention polls", lambda: sandbox.count_requests("GET", "/2/users/") > before + 4, 30, proc, log)
        assert stop(proc) < 10
    finally:
        if proc.poll() is None:
            kill9(proc)
    posts, replies = own_posts(sandbox)
    assert len(posts) == 1 and len(replies) == 1
    assert replies[0]["in_reply_to_id"] == m["id"]
    assert sandbox.count_requests("POST", "/2/tweets") == 2
    with Store(tmp_path / "data") as store:
        entries = store.bot_posts()
        assert [(e["kind"], e["status"], e.get("reconciled")) for e in entries] == [
            ("post", "posted", True), ("reply", "posted", True)]
        assert entries[0]["api_id"] == posts[0]["id"] and entries[1]["api_id"] == replies[0]["id"]
    assert "reconciled 1 interrupted post" in log.read_text()


def test_sigterm_during_a_finetune_exits_0_promptly_and_keeps_no_half_model(sandbox, env, tmp_path):
    assert main(["targets", "add", TARGET]) == 0
    assert main(["fetch"]) == 0
    log = tmp_path / "bot.log"
    proc = start_bot({**env, "BOT_FINETUNE_MAX_SECONDS": "120"}, tmp_path, log)
    try:
        wait_for("the fine-tune to start", lambda: "fine-tuning @realDonaldTrump" in log.read_text(), 30, proc, log)
        time.sleep(1.0)
        assert stop(proc) < 10
        with pytest.raises(ProcessLookupError):  # the fine-tune child went with it
            os.killpg(proc.pid, 0)
    finally:
        if proc.poll() is None:
            kill9(proc)
    with Store(tmp_path / "data") as store:
        assert store.model_info(TARGET) is None
    assert not list((tmp_path / "data" / "models").rglob("*.zip"))


def _running(pid: int) -> bool:
    """True while `pid` runs (an exited child nobody has reaped yet is a zombie, not running)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")
def test_a_finetune_child_stops_when_its_daemon_is_killed_outright(tmp_path, tiny_base_path):
    # A kill -9 of the daemon alone (the OOM killer, say) cannot take the child with it.
    import subprocess
    import sys

    from tests.bot_helpers import REPO
    from tests.trainer_helpers import account_posts

    posts = tmp_path / "posts.jsonl"
    posts.write_text("".join(f'{{"id": "{p.id}", "text": {__import__("json").dumps(p.text)}}}\n'
                             for p in account_posts()))
    child_cmd = (f"{sys.executable} -m bot.training --posts {posts} --base {tiny_base_path} "
                 f"--out {tmp_path / 'v1.zip'} --max-seconds 120")
    parent = subprocess.Popen(["sh", "-c", f"{child_cmd} >/dev/null 2>&1 & echo $!; wait"], cwd=REPO,
                              stdout=subprocess.PIPE, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    child = int(parent.stdout.readline())
    try:
        time.sleep(4)
        assert _running(child)  # fine-tuning, with 120 s of budget
        parent.kill()
        parent.wait(10)
        deadline = time.monotonic() + 10
        while _running(child) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _running(child)
        assert not (tmp_path / "v1.zip").exists()
    finally:
        if _running(child):
            os.kill(child, signal.SIGKILL)


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads process environments from /proc")
def test_the_finetune_child_holds_no_x_credentials(env, tmp_path):
    import subprocess
    import sys

    from tests.bot_helpers import REPO
    from tests.trainer_helpers import ACCOUNT_FILE

    assert main(["targets", "add", "realDonaldTrump", "--import", str(ACCOUNT_FILE)]) == 0
    bot = subprocess.Popen([sys.executable, "-m", "bot", "train", "realDonaldTrump", "--max-seconds", "20"],
                           cwd=tmp_path, env={**env, "PYTHONPATH": str(REPO)},
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    data_dir = env["BOT_DATA_DIR"]

    def child_environ() -> bytes | None:
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                cmd = (proc / "cmdline").read_bytes()
                if b"bot.training" in cmd and data_dir.encode() in cmd:
                    return (proc / "environ").read_bytes()
            except OSError:
                continue
        return None

    try:
        environ = wait_for("the fine-tune child", child_environ, timeout=60, proc=bot)
        assert env["TWITTER_ACCESS_TOKEN_SECRET"].encode() not in environ
        assert b"TWITTER_" not in environ and b"BOT_DATA_DIR=" in environ
    finally:
        bot.kill()
        bot.wait(30)
