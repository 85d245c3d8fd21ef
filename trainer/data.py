"""Posts in, arrays out: reading datasets, the character vocabulary, the chronological
split and the length-bucketed training batches."""
from __future__ import annotations

import collections
import gzip
import json
import math
import random
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from trainer.errors import TrainerError
from trainer.text import URL_SYMBOL, is_retweet, normalize

PAD, EOS, UNK = 0, 1, 2  # reserved ids; EOS both starts and ends every post
SPECIALS = ["<pad>", "<eos>", "<unk>"]
MAX_POST_CHARS = 300  # normalized posts longer than this are cut (X allows 280 weighted)
HELDOUT_FRACTION = 0.10
# 10% of an account is held out for evaluation and 10% of the rest is the early-stopping
# slice; below 100 posts each would hold fewer than 10 posts, too few to tell whether
# fine-tuning helped or to stop it at the right time.
MIN_FINETUNE_POSTS = 100
# keeps a whole `python -m trainer finetune` run, start to saved file, under 2 minutes
FINETUNE_SECONDS = 80.0


@dataclass(frozen=True)
class Post:
    id: str
    created_at: str | None
    text: str  # normalized


def read_posts(path: str | Path, include_retweets: bool = False) -> list[Post]:
    """Read gzip or plain JSON Lines (keys id, created_at, text) or plain text, one post
    a line, in file order. Text files have no dates: their line order is taken as
    chronological, oldest first. Empty posts are dropped."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            magic = fh.read(2)
        opener = gzip.open if magic == b"\x1f\x8b" else open
        with opener(path, "rt", encoding="utf-8") as fh:
            lines = fh.read().split("\n")  # not splitlines(): JSON strings may hold U+2028
    except FileNotFoundError:
        raise TrainerError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, EOFError, zlib.error) as exc:
        raise TrainerError(f"{path}: cannot read ({exc.__class__.__name__}: {exc})") from None
    first = next((ln for ln in lines if ln.strip()), "")
    raw = _parse_jsonl(path, lines) if first.lstrip().startswith("{") else _parse_text(lines)
    posts = to_posts(raw, include_retweets)
    if not posts:
        raise TrainerError(f"{path}: no posts in it")
    return posts


def to_posts(records: Iterable[Post | dict], include_retweets: bool = False) -> list[Post]:
    """Raw posts (Posts or dicts with id, created_at, text, as the bot's store holds
    them) -> normalized Posts, retweets and empty posts left out."""
    out = []
    for r in records:
        p = r if isinstance(r, Post) else Post(str(r["id"]), r.get("created_at"), r["text"])
        if include_retweets or not is_retweet(p.text):
            text = normalize(p.text)
            if text:
                out.append(Post(p.id, p.created_at, text))
    return out


def _parse_jsonl(path: Path, lines: list[str]) -> list[Post]:
    posts = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            text = rec["text"]
            if not isinstance(text, str):
                raise TypeError("text is not a string")
        except (ValueError, KeyError, TypeError) as exc:
            raise TrainerError(f"{path}:{n}: not a JSON post with a 'text' key ({exc})") from None
        posts.append(Post(str(rec.get("id", n)), rec.get("created_at"), text))
    return posts


def _parse_text(lines: list[str]) -> list[Post]:
    return [Post(str(n), None, line) for n, line in enumerate(lines, 1) if line.strip()]


def chronological_split(
    posts: list[Post], heldout_fraction: float = HELDOUT_FRACTION
) -> tuple[list[Post], list[Post]]:
    """(older part, newest part). The newest part is never trained on."""
    ordered = sorted(enumerate(posts), key=lambda ip: (ip[1].created_at or "", ip[0]))
    ordered = [p for _, p in ordered]
    n_held = max(1, int(round(len(ordered) * heldout_fraction)))
    return ordered[:-n_held], ordered[-n_held:]


def split_account(posts: list[Post]) -> tuple[list[Post], list[Post], list[Post]]:
    """(train, early-stopping slice, held out): chronological, the held-out part newest."""
    if len(posts) < MIN_FINETUNE_POSTS:
        raise TrainerError(
            f"only {len(posts)} posts: fine-tuning needs at least {MIN_FINETUNE_POSTS} "
            "(10% are held out for evaluation and 10% of the rest decide when to stop)"
        )
    rest, heldout = chronological_split(posts)
    train, stop_slice = chronological_split(rest)
    return train, stop_slice, heldout


ACCOUNT_CHAR_MIN = 5  # an account's character the base vocabulary lacks is added from this many uses
ACCOUNT_CHARS_MAX = 48


class Vocab:
    """Characters <-> ids. Fixed by the base model; unseen characters map to UNK."""

    def __init__(self, chars: list[str]):
        self.chars = list(chars)
        self.itos = SPECIALS + self.chars
        self.stoi = {c: i for i, c in enumerate(self.itos) if i >= len(SPECIALS)}
        # what each id decodes to: UNK has no character of its own and decodes to U+FFFD,
        # so that filters can see it; padding decodes to nothing
        self._text = ["\ufffd" if i == UNK else "" if i < len(SPECIALS) else c for i, c in enumerate(self.itos)]

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> np.ndarray:
        get = self.stoi.get
        return np.fromiter((get(c, UNK) for c in text), dtype=np.int32, count=len(text))

    def decode(self, ids: np.ndarray | list[int]) -> str:
        """The text of `ids`, up to the first end-of-post."""
        ids = np.asarray(ids, np.int64)
        ends = np.flatnonzero(ids == EOS)
        if len(ends):
            ids = ids[: ends[0]]
        return "".join([self._text[i] for i in ids.tolist()])

    @classmethod
    def build(cls, texts: Iterable[str], max_size: int = 256) -> "Vocab":
        """Printable ASCII, newline and the URL symbol, plus the most frequent other
        characters of the corpus (emoji, curly quotes, accents) up to max_size ids."""
        base = [chr(c) for c in range(32, 127)] + ["\n", URL_SYMBOL]
        counts: collections.Counter[str] = collections.Counter()
        for t in texts:
            counts.update(t)
        room = max_size - len(SPECIALS) - len(base)
        extra = [c for c, n in counts.most_common() if c not in base and n >= 20][:room]
        return cls(base + extra)

    def extended(self, texts: Iterable[str], min_count: int = ACCOUNT_CHAR_MIN,
                 most: int = ACCOUNT_CHARS_MAX) -> "Vocab":
        """This vocabulary plus the characters of `texts` it lacks that they use at least
        `min_count` times (the `most` most frequent). The base corpus's top 256
        characters leave out most emoji, and an account's own (AndrewYang's 👍 and 🇺🇸,
        in 44% of his posts) would otherwise be UNK, which is never sampled."""
        counts: collections.Counter[str] = collections.Counter()
        for t in texts:
            counts.update(t)
        # texts are normalized (text.normalize): no control characters, spaces or line
        # breaks but " " and "\n"; U+FFFD is what UNK decodes to, never a character of its own
        new = [c for c, n in counts.most_common() if n >= min_count and c not in self.stoi and c != "\ufffd"][:most]
        return Vocab(self.chars + new) if new else self


def encode_posts(vocab: Vocab, posts: Iterable[Post]) -> list[np.ndarray]:
    return [vocab.encode(p.text[:MAX_POST_CHARS]) for p in posts]


def count_chars(encoded: list[np.ndarray]) -> int:
    """Scored symbols: every character plus each post's end-of-post."""
    return int(sum(len(e) + 1 for e in encoded))


def bucket_length(n: int, step: int = 32) -> int:
    return int(math.ceil(n / step) * step)


def make_batch(encoded: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inputs EOS + text, targets text + EOS, padded to a bucketed length.

    The weights are 1 on real positions, scaled so that Keras' mean over every
    position equals the mean over real positions only."""
    width = bucket_length(max(len(e) for e in encoded) + 1)
    x = np.full((len(encoded), width), PAD, dtype=np.int32)
    y = np.full((len(encoded), width), PAD, dtype=np.int32)
    w = np.zeros((len(encoded), width), dtype=np.float32)
    for r, e in enumerate(encoded):
        n = len(e)
        x[r, 0] = EOS
        x[r, 1 : n + 1] = e
        y[r, :n] = e
        y[r, n] = EOS
        w[r, : n + 1] = 1.0
    w *= w.size / w.sum()
    return x, y, w


def batches(
    encoded: list[np.ndarray], batch_size: int, rng: random.Random | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """One pass over the posts in batches of similar length (little padding).

    With an rng the pass is shuffled: posts are shuffled, sorted by length within
    windows of 50 batches, and the batches are shuffled."""
    order = list(range(len(encoded)))
    if rng is not None:
        rng.shuffle(order)
    window = batch_size * 50
    groups = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: len(encoded[i]))
        groups += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    if rng is not None:
        rng.shuffle(groups)
    for g in groups:
        yield make_batch([encoded[i] for i in g])
