"""Posts from files, for when the API cannot serve them (X's free tier reads no timelines).

Formats, recognised by their content (any of them may be gzip-compressed):
- an X data export's `tweets.js`: `window.YTD.tweets.part0 = [{"tweet": {...}}, ...]`
  (id_str, full_text, created_at "Wed Oct 10 20:19:24 +0000 2018", in_reply_to_*);
- a CSV file with a header and a text column (`text`, `full_text`, `tweet` or `content`);
  `id` and `created_at` columns are optional;
- JSON Lines, one post a line, as in the project's data: {"id", "user", "created_at", "text"}.

Everything is parsed and checked before anything is stored: a malformed file is refused
with a one-line BotError naming the file and the line (or record), and nothing is stored.
Texts are kept exactly as the source has them; the trainer normalizes them later.
Posts without an id get a made-up stable one, `<format>:<hash>` (the `:` keeps it apart from
X's numeric ids), so importing the same file twice stores nothing twice.
"""
from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import re
import zlib
from datetime import datetime, timezone
from pathlib import Path

from bot.errors import BotError
from bot.store import Store, canonical_handle
from trainer.text import is_retweet

TEXT_COLUMNS = ("text", "full_text", "tweet", "content")
ID_COLUMNS = ("id", "id_str", "tweet_id", "status_id")
DATE_COLUMNS = ("created_at", "date", "timestamp", "time")
USER_COLUMNS = ("user", "screen_name", "username", "author")
TWITTER_DATE = "%a %b %d %H:%M:%S %z %Y"  # "Wed Oct 10 20:19:24 +0000 2018"


def read_archive(
    path: str | Path,
    *,
    include_retweets: bool = False,
    include_replies: bool = True,
    handle: str | None = None,
) -> list[dict]:
    """The posts in a tweets.js, CSV or JSON Lines file (gzip or not), in file order, as
    dicts with id, user (None when the file does not say), created_at (ISO or None), text.

    Retweets (`RT @...`) are left out unless include_retweets. Replies to other accounts
    are left out when not include_replies, where the file says what is a reply (tweets.js;
    `handle` is the account, so that its replies to itself are kept).
    """
    path = Path(path)
    text = _read_text(path)
    head = text.lstrip()[:64]
    if head.startswith("window.") or head.startswith("["):
        posts = _read_tweets_js(path, text, include_replies, handle)
    elif head.startswith("{"):
        posts = _read_jsonl(path, text)
    else:
        posts = _read_csv(path, text)
    if not include_retweets:
        posts = [p for p in posts if not is_retweet(p["text"])]
    seen: set[str] = set()
    unique = []
    for post in posts:  # the first copy of an id wins
        if post["id"] not in seen:
            seen.add(post["id"])
            unique.append(post)
    return unique


def import_posts(
    store: Store,
    handle: str,
    path: str | Path,
    *,
    include_replies: bool = False,
    include_retweets: bool = False,
) -> tuple[int, int]:
    """Read a file of `handle`'s posts and store them. Returns (new posts, posts now stored).

    Refuses a file that names another account as the author. Stores all or nothing."""
    name = canonical_handle(handle)
    target = store.target(name)
    if target:
        name = target["handle"]  # the target's canonical case
    posts = read_archive(path, include_retweets=include_retweets, include_replies=include_replies, handle=name)
    others = sorted({p["user"] for p in posts if p["user"] and p["user"].lstrip("@").lower() != name.lower()})
    if others:
        more = f" (and {len(others) - 1} other accounts)" if len(others) > 1 else ""
        raise BotError(f"{path} holds posts of @{others[0]}{more}, not of @{name}")
    if not posts:
        raise BotError(f"{path}: no posts to import (retweets{'' if include_replies else ' and replies'} are left out)")
    for post in posts:
        post["user"] = name
    new = store.add_posts(name, posts)
    return new, store.post_count(name)


# --- reading -----------------------------------------------------------------------------------
def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise BotError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise BotError(f"{path} is a directory, not a file") from None
    except OSError as exc:
        raise BotError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise BotError(f"{path}: not a readable gzip file ({exc})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise BotError(f"{path}: line {line}: not UTF-8 text") from None
    if not text.strip():
        raise BotError(f"{path} is empty")
    return text


def _read_tweets_js(path: Path, text: str, include_replies: bool, handle: str | None) -> list[dict]:
    prefix = re.match(r"\s*window\.YTD\.[\w.]+\s*=\s*", text)
    start = prefix.end() if prefix else 0
    if text.lstrip().startswith("window.") and not prefix:
        raise BotError(f"{path}: line 1: expected `window.YTD.tweets.part0 = [` at the start of a tweets.js file")
    try:
        items = json.loads(text[start:])
    except json.JSONDecodeError as exc:
        line = text[:start].count("\n") + exc.lineno
        raise BotError(f"{path}: line {line}: not valid JSON ({exc.msg})") from None
    if not isinstance(items, list):
        raise BotError(f"{path}: expected a list of tweets after the `window.YTD...` prefix")
    posts = []
    for number, item in enumerate(items, 1):
        tweet = item.get("tweet", item) if isinstance(item, dict) else None
        if not isinstance(tweet, dict):
            raise BotError(f"{path}: record {number}: not a tweet object")
        body = tweet.get("full_text", tweet.get("text"))
        if not isinstance(body, str):
            raise BotError(f"{path}: record {number}: no full_text")
        replied_to = tweet.get("in_reply_to_screen_name") or tweet.get("in_reply_to_user_id_str")
        if not include_replies and replied_to and (handle is None or str(replied_to).lower() != handle.lower()):
            continue  # a reply to someone else (a thread of the account's own is kept)
        created = _date(tweet.get("created_at"), path, f"record {number}")
        post_id = tweet.get("id_str", tweet.get("id"))
        posts.append(_post(post_id, None, created, body, "archive"))
    return posts


def _read_jsonl(path: Path, text: str) -> list[dict]:
    posts = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BotError(f"{path}: line {number}: not valid JSON ({exc.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise BotError(f"{path}: line {number}: expected an object with a \"text\" string")
        created = _date(record.get("created_at"), path, f"line {number}")
        user = record.get("user")
        posts.append(_post(record.get("id"), str(user) if user else None, created, record["text"], "jsonl"))
    return posts


def _read_csv(path: Path, text: str) -> list[dict]:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)  # refuse stray quotes
    try:
        header = [name.strip().lower() for name in next(reader)]
        text_col = _column(header, TEXT_COLUMNS)
        if text_col is None:
            raise BotError(
                f"{path}: not a tweets.js, JSON Lines or CSV file with a text column "
                f"(a CSV needs one of the columns {', '.join(TEXT_COLUMNS)})"
            )
        id_col, date_col, user_col = (_column(header, names) for names in (ID_COLUMNS, DATE_COLUMNS, USER_COLUMNS))
        posts = []
        for row in reader:
            where = f"line {reader.line_num}"
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise BotError(f"{path}: {where}: expected {len(header)} fields, found {len(row)}")
            body = row[text_col]
            if not body.strip():
                continue
            created = _date(row[date_col], path, where) if date_col is not None else None
            user = row[user_col].strip() if user_col is not None else ""
            post_id = row[id_col].strip() if id_col is not None else ""
            posts.append(_post(post_id, user or None, created, body, "csv"))
    except csv.Error as exc:
        raise BotError(f"{path}: line {reader.line_num}: malformed CSV ({exc})") from None
    return posts


# --- fields -------------------------------------------------------------------------------------
def _column(header: list[str], names: tuple[str, ...]) -> int | None:
    for name in names:
        if name in header:
            return header.index(name)
    return None


def _post(post_id: object, user: str | None, created: str | None, text: str, kind: str) -> dict:
    if post_id is None or not str(post_id).strip():
        digest = hashlib.sha1(f"{created}\x1f{text}".encode("utf-8")).hexdigest()[:16]
        post_id = f"{kind}:{digest}"
    return {"id": str(post_id).strip(), "user": user, "created_at": created, "text": text}


def _date(value: object, path: Path, where: str) -> str | None:
    """A date as ISO 8601: "...Z" when the source gives a time zone (converted to UTC),
    without one when it does not. Accepts ISO, X's "Wed Oct 10 20:19:24 +0000 2018" and
    epoch seconds."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    raw = str(value).strip()
    parsed: datetime | None = None
    if re.fullmatch(r"\d{9,11}(\.\d+)?", raw):
        parsed = datetime.fromtimestamp(float(raw), timezone.utc)
    else:
        for parse in (lambda s: datetime.strptime(s, TWITTER_DATE), lambda s: datetime.fromisoformat(s.replace("Z", "+00:00"))):
            try:
                parsed = parse(raw)
                break
            except ValueError:
                continue
    if parsed is None:
        raise BotError(f"{path}: {where}: {raw!r} is not a date")
    if parsed.tzinfo is None:
        return parsed.strftime("%Y-%m-%dT%H:%M:%S")
    return parsed.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
