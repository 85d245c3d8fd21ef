"""Importing posts from files: tweets.js, CSV, JSON Lines (gzip or not), malformed files,
and the `python -m bot import` command."""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys

import pytest

from bot.errors import BotError
from bot.ingest import import_posts, read_archive

from tests.bot_helpers import REPO
from tests.trainer_helpers import ACCOUNT_FILE


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
