"""Importing posts from files: tweets.js, CSV, JSON Lines (gzip or not), Bluesky repository
exports (CAR), Mastodon outbox.json (or its archive), malformed files, and the
`python -m bot import` command."""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import libipld
import pytest

from bot.errors import BotError
from bot.ingest import import_posts, read_archive

from tests.bot_helpers import REPO
from tests.trainer_helpers import ACCOUNT_FILE

FIXTURES = Path(__file__).parent / "fixtures"


def tweet(id_str: str, text: str, created: str = "Wed Oct 10 20:19:24 +0000 2018", **extra) -> dict:
    return {"tweet": {"id_str": id_str, "id": id_str, "full_text": text, "created_at": created, **extra}}


def write_tweets_js(path, items) -> None:
    path.write_text("window.YTD.tweets.part0 = " + json.dumps(items, indent=2), encoding="utf-8")


def test_tweets_js(tmp_path):
    path = tmp_path / "tweets.js"
    write_tweets_js(path, [
        tweet("1050118621198921728", "To make room for more expression, we will now count all emojis as equal &amp; 🎉"),
        tweet("1050118621198921729", "RT @someone: not our words"),
        tweet("1050118621198921730", "@friend thanks!", in_reply_to_screen_name="friend", in_reply_to_user_id_str="42"),
        tweet("1050118621198921731", "2/ and the thread goes on", "Thu Oct 11 08:00:00 +0200 2018",
              in_reply_to_screen_name="Me", in_reply_to_user_id_str="7"),
    ])
    posts = read_archive(path, include_replies=False, handle="me")
    assert posts == [
        {"id": "1050118621198921728", "user": None, "created_at": "2018-10-10T20:19:24Z",
         "text": "To make room for more expression, we will now count all emojis as equal &amp; 🎉"},
        {"id": "1050118621198921731", "user": None, "created_at": "2018-10-11T06:00:00Z",
         "text": "2/ and the thread goes on"},
    ]
    assert len(read_archive(path)) == 3  # replies kept by default; the retweet never
    assert len(read_archive(path, include_retweets=True)) == 4


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('window.YTD.tweets.part0 = [\n  {"tweet": {"id_str": "1",\n  "full_text": "a" "b"}}\n]', "line 3: not valid JSON"),
        ('window.YTD.tweets.part0 = [{"tweet": {"id_str": "1", "full_text": "ok", "created_at": "Wed Oct 10 20:19:24 +0000 2018"}},'
         ' {"tweet": {"id_str": "2"}}]', "record 2: no full_text"),
        ('window.YTD.tweets.part0 = [{"tweet": {"id_str": "1", "full_text": "x", "created_at": "yesterday"}}]',
         "record 1: 'yesterday' is not a date"),
        ('window.YTD.tweets.part0 = {"tweet": 1}', "expected a list of tweets"),
        ("window.location = 'http://example.com'", "line 1: expected `window.YTD.tweets.part0 = [`"),
    ],
)
def test_malformed_tweets_js(tmp_path, content, message):
    path = tmp_path / "tweets.js"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(BotError) as caught:
        read_archive(path)
    assert str(caught.value).startswith(f"{path}: ") and message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_csv_with_text_column_only_gets_stable_ids(tmp_path):
    path = tmp_path / "posts.csv"
    path.write_text('text\nfirst post\n"second, with a comma\nand a line break"\n\n"RT @x: a retweet"\n', encoding="utf-8")
    posts = read_archive(path)
    assert [p["text"] for p in posts] == ["first post", "second, with a comma\nand a line break"]
    assert all(p["id"].startswith("csv:") and p["created_at"] is None for p in posts)
    assert [p["id"] for p in read_archive(path)] == [p["id"] for p in posts]  # stable across reads


def test_csv_with_ids_dates_and_users(tmp_path):
    path = tmp_path / "export.csv"
    path.write_text(
        "Screen_Name,ID,Created_At,Text\n"
        "AndrewYang,1079908657649852416,2019-01-01 01:14:22,Happy New Year\n"
        "AndrewYang,1079908657649852417,2019-01-01T02:00:00Z,Second\n"
        "AndrewYang,1079908657649852418,1546308000,Epoch seconds\n",
        encoding="utf-8",
    )
    posts = read_archive(path)
    assert [(p["id"], p["user"], p["created_at"]) for p in posts] == [
        ("1079908657649852416", "AndrewYang", "2019-01-01T01:14:22"),  # no zone in the source: none added
        ("1079908657649852417", "AndrewYang", "2019-01-01T02:00:00Z"),
        ("1079908657649852418", "AndrewYang", "2019-01-01T02:00:00Z"),
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("id,text\n1,fine\n2,too,many\n", "line 3: expected 2 fields, found 3"),
        ("id,created_at,text\n1,not a date,hello\n", "line 2: 'not a date' is not a date"),
        ("id,body\n1,hello\n", "a CSV needs one of the columns text"),
        ('text\n"never closed\n', "line 2: malformed CSV"),
    ],
)
def test_malformed_csv(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(BotError, match=message) as caught:
        read_archive(path)
    assert str(caught.value).startswith(str(path))


def test_json_lines_gzip_as_in_shared_data():
    path = ACCOUNT_FILE  # the shared data's format
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        expected = [json.loads(line) for line in handle]
    posts = read_archive(path)
    assert len(posts) == 3200
    assert posts == expected  # same keys, same values, same order


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"id": "1", "text": "ok"}', '{"id": "2", "text": "ok"}', '{"id": "3", "text": '], "line 3: not valid JSON"),
        (['{"id": "1", "text": "ok"}', '{"id": "2"}'], 'line 2: expected an object with a "text" string'),
        (['["not", "an", "object"]'], "record 1: not a tweet object"),
        (['{"id": "1", "text": "ok", "created_at": "someday"}'], "line 1: 'someday' is not a date"),
    ],
)
def test_malformed_json_lines(tmp_path, lines, message):
    path = tmp_path / "bad.jsonl.gz"
    path.write_bytes(gzip.compress("\n".join(lines).encode("utf-8")))
    with pytest.raises(BotError, match=message):
        read_archive(path)


def test_unreadable_files(tmp_path):
    truncated = tmp_path / "cut.jsonl.gz"
    whole = gzip.compress("".join(json.dumps({"id": str(n), "text": f"post {n}"}) + "\n" for n in range(500)).encode())
    truncated.write_bytes(whole[: len(whole) // 2])  # a download cut short
    with pytest.raises(BotError, match="not a readable gzip file"):
        read_archive(truncated)
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes("text\nfine\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(BotError, match="line 3: not UTF-8"):
        read_archive(latin1)
    empty = tmp_path / "empty.csv"
    empty.write_text("  \n")
    with pytest.raises(BotError, match="is empty"):
        read_archive(empty)
    with pytest.raises(BotError, match="no such file"):
        read_archive(tmp_path / "missing.js")
    with pytest.raises(BotError, match="is a directory"):
        read_archive(tmp_path)


def test_import_dedupes_and_never_half_stores(store, tmp_path):
    source = ACCOUNT_FILE
    assert import_posts(store, "realdonaldtrump", source) == (3200, 3200)
    assert import_posts(store, "realDonaldTrump", source) == (0, 3200)
    assert store.posts("realDonaldTrump")[-1]["user"] == "realdonaldtrump"  # the handle as first given
    bad = tmp_path / "more.jsonl"
    good_lines = [json.dumps({"id": str(n), "user": "realDonaldTrump", "text": f"new {n}"}) for n in range(50)]
    bad.write_text("\n".join(good_lines + ["{broken"]) + "\n", encoding="utf-8")
    with pytest.raises(BotError, match="line 51"):
        import_posts(store, "realDonaldTrump", bad)
    assert store.post_count("realDonaldTrump") == 3200  # none of the 50 good lines stored
    with pytest.raises(BotError, match="holds posts of @realDonaldTrump, not of @BernieSanders"):
        import_posts(store, "BernieSanders", source)
    assert store.post_count("BernieSanders") == 0
    only_retweets = tmp_path / "rts.csv"
    only_retweets.write_text("text\nRT @a: b\n", encoding="utf-8")
    with pytest.raises(BotError, match="no posts to import"):
        import_posts(store, "someone", only_retweets)


def run_cli(*args: str, data_dir) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TWITTER_", "BOT_"))}
    env.update(PYTHONPATH=str(REPO), BOT_DATA_DIR=str(data_dir))
    return subprocess.run([sys.executable, "-m", "bot", *args], cwd=data_dir.parent, env=env,
                          capture_output=True, text=True, timeout=60)


def test_cli_import(tmp_path):
    data = tmp_path / "data"
    archive = tmp_path / "tweets.js"
    write_tweets_js(archive, [tweet("1", "one"), tweet("2", "two")])
    done = run_cli("import", "@SomeOne", str(archive), data_dir=data)
    assert done.returncode == 0, done.stderr
    assert f"imported 2 new posts of @SomeOne from {archive} (2 stored in all)" in done.stdout
    broken = tmp_path / "broken.csv"
    broken.write_text("id,text\n1,a\n2,b,c\n", encoding="utf-8")
    failed = run_cli("import", "SomeOne", str(broken), data_dir=data)
    assert failed.returncode == 1
    assert failed.stderr == f"error: {broken}: line 3: expected 2 fields, found 3\n"  # one line, no traceback
    bad_handle = run_cli("import", "not a handle", str(archive), data_dir=data)
    assert bad_handle.returncode == 1 and bad_handle.stderr.count("\n") == 1 and "not an X handle" in bad_handle.stderr


# --- Bluesky: a repository export written here, block by block, as a PDS writes one -----------
# libipld encodes DAG-CBOR (a bytes value that is a valid CID becomes a tag-42 link, as it
# decodes links to raw bytes); the CIDs are CIDv1, dag-cbor, sha2-256, as in every repository.
def cid_of(block: bytes) -> bytes:
    return bytes([0x01, 0x71, 0x12, 0x20]) + hashlib.sha256(block).digest()


def varint(n: int) -> bytes:
    out = b""
    while True:
        low, n = n & 0x7F, n >> 7
        if not n:
            return out + bytes([low])
        out += bytes([low | 0x80])


def car_file(root: bytes, blocks: dict[bytes, bytes]) -> bytes:
    """CAR v1: a varint-length-prefixed header {roots, version: 1}, then varint-length-prefixed
    (CID + block) sections."""
    header = libipld.encode_dag_cbor({"roots": [root], "version": 1})
    sections = b"".join(varint(len(cid) + len(data)) + cid + data for cid, data in blocks.items())
    return varint(len(header)) + header + sections


def mst_height(key: str) -> int:
    """A key's layer in the Merkle search tree: leading zero bits of its SHA-256, in pairs."""
    digest = hashlib.sha256(key.encode()).digest()
    bits = "".join(f"{byte:08b}" for byte in digest)
    return (len(bits) - len(bits.lstrip("0"))) // 2


def mst(entries: dict[str, bytes], blocks: dict[bytes, bytes]) -> bytes:
    """The root CID of the tree holding entries (key -> value CID); its nodes go into blocks."""
    items = sorted(entries.items())
    return mst_node(items, max((mst_height(k) for k, _ in items), default=0), blocks)


def mst_node(items: list[tuple[str, bytes]], layer: int, blocks: dict[bytes, bytes]) -> bytes:
    """A node at `layer`: its own keys are those of that height; the lower ones between them
    form the subtrees (a node with no key of its own still exists, as a link down)."""
    left, entries, group, previous = None, [], [], b""
    for key, value in items + [("", b"")]:  # a sentinel closes the last group
        if key and mst_height(key) < layer:
            group.append((key, value))
            continue
        subtree = mst_node(group, layer - 1, blocks) if group else None
        if entries:
            entries[-1]["t"] = subtree
        else:
            left = subtree
        if key:
            raw = key.encode()
            shared = len(os.path.commonprefix([previous, raw]))
            entries.append({"p": shared, "k": raw[shared:], "v": value, "t": None})
            previous, group = raw, []
    block = libipld.encode_dag_cbor({"l": left, "e": entries})
    blocks[cid_of(block)] = block
    return cid_of(block)


def tid(micros: int, clock: int = 7) -> str:
    """A record key as the app makes them: 53 bits of microseconds and 10 of clock id, in
    base32-sortable."""
    alphabet, value, out = "234567abcdefghijklmnopqrstuvwxyz", (micros << 10) | clock, ""
    for _ in range(13):
        out, value = alphabet[value & 31] + out, value >> 5
    return out


# From bluesky-social/atproto-interop-tests (CC0): mst/key_heights.json and the trees (every
# value the same CID) of firehose/commit-proof-fixtures.json, whose roots the reference
# implementation computed. The writer above must reproduce them bit for bit.
REFERENCE_HEIGHTS = {"": 0, "asdf": 0, "blue": 1, "2653ae71": 0, "88bfafc7": 2, "2a92d355": 4, "884976f5": 6,
                     "app.bsky.feed.post/454397e440ec": 4, "app.bsky.feed.post/9adeb165882c": 8}
REFERENCE_LEAF = "bafyreie5cvv4h45feadgeuwhbcutmh6t2ceseocckahdoe6uat64zmz454"
REFERENCE_TREES = [
    (["A0/374913", "B1/986427", "C0/451630", "E0/670489", "F1/085263", "G0/765327"],
     "bafyreicraprx2xwnico4tuqir3ozsxpz46qkcpox3obf5bagicqwurghpy"),
    (["A0/374913", "B1/986427", "C0/451630", "D2/269196", "E0/670489", "F1/085263", "G0/765327"],
     "bafyreihvay6pazw3dfa47u5d2tn3rd6pa57sr37bo5bqyvjuqc73ib65my"),  # two deep split
    (["A0/374913", "B0/601692", "D0/952776", "E0/670489"], "bafyreialm5sgf7pijawbschsjpdevid5rss5ip3d4n4w6cc4mhu53sfl4i"),
    (["A0/374913", "B0/601692", "C2/014073", "D0/952776", "E0/670489"],
     "bafyreibxh4iztp5l2yshz3ectg2qjpeyprpw2gogao3pvceowpq3k3thya"),  # two deep leafless split
    (["A0/374913", "B2/827649", "C0/451630"], "bafyreigc6ay2qwfk7kuevvrczummpd64nknfo4yxpaooknfymzyb7u3ntq"),
    (["A0/374913", "B2/827649", "C0/451630", "D2/269196"], "bafyreign6kxoll35r5f2ske6hjx7vg56aw3jn6r5hcopgrepzafpvohr2a"),
]


def test_mst_writer_matches_the_reference_implementation():
    assert {key: mst_height(key) for key in REFERENCE_HEIGHTS} == REFERENCE_HEIGHTS
    leaf = libipld.decode_multibase(REFERENCE_LEAF)[1]
    for keys, root in REFERENCE_TREES:
        assert libipld.encode_cid(mst(dict.fromkeys(keys, leaf), {})) == root, keys


ME_DID = "did:plc:4qp2ldmv6m7rnexmq3hbdlbc"
OTHER_DID = "did:plc:z72i7hdynmk6r22z27h6tvur"
START = 1_714_557_600_000_000  # 2024-05-01T10:00:00Z, in microseconds


def bsky_repo(path: Path) -> dict[str, str]:
    """Write a repository export to path: six posts (a reply to self, a reply to someone else,
    one with no text), a repost, two likes, a follow and the profile. Returns post rkeys by name."""
    rkeys = {name: tid(START + n * 3_600_000_000) for n, name in
             enumerate(["hello", "thread", "reply", "photo", "unicode", "later"])}
    own = f"at://{ME_DID}/app.bsky.feed.post/"
    other = f"at://{OTHER_DID}/app.bsky.feed.post/3kqe6ifjwos2x"
    ref = {"cid": libipld.encode_cid(cid_of(b"parent")), "uri": own + rkeys["hello"]}
    posts = {
        "hello": {"text": "Hello Bluesky! Moving my posts over from the other site.", "langs": ["en"]},
        "thread": {"text": "2/ the thread goes on", "reply": {"root": ref, "parent": ref}},
        "reply": {"text": "@jay.bsky.team congrats on the launch!",
                  "reply": {"root": {"cid": ref["cid"], "uri": other}, "parent": {"cid": ref["cid"], "uri": other}}},
        "photo": {"text": "", "embed": {"$type": "app.bsky.embed.images", "images": []}},
        "unicode": {"text": "Café ☕ at 7am,\nthen code. 🦋"},
        "later": {"text": "Evening walk.", "createdAt": "2024-05-01T15:00:00.123456789+02:00"},
    }
    records: dict[str, dict] = {}
    for n, (name, body) in enumerate(posts.items()):
        records[f"app.bsky.feed.post/{rkeys[name]}"] = {
            "$type": "app.bsky.feed.post", "createdAt": f"2024-05-01T{10 + n:02d}:00:00.000Z", **body}
    subject = {"cid": ref["cid"], "uri": other}
    records[f"app.bsky.feed.repost/{tid(START + 10)}"] = {"$type": "app.bsky.feed.repost", "subject": subject,
                                                           "createdAt": "2024-05-01T10:00:01.000Z"}
    for n in (20, 30):
        records[f"app.bsky.feed.like/{tid(START + n)}"] = {"$type": "app.bsky.feed.like", "subject": subject,
                                                           "createdAt": "2024-05-01T10:00:02.000Z"}
    records[f"app.bsky.graph.follow/{tid(START + 40)}"] = {"$type": "app.bsky.graph.follow", "subject": OTHER_DID,
                                                           "createdAt": "2024-05-01T10:00:03.000Z"}
    records["app.bsky.actor.profile/self"] = {"$type": "app.bsky.actor.profile", "displayName": "Me"}
    blocks: dict[bytes, bytes] = {}
    values = {}
    for key, record in records.items():
        block = libipld.encode_dag_cbor(record)
        values[key] = cid_of(block)
        blocks[values[key]] = block
    commit = libipld.encode_dag_cbor({"did": ME_DID, "version": 3, "data": mst(values, blocks), "rev": tid(START + 50),
                                      "prev": None, "sig": hashlib.sha512(b"not verified on import").digest()})
    path.write_bytes(car_file(cid_of(commit), {cid_of(commit): commit, **blocks}))  # commit first, as getRepo
    return rkeys


def test_bluesky_repo_export(tmp_path):
    path = tmp_path / "repo.car"
    rkeys = bsky_repo(path)
    keys = [f"app.bsky.feed.post/{r}" for r in rkeys.values()]
    assert max(map(mst_height, keys)) >= 1  # the posts span two layers of the tree, at least
    posts = read_archive(path, include_replies=False)
    uri = f"at://{ME_DID}/app.bsky.feed.post/"
    assert posts == [
        {"id": uri + rkeys["hello"], "user": None, "created_at": "2024-05-01T10:00:00Z",
         "text": "Hello Bluesky! Moving my posts over from the other site."},
        {"id": uri + rkeys["thread"], "user": None, "created_at": "2024-05-01T11:00:00Z", "text": "2/ the thread goes on"},
        {"id": uri + rkeys["unicode"], "user": None, "created_at": "2024-05-01T14:00:00Z", "text": "Café ☕ at 7am,\nthen code. 🦋"},
        {"id": uri + rkeys["later"], "user": None, "created_at": "2024-05-01T13:00:00Z", "text": "Evening walk."},
    ]  # in key (= time) order; no reply to others, no empty post, no repost, like, follow or profile
    with_replies = read_archive(path, include_replies=True)
    assert [p["id"] for p in with_replies] == [uri + rkeys[n] for n in ("hello", "thread", "reply", "unicode", "later")]
    zipped = tmp_path / "repo.car.gz"
    zipped.write_bytes(gzip.compress(path.read_bytes()))
    assert read_archive(zipped, include_replies=False) == posts


def test_bluesky_keys_are_prefix_compressed(tmp_path):
    """The reader must undo the compression: the keys share `app.bsky.feed.post/3k...`."""
    path = tmp_path / "repo.car"
    bsky_repo(path)
    _, blocks = libipld.decode_car(path.read_bytes())
    entries = [e for block in blocks.values() if "e" in block for e in block["e"]]
    assert any(e["p"] > len("app.bsky.feed.") for e in entries)
    assert any(e["t"] is not None for e in entries) or any(b["l"] for b in blocks.values() if "e" in b)


def damaged_repo(tmp_path: Path, how: str) -> Path:
    path = tmp_path / f"{how}.car"
    bsky_repo(path)
    data = path.read_bytes()
    header, blocks = libipld.decode_car(data)
    root = header["roots"][0]
    encoded = {cid: libipld.encode_dag_cbor(block) for cid, block in blocks.items()}
    if how == "truncated":
        path.write_bytes(data[: len(data) - 40])
    elif how == "no-commit":
        post = next(cid for cid, block in blocks.items() if block.get("$type") == "app.bsky.feed.post")
        path.write_bytes(car_file(post, encoded))
    elif how == "missing-record":
        post = next(cid for cid, block in blocks.items() if block.get("$type") == "app.bsky.feed.post")
        path.write_bytes(car_file(root, {cid: b for cid, b in encoded.items() if cid != post}))
    elif how == "bad-record":
        post = next(cid for cid, block in blocks.items() if block.get("$type") == "app.bsky.feed.post")
        encoded[post] = libipld.encode_dag_cbor({**blocks[post], "text": 42})
        path.write_bytes(car_file(root, encoded))
    elif how == "unsorted":  # two keys of a node swapped (written out whole, so still well-formed)
        cid, node = next((cid, b) for cid, b in blocks.items() if len(b.get("e", ())) >= 2)
        key = b""
        for entry in node["e"]:
            key = key[: entry["p"]] + entry["k"]
            entry.update(p=0, k=key)
        first, second = node["e"][:2]
        first["k"], second["k"] = second["k"], first["k"]
        encoded[cid] = libipld.encode_dag_cbor(node)
        path.write_bytes(car_file(root, encoded))
    elif how == "loop":  # a node whose right subtree is the tree's root again
        commit = blocks[root]
        node = blocks[commit["data"]]
        node["e"][-1]["t"] = commit["data"]
        encoded[commit["data"]] = libipld.encode_dag_cbor(node)  # stored under its old CID: a lie decode_car lets by
        path.write_bytes(car_file(root, encoded))
    return path


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("truncated", "not a readable CAR file"),
        ("no-commit", "not a Bluesky repository (the CAR file's root is not a commit"),
        ("missing-record", "is missing from the CAR file"),
        ("bad-record", ": no text"),
        ("loop", "links a node twice"),
        ("unsorted", "the repository's tree is out of key order"),
    ],
)
def test_damaged_bluesky_export_stores_nothing(store, tmp_path, how, message):
    path = damaged_repo(tmp_path, how)
    with pytest.raises(BotError) as caught:
        import_posts(store, "someone", path)
    assert str(caught.value).startswith(f"{path}: ") and message in str(caught.value)
    assert "\n" not in str(caught.value)
    assert store.post_count("someone") == 0


def test_import_bluesky_export(store, tmp_path):
    path = tmp_path / "repo.car"
    rkeys = bsky_repo(path)
    assert import_posts(store, "someone", path) == (4, 4)
    assert import_posts(store, "someone", path) == (0, 4)  # the at:// URIs are stable ids
    assert f"at://{ME_DID}/app.bsky.feed.post/{rkeys['hello']}" in {p["id"] for p in store.posts("someone")}


# --- Mastodon: an archive's outbox.json ----------------------------------------------------------
OUTBOX = FIXTURES / "mastodon_outbox.json"


def test_mastodon_outbox():
    posts = read_archive(OUTBOX, include_replies=False)
    assert posts == [
        {"id": "110263158373412345", "user": None, "created_at": "2023-04-25T09:12:44Z",
         "text": "Spring cleaning the garden with @bob & friends.\nTomatoes > everything else.\n\n"
                 "Notes: https://example.org/blog/2023/04/garden-notes #gardening"},
        {"id": "110263201999000001", "user": None, "created_at": "2023-04-25T09:23:50Z",
         "text": "Quiet post, unlisted: \"it's raining\" ☔"},
        {"id": "110263700000000006", "user": None, "created_at": "2023-04-25T11:30:45Z",
         "text": "2/ and the thread goes on"},
    ]  # not the followers-only, direct, content-warned, reply-to-bob posts, nor the boost
    with_replies = read_archive(OUTBOX, include_replies=True)
    assert [p["id"] for p in with_replies] == ["110263158373412345", "110263201999000001",
                                                "110263600000000005", "110263700000000006"]
    assert with_replies[2]["text"] == "@bob agreed!"


def test_mastodon_archive_zip_and_tar(tmp_path):
    expected = read_archive(OUTBOX)
    archive = tmp_path / "archive-20230425120000-0123456789abcdef0123456789abcdef.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:
        zipped.writestr("actor.json", json.dumps({"type": "Person", "preferredUsername": "alice"}))
        zipped.write(OUTBOX, "outbox.json")
        zipped.writestr("media_attachments/files/110/263/158/original/photo.jpg", b"\xff\xd8\xff")
    assert read_archive(archive) == expected
    old = tmp_path / "archive.tar.gz"
    with tarfile.open(old, "w:gz") as tarred:
        tarred.add(OUTBOX, "outbox.json")
    assert read_archive(old) == expected
    other = tmp_path / "photos.zip"
    with zipfile.ZipFile(other, "w") as zipped:
        zipped.writestr("photo.jpg", b"\xff\xd8\xff")
    with pytest.raises(BotError, match="a zip file without an outbox.json"):
        read_archive(other)
    cut = tmp_path / "cut.zip"
    cut.write_bytes(archive.read_bytes()[:200])
    with pytest.raises(BotError, match="not a readable zip file"):
        read_archive(cut)


def outbox_with(*items: object) -> str:
    return json.dumps({"@context": "https://www.w3.org/ns/activitystreams", "type": "OrderedCollection",
                       "orderedItems": list(items)}, indent=2)


PUBLIC_NOTE = {"type": "Create", "actor": "https://m.example/users/a", "object": {
    "type": "Note", "id": "https://m.example/users/a/statuses/1", "published": "2023-01-01T00:00:00Z",
    "content": "<p>hi</p>", "to": ["https://www.w3.org/ns/activitystreams#Public"], "cc": []}}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (outbox_with(PUBLIC_NOTE)[:-20], "not valid JSON"),
        (json.dumps({"@context": "https://www.w3.org/ns/activitystreams", "type": "OrderedCollection"}),
         "expected an ActivityPub outbox with an orderedItems list"),
        (outbox_with(PUBLIC_NOTE, "https://m.example/users/a/statuses/2/activity"), "item 2: not an activity object"),
        (outbox_with({**PUBLIC_NOTE, "object": {**PUBLIC_NOTE["object"], "id": None}}), "item 1: a Note without an id URL"),
        (outbox_with({**PUBLIC_NOTE, "object": {**PUBLIC_NOTE["object"], "published": "soon"}}),
         "item 1: 'soon' is not a date"),
    ],
)
def test_malformed_outbox(store, tmp_path, content, message):
    path = tmp_path / "outbox.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(BotError, match=message) as caught:
        import_posts(store, "someone", path)
    assert str(caught.value).startswith(f"{path}: ") and "\n" not in str(caught.value)
    assert store.post_count("someone") == 0
    path.write_text(outbox_with(PUBLIC_NOTE), encoding="utf-8")  # the same, whole, imports
    assert import_posts(store, "someone", path) == (1, 1)


def test_cli_import_bluesky_and_mastodon(tmp_path):
    data = tmp_path / "data"
    car = tmp_path / "repo.car"
    bsky_repo(car)
    done = run_cli("import", "SomeOne", str(car), data_dir=data)
    assert done.returncode == 0, done.stderr
    assert f"imported 4 new posts of @SomeOne from {car} (4 stored in all)" in done.stdout
    done = run_cli("import", "SomeOne", str(OUTBOX), data_dir=data)
    assert done.returncode == 0, done.stderr
    assert f"imported 3 new posts of @SomeOne from {OUTBOX} (7 stored in all)" in done.stdout
    broken = damaged_repo(tmp_path, "truncated")
    failed = run_cli("import", "SomeOne", str(broken), data_dir=data)
    assert failed.returncode == 1 and failed.stderr.count("\n") == 1, failed.stderr
    assert failed.stderr.startswith(f"error: {broken}: not a readable CAR file")
