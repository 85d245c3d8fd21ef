"""The state file on a real disk: the layout earlier versions wrote, writes that fail (full
disk, read-only file), and who may read it."""
from __future__ import annotations

import json
import os
import sqlite3
import stat
import threading
import time

import pytest

from bot.errors import BotError
from bot.store import DB_NAME, SCHEMA_VERSION, Store, StoreWriteError

LEGACY_TABLES = ("meta", "targets", "cursors", "bot_posts", "models", "mentions", "jobs", "posts:someone")


def compact(value) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def write_legacy_file(path) -> None:
    """A state file as the sqlitedict version left it: one (key TEXT PRIMARY KEY, value BLOB)
    table per name, values compact JSON text, WAL journal, no indexes."""
    rows = {
        "meta": {"schema_version": 1, "created_at": "2024-01-01T00:00:00.000000Z"},
        "targets": {"someone": {"handle": "SomeOne", "user_id": "42", "added_at": "2024-01-01T00:00:00.000000Z",
                                "weight": 2}},
        "cursors": {"mentions": "900", "next_slot": "2024-05-02T10:00:00.000000Z"},
        "bot_posts": {
            "20240501T100000000001-aaaaaaaa": {"key": "20240501T100000000001-aaaaaaaa", "text": "no kind, posted",
                                               "target": "someone", "scores": {}, "api_id": "7", "slot": "SL1",
                                               "posted_at": "2024-05-01T10:00:01.000000Z", "status": "posted",
                                               "recorded_at": "2024-05-01T10:00:00.000001Z"},
            "20240501T110000000000-bbbbbbbb": {"key": "20240501T110000000000-bbbbbbbb", "kind": "reply",
                                               "text": "réply ✓", "target": "someone", "scores": {}, "api_id": None,
                                               "posted_at": None, "status": "intent", "in_reply_to": "899",
                                               "recorded_at": "2024-05-01T11:00:00.000000Z"},
        },
        "models": {"someone": {"handle": "SomeOne", "path": "models/someone.keras", "version": 2,
                               "registered_at": "2024-01-02T00:00:00.000000Z"}},
        "mentions": {"899": {"status": "skipped", "reason": "blocked", "handled_at": "2024-05-01T11:00:00.000000Z"}},
        "jobs": {"fetch": {"last_run": "2024-05-01T09:00:00.000000Z", "ok": True, "summary": "3 new"}},
        "posts:someone": {"1002": {"id": "1002", "user": "SomeOne", "created_at": "2020-01-02T00:00:00Z", "text": "b"},
                          "csv:1": {"id": "csv:1", "user": "SomeOne", "created_at": None, "text": "undated"},
                          "1001": {"id": "1001", "user": "SomeOne", "created_at": "2020-01-01T00:00:00Z", "text": "a"}},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    for table in LEGACY_TABLES:
        conn.execute(f'CREATE TABLE IF NOT EXISTS "{table}" (key TEXT PRIMARY KEY, value BLOB)')
        for key, value in rows[table].items():
            conn.execute(f'REPLACE INTO "{table}" (key, value) VALUES (?,?)', (key, compact(value)))
        conn.commit()
    conn.close()


def test_a_file_of_the_sqlitedict_version_reads_and_writes(tmp_path):
    data = tmp_path / "state"
    write_legacy_file(data / DB_NAME)
    with Store(data) as store:
        assert store.schema_version == SCHEMA_VERSION
        assert store.targets() == [{"handle": "SomeOne", "user_id": "42", "added_at": "2024-01-01T00:00:00.000000Z",
                                    "weight": 2}]
        assert [p["text"] for p in store.posts("someone")] == ["undated", "a", "b"]
        assert store.post_count("SomeOne") == 3 and store.newest_post_id("someone") == "1002"
        assert store.get_cursor("mentions") == "900"
        assert [e["text"] for e in store.bot_posts()] == ["no kind, posted", "réply ✓"]
        assert store.slot_records("SL1")[0]["api_id"] == "7"
        assert [e["text"] for e in store.recent_bot_posts("post")] == ["no kind, posted"]
        assert [e["text"] for e in store.pending_bot_posts()] == ["réply ✓"]
        assert store.mention("899")["reason"] == "blocked" and store.handled_mentions() == {"899"}
        assert store.jobs() == {"fetch": {"last_run": "2024-05-01T09:00:00.000000Z", "ok": True, "summary": "3 new"}}
        assert store.model_info("SOMEONE")["version"] == 2
        store.update_bot_post("20240501T110000000000-bbbbbbbb", status="posted", api_id="8")
        assert store.add_posts("someone", [{"id": "1003", "text": "c"}]) == 1
    with sqlite3.connect(data / DB_NAME) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert {"bot_posts_slot", "bot_posts_status"} <= indexes
        # still the layout the old version reads: compact JSON text under the same keys
        assert conn.execute("""SELECT typeof(value), value FROM "posts:someone" WHERE key = '1003'""").fetchone() == (
            "text", compact({"id": "1003", "user": "someone", "created_at": None, "text": "c"}))
    conn.close()
    with Store(data) as store:
        assert store.pending_bot_posts() == [] and store.post_count("someone") == 4


def run_with_deadline(fn, seconds: float = 5.0) -> BaseException | None:
    """Run fn in a thread; fail the test if it has not returned within `seconds` (a hang)."""
    outcome: list[BaseException | None] = []

    def target() -> None:
        try:
            fn()
            outcome.append(None)
        except BaseException as exc:  # handed back to the test
            outcome.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    started = time.monotonic()
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"the write still had not returned after {seconds} s"
    assert time.monotonic() - started < seconds
    return outcome[0]


def test_a_full_disk_fails_the_write_at_once_and_keeps_what_was_committed(tmp_path):
    data = tmp_path / "state"
    store = Store(data)
    try:
        store.add_target("SomeOne", user_id=42)
        store.add_posts("someone", [{"id": str(n), "text": f"post {n}"} for n in range(1, 101)])
        key = store.record_bot_post({"text": "hello", "slot": "S1", "status": "posted"})
        store.set_cursor("mentions", "55")
        pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
        store._conn.execute(f"PRAGMA max_page_count = {pages + 1}")  # the disk is now (nearly) full
        big = [{"id": str(n), "text": "x" * 2000} for n in range(1, 2001)]
        error = run_with_deadline(lambda: store.add_posts("other", big))
        assert isinstance(error, StoreWriteError), error
        assert str(error) == f"cannot write the bot's state {data / DB_NAME}: database or disk is full"
        assert store.post_count("other") == 0  # nothing of the failed write, not even its table
        assert store.get_cursor("mentions") == "55"  # the store still reads
        error = run_with_deadline(lambda: store.record_bot_post({"text": "y" * 50_000}))
        assert isinstance(error, StoreWriteError)
    finally:
        store.close()
    with sqlite3.connect(data / DB_NAME) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()
    with Store(data) as store:
        assert store.target("someone")["user_id"] == "42"
        assert store.post_count("someone") == 100 and store.newest_post_id("someone") == "100"
        assert [e["key"] for e in store.bot_posts()] == [key] and store.slot_records("S1")[0]["key"] == key
        assert store.get_cursor("mentions") == "55" and store.post_count("other") == 0
        assert store.add_posts("other", big[:10]) == 10  # room again: writable as before


def test_a_read_only_file_gives_a_clear_error(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("running as root: chmod 0400 does not stop root from writing "
                    "(test_a_read_only_connection_gives_a_clear_error covers the same error)")
    data = tmp_path / "state"
    with Store(data) as store:
        store.set_cursor("mentions", "1")
    os.chmod(data / DB_NAME, 0o400)
    try:
        with Store(data) as store:
            assert store.get_cursor("mentions") == "1"  # reading still works
            error = run_with_deadline(lambda: store.set_cursor("mentions", "2"))
            assert isinstance(error, StoreWriteError)
            assert "cannot write the bot's state" in str(error) and "readonly" in str(error)
            assert "\n" not in str(error)
            assert store.get_cursor("mentions") == "1"
    finally:
        os.chmod(data / DB_NAME, 0o600)


def test_a_read_only_connection_gives_a_clear_error(store):
    store.set_cursor("mentions", "1")
    store._conn.execute("PRAGMA query_only = ON")  # SQLite refuses every write, even root's
    error = run_with_deadline(lambda: store.set_cursor("mentions", "2"))
    assert isinstance(error, StoreWriteError) and isinstance(error, BotError)
    assert str(error) == f"cannot write the bot's state {store.path}: attempt to write a readonly database"
    with pytest.raises(StoreWriteError):
        store.update_bot_post("missing", status="x")
    store._conn.execute("PRAGMA query_only = OFF")
    assert not store._conn.in_transaction  # every failure was rolled back
    store.set_cursor("mentions", "3")
    assert store.get_cursor("mentions") == "3"


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_the_state_is_private(tmp_path):
    old = os.umask(0o022)
    try:
        with Store(tmp_path / "new" / "state") as store:
            store.set_cursor("a", "1")
            assert mode(tmp_path / "new" / "state") == 0o700
            for name in (DB_NAME, DB_NAME + "-wal", DB_NAME + "-shm"):
                assert mode(store.path.with_name(name)) == 0o600, name
        loose = tmp_path / "loose"
        write_legacy_file(loose / DB_NAME)  # made by an older version under umask 022
        other = sqlite3.connect(loose / DB_NAME)  # keeps -wal and -shm there while open
        try:
            other.execute("SELECT COUNT(*) FROM meta").fetchall()
            assert {p.name for p in loose.iterdir()} == {DB_NAME, DB_NAME + "-wal", DB_NAME + "-shm"}
            for path in loose.iterdir():
                os.chmod(path, 0o644)
            os.chmod(loose, 0o755)
            with Store(loose) as store:
                store.set_cursor("a", "1")
                assert mode(loose) == 0o700
                assert {p.name: mode(p) for p in loose.iterdir()} == {
                    DB_NAME: 0o600, DB_NAME + "-wal": 0o600, DB_NAME + "-shm": 0o600}
        finally:
            other.close()
    finally:
        os.umask(old)
