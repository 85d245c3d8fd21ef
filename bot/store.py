"""Everything the bot knows, in one SQLite file (`BOT_DATA_DIR/state.sqlite`), over plain sqlite3.

One place for every key layout. Each table is `(key TEXT PRIMARY KEY, value BLOB)` holding
compact JSON text: the layout sqlitedict used, so files written by earlier versions open as
they are. Tables:
  meta            "schema_version" -> int, "created_at" -> ISO time
  targets         lowercase handle -> {"handle" (canonical case), "user_id", "added_at", ...}
  posts:<handle>  post id -> {"id", "user", "created_at", "text"}   (one table per account)
  cursors         name -> str   (e.g. "mentions", "next_slot", "trained_on:<handle>",
                  "usage:<UTC day>" (bot/costs.py), "paused_until:<job>" (a 429's reset),
                  "train_failures:<handle>" / "refresh_failures:<handle>" (bot/backoff.py))
  bot_posts       time-ordered key (UTC recording time + random tail) -> {"key", "kind"
                  ("post"|"reply"; absent = "post"), "text", "target", "slot", "scores",
                  "api_id", "posted_at", "status", "recorded_at", ...}; status "intent" =
                  about to be sent, fate unknown until reconciled; anything else is final
                  ("posted", "dry-run", "refused", "not-sent", "unknown" = given up, ...)
  models          lowercase handle -> {"handle", "registered_at", "path", "version", ...}
  mentions        mention id -> {"status" ("replied"|"skipped"|"refused"|"unknown"), "reason", "author_id",
                                 "conversation_id", "target", "reply_key", "handled_at"}
  jobs            job name -> {"last_run", "ok", "summary", "error", "next_run", ...}
Expression indexes on bot_posts' "slot" and "status" serve the daemon's hot queries.

Why plain sqlite3 and not sqlitedict: sqlitedict commits in its writer thread outside that
thread's try block, so a COMMIT that fails (disk full, read-only file) kills the thread and
the next commit() waits for ever while this store holds its lock: the daemon froze. Here one
connection, used under the store's lock, hands every error straight back: a failed write
raises StoreWriteError at once and leaves nothing of itself behind.

Crash safety: every change is one transaction (BEGIN IMMEDIATE ... COMMIT, WAL journal,
synchronous=FULL) committed before the method returns, so a process killed at any instant
(kill -9) or a power cut leaves either the whole change or none of it. Thread safety: one
lock around every operation, so read-modify-write steps from several scheduler threads never
interleave. A second process (the CLI beside the daemon) waits up to BUSY_TIMEOUT_S for the
other's write instead of failing. The directory is 0700 and the file 0600: it holds the
bot's history, which is nobody else's business. Old history is dropped by prune().
"""
from __future__ import annotations

import json
import logging
import os
import sqlite3
import stat
import threading
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from bot.errors import BotError

SCHEMA_VERSION = 1
DB_NAME = "state.sqlite"
BUSY_TIMEOUT_S = 5.0
TABLES = ("meta", "targets", "cursors", "bot_posts", "models", "mentions", "jobs")
# The queries below must spell these expressions the same way, or SQLite ignores the index.
# (No index on "kind": nearly every record is a post, so it would not narrow anything.)
INDEXES = {
    name: f"""CREATE INDEX IF NOT EXISTS "{name}" ON "bot_posts" (json_extract(value, '$.{field}'))"""
    for name, field in (("bot_posts_slot", "slot"), ("bot_posts_status", "status"))
}
_KEY_TIME = "%Y%m%dT%H%M%S%f"  # bot_posts keys start with their UTC recording time in this form

log = logging.getLogger(__name__)


class StoreWriteError(BotError):
    """A change could not be saved (disk full, read-only file, locked too long...); nothing
    of it was kept, and everything committed before is intact."""


def canonical_handle(handle: str) -> str:
    """`@Name` or `Name` -> `Name` (X), `Name.bsky.social` -> `name.bsky.social`,
    `@name@Server` -> `name@server`; BotError if it is no platform's handle."""
    from bot.platforms import canonical

    return canonical(handle)[1]


def _iso(when: datetime) -> str:
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _now() -> str:
    return _iso(datetime.now(timezone.utc))


def _encode(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _q(table: str) -> str:
    """A table name quoted for SQL (names such as "posts:someone" need it)."""
    return '"' + table.replace('"', '""') + '"'


def _utc(when: datetime) -> datetime:
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)  # naive = UTC


class Store:
    """The bot's state in `data_dir` (created if missing). Use as a context manager or close()."""

    def __init__(self, data_dir: str | Path):
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / DB_NAME
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._known_tables: set[str] = set()
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise BotError(f"cannot create the data directory {self.data_dir}: {exc.strerror or exc}") from None
        try:
            _tighten(self.data_dir, 0o700)
            if not self.path.exists():
                # Created 0600 by us rather than by SQLite with the umask's mode; SQLite then gives
                # the -wal and -shm files the same mode as this one.
                try:
                    os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
                except FileExistsError:  # another process just made it
                    pass
            _tighten(self.path, 0o600)
            # isolation_level=None: no hidden transactions; we BEGIN and COMMIT ourselves.
            self._conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                         check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode=WAL").fetchall()
            self._conn.execute("PRAGMA synchronous=FULL")  # a power cut cannot lose a commit either
            self._set_up()
            for suffix in ("-wal", "-shm"):  # left by an older version with a looser mode
                _tighten(self.path.with_name(DB_NAME + suffix), 0o600)
        except BotError:
            self.close()
            raise
        except Exception as exc:
            self.close()
            raise BotError(f"cannot open the bot's state {self.path}: {_one_line(exc)}") from None

    # --- lifecycle --------------------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.close()
                except sqlite3.Error:  # everything was committed already: nothing left to save
                    pass
                self._conn = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        return int(self._get("meta", "schema_version"))

    # --- targets ----------------------------------------------------------------------------
    def add_target(self, handle: str, user_id: str | None = None, **meta: Any) -> None:
        """Add or update a target. The handle's case as given here becomes its canonical case."""
        name = canonical_handle(handle)
        with self._transaction() as conn:
            entry = dict(_value(conn, "targets", name.lower()) or {})
            entry.update(meta)
            entry["handle"] = name
            entry["user_id"] = str(user_id) if user_id is not None else entry.get("user_id")
            entry.setdefault("added_at", _now())
            _put(conn, "targets", {name.lower(): entry})

    def remove_target(self, handle: str) -> bool:
        """Stop imitating an account; its posts and model stay stored. False if not a target."""
        key = canonical_handle(handle).lower()
        with self._transaction() as conn:
            return conn.execute('DELETE FROM "targets" WHERE key = ?', (key,)).rowcount > 0

    def targets(self) -> list[dict]:
        return sorted(self._values('SELECT value FROM "targets"'), key=lambda t: t["handle"].lower())

    def target(self, handle: str) -> dict | None:
        return self._get("targets", canonical_handle(handle).lower())

    # --- an account's real posts ------------------------------------------------------------
    def add_posts(self, handle: str, posts: Iterable[dict]) -> int:
        """Store posts (dicts with id, text, created_at, user) of an account, skipping ids
        already stored. All or nothing: one transaction. Returns how many were new.

        Store fetched posts before moving a fetch cursor: after a crash in between, the
        next fetch repeats a little work and loses nothing."""
        name = canonical_handle(handle)
        clean = [_clean_post(p, name, n) for n, p in enumerate(posts, 1)]
        table = _posts_table(name)
        with self._transaction() as conn:
            conn.execute(f"CREATE TABLE IF NOT EXISTS {_q(table)} (key TEXT PRIMARY KEY, value BLOB)")
            # OR IGNORE keeps the stored post, and the first of duplicates within the batch.
            new = conn.executemany(f"INSERT OR IGNORE INTO {_q(table)} (key, value) VALUES (?, ?)",
                                   [(p["id"], _encode(p)) for p in clean]).rowcount
        self._known_tables.add(table)
        return max(new, 0)

    def posts(self, handle: str) -> list[dict]:
        """An account's stored posts, oldest first (by time, then id; undated ones first,
        in the order they were stored)."""
        table = _posts_table(canonical_handle(handle))
        if not self._has_table(table):
            return []
        posts = self._values(f"SELECT value FROM {_q(table)} ORDER BY rowid")
        return sorted(posts, key=lambda p: (p.get("created_at") or "", int(p["id"]) if p["id"].isdigit() else 0))

    def post_count(self, handle: str) -> int:
        table = _posts_table(canonical_handle(handle))
        if not self._has_table(table):
            return 0
        return int(self._rows(f"SELECT COUNT(*) FROM {_q(table)}")[0][0])

    def newest_post_id(self, handle: str) -> str | None:
        """The newest post id stored for the account (the `since_id` of the next fetch):
        the largest numeric id (X, Mastodon), else the newest at:// URI (Bluesky); made-up
        ids of imported posts without one are ignored."""
        table = _posts_table(canonical_handle(handle))
        if not self._has_table(table):
            return None
        newest = self._rows(f"SELECT MAX(CAST(key AS INTEGER)) FROM {_q(table)} "
                            "WHERE key GLOB '[0-9]*' AND key NOT GLOB '*[^0-9]*'")[0][0]
        if newest is not None:
            return str(newest)
        # ids that are no numbers (Bluesky's at:// URIs): the newest by time
        row = self._rows(f"SELECT key FROM {_q(table)} WHERE key GLOB 'at://*' "
                         "ORDER BY json_extract(value, '$.created_at') DESC LIMIT 1")
        return row[0][0] if row else None

    # --- cursors ----------------------------------------------------------------------------
    def get_cursor(self, name: str) -> str | None:
        return self._get("cursors", name)

    def set_cursor(self, name: str, value: str) -> None:
        with self._transaction() as conn:
            _put(conn, "cursors", {name: str(value)})

    # --- what the bot posted ----------------------------------------------------------------
    def record_bot_post(self, record: dict) -> str:
        """Store a post of the bot (record it before sending, status "intent", then
        update it). Keys: text, target, scores, api_id, posted_at (ISO), status; anything
        else JSON-able is kept. Returns its key (keys sort in recording order)."""
        if not isinstance(record.get("text"), str):
            raise BotError("a bot post record needs its text")
        now = datetime.now(timezone.utc)
        key = f"{now.strftime(_KEY_TIME)}-{uuid.uuid4().hex[:8]}"
        entry = {"target": None, "scores": {}, "api_id": None, "posted_at": None, "status": "intent", **record}
        entry.update(key=key, recorded_at=_iso(now))
        with self._transaction() as conn:
            _put(conn, "bot_posts", {key: entry})
        return key

    def update_bot_post(self, key: str, **changes: Any) -> dict:
        """Change fields of a recorded bot post (e.g. status="posted", api_id=..., posted_at=...)."""
        with self._transaction() as conn:
            entry = _value(conn, "bot_posts", key)
            if entry is None:
                raise BotError(f"no bot post recorded under {key!r}")
            entry.update(changes)
            entry["key"] = key
            _put(conn, "bot_posts", {key: entry})
            return dict(entry)

    def bot_post(self, key: str) -> dict | None:
        return self._get("bot_posts", key)

    def bot_posts(self, since: datetime | None = None) -> list[dict]:
        """The bot's recorded posts, oldest first; with `since`, those posted (or, if not
        posted, recorded) at or after it. A naive `since` is taken as UTC."""
        entries = self._values('SELECT value FROM "bot_posts" ORDER BY key')
        if since is None:
            return entries
        since = _utc(since)
        return [e for e in entries if parse_time(e.get("posted_at") or e["recorded_at"]) >= since]

    def recent_bot_posts(self, kind: str | None = None, since: datetime | None = None) -> list[dict]:
        """The bot's posts of `kind` ("post" or "reply"; records without one are posts; None:
        both) recorded at or after `since` (naive = UTC; None: all), oldest first. Reads only
        those: the recording time is the start of the key."""
        sql, params = 'SELECT value FROM "bot_posts" WHERE key >= ?', [""]
        if since is not None:
            params[0] = _utc(since).astimezone(timezone.utc).strftime(_KEY_TIME)
        if kind is not None:
            sql += " AND coalesce(json_extract(value, '$.kind'), 'post') = ?"
            params.append(kind)
        return self._values(sql + " ORDER BY key", params)

    def slot_records(self, slot: str) -> list[dict]:
        """Every record of schedule slot `slot` (an ISO time), oldest first, read through
        the slot index: a slot's tries, whatever became of them."""
        return self._values("""SELECT value FROM "bot_posts" WHERE json_extract(value, '$.slot') = ?
                               ORDER BY key""", (slot,))

    def bot_post_texts(self, target: str) -> list[tuple[str, str]]:
        """(key, text) of every recorded post and reply as `target`, oldest first."""
        return [(k, t) for k, t in self._rows(
            """SELECT key, json_extract(value, '$.text') FROM "bot_posts"
               WHERE lower(ltrim(coalesce(json_extract(value, '$.target'), ''), '@')) = ? ORDER BY key""",
            (target.lstrip("@").lower(),))]

    def bot_post_counts(self) -> list[dict]:
        """{"target" (lowercase), "kind", "status", "count"} for each combination recorded."""
        rows = self._rows(
            """SELECT lower(coalesce(json_extract(value, '$.target'), '')), coalesce(json_extract(value, '$.kind'), 'post'),
                      json_extract(value, '$.status'), count(*) FROM "bot_posts" GROUP BY 1, 2, 3""")
        return [{"target": t, "kind": k, "status": st, "count": n} for t, k, st, n in rows]

    def pending_bot_posts(self) -> list[dict]:
        """Posts recorded as about to be sent ("intent") whose fate is unknown: after a
        crash they may or may not have landed (the daemon reconciles them at start).
        Any other status is final, "unknown" included (given up on, never retried)."""
        return self._values("""SELECT value FROM "bot_posts" WHERE json_extract(value, '$.status') = 'intent'
                               ORDER BY key""")

    # --- mentions handled -------------------------------------------------------------------
    def mark_mention(self, mention_id: str, status: str, **fields: Any) -> None:
        """Record that a mention was handled (replied to or skipped), so it never is again."""
        entry = {**fields, "status": status, "handled_at": _now()}
        with self._transaction() as conn:
            _put(conn, "mentions", {str(mention_id): entry})

    def mention(self, mention_id: str) -> dict | None:
        return self._get("mentions", str(mention_id))

    def handled_mentions(self) -> set[str]:
        return {row[0] for row in self._rows('SELECT key FROM "mentions"')}

    # --- job log (for `status`) -------------------------------------------------------------
    def record_job(self, name: str, **fields: Any) -> None:
        """Merge fields into a job's entry (last_run, ok, summary, error, next_run...)."""
        with self._transaction() as conn:
            entry = dict(_value(conn, "jobs", name) or {})
            entry.update(fields)
            _put(conn, "jobs", {name: entry})

    def jobs(self) -> dict[str, dict]:
        return {key: json.loads(value) for key, value in self._rows('SELECT key, value FROM "jobs" ORDER BY rowid')}

    # --- models -----------------------------------------------------------------------------
    def register_model(self, handle: str, info: dict) -> None:
        """Record an account's current model (artifact path, version, posts trained on,
        held-out loss...); replaces the previous entry."""
        name = canonical_handle(handle)
        entry = {**info, "handle": name, "registered_at": _now()}
        with self._transaction() as conn:
            _put(conn, "models", {name.lower(): entry})

    def model_info(self, handle: str) -> dict | None:
        return self._get("models", canonical_handle(handle).lower())

    # --- retention --------------------------------------------------------------------------
    def prune(self, keep_days: float, now: datetime | None = None) -> dict:
        """Forget history older than `keep_days`: bot posts recorded before then whose status
        is final (never an "intent": its fate is still to be reconciled), and mentions handled
        before then. One transaction. Returns {"bot_posts": n, "mentions": n} removed.

        A pruned mention could be answered again only if it came back from the API, and the
        daemon refuses mentions older than its backlog limit, far shorter than any retention."""
        if not keep_days > 0:  # also refuses NaN
            raise BotError(f"keep_days must be a positive number of days, not {keep_days!r}")
        cutoff = _utc(now or datetime.now(timezone.utc)) - timedelta(days=keep_days)
        with self._transaction() as conn:
            bot_posts = conn.execute(
                """DELETE FROM "bot_posts" WHERE key < ? AND json_extract(value, '$.status') IS NOT 'intent'""",
                (cutoff.astimezone(timezone.utc).strftime(_KEY_TIME),)).rowcount
            # A mention without handled_at (none are written so) compares as NULL: kept.
            mentions = conn.execute("""DELETE FROM "mentions" WHERE json_extract(value, '$.handled_at') < ?""",
                                    (_iso(cutoff),)).rowcount
        # Fold the WAL back into the file and shrink it to nothing. No VACUUM: it rewrites the
        # whole file (needing that much free disk again) under the lock, and the freed pages are
        # reused by later writes anyway, so the file stops growing at its high-water mark.
        with self._lock:
            try:
                self._connection().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            except sqlite3.Error as exc:  # the deletions are committed; a later checkpoint catches up
                log.warning("could not checkpoint %s after pruning: %s", self.path, _one_line(exc))
        return {"bot_posts": bot_posts, "mentions": mentions}

    # --- plumbing ---------------------------------------------------------------------------
    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise BotError(f"the bot's state {self.path} is closed")
        return self._conn

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed as a whole, or rolled back and StoreWriteError.
        IMMEDIATE takes the write lock at once, so what the block reads cannot change
        under it (another process waits up to BUSY_TIMEOUT_S, then gets an error)."""
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
                yield conn
                conn.execute("COMMIT")
            except BotError:  # ours, e.g. "no bot post recorded": already one line
                self._rollback(conn)
                raise
            except Exception as exc:  # SQLite's (full, read-only, locked...) or a value JSON cannot hold
                self._rollback(conn)
                raise StoreWriteError(f"cannot write the bot's state {self.path}: {_one_line(exc)}") from None
            except BaseException:  # KeyboardInterrupt...: leave no transaction open behind us
                self._rollback(conn)
                raise

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        if conn.in_transaction:  # a failed COMMIT may have rolled back already
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:  # the next BEGIN reports what is wrong
                pass

    def _rows(self, sql: str, params: Iterable[Any] = ()) -> list[tuple]:
        with self._lock:
            try:
                # fetchall: a statement left unfinished would hold a read snapshot open.
                return self._connection().execute(sql, tuple(params)).fetchall()
            except sqlite3.Error as exc:
                raise BotError(f"cannot read the bot's state {self.path}: {_one_line(exc)}") from None

    def _values(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        return [json.loads(row[0]) for row in self._rows(sql, params)]

    def _get(self, table: str, key: str) -> Any:
        found = self._values(f"SELECT value FROM {_q(table)} WHERE key = ?", (key,))
        return found[0] if found else None

    def _table_names(self) -> set[str]:
        # Asked afresh each time: another process (an `import` beside the daemon) may have
        # added tables since we opened, and a new statement sees its committed schema.
        return {row[0] for row in self._rows("SELECT name FROM sqlite_master WHERE type = 'table'")}

    def _has_table(self, table: str) -> bool:
        # Tables are never dropped, so one seen once stays known; only misses ask SQLite.
        if table not in self._known_tables and table in self._table_names():
            self._known_tables.add(table)
        return table in self._known_tables

    def _set_up(self) -> None:
        """Refuse a newer schema; create missing tables, indexes and meta entries. Writes
        nothing when all is there, so a read-only file still opens for reading."""
        conn = self._connection()
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master").fetchall()}
        version = None
        if "meta" in names:
            row = conn.execute("""SELECT value FROM "meta" WHERE key = 'schema_version'""").fetchone()
            version = int(json.loads(row[0])) if row else None
        if version is not None and version > SCHEMA_VERSION:
            raise BotError(
                f"{self.path} was written by a newer version of the bot (schema {version}, this one reads "
                f"{SCHEMA_VERSION}); upgrade the bot"
            )
        # (older schemas: migrations go here, keyed on `version`)
        ddl = [f"CREATE TABLE IF NOT EXISTS {_q(t)} (key TEXT PRIMARY KEY, value BLOB)"
               for t in TABLES if t not in names]
        ddl += [sql for name, sql in INDEXES.items() if name not in names]
        if ddl or version is None:
            with self._transaction() as tx:
                for statement in ddl:
                    tx.execute(statement)
                # OR IGNORE: a second process opening a new file at the same moment keeps the first's.
                tx.executemany('INSERT OR IGNORE INTO "meta" (key, value) VALUES (?, ?)',
                               [("schema_version", _encode(SCHEMA_VERSION)), ("created_at", _encode(_now()))])
        self._known_tables.update(TABLES)


def _posts_table(name: str) -> str:
    return f"posts:{name.lower()}"


def _value(conn: sqlite3.Connection, table: str, key: str) -> Any:
    """One value, read inside a transaction."""
    row = conn.execute(f"SELECT value FROM {_q(table)} WHERE key = ?", (key,)).fetchone()
    return json.loads(row[0]) if row else None


def _put(conn: sqlite3.Connection, table: str, items: dict[str, Any]) -> None:
    conn.executemany(f"REPLACE INTO {_q(table)} (key, value) VALUES (?, ?)",
                     [(key, _encode(value)) for key, value in items.items()])


def _tighten(path: Path, allowed: int) -> None:
    """Drop permission bits outside `allowed` from a file or directory of ours. Someone
    else's is not ours to change, nor is a shared sticky directory such as /tmp."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid != os.geteuid() or mode & stat.S_ISVTX or not mode & ~allowed:
        return
    try:
        os.chmod(path, mode & allowed)
    except OSError as exc:  # e.g. a read-only file system: still usable, but say so
        log.warning("could not restrict the permissions of %s: %s", path, exc.strerror or exc)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _clean_post(post: dict, name: str, number: int) -> dict:
    if not isinstance(post, dict):
        raise BotError(f"post {number} for @{name} is not a dict")
    post_id, text = post.get("id"), post.get("text")
    if post_id is None or not str(post_id).strip() or not isinstance(text, str):
        raise BotError(f"post {number} for @{name} needs an id and a text")
    created = post.get("created_at")
    return {"id": str(post_id).strip(), "user": post.get("user") or name,
            "created_at": str(created) if created else None, "text": text}


def parse_time(value: str) -> datetime:
    """An ISO time as the store writes it ("...Z" or an offset); naive = UTC."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
