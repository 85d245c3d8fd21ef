"""Posts from files, for when the API cannot serve them (X's free tier reads no timelines).

Formats, recognised by their content (any of them may be gzip-compressed):
- an X data export's `tweets.js`: `window.YTD.tweets.part0 = [{"tweet": {...}}, ...]`
  (id_str, full_text, created_at "Wed Oct 10 20:19:24 +0000 2018", in_reply_to_*);
- a CSV file with a header and a text column (`text`, `full_text`, `tweet` or `content`);
  `id` and `created_at` columns are optional;
- JSON Lines, one post a line, as in the project's data: {"id", "user", "created_at", "text"};
- a Bluesky repository export (`.car`, from `com.atproto.sync.getRepo` or the app's "Export my
  data"): the `app.bsky.feed.post` records, found by walking the repository's Merkle search
  tree from the commit so that each post gets its `at://<did>/app.bsky.feed.post/<rkey>` id;
- a Mastodon archive's `outbox.json` (or the archive itself, zip or tar.gz): the public and
  unlisted `Note`s of its `Create` activities, HTML turned into text, the status id as id.

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
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

from atproto_core.car import CAR
from atproto_core.cid import CID
from atproto_core.exceptions import AtProtocolError

from bot.errors import BotError
from bot.platforms.text import html_to_text
from bot.store import Store, canonical_handle
from trainer.text import is_retweet

TEXT_COLUMNS = ("text", "full_text", "tweet", "content")
ID_COLUMNS = ("id", "id_str", "tweet_id", "status_id")
DATE_COLUMNS = ("created_at", "date", "timestamp", "time")
USER_COLUMNS = ("user", "screen_name", "username", "author")
TWITTER_DATE = "%a %b %d %H:%M:%S %z %Y"  # "Wed Oct 10 20:19:24 +0000 2018"
BSKY_POST = "app.bsky.feed.post"  # the collection (and record $type) of Bluesky posts
# How ActivityPub spells "everyone": Mastodon writes the full IRI, other servers may compact it.
AS_PUBLIC = {"https://www.w3.org/ns/activitystreams#Public", "as:Public", "Public"}


def read_archive(
    path: str | Path,
    *,
    include_retweets: bool = False,
    include_replies: bool = True,
    handle: str | None = None,
) -> list[dict]:
    """The posts in a tweets.js, CSV, JSON Lines, Bluesky CAR or Mastodon outbox.json file
    (gzip or not), in file order, as dicts with id, user (None when the file does not say),
    created_at (ISO or None), text.

    Retweets (`RT @...`) are left out unless include_retweets; Bluesky reposts and Mastodon
    boosts always. Replies to other accounts are left out when not include_replies, where
    the file says what is a reply (tweets.js, where `handle` is the account so that its
    replies to itself are kept; Bluesky and Mastodon, which name the account themselves).
    """
    path = Path(path)
    data = _read_bytes(path)
    if _is_car(data):  # binary: recognised before any attempt to read it as text
        return _unique(_read_car(path, data, include_replies))
    text = _decode_text(path, data)
    head = text.lstrip()[:64]
    if head.startswith("window.") or head.startswith("["):
        posts = _read_tweets_js(path, text, include_replies, handle)
    elif head.startswith("{") and _is_outbox(text):
        posts = _read_outbox(path, text, include_replies)
    elif head.startswith("{"):
        posts = _read_jsonl(path, text)
    else:
        posts = _read_csv(path, text)
    if not include_retweets:
        posts = [p for p in posts if not is_retweet(p["text"])]
    return _unique(posts)


def _unique(posts: list[dict]) -> list[dict]:
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
def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped; for a Mastodon archive (zip or tar.gz), its outbox.json."""
    try:
        with path.open("rb") as handle:
            magic = handle.read(4)
        if magic == b"PK\x03\x04":
            return _zip_outbox(path)
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
    if data[257:262] == b"ustar":  # a tar file (older Mastodon archives are .tar.gz)
        return _tar_outbox(path, data)
    return data


def _zip_outbox(path: Path) -> bytes:
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.rsplit("/", 1)[-1] == "outbox.json"]
            if not names:
                raise BotError(f"{path}: a zip file without an outbox.json (expected a Mastodon archive)")
            return archive.read(min(names, key=len))  # the top-level one if there are several
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
        raise BotError(f"{path}: not a readable zip file ({exc})") from None


def _tar_outbox(path: Path, data: bytes) -> bytes:
    try:
        with tarfile.open(fileobj=io.BytesIO(data)) as archive:
            for member in archive:
                if member.isfile() and member.name.rsplit("/", 1)[-1] == "outbox.json":
                    return archive.extractfile(member).read()  # type: ignore[union-attr]
    except tarfile.TarError as exc:
        raise BotError(f"{path}: not a readable tar file ({exc})") from None
    raise BotError(f"{path}: a tar file without an outbox.json (expected a Mastodon archive)")


def _decode_text(path: Path, data: bytes) -> str:
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


# --- Bluesky: a repository export (CAR v1) -------------------------------------------------------
def _is_car(data: bytes) -> bool:
    """A CAR v1 file: a varint length, then a DAG-CBOR header map naming its `roots`."""
    length, start = _varint(data)
    header = data[start : start + length]
    return 0 < length <= 4096 and len(header) == length and 0xA1 <= header[0] <= 0xA3 and b"roots" in header


def _varint(data: bytes) -> tuple[int, int]:
    """An unsigned LEB128 varint at the start of data: (value, bytes used); (0, 0) if none."""
    value = 0
    for index, byte in enumerate(data[:9]):
        value |= (byte & 0x7F) << (7 * index)
        if not byte & 0x80:
            return value, index + 1
    return 0, 0


def _read_car(path: Path, data: bytes, include_replies: bool) -> list[dict]:
    try:
        car = CAR.from_bytes(data)
    except (ValueError, AtProtocolError, RecursionError) as exc:
        raise BotError(f"{path}: not a readable CAR file ({exc})") from None
    commit = car.blocks.get(car.root)
    if not isinstance(commit, dict) or not isinstance(commit.get("did"), str) or not isinstance(commit.get("data"), bytes):
        raise BotError(f"{path}: not a Bluesky repository (the CAR file's root is not a commit with a did and data)")
    did = commit["did"]
    posts = []
    for key, link in _mst_entries(path, car.blocks, commit["data"]):
        collection, _, rkey = key.partition("/")
        if collection != BSKY_POST:
            continue  # likes, reposts, follows, the profile...
        post = _bsky_post(path, did, rkey, _block(path, car.blocks, link, f"record {key}"), include_replies)
        if post:
            posts.append(post)
    return posts


def _block(path: Path, blocks: dict, link: object, what: str) -> object:
    """The decoded block a CID link (raw bytes, as libipld gives links) points to."""
    block = blocks.get(CID.from_decoded_bytes(link)) if isinstance(link, bytes) else None
    if block is None:
        raise BotError(f"{path}: {what} is missing from the CAR file (a partial or damaged export)")
    return block


def _mst_entries(path: Path, blocks: dict, root: bytes) -> Iterator[tuple[str, object]]:
    """(key, record link) for every entry of the Merkle search tree, in key order.

    A node is {"l": left subtree, "e": [{"p", "k", "v", "t"}, ...]}: each key is the node's
    previous key's first p bytes + k; t is the subtree between it and the next entry. Walked
    with a stack, not recursion, and each node once, so that no file can loop or overflow."""
    stack: list[tuple[bytes | None, object]] = [(None, root)]  # (None, node link) or (key, record link)
    seen: set[bytes] = set()
    last = b""
    while stack:
        key, link = stack.pop()
        if key is not None:
            if key <= last:  # keys are unique and sorted: anything else is a damaged tree
                raise BotError(f"{path}: the repository's tree is out of key order at {key!r} (a damaged export)")
            last = key
            yield key.decode("utf-8", "replace"), link
        elif link is not None:
            if not isinstance(link, bytes) or link in seen:
                raise BotError(f"{path}: the repository's tree links a node twice (a damaged export)")
            seen.add(link)
            stack.extend(reversed(_mst_node(path, _block(path, blocks, link, "a tree node"))))


def _mst_node(path: Path, node: object) -> list[tuple[bytes | None, object]]:
    """A node's walk order: its left subtree, then each entry followed by its right subtree."""
    if not isinstance(node, dict) or not isinstance(node.get("e"), list):
        raise BotError(f"{path}: a tree node of the repository is not {{l, e}} (a damaged export)")
    items: list[tuple[bytes | None, object]] = [(None, node.get("l"))]
    key = b""
    for entry in node["e"]:
        if not (isinstance(entry, dict) and isinstance(entry.get("p"), int) and isinstance(entry.get("k"), bytes)
                and 0 <= entry["p"] <= len(key)):
            raise BotError(f"{path}: a tree entry of the repository is not {{p, k, v, t}} (a damaged export)")
        key = key[: entry["p"]] + entry["k"]
        items += [(key, entry.get("v")), (None, entry.get("t"))]
    return items


def _bsky_post(path: Path, did: str, rkey: str, record: object, include_replies: bool) -> dict | None:
    """A post record as a post; None for one to leave out (a reply to others, no text)."""
    where = f"record {BSKY_POST}/{rkey}"
    if not isinstance(record, dict) or record.get("$type") != BSKY_POST:
        raise BotError(f"{path}: {where} is not an {BSKY_POST} record")
    if not isinstance(record.get("text"), str):
        raise BotError(f"{path}: {where}: no text")
    reply = record.get("reply")
    if reply is not None and not include_replies and _bsky_parent_did(reply) != did:
        return None  # a reply to someone else; one to the account itself continues a thread
    if not record["text"].strip():
        return None  # images or a quote alone: nothing to learn from
    created = _date(record.get("createdAt"), path, where)
    return _post(f"at://{did}/{BSKY_POST}/{rkey}", None, created, record["text"], "bluesky")


def _bsky_parent_did(reply: object) -> str | None:
    """The DID in a reply's parent URI, at://<did>/<collection>/<rkey>."""
    parent = reply.get("parent") if isinstance(reply, dict) else None
    uri = parent.get("uri") if isinstance(parent, dict) else None
    if not isinstance(uri, str) or not uri.startswith("at://"):
        return None
    return uri[len("at://"):].split("/", 1)[0]


# --- Mastodon: an archive's outbox.json ----------------------------------------------------------
def _is_outbox(text: str) -> bool:
    """An ActivityPub collection (JSON-LD, with an @context), not a line of JSON Lines."""
    head = text[:4096]
    return '"@context"' in head and ('"OrderedCollection"' in head or '"orderedItems"' in text)


def _read_outbox(path: Path, text: str, include_replies: bool) -> list[dict]:
    try:
        collection = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BotError(f"{path}: line {exc.lineno}: not valid JSON ({exc.msg})") from None
    items = collection.get("orderedItems") if isinstance(collection, dict) else None
    if not isinstance(items, list):
        raise BotError(f"{path}: expected an ActivityPub outbox with an orderedItems list")
    posts = []
    for number, activity in enumerate(items, 1):
        if not isinstance(activity, dict):
            raise BotError(f"{path}: item {number}: not an activity object")
        note = activity.get("object")
        if activity.get("type") != "Create" or not isinstance(note, dict) or note.get("type") != "Note":
            continue  # boosts (Announce), polls and whatever else is not a plain status
        post = _mastodon_post(path, f"item {number}", activity, note, include_replies)
        if post:
            posts.append(post)
    return posts


def _mastodon_post(path: Path, where: str, activity: dict, note: dict, include_replies: bool) -> dict | None:
    """A Note as a post; None for one to leave out (not public, a content warning, a reply
    to others, no text)."""
    audience = _as_list(note.get("to", activity.get("to"))) + _as_list(note.get("cc", activity.get("cc")))
    if not AS_PUBLIC.intersection(audience):
        return None  # followers-only or direct: never the account's public voice
    if note.get("summary"):
        return None  # behind a content warning
    parent, actor = note.get("inReplyTo"), note.get("attributedTo", activity.get("actor"))
    own = isinstance(parent, str) and isinstance(actor, str) and parent.startswith(actor.rstrip("/") + "/")
    if parent and not include_replies and not own:
        return None  # a reply to someone else; one to the account itself continues a thread
    status_url, content = note.get("id"), note.get("content")
    status_id = urlsplit(status_url).path.rstrip("/").rsplit("/", 1)[-1] if isinstance(status_url, str) else ""
    if not status_id or not isinstance(content, str):
        raise BotError(f"{path}: {where}: a Note without an id URL or content")
    text = html_to_text(content)
    if not text:
        return None  # media alone
    return _post(status_id, None, _date(note.get("published"), path, where), text, "mastodon")


def _as_list(value: object) -> list:
    return value if isinstance(value, list) else [value] if value else []


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
