"""Text-quality metrics for bench/quality_bench.py: plain functions over lists of
post texts, no bot state. scikit-learn is imported inside the functions that need it
(the `bench` extra), so this module imports without it.
"""
from __future__ import annotations

import gzip
import html
import json
import pickle
import random
import re
from collections import Counter
from pathlib import Path
from statistics import median
from typing import Iterable, Sequence

import numpy as np

from bot.originality import canonical_tokens
from trainer.text import URL_SYMBOL

# --- tokens -------------------------------------------------------------------------

# Zero-width characters the bot puts after "@" to defuse a mention. They are invisible
# to a reader, so every metric looks at the visible text only: otherwise a character
# n-gram classifier would tell bot posts from real ones by the defuser alone.
ZERO_WIDTH = "\u200b\u200c\u2060\ufeff"
_ZERO_WIDTH_RE = re.compile(f"[{ZERO_WIDTH}]")
_MENTION_RE = re.compile(f"[@\uff20][{ZERO_WIDTH}]*\\w+")
_HASHTAG_RE = re.compile(r"[#\uff03]\w+")
_URL_RE = re.compile(r"(?:https?://|www\.)\S+|\b(?:pic\.twitter\.com|t\.co)/\S+", re.IGNORECASE)
_WORD_RE = re.compile(r"[^\W\d_]+(?:['\u2019][^\W\d_]+)*")
# A standalone post that opens with a handle: "@x ..." or the old ".@x ..." trick
# that made a reply visible to all followers; a defused handle counts too.
_OPENS_WITH_HANDLE_RE = re.compile(f"^\\.?[@\uff20][{ZERO_WIDTH}]*\\w")


def visible(text: str) -> str:
    """The text as a reader sees it (defusers removed)."""
    return _ZERO_WIDTH_RE.sub("", text)


_LEADING_HANDLES_RE = re.compile(f"^(?:\\.?[@\uff20][{ZERO_WIDTH}]*\\w+[\\s,:]*)+")


def as_posted(text: str) -> str:
    """The text under the bot's own rules: no links (the bot posts none) and no leading
    @handles (a reply's, which the platform shows apart from the text). Comparing the
    bot with real posts made the same way measures its writing, not those two rules:
    links alone are in 42-75% of four accounts' posts."""
    text = _URL_RE.sub(" ", visible(text).replace(URL_SYMBOL, " "))
    text = _LEADING_HANDLES_RE.sub("", text.strip())
    return "\n".join(" ".join(line.split()) for line in text.splitlines() if line.strip())


def words(text: str) -> list[str]:
    """Word tokens of a text: casefolded, without @handles, #tags, URLs (raw or the
    URL placeholder) and numbers."""
    if "&" in text:
        text = html.unescape(text)
    text = text.replace(URL_SYMBOL, " ")
    text = _URL_RE.sub(" ", text)
    text = _MENTION_RE.sub(" ", text)
    text = _HASHTAG_RE.sub(" ", text)
    return _WORD_RE.findall(text.casefold())


def count_words(texts: Iterable[str]) -> Counter:
    counts: Counter = Counter()
    for t in texts:
        counts.update(words(t))
    return counts


def base_word_counts(base: Path, cache: Path, min_count: int) -> dict[str, int]:
    """Counts of the words seen at least `min_count` times in the base corpus: one pass
    over ~1M posts (about a minute), then cached, keyed by the file's size and mtime."""
    st = base.stat()
    key = {"source": str(base), "size": st.st_size, "mtime": st.st_mtime, "min_count": min_count}
    if cache.is_file():
        with cache.open("rb") as fh:
            stored = pickle.load(fh)
        if stored.get("key") == key:
            return stored["counts"]
    counts: Counter = Counter()
    with gzip.open(base, "rt", encoding="utf-8") as fh:
        for line in fh:
            counts.update(words(json.loads(line)["text"]))
    kept = {w: c for w, c in counts.items() if c >= min_count}
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    with tmp.open("wb") as fh:
        pickle.dump({"key": key, "counts": kept}, fh, protocol=pickle.HIGHEST_PROTOCOL)
    tmp.replace(cache)
    return kept


# --- simple statistics ----------------------------------------------------------------


def median_length(texts: Sequence[str]) -> float:
    return float(median(len(visible(t)) for t in texts)) if texts else float("nan")


def ks_statistic(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the two
    empirical distribution functions (0 = same distribution, 1 = disjoint)."""
    if not len(a) or not len(b):
        return float("nan")
    a, b = np.sort(np.asarray(a, float)), np.sort(np.asarray(b, float))
    grid = np.concatenate([a, b])
    cdf_a = np.searchsorted(a, grid, side="right") / len(a)
    cdf_b = np.searchsorted(b, grid, side="right") / len(b)
    return float(np.max(np.abs(cdf_a - cdf_b)))


def length_ks(texts: Sequence[str], reference: Sequence[str]) -> float:
    return ks_statistic([len(visible(t)) for t in texts], [len(visible(t)) for t in reference])


def real_word_share(texts: Sequence[str], base_counts: dict[str, int], account_counts: Counter,
                    min_count: int) -> float:
    """Share of word tokens that are real words: seen `min_count` times in the base
    corpus or in the account's training posts."""
    total = real = 0
    for t in texts:
        for w in words(t):
            total += 1
            real += base_counts.get(w, 0) >= min_count or account_counts.get(w, 0) >= min_count
    return real / total if total else float("nan")


def opens_with_handle_share(texts: Sequence[str]) -> float:
    return sum(bool(_OPENS_WITH_HANDLE_RE.match(t.strip())) for t in texts) / len(texts) if texts else float("nan")


def distinct_bigrams(texts: Sequence[str], n_texts: int = 100) -> float:
    """Distinct word bigrams / all word bigrams over the first `n_texts` texts (bigrams
    within a text): how much a system repeats itself."""
    grams = [g for t in texts[:n_texts] for w in [words(t)] for g in zip(w, w[1:])]
    return len(set(grams)) / len(grams) if grams else float("nan")


def duplicate_share(texts: Sequence[str]) -> float:
    """Share of texts whose words equal an earlier text's of the same system."""
    seen, dup = set(), 0
    for t in texts:
        key = tuple(canonical_tokens(t))
        dup += key in seen
        seen.add(key)
    return dup / len(texts) if texts else float("nan")


# --- copies -------------------------------------------------------------------------


def ngrams(tokens: Sequence[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


class CopyTest:
    """Does a text repeat a training post: an `run`-word run in common, or the very
    same words (canonical tokens: case, punctuation, URLs and handles aside)?"""

    def __init__(self, texts: Iterable[str], run: int = 8):
        self.run = run
        self.runs: set[tuple[str, ...]] = set()
        self.wholes: set[tuple[str, ...]] = set()
        for t in texts:
            tokens = canonical_tokens(t)
            self.wholes.add(tuple(tokens))
            self.runs |= ngrams(tokens, run)

    def is_copy(self, text: str) -> bool:
        tokens = canonical_tokens(text)
        return (bool(tokens) and tuple(tokens) in self.wholes) or not self.runs.isdisjoint(ngrams(tokens, self.run))

    def rate(self, texts: Sequence[str]) -> float:
        return sum(self.is_copy(t) for t in texts) / len(texts) if texts else float("nan")


# --- classifiers ----------------------------------------------------------------------


def _detector():
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    return Pipeline([
        ("tfidf", TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 4), sublinear_tf=True, min_df=2)),
        ("lr", LogisticRegression(C=3, max_iter=2000)),
    ])


def detectability(texts: Sequence[str], reference: Sequence[str], seed: int, draws: int = 5,
                  folds: int = 5) -> float:
    """Cross-validated accuracy of a character n-gram classifier telling `texts` from
    `reference` (0.5 = indistinguishable). Balanced: both sides are cut to the smaller
    one's size by random subsampling, and the accuracy averaged over `draws` draws."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    n = min(len(texts), len(reference))
    if n < 2 * folds:
        return float("nan")
    scores = []
    for d in range(draws):
        rng = random.Random(seed * 1000 + d)
        a = rng.sample([visible(t) for t in texts], n)
        b = rng.sample([visible(t) for t in reference], n)
        cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed * 1000 + d)
        scores.append(cross_val_score(_detector(), a + b, [1] * n + [0] * n, cv=cv).mean())
    return float(np.mean(scores))


class Attribution:
    """Which of the accounts wrote a text: character 1-5-grams + logistic regression,
    trained on each account's training posts."""

    def __init__(self, training: dict[str, Sequence[str]]):
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import Pipeline

        self.model = Pipeline([
            ("tfidf", TfidfVectorizer(analyzer="char", ngram_range=(1, 5), sublinear_tf=True, min_df=2)),
            ("lr", LogisticRegression(C=3, max_iter=2000)),
        ])
        texts = [visible(t) for ts in training.values() for t in ts]
        labels = [name for name, ts in training.items() for _ in ts]
        self.model.fit(texts, labels)

    def share(self, texts: Sequence[str], account: str) -> float:
        if not texts:
            return float("nan")
        return float(np.mean(self.model.predict([visible(t) for t in texts]) == account))


# --- replies --------------------------------------------------------------------------


def stop_words() -> frozenset[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS)


def content_words(text: str, stop: frozenset[str]) -> set[str]:
    """Words of 4+ letters that are not stop words."""
    return {w for w in words(text) if len(w) >= 4 and w not in stop}


def reply_metrics(mentions: Sequence[str], replies: Sequence[str | None]) -> dict[str, float]:
    """How much each reply answers its mention. Pairs whose reply is None (nothing
    passed the filter) are left out."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    pairs = [(m, r) for m, r in zip(mentions, replies) if r is not None]
    if not pairs:
        return {}
    stop = stop_words()
    shared = sum(bool(content_words(m, stop) & content_words(r, stop)) for m, r in pairs)
    echoed = sum(not ngrams(canonical_tokens(m), 4).isdisjoint(ngrams(canonical_tokens(r), 4)) for m, r in pairs)
    # word TF-IDF fitted on the mentions and replies themselves (stop words out: the
    # cosine should say "same topic", not "both use 'the'")
    vec = TfidfVectorizer(stop_words="english").fit([visible(t) for p in pairs for t in p])
    ms = vec.transform([visible(m) for m, _ in pairs])
    rs = vec.transform([visible(r) for _, r in pairs])
    cosine = np.asarray(ms.multiply(rs).sum(axis=1)).ravel()  # rows are L2-normalized
    return {
        "shares_content_word": shared / len(pairs),
        "tfidf_cosine": float(cosine.mean()),
        "repeats_4_mention_words": echoed / len(pairs),
    }
