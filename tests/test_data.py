"""Reading datasets, the vocabulary and the chronological split."""
import gzip
import json

import numpy as np
import pytest

from trainer import data
from trainer.data import EOS, UNK, Post, Vocab
from trainer.errors import TrainerError
from trainer.text import URL_SYMBOL

from tests.trainer_helpers import ACCOUNT_FILE


def write_jsonl(path, recs, gz=True):
    body = "".join(json.dumps(r) + "\n" for r in recs).encode()
    path.write_bytes(gzip.compress(body) if gz else body)
    return path


def test_reads_real_gzip_jsonl_and_drops_retweets(tmp_path):
    posts = data.read_posts(ACCOUNT_FILE)
    assert len(posts) > 3000
    assert all(p.text and "https://t.co" not in p.text for p in posts)
    assert any(URL_SYMBOL in p.text for p in posts)
    f = write_jsonl(tmp_path / "x.jsonl.gz", [
        {"id": "1", "created_at": "2019-01-01T00:00:00Z", "text": "RT @bob: his words"},
        {"id": "2", "created_at": "2019-01-02T00:00:00Z", "text": "my words &amp; more"},
        {"id": "3", "created_at": "2019-01-03T00:00:00Z", "text": "   "},
    ])
    assert [p.text for p in data.read_posts(f)] == ["my words & more"]
    assert len(data.read_posts(f, include_retweets=True)) == 2


def test_reads_plain_text_one_post_a_line(tmp_path):
    f = tmp_path / "posts.txt"
    f.write_text("first post\n\n  second   post \nthird\u2028still third\n", encoding="utf-8")
    assert [p.text for p in data.read_posts(f)] == ["first post", "second post", "third still third"]


@pytest.mark.parametrize("content, message", [
    (b"", "no posts"),
    (b"\n  \n", "no posts"),
    (b'{"id": "1", "text": "ok"}\n{"id": "2", "text": \n', ":2: not a JSON post"),
    (b'{"id": "1", "body": "no text key"}\n', ":1: not a JSON post"),
    (b"\xff\xfe\xfa not utf-8", "cannot read"),
    (b"\x1f\x8b\x08 truncated gzip", "cannot read"),
])
def test_bad_datasets_are_refused_with_one_line(tmp_path, content, message):
    f = tmp_path / "bad"
    f.write_bytes(content)
    with pytest.raises(TrainerError, match=message) as err:
        data.read_posts(f)
    assert "\n" not in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(TrainerError, match="no such file"):
        data.read_posts(tmp_path / "nope.jsonl.gz")


def test_chronological_split_holds_out_the_newest_tenth():
    posts = [Post(str(i), f"2020-01-{i + 1:02d}T00:00:00Z", f"post {i}") for i in range(20)]
    shuffled = posts[::-1]
    train, held = data.chronological_split(shuffled)
    assert [p.id for p in held] == ["18", "19"]
    assert {p.id for p in train} == {str(i) for i in range(18)}


def test_vocab_round_trip_and_unknown_characters():
    vocab = Vocab.build(["héllo wörld 👍"] * 30)
    assert len(vocab) <= 256
    text = "Hello héllo 👍 " + URL_SYMBOL
    assert vocab.decode(vocab.encode(text)) == text
    ids = vocab.encode("a\u4e2db")  # a CJK character the corpus never had
    assert ids[1] == UNK and vocab.decode(ids) == "a\ufffdb"
    assert vocab.decode(np.array([vocab.stoi["a"], EOS, vocab.stoi["b"]])) == "a"


def test_batches_shift_targets_and_weight_only_real_positions():
    vocab = Vocab.build([])
    enc = data.encode_posts(vocab, [Post("1", None, "ab"), Post("2", None, "abcde")])
    (x, y, w), = list(data.batches(enc, 8))
    assert x.shape == y.shape == w.shape and x.shape[1] % 32 == 0
    row = [i for i in range(2) if (w[i] > 0).sum() == 3][0]
    assert x[row, 0] == EOS and list(x[row, 1:3]) == list(enc[0])
    assert list(y[row, :3]) == list(enc[0]) + [EOS]
    # the weights make Keras' mean over all positions equal the mean over real ones
    assert w.sum() == pytest.approx(w.size)
    assert (w > 0).sum() == 3 + 6
