"""Everything the bot knows, in one SQLite file (`BOT_DATA_DIR/state.sqlite`) via sqlitedict.

One place for every key layout. Tables (each a sqlitedict key -> JSON value):
  meta            "schema_version" -> int, "created_at" -> ISO time
  targets         lowercase handle -> {"handle" (canonical case), "user_id", "added_at", ...}
  posts:<handle>  post id -> {"id", "user", "created_at", "text"}   (one table per account)
  cursors         name -> str   (e.g. "mentions", "fetch:<handle>")
  bot_posts       time-ordered key -> {"key", "text", "target", "scores", "api_id",
                                       "posted_at", "status", "recorded_at", ...}
  models          lowercase handle -> {"handle", "registered_at", "path", "version", ...}
  mentions        mention id -> {"status" ("replied"|"skipped"), "reason", "author_id",
                                 "conversation_id", "target", "reply_key", "handled_at"}
  jobs            job name -> {"last_run", "ok", "summary", "error", "next_run", ...}

Crash safety: every change is committed before the method returns, in one SQLite
transaction (WAL journal, synchronous=FULL), so a process killed at any instant (kill -9)
leaves either the whole change or none of it. Thread safety: one lock around every
operation, so read-modify-write steps from several scheduler threads never interleave.
Values are JSON, so the file can be read with any SQLite tool.
"""
from __future__ import annotations

import json
import logging
import re
import sqlite3
import threading
import uuid
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlitedict import SqliteDict

from bot.errors import BotError

SCHEMA_VERSION = 1
DB_NAME = "state.sqlite"
HANDLE_RE = re.compile(r"[A-Za-z0-9_]{1,15}")

# sqlitedict logs a multi-line traceback at ERROR for any failed statement before the
# error reaches us; we turn failures into one-line BotErrors ourselves.
logging.getLogger("sqlitedict").setLevel(logging.CRITICAL)


def canonical_handle(handle: str) -> str:
    """`@Name` or `Name` -> `Name`; BotError if it cannot be an X handle."""
    cleaned = str(handle).strip().lstrip("@")
    if not HANDLE_RE.fullmatch(cleaned):
        raise BotError(f"{handle!r} is not an X handle (1-15 letters, digits or _)")
    return cleaned


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _encode(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class Store:
    """The bot's state in `data_dir` (created if missing). Use as a context manager or close()."""

    def __init__(self, data_dir: str | Path):
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / DB_NAME
        self._lock = threading.RLock()
        self._tables: dict[str, SqliteDict] = {}
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BotError(f"cannot create the data directory {self.data_dir}: {exc.strerror or exc}") from None
        try:
            # Open the file once with plain sqlite3 first: sqlitedict would fail on a corrupt
            # or read-only file inside its worker thread, printing a traceback.
            conn = sqlite3.connect(self.path)
            try:
                conn.execute("PRAGMA journal_mode=WAL").fetchone()
                conn.execute("SELECT name FROM sqlite_master").fetchall()
            finally:
                conn.close()
            self._meta = self._table("meta")
            self._targets = self._table("targets")
            self._cursors = self._table("cursors")
            self._bot_posts = self._table("bot_posts")
            self._models = self._table("models")
            self._mentions = self._table("mentions")
            self._jobs = self._table("jobs")
            self._check_schema()
        except BotError:
            self.close()
            raise
        except Exception as exc:
            self.close()
            raise BotError(f"cannot open the bot's state {self.path}: {' '.join(str(exc).split())}") from None

    # --- lifecycle --------------------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            for table in self._tables.values():
                try:
                    table.close()
                except Exception:  # closing what failed to open: nothing left to save
                    pass
            self._tables.clear()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        with self._lock:
            return int(self._meta["schema_version"])

    # --- targets ----------------------------------------------------------------------------
    def add_target(self, handle: str, user_id: str | None = None, **meta: Any) -> None:
        """Add or update a target. The handle's case as given here becomes its canonical case."""
        name = canonical_handle(handle)
        with self._lock:
            entry = dict(self._targets.get(name.lower()) or {})
            entry.update(meta)
            entry["handle"] = name
            entry["user_id"] = str(user_id) if user_id is not None else entry.get("user_id")
            entry.setdefault("added_at", _now())
            self._write(self._targets, {name.lower(): entry})

    def remove_target(self, handle: str) -> bool:
        """Stop imitating an account; its posts and model stay stored. False if not a target."""
        key = canonical_handle(handle).lower()
        with self._lock:
            if key not in self._targets:
                return False
            del self._targets[key]
            self._commit(self._targets)
            return True

    def targets(self) -> list[dict]:
        with self._lock:
            return sorted((dict(v) for v in self._targets.values()), key=lambda t: t["handle"].lower())

    def target(self, handle: str) -> dict | None:
        with self._lock:
            entry = self._targets.get(canonical_handle(handle).lower())
            return dict(entry) if entry else None

    # --- an account's real posts ------------------------------------------------------------
    def add_posts(self, handle: str, posts: Iterable[dict]) -> int:
        """Store posts (dicts with id, text, created_at, user) of an account, skipping ids
        already stored. All or nothing: one transaction. Returns how many were new.

        Store fetched posts before moving a fetch cursor: after a crash in between, the
        next fetch repeats a little work and loses nothing."""
        name = canonical_handle(handle)
        clean = [_clean_post(p, name, n) for n, p in enumerate(posts, 1)]
        with self._lock:
            table = self._posts_table(name.lower(), create=True)
            existing = set(table.keys())
            new: dict[str, dict] = {}
            for post in clean:
                if post["id"] not in existing and post["id"] not in new:
                    new[post["id"]] = post
            if new:
                self._write(table, new)
            return len(new)

    def posts(self, handle: str) -> list[dict]:
        """An account's stored posts, oldest first (by time, then id; undated ones first,
        in the order they were stored)."""
        with self._lock:
            table = self._posts_table(canonical_handle(handle).lower())
            if table is None:
                return []
            posts = list(table.values())
        return sorted(posts, key=lambda p: (p.get("created_at") or "", int(p["id"]) if p["id"].isdigit() else 0))

    def post_count(self, handle: str) -> int:
        with self._lock:
            table = self._posts_table(canonical_handle(handle).lower())
            return len(table) if table is not None else 0

    def newest_post_id(self, handle: str) -> str | None:
        """The largest X post id stored for the account (the `since_id` of the next fetch);
        made-up ids of imported posts without one are ignored."""
        with self._lock:
            table = self._posts_table(canonical_handle(handle).lower())
            ids = [int(k) for k in table.keys() if k.isdigit()] if table is not None else []
        return str(max(ids)) if ids else None

    # --- cursors ----------------------------------------------------------------------------
    def get_cursor(self, name: str) -> str | None:
        with self._lock:
            return self._cursors.get(name)

    def set_cursor(self, name: str, value: str) -> None:
        with self._lock:
            self._write(self._cursors, {name: str(value)})

    # --- what the bot posted ----------------------------------------------------------------
    def record_bot_post(self, record: dict) -> str:
        """Store a post of the bot (record it before sending, status "intent", then
        update it). Keys: text, target, scores, api_id, posted_at (ISO), status; anything
        else JSON-able is kept. Returns its key (keys sort in recording order)."""
        if not isinstance(record.get("text"), str):
            raise BotError("a bot post record needs its text")
        key = f"{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S%f')}-{uuid.uuid4().hex[:8]}"
        entry = {"target": None, "scores": {}, "api_id": None, "posted_at": None, "status": "intent", **record}
        entry.update(key=key, recorded_at=_now())
        with self._lock:
            self._write(self._bot_posts, {key: entry})
        return key

    def update_bot_post(self, key: str, **changes: Any) -> dict:
        """Change fields of a recorded bot post (e.g. status="posted", api_id=..., posted_at=...)."""
        with self._lock:
            entry = self._bot_posts.get(key)
            if entry is None:
                raise BotError(f"no bot post recorded under {key!r}")
            entry.update(changes)
            entry["key"] = key
            self._write(self._bot_posts, {key: entry})
            return dict(entry)

    def bot_post(self, key: str) -> dict | None:
        with self._lock:
            return self._bot_posts.get(key)

    def bot_posts(self, since: datetime | None = None) -> list[dict]:
        """The bot's recorded posts, oldest first; with `since`, those posted (or, if not
        posted, recorded) at or after it. A naive `since` is taken as UTC."""
        with self._lock:
            entries = [v for _, v in sorted(self._bot_posts.items())]
        if since is None:
            return entries
        if since.tzinfo is None:
            since = since.replace(tzinfo=timezone.utc)
        return [e for e in entries if _parse_time(e.get("posted_at") or e["recorded_at"]) >= since]

    def pending_bot_posts(self) -> list[dict]:
        """Posts recorded as about to be sent ("intent") whose fate is unknown: after a
        crash they may or may not have landed (the daemon reconciles them at start)."""
        return [e for e in self.bot_posts() if e.get("status") == "intent"]

    # --- mentions handled -------------------------------------------------------------------
    def mark_mention(self, mention_id: str, status: str, **fields: Any) -> None:
        """Record that a mention was handled (replied to or skipped), so it never is again."""
        entry = {**fields, "status": status, "handled_at": _now()}
        with self._lock:
            self._write(self._mentions, {str(mention_id): entry})

    def mention(self, mention_id: str) -> dict | None:
        with self._lock:
            entry = self._mentions.get(str(mention_id))
            return dict(entry) if entry else None

    def handled_mentions(self) -> set[str]:
        with self._lock:
            return set(self._mentions.keys())

    # --- job log (for `status`) -------------------------------------------------------------
    def record_job(self, name: str, **fields: Any) -> None:
        """Merge fields into a job's entry (last_run, ok, summary, error, next_run...)."""
        with self._lock:
            entry = dict(self._jobs.get(name) or {})
            entry.update(fields)
            self._write(self._jobs, {name: entry})

    def jobs(self) -> dict[str, dict]:
        with self._lock:
            return {k: dict(v) for k, v in self._jobs.items()}

    # --- models -----------------------------------------------------------------------------
    def register_model(self, handle: str, info: dict) -> None:
        """Record an account's current model (artifact path, version, posts trained on,
        held-out loss...); replaces the previous entry."""
        name = canonical_handle(handle)
        entry = {**info, "handle": name, "registered_at": _now()}
        with self._lock:
            self._write(self._models, {name.lower(): entry})

    def model_info(self, handle: str) -> dict | None:
        with self._lock:
            entry = self._models.get(canonical_handle(handle).lower())
            return dict(entry) if entry else None

    # --- plumbing ---------------------------------------------------------------------------
    def _table(self, name: str) -> SqliteDict:
        table = SqliteDict(
            str(self.path), tablename=name, flag="c", autocommit=False, journal_mode="WAL",
            encode=_encode, decode=json.loads, outer_stack=False,
        )
        # sqlitedict turns fsync off; with it on, a power cut cannot lose a commit either.
        table.conn.execute("PRAGMA synchronous=FULL")
        self._tables[name] = table
        return table

    def _posts_table(self, key: str, create: bool = False) -> SqliteDict | None:
        name = f"posts:{key}"
        if name in self._tables:
            return self._tables[name]
        if not create and name not in self._table_names():
            return None  # never create an empty table just by looking
        return self._table(name)

    def _table_names(self) -> set[str]:
        # Another process (an `import` beside the daemon) may have added tables since we opened.
        conn = sqlite3.connect(self.path)
        try:
            return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        finally:
            conn.close()

    def _check_schema(self) -> None:
        version = self._meta.get("schema_version")
        if version is None:
            self._write(self._meta, {"schema_version": SCHEMA_VERSION, "created_at": _now()})
        elif int(version) > SCHEMA_VERSION:
            raise BotError(
                f"{self.path} was written by a newer version of the bot (schema {version}, this one reads "
                f"{SCHEMA_VERSION}); upgrade the bot"
            )
        # (older schemas: migrations go here, keyed on `version`)

    def _write(self, table: SqliteDict, items: dict[str, Any]) -> None:
        """Write items and commit them as one transaction, or leave nothing behind."""
        try:
            table.update(items)
            table.commit()
        except Exception as exc:
            _rollback(table)
            raise BotError(f"cannot write the bot's state {self.path}: {' '.join(str(exc).split())}") from None

    def _commit(self, table: SqliteDict) -> None:
        try:
            table.commit()
        except Exception as exc:
            _rollback(table)
            raise BotError(f"cannot write the bot's state {self.path}: {' '.join(str(exc).split())}") from None


def _rollback(table: SqliteDict) -> None:
    try:
        table.conn.execute("ROLLBACK")
        table.conn.select_one("SELECT 1")  # surfaces (and clears) an error of the rollback itself
    except Exception:
        pass


def _clean_post(post: dict, name: str, number: int) -> dict:
    if not isinstance(post, dict):
        raise BotError(f"post {number} for @{name} is not a dict")
    post_id, text = post.get("id"), post.get("text")
    if post_id is None or not str(post_id).strip() or not isinstance(text, str):
        raise BotError(f"post {number} for @{name} needs an id and a text")
    created = post.get("created_at")
    return {"id": str(post_id).strip(), "user": post.get("user") or name,
            "created_at": str(created) if created else None, "text": text}


def _parse_time(value: str) -> datetime:
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
