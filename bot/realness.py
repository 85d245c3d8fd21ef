"""How much a candidate reads like the account's real posts: a small discriminator,
trained per account and model, that tells the account's stored posts (what its model
was trained on) from the model's own unfiltered samples.

Features as bench/quality_bench.py's detector sees text: character 1-4-grams within
word boundaries (each word padded with a space), lowercased, hashed into 2^18
buckets, sublinear tf, idf, L2-normalised (buckets seen in fewer than 2 training texts
dropped). The model is an L2-regularised logistic regression fitted in numpy
(accelerated gradient descent, classes weighted to balance). Its score is the log-odds
"real post" against "model sample": the bot ranks candidates that passed the filter
by it (bot/compose.py), so that it posts the samples least like its typical mistakes.

Built lazily on the first compose for a (model, account posts) pair and kept in memory
(a few of them); the build samples `NEGATIVES` texts with the bot's own sampler.
"""
from __future__ import annotations

import math
import threading
import time
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

BITS = 18
NGRAMS = (1, 4)
MIN_DF = 2
C = 3.0  # as the benchmark's detector: loss = C * sum(log loss) + |w|^2 / 2
ITERATIONS = 300
NEGATIVES = 768  # model samples drawn to train on (same sampler as the posts)
MAX_POSITIVES = 3000  # the newest stored posts used, at most
SEED = 424_242  # the negatives' sampling seed (a rebuild gives the same discriminator)
ZERO_WIDTH = "\u200b\u200c\u2060\ufeff"  # the bot's mention defusers: invisible, not features
_ZW = str.maketrans("", "", ZERO_WIDTH)


def grams(text: str) -> list[str]:
    """Character n-grams within word boundaries, like scikit-learn's analyzer="char_wb"
    (lowercased)."""
    out: list[str] = []
    lo, hi = NGRAMS
    for w in text.translate(_ZW).lower().split():
        w = f" {w} "
        n_chars = len(w)
        for n in range(lo, hi + 1):
            if n >= n_chars:
                out.append(w)
                break
            out.extend(w[i : i + n] for i in range(n_chars - n + 1))
    return out


def hashed_counts(text: str) -> dict[int, int]:
    mask = (1 << BITS) - 1
    counts: dict[int, int] = {}
    for g in grams(text):
        b = zlib.crc32(g.encode("utf-8")) & mask
        counts[b] = counts.get(b, 0) + 1
    return counts


@dataclass
class Rows:
    """A sparse matrix in CSR form (rows: texts; columns: hashed buckets)."""

    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray

    @property
    def n(self) -> int:
        return len(self.indptr) - 1

    def dot(self, w: np.ndarray) -> np.ndarray:
        prod = self.data * w[self.indices]
        out = np.zeros(self.n)
        lens = np.diff(self.indptr)
        nz = lens > 0
        if prod.size:
            out[nz] = np.add.reduceat(prod, self.indptr[:-1][nz])
        return out

    def tdot(self, g: np.ndarray, dim: int) -> np.ndarray:
        per = np.repeat(g, np.diff(self.indptr))
        return np.bincount(self.indices, weights=self.data * per, minlength=dim)


def featurize(texts: Sequence[str], idf: np.ndarray | None) -> tuple[Rows, list[dict[int, int]]]:
    counts = [hashed_counts(t) for t in texts]
    indptr = np.zeros(len(texts) + 1, np.int64)
    idx_parts, val_parts = [], []
    for i, c in enumerate(counts):
        keys = np.fromiter(c.keys(), np.int64, len(c))
        vals = 1.0 + np.log(np.fromiter(c.values(), float, len(c)))
        if idf is not None:
            vals = vals * idf[keys]
        norm = math.sqrt(float(vals @ vals))
        if norm > 0:
            vals = vals / norm
        idx_parts.append(keys)
        val_parts.append(vals)
        indptr[i + 1] = indptr[i] + len(keys)
    indices = np.concatenate(idx_parts) if idx_parts else np.empty(0, np.int64)
    data = np.concatenate(val_parts) if val_parts else np.empty(0)
    return Rows(indptr, indices, data), counts


class Realness:
    """A fitted discriminator: `score(texts)` gives each text's log-odds of being one
    of the account's real posts rather than a model sample."""

    def __init__(self, w: np.ndarray, b: float, idf: np.ndarray, info: dict):
        self.w, self.b, self.idf, self.info = w, b, idf, info

    @classmethod
    def fit(cls, real: Sequence[str], fake: Sequence[str], c: float = C, iterations: int = ITERATIONS) -> Realness:
        t0 = time.perf_counter()
        dim = 1 << BITS
        texts = list(real) + list(fake)
        y = np.array([1.0] * len(real) + [0.0] * len(fake))
        # idf over the training texts (smooth, as scikit-learn's), buckets in < MIN_DF texts dropped
        counts = [hashed_counts(t) for t in texts]
        df = np.bincount(np.fromiter((k for c_ in counts for k in c_), np.int64), minlength=dim).astype(float)
        n = len(texts)
        idf = np.where(df >= MIN_DF, np.log((1 + n) / (1 + df)) + 1.0, 0.0)
        X, _ = featurize(texts, idf)
        # balanced class weights: each class carries half the loss
        sw = np.where(y == 1, n / (2 * max(len(real), 1)), n / (2 * max(len(fake), 1)))
        w, b = _fit_logistic(X, y, sw, c, iterations, dim)
        acc = float(np.mean((X.dot(w) + b > 0) == (y == 1)))
        return cls(w, b, idf, {"real": len(real), "fake": len(fake), "train_accuracy": round(acc, 3),
                               "fit_seconds": round(time.perf_counter() - t0, 2)})

    def score(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.empty(0)
        X, _ = featurize(texts, self.idf)
        return X.dot(self.w) + self.b


def _fit_logistic(X: Rows, y: np.ndarray, sw: np.ndarray, c: float, iterations: int, dim: int) -> tuple[np.ndarray, float]:
    """Minimises c * sum(sw * logloss) + |w|^2 / 2 (intercept not penalised) by
    Nesterov-accelerated gradient descent. Rows are L2-normalised, so the loss's
    curvature is at most c * sum(sw) / 4 + 1."""
    w = np.zeros(dim)
    b = 0.0
    vw, vb = w.copy(), b
    step = 1.0 / (c * float(sw.sum()) / 4.0 + 1.0)
    t = 1.0
    for _ in range(iterations):
        z = X.dot(vw) + vb
        p = 1.0 / (1.0 + np.exp(-z))
        g = c * sw * (p - y)
        gw = X.tdot(g, dim) + vw
        gb = float(g.sum())
        w_new, b_new = vw - step * gw, vb - step * gb
        t_new = (1 + math.sqrt(1 + 4 * t * t)) / 2
        mom = (t - 1) / t_new
        vw, vb = w_new + mom * (w_new - w), b_new + mom * (b_new - b)
        w, b, t = w_new, b_new, t_new
    return w, b


# --- built lazily, kept per (model, posts) ------------------------------------------------

_CACHE: OrderedDict[tuple, tuple[object, Realness]] = OrderedDict()
_CACHE_SIZE = 4
_LOCK = threading.Lock()


def cached(key: tuple, owner: object, build: Callable[[], Realness]) -> Realness:
    """The discriminator for `key`, built once (`owner`, e.g. the model artifact, is kept
    with it so that an id() in the key cannot be reused by another object)."""
    with _LOCK:
        hit = _CACHE.get(key)
        if hit is not None and hit[0] is owner:
            _CACHE.move_to_end(key)
            return hit[1]
    model = build()
    with _LOCK:
        _CACHE[key] = (owner, model)
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return model
