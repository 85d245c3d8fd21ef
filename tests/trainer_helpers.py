"""Small real datasets for the trainer's tests (read from shared/data, never shipped)."""
from __future__ import annotations

import gzip
import itertools
import json
from functools import lru_cache
from pathlib import Path

from trainer.data import Post, normalize

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@lru_cache(maxsize=None)
def base_sample(n: int = 4000, step: int = 150) -> tuple[Post, ...]:
    """Every step-th post of the base corpus (it is grouped by source: this spreads the pick)."""
    out = []
    with gzip.open(SHARED_DATA / "base_tweets.jsonl.gz", "rt", encoding="utf-8") as fh:
        for line in itertools.islice(fh, 0, None, step):
            rec = json.loads(line)
            text = normalize(rec["text"])
            if text and not text.startswith("RT @"):
                out.append(Post(rec["id"], rec["created_at"], text))
            if len(out) >= n:
                break
    return tuple(out)


def user_file(handle: str) -> Path:
    return SHARED_DATA / "users" / f"{handle}.jsonl.gz"
