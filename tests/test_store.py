"""The state store: a real SQLite file, several threads, and processes killed with SIGKILL."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from datetime import datetime, timedelta, timezone

import pytest

from bot.errors import BotError
from bot.store import DB_NAME, SCHEMA_VERSION, Store

from tests.bot_helpers import REPO


def post(n: int, **extra) -> dict:
    return {"id": str(1000 + n), "user": "Someone", "created_at": f"2020-01-01T00:{n // 60:02d}:{n % 60:02d}Z",
            "text": f"post {n}", **extra}


def test_targets_are_case_insensitive_and_keep_their_case(store):
    store.add_target("@realdonaldtrump")
    store.add_target("realDonaldTrump", user_id=25073877, weight=2)  # the API's spelling wins
    entry = store.target("REALDONALDTRUMP")
    assert entry["handle"] == "realDonaldTrump" and entry["user_id"] == "25073877" and entry["weight"] == 2
    assert datetime.fromisoformat(entry["added_at"].replace("Z", "+00:00")) <= datetime.now(timezone.utc)
    store.add_target("AndrewYang")
    store.add_target("realdonaldtrump")  # re-adding keeps what was known
    assert [t["handle"] for t in store.targets()] == ["AndrewYang", "realdonaldtrump"]
    assert store.target("realDonaldTrump")["user_id"] == "25073877"
    assert store.remove_target("ANDREWYANG") is True
    assert store.remove_target("AndrewYang") is False
    assert store.target("andrewyang") is None
    with pytest.raises(BotError, match="not an X handle"):
        store.add_target("bad handle")


def test_posts_dedupe_and_order(store):
    assert store.add_posts("Someone", [post(3), post(1), post(2)]) == 3
    assert store.add_posts("someone", [post(2), post(4), post(4)]) == 1  # only 4 is new, once
    assert [p["text"] for p in store.posts("SOMEONE")] == ["post 1", "post 2", "post 3", "post 4"]
    assert store.post_count("someone") == 4
    store.add_posts("someone", [{"id": "csv:abc", "text": "undated, made-up id"}])
    assert store.newest_post_id("someone") == "1004"  # made-up ids never become a since_id
    assert store.posts("someone")[0]["text"] == "undated, made-up id"
    assert store.posts("nobody") == [] and store.post_count("nobody") == 0 and store.newest_post_id("nobody") is None


def test_add_posts_is_all_or_nothing(store):
    with pytest.raises(BotError, match="post 3 for @someone needs an id and a text"):
        store.add_posts("someone", [post(1), post(2), {"id": "9"}])
    assert store.post_count("someone") == 0


def test_cursors_bot_posts_models_survive_reopening(tmp_path):
    data = tmp_path / "state"
    with Store(data) as store:
        store.set_cursor("mentions", "1234")
        key = store.record_bot_post({"text": "hello", "target": "someone", "scores": {"copy": 0.1}})
        assert store.bot_post(key)["status"] == "intent"
        store.update_bot_post(key, status="posted", api_id="555", posted_at="2024-05-01T10:00:00Z")
        old = store.record_bot_post({"text": "older", "posted_at": "2020-01-01T00:00:00Z", "status": "posted"})
        store.register_model("Someone", {"path": "models/someone.keras", "version": 3, "heldout_bpc": 2.01})
        store.add_posts("someone", [post(1)])
    with Store(data) as store:
        assert store.get_cursor("mentions") == "1234" and store.get_cursor("nothing") is None
        assert [p["key"] for p in store.bot_posts()] == [key, old]  # in recording order
        assert [p["text"] for p in store.bot_posts(since=datetime(2024, 1, 1))] == ["hello"]
        assert store.bot_posts(since=datetime.now(timezone.utc) + timedelta(days=1)) == []
        assert store.bot_posts()[0]["api_id"] == "555" and store.bot_posts()[0]["scores"] == {"copy": 0.1}
        assert store.model_info("SOMEONE")["version"] == 3 and store.model_info("other") is None
        assert store.posts("someone") == [post(1)]
        assert store.schema_version == SCHEMA_VERSION
        with pytest.raises(BotError, match="no bot post"):
            store.update_bot_post("missing", status="x")


def test_newer_schema_and_corrupt_file_are_refused(tmp_path):
    Store(tmp_path / "a").close()
    with sqlite3.connect(tmp_path / "a" / DB_NAME) as conn:  # as a future version would
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    with pytest.raises(BotError, match="newer version of the bot"):
        Store(tmp_path / "a")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / DB_NAME).write_bytes(b"this is not a database" * 100)
    with pytest.raises(BotError, match="cannot open the bot's state") as caught:
        Store(tmp_path / "b")
    assert "\n" not in str(caught.value)
    (tmp_path / "c").write_text("a file where the directory should be")
    with pytest.raises(BotError, match="cannot create the data directory"):
        Store(tmp_path / "c")


def test_threads_never_lose_or_double_count(store):
    counted = []
    errors = []

    def worker(start: int) -> None:
        try:
            for n in range(start, start + 60, 3):  # overlapping ranges across threads
                counted.append(store.add_posts("someone", [post(n), post(n + 1), post(n + 2)]))
                store.record_bot_post({"text": f"from {start} at {n}"})
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(start,)) for start in (0, 15, 30, 45, 60, 75)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.post_count("someone") == 135 == sum(counted)  # posts 0..134, each counted once
    assert len(store.bot_posts()) == 6 * 20


WRITER = textwrap.dedent(
    """
    import sys
    from bot.store import Store
    store = Store(sys.argv[1])
    batch = 0
    while True:
        posts = [{"id": str(batch * 50 + i + 1), "text": "x" * 200, "created_at": None} for i in range(50)]
        store.add_posts("victim", posts)
        store.set_cursor("batches", str(batch + 1))
        batch += 1
        print(batch, flush=True)
    """
)


@pytest.mark.parametrize("after_batches", [3, 40])
def test_kill_9_during_writes_loses_nothing_committed(tmp_path, after_batches):
    data = tmp_path / "state"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(data)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, text=True)
    try:
        reported = 0
        while reported < after_batches:
            reported = int(proc.stdout.readline())
        proc.send_signal(signal.SIGKILL)  # in the middle of the next batch's writes
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    with Store(data) as store:
        count = store.post_count("victim")
        batches = int(store.get_cursor("batches"))
        assert count % 50 == 0  # whole batches only
        assert batches >= reported and count >= 50 * reported  # nothing committed is lost
        assert count in (50 * batches, 50 * (batches + 1))  # posts stored before the cursor moves
        assert store.add_posts("victim", [{"id": "new", "text": "still writable"}]) == 1
    with sqlite3.connect(data / DB_NAME) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def put_raw(path, table: str, key: str, value: dict) -> None:
    """A record written straight into the file, with the time in its key or fields we choose."""
    with sqlite3.connect(path) as conn:
        conn.execute(f'REPLACE INTO "{table}" (key, value) VALUES (?, ?)', (key, json.dumps(value)))
    conn.close()


def key_at(when: datetime, tail: str) -> str:
    return f"{when.strftime('%Y%m%dT%H%M%S%f')}-{tail}"


def iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_slot_records_counts_recent_and_pending_posts(store):
    k1 = store.record_bot_post({"kind": "post", "text": "one", "slot": "S1"})
    assert [e["status"] for e in store.slot_records("S1")] == ["intent"]
    store.update_bot_post(k1, status="refused")
    k2 = store.record_bot_post({"kind": "post", "text": "two", "slot": "S1"})
    store.update_bot_post(k2, status="posted", api_id="9")
    k3 = store.record_bot_post({"kind": "reply", "text": "re", "in_reply_to": "77"})
    k4 = store.record_bot_post({"text": "no kind", "slot": "S2", "status": "dry-run"})  # counts as a post
    k5 = store.record_bot_post({"kind": "reply", "text": "gave up", "status": "intent"})
    store.update_bot_post(k5, status="unknown")
    assert [e["key"] for e in store.slot_records("S1")] == [k1, k2] and [e["key"] for e in store.slot_records("S2")] == [k4]
    assert store.slot_records("S3") == []
    store.update_bot_post(k2, target="@Someone")
    assert store.bot_post_texts("someone") == [(k2, "two")]
    counts = {(c["kind"], c["status"]): c["count"] for c in store.bot_post_counts()}
    assert counts == {("post", "refused"): 1, ("post", "posted"): 1, ("reply", "intent"): 1, ("post", "dry-run"): 1,
                      ("reply", "unknown"): 1}
    assert [e["key"] for e in store.pending_bot_posts()] == [k3]  # "unknown" is given up, never pending
    assert [e["key"] for e in store.recent_bot_posts()] == [k1, k2, k3, k4, k5]
    assert [e["key"] for e in store.recent_bot_posts("post")] == [k1, k2, k4]
    assert [e["key"] for e in store.recent_bot_posts(kind="reply")] == [k3, k5]
    recorded_k3 = datetime.fromisoformat(store.bot_post(k3)["recorded_at"].replace("Z", "+00:00"))
    assert [e["key"] for e in store.recent_bot_posts(since=recorded_k3)] == [k3, k4, k5]  # at or after
    assert [e["key"] for e in store.recent_bot_posts("post", since=recorded_k3.replace(tzinfo=None))] == [k4]
    assert store.recent_bot_posts(since=datetime.now(timezone.utc) + timedelta(seconds=5)) == []
    plan = store._conn.execute(
        """EXPLAIN QUERY PLAN SELECT value FROM "bot_posts" WHERE json_extract(value, '$.slot') = ?""", ("S1",))
    assert "bot_posts_slot" in str(plan.fetchall())  # the slot lookup reads through its index


def test_prune_drops_only_old_final_records(store):
    now = datetime(2024, 6, 1, 12, 0, tzinfo=timezone.utc)
    db = store.path
    ages = {"old-posted": (40, "posted"), "old-intent": (40, "intent"), "old-unknown": (40, "unknown"),
            "old-refused": (31, "refused"), "young-not-sent": (29, "not-sent"), "new-posted": (1, "posted")}
    for tail, (days, status) in ages.items():
        when = now - timedelta(days=days)
        put_raw(db, "bot_posts", key_at(when, tail), {"key": key_at(when, tail), "text": tail, "status": status,
                                                      "recorded_at": iso(when), "posted_at": None})
    for mention_id, days in (("1", 40), ("2", 30.01), ("3", 29.9), ("4", 2)):
        put_raw(db, "mentions", mention_id, {"status": "replied", "handled_at": iso(now - timedelta(days=days))})
    store.set_cursor("mentions", "4")
    assert store.prune(30, now=now) == {"bot_posts": 3, "mentions": 2}
    assert sorted(e["text"] for e in store.bot_posts()) == ["new-posted", "old-intent", "young-not-sent"]
    assert [e["text"] for e in store.pending_bot_posts()] == ["old-intent"]  # its fate is still to be learnt
    assert store.handled_mentions() == {"3", "4"}
    assert store.get_cursor("mentions") == "4"
    assert os.path.getsize(f"{db}-wal") == 0  # checkpointed and truncated
    assert store.prune(30, now=now) == {"bot_posts": 0, "mentions": 0}
    with pytest.raises(BotError, match="keep_days"):
        store.prune(0)


def test_tables_made_by_another_process_are_seen(store):
    assert store.post_count("elsewhere") == 0 and store.posts("elsewhere") == []
    code = ("import sys; from bot.store import Store\n"
            "with Store(sys.argv[1]) as s: s.add_posts('Elsewhere', [{'id': '5', 'text': 'hi'}])")
    subprocess.run([sys.executable, "-c", code, str(store.data_dir)], cwd=REPO, check=True, timeout=60,
                   env={**os.environ, "PYTHONPATH": str(REPO)})
    assert store.post_count("elsewhere") == 1 and store.newest_post_id("ELSEWHERE") == "5"
    assert store.posts("elsewhere")[0]["text"] == "hi"
