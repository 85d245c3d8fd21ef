"""The near-copy filter: is a candidate post a (near-)copy of something the target
really wrote, or of something the bot already posted for that target? Plus `select`,
which runs every candidate through the content checks (bot/content.py) and this.

Public API: NearCopyIndex (add, add_many, check, check_many), NearCopyParams, Match,
canonical_tokens, judge, select, Verdict, Selection,
index_from_store.

How it works, and why this way
------------------------------
Texts are compared as *words* (`canonical_tokens`): HTML entities decoded, URLs and
@mentions dropped, case folded, punctuation and emoji dropped, apostrophes and
hyphens inside words removed ("let's" = "lets"), Chinese and Japanese characters one
word each. Copies that differ only in case, punctuation, whitespace, URLs or
mentions therefore have the same words.

Finding the few indexed posts worth comparing is an inverted index over word
bigrams, plus one key per whole text (so an exact copy is found even when all its
bigrams are common), kept in numpy arrays (sorted distinct keys, posting lists of
post numbers). A candidate's bigrams are looked up rarest first and their posting
lists read until `postings_budget` postings are spent, so the most common ones
("thank you", "of the") are never read and a bigram no post has costs nothing; the
`verify` posts with the most IDF weight in common are then verified exactly. The
work per candidate is bounded by the budget and `verify`, not by the index size.
Bigrams won over single words (posting lists too long to read within the budget:
lower recall) and trigrams (a 4-word post with its middle word edited shares no
trigram with the original) in bench/originality_bench.py --sweep.

MinHash LSH (datasketch) was left out: it estimates the Jaccard similarity of whole
shingle sets, but a truncation, a 70% run inside a longer candidate or two posts
glued together have a low Jaccard similarity with each original (containment is
what matters), so its threshold would have to be so low that much of the index
comes back; its containment variant (LSH Ensemble) cannot add a post after the
index is built; and hashing one candidate (128 permutations, ~90 us) plus one LSH
query (~100 us), measured here, cost more than a whole check.

Verification of one candidate against one indexed post, on words:
  * similarity: rapidfuzz's normalized Indel similarity (word insertions and
    deletions) >= `min_similarity`: exact copies and light edits (a few words
    inserted, deleted or replaced).
  * verbatim runs (maximal runs of words equal in both): a copy if one run of at
    least `min_post_run` words holds at least `min_post_fraction` of an indexed
    post (a long run of a real post inside new text; each half of two glued
    posts), or if runs of at least `min_run` words, from any of the verified posts,
    cover `min_candidate_fraction` of the candidate (a truncation; a patchwork).
    The minimum run lengths keep a short real post ("Thank you Iowa!") or a common
    phrase ("thank you so much for") inside new text from counting as a copy. Any
    run of `any_run` words is a copy whatever the post's length: a slogan repeated
    word for word ("for an economy that works for all and", 8 of a 25-word post,
    was posted in the quality benchmark before this rule).
Cheap bounds (lengths, shared bigrams) skip the exact measures where they cannot
reach a threshold. The defaults come from bench/originality_bench.py (BENCHMARKS.md).
"""
from __future__ import annotations

import html
import re
import unicodedata
from array import array
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Iterable, Protocol, Sequence

import numpy as np
from rapidfuzz.distance import Indel

from bot.errors import BotError
from trainer.text import URL_SYMBOL

if TYPE_CHECKING:
    from bot.store import Store


@dataclass(frozen=True)
class NearCopyParams:
    """Thresholds of the near-copy index (defaults measured by bench/originality_bench.py)."""

    min_similarity: float = 0.75  # word-level Indel similarity that makes a light edit
    min_run: int = 5  # shortest verbatim word run that counts towards min_candidate_fraction
    min_post_run: int = 6  # shortest run that counts towards min_post_fraction
    min_post_fraction: float = 0.60  # a run holding this much of an indexed post
    min_candidate_fraction: float = 0.80  # runs covering this much of the candidate
    any_run: int = 8  # a verbatim run this long of any indexed post is a copy, however long the post
    shingle: int = 2  # words per shingle in the inverted index
    postings_budget: int = 1000  # postings read per candidate, rarest shingles first
    verify: int = 6  # indexed posts verified per candidate


@dataclass(frozen=True)
class Match:
    """The verdict of the index on one candidate."""

    copy: bool
    score: float  # 0..1: how much of a copy it looks (1 = exact); novelty = 1 - score
    post_id: str | None = None  # the indexed post it resembles most
    reason: str = ""  # why it is a copy ("" when it is not)


# --- canonical tokens --------------------------------------------------------------

# URLs (raw ones in real posts, URL_SYMBOL in candidates) and @mentions, defused ones
# ("@\u200bname") included, carry no words of the author's own. The URL pattern
# covers the one trainer.text.normalize replaces; normalize itself is not called here
# because its per-character pass would cost most of the time of a check.
_MENTION_RE = re.compile("[@\uff20][\u200b\u200c\u2060\ufeff]*\\w+")
_URL_RE = re.compile(r"(?:https?://|www\.)\S+|\b(?:pic\.twitter\.com|t\.co)/\S+")
_URL_HINTS = ("http", "www.", "t.co/", "pic.twitter")
_JOINERS = "-'\u2019\u02bc`\u2010\u2011"  # apostrophes and hyphens inside a word join it
_JOINER_RE = re.compile(f"(?<=\\w)[{_JOINERS}](?=\\w)")
# scripts written without spaces: one token per character
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f"
_CJK_RE = re.compile(f"([{_CJK}])")
_WORD_RE = re.compile(r"[^\W_]+")


def canonical_tokens(text: str) -> list[str]:
    """The words a text is compared by: case, punctuation, emoji, HTML entities, URLs
    and @mentions (defused ones too) do not count."""
    # the substring tests skip regex passes that would find nothing (most texts)
    if "&" in text:
        text = html.unescape(text)
    if "@" in text or "\uff20" in text:
        text = _MENTION_RE.sub(" ", text)
    text = text.casefold()
    if any(h in text for h in _URL_HINTS):
        text = _URL_RE.sub(" ", text)
    if not text.isascii():
        text = unicodedata.normalize("NFC", text.replace(URL_SYMBOL, " "))
        text = _CJK_RE.sub(r" \1 ", text)
    if any(a in text for a in _JOINERS):
        text = _JOINER_RE.sub("", text)
    return _WORD_RE.findall(text)


# --- the index ----------------------------------------------------------------------

_ID_BITS = 21  # token ids packed into 64-bit shingle keys, up to 3 per key
_ID_MASK = (1 << _ID_BITS) - 1
_WHOLE = 1 << 63  # marks the key of a whole text (shingle keys use at most 63 bits)


def _fold(token_id: int) -> int:
    # ids past 21 bits share key space: only more posts get verified, never fewer
    return token_id if token_id <= _ID_MASK else 1 + token_id % _ID_MASK


def _shingle_keys(ids: Sequence[int], n: int) -> set[int]:
    """Distinct keys of a text's n-word shingles, plus one key of the whole text, so
    that an exact copy is found even when every shingle of it is common. Shingles
    with an unknown word (id < 0) can match nothing and are left out."""
    f = [t if t <= _ID_MASK else _fold(t) for t in ids]
    b = _ID_BITS
    if n == 1:
        keys = {a for a in f if a > 0}
    elif n == 2:
        keys = {(a << b) | c for a, c in zip(f, f[1:]) if a > 0 and c > 0}
    elif n == 3:
        keys = {(a << 2 * b) | (c << b) | d for a, c, d in zip(f, f[1:], f[2:]) if a > 0 and c > 0 and d > 0}
    else:
        raise ValueError("shingle must be 1, 2 or 3 words")
    if f and min(f) > 0:
        # hash() of a tuple of ints is the same in every process (no hash seed)
        keys.add(_WHOLE | (hash(tuple(f)) & (_WHOLE - 1)))
    return keys


def common_runs(cand: Sequence[int], post: Sequence[int], min_len: int) -> list[tuple[int, int, int]]:
    """Maximal runs of equal consecutive words, as (start in cand, length, start in
    post), of at least min_len words. Cost: the number of equal word pairs."""
    where: dict[int, list[int]] = {}
    for j, t in enumerate(post):
        where.setdefault(t, []).append(j)
    runs = []
    prev: dict[int, int] = {}  # end position in post -> length of the run ending there
    for i, t in enumerate(cand):
        cur = {j: prev.get(j - 1, 0) + 1 for j in where.get(t, ())}
        for j, n in prev.items():
            if n >= min_len and j + 1 not in cur:
                runs.append((i - n, n, j - n + 1))
        prev = cur
    runs.extend((len(cand) - n, n, j - n + 1) for j, n in prev.items() if n >= min_len)
    return runs


class NearCopyIndex:
    """Near-copy index over one account's posts (plus the bot's own posts for it).

    `add` buffers; the first check after adds re-sorts the shingle arrays, so build
    it with many adds and then check many candidates. Deterministic: the same posts
    added in the same order give the same verdicts in any process.
    """

    def __init__(self, params: NearCopyParams | None = None):
        self.params = params or NearCopyParams()
        self._vocab: dict[str, int] = {}
        self._post_ids: list[str] = []
        self._tokens = array("i")  # every post's token ids, one after another
        self._starts = array("q", [0])  # post k's tokens: _tokens[_starts[k]:_starts[k+1]]
        # the inverted index: distinct shingle keys, sorted; the posting list of
        # _keys[i] (post numbers) is _docs[_starts_of[i]:_starts_of[i + 1]]
        self._keys = np.empty(0, np.uint64)
        self._starts_of = np.zeros(1, np.int64)
        self._docs = np.empty(0, np.int32)
        self._new_keys = array("Q")  # added since the last sort
        self._new_docs = array("i")

    def __len__(self) -> int:
        return len(self._post_ids)

    def add(self, post_id: str, text: str) -> None:
        """Index one post (raw or normalized text)."""
        vocab = self._vocab
        ids = [vocab.setdefault(t, len(vocab) + 1) for t in canonical_tokens(text)]
        doc = len(self._post_ids)
        self._post_ids.append(str(post_id))
        self._tokens.extend(ids)
        self._starts.append(len(self._tokens))
        keys = _shingle_keys(ids, self.params.shingle)
        self._new_keys.extend(keys)
        self._new_docs.extend(array("i", [doc]) * len(keys))

    def add_many(self, posts: Iterable[tuple[str, str]]) -> None:
        """Index (post id, text) pairs."""
        for post_id, text in posts:
            self.add(post_id, text)

    def _sort(self) -> None:
        if not self._new_keys:
            return
        old_keys = np.repeat(self._keys, np.diff(self._starts_of))
        keys = np.concatenate([old_keys, np.frombuffer(self._new_keys, np.uint64)])
        docs = np.concatenate([self._docs, np.frombuffer(self._new_docs, np.int32)])
        self._new_keys, self._new_docs = array("Q"), array("i")
        order = np.argsort(keys, kind="stable")  # stable: postings stay in post order
        keys, self._docs = keys[order], docs[order]
        firsts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
        self._keys = keys[firsts]
        self._starts_of = np.append(firsts, len(keys)).astype(np.int64)

    def _post_tokens(self, doc: int) -> list[int]:
        return self._tokens[self._starts[doc] : self._starts[doc + 1]].tolist()

    def check(self, text: str) -> Match:
        """Is `text` a near-copy of an indexed post?"""
        return self.check_many([text])[0]

    def check_many(self, texts: Sequence[str]) -> list[Match]:
        """Verdicts for many candidates at once (the lookups are vectorized over all)."""
        return self.check_tokens([canonical_tokens(t) for t in texts])

    def check_tokens(self, texts: Sequence[Sequence[str]]) -> list[Match]:
        """check_many for texts already split by canonical_tokens."""
        self._sort()
        cands, keys, owner = [], [], []
        for n, tokens in enumerate(texts):
            ids, unknown = [], {}
            for t in tokens:
                tid = self._vocab.get(t)
                # unknown words get distinct negative ids: equal to nothing indexed
                ids.append(tid if tid is not None else unknown.setdefault(t, -1 - len(unknown)))
            shingles = _shingle_keys(ids, self.params.shingle)
            cands.append((ids, shingles))
            keys.extend(shingles)
            owner.extend([n] * len(shingles))
        found, unread = self._retrieve(
            np.fromiter(keys, np.uint64, len(keys)), np.fromiter(owner, np.int64, len(owner)), len(cands)
        )
        return [self._verify(ids, ks, f, u) for (ids, ks), f, u in zip(cands, found, unread)]

    def _retrieve(self, keys: np.ndarray, owner: np.ndarray, n: int) -> tuple[list[list[tuple[int, int]]], list[int]]:
        """For each of n candidates (its shingle keys are those with owner == i): the
        (post number, shared shingles read) of the `verify` posts sharing the rarest
        shingles (most IDF weight), and how many of its indexed shingles were not read.
        Each candidate reads its shingles' posting lists rarest first and stops before
        `postings_budget` postings, so the most common shingles are never read."""
        p = self.params
        at = np.minimum(np.searchsorted(self._keys, keys), len(self._keys) - 1)
        found = self._keys[at] == keys if len(self._keys) else np.zeros(len(keys), bool)
        lo = self._starts_of[at]
        df = np.where(found, self._starts_of[at + 1] - lo, 0)
        indexed = df > 0
        lo, df, owner = lo[indexed], df[indexed], owner[indexed]
        order = np.lexsort((df, owner))  # by candidate, rarest shingle first
        lo, df, owner = lo[order], df[order], owner[order]
        total = np.cumsum(df)
        first = np.searchsorted(owner, owner, "left")  # each candidate's first shingle
        spent = total - (total[first] - df[first])  # postings read by this candidate so far
        keep = spent <= p.postings_budget
        unread = np.bincount(owner[~keep], minlength=n).tolist()
        lo, df, owner = lo[keep], df[keep], owner[keep]
        # every posting of every kept shingle, tagged with its candidate
        ends = np.cumsum(df)
        rows = np.arange(int(ends[-1]) if len(ends) else 0) - np.repeat(ends - df - lo, df)
        pairs = (np.repeat(owner, df) << 32) | self._docs[rows].astype(np.int64)
        idf = np.repeat(np.log((len(self) + 1) / df), df)
        pairs, inverse, shared = np.unique(pairs, return_inverse=True, return_counts=True)
        weight = np.bincount(inverse.ravel(), weights=idf, minlength=len(pairs))
        cand = pairs >> 32
        order = np.lexsort((-weight, cand))  # by candidate, most weight first
        cand, pairs, shared = cand[order], pairs[order], shared[order]
        rank = np.arange(len(cand)) - np.searchsorted(cand, cand, "left")
        top = rank < p.verify
        out: list[list[tuple[int, int]]] = [[] for _ in range(n)]
        for c, doc, s in zip(cand[top].tolist(), (pairs[top] & 0xFFFFFFFF).tolist(), shared[top].tolist()):
            out[c].append((doc, s))
        return out, unread

    def _verify(self, cand: list[int], keys: set[int], found: list[tuple[int, int]], unread: int) -> Match:
        p = self.params
        if not cand:
            return Match(False, 0.0)
        best = Match(False, 0.0)
        covered: set[int] = set()
        cover_from: list[str] = []
        m = len(cand)
        # shared shingles bound the runs: a run of L words shares L - shingle + 1 of them,
        # so runs are only looked for where they could reach a threshold
        if unread:  # the budget skipped common shingles: count the shared ones exactly
            found = [(doc, len(keys & _shingle_keys(self._post_tokens(doc), p.shingle))) for doc, _ in found]
        least = p.min_run - p.shingle + 1
        cover_possible = (
            sum(s for _, s in found if s >= least) * p.min_run / max(least, 1) >= p.min_candidate_fraction * m
        )
        sim_floor = 0.5 - 1.5 * (1 - p.min_similarity)
        for doc, shared in found:
            n = self._starts[doc + 1] - self._starts[doc]
            run_possible = shared >= least and (
                cover_possible or shared >= min(p.min_post_run, p.any_run) - p.shingle + 1)
            # Similarity T needs similar lengths (2 min(m, n) / (m + n) >= T) and, with
            # d = m + n - 2 LCS word edits, at least LCS - d - 1 shared shingles, i.e.
            # (m + n)(0.5 - 1.5 (1 - T)) - 1 (one less for repeated shingles).
            sim_possible = 2 * min(m, n) >= p.min_similarity * (m + n) and shared >= (m + n) * sim_floor - 2
            if not (sim_possible or run_possible):
                continue
            post = self._post_tokens(doc)
            post_id = self._post_ids[doc]
            sim = Indel.normalized_similarity(cand, post) if sim_possible else 0.0
            if sim >= p.min_similarity:
                why = "exact copy" if sim == 1.0 else f"{sim:.0%} similar words"
                return Match(True, sim, post_id, f"near-copy of post {post_id} ({why})")
            score = sim
            if run_possible:
                runs = common_runs(cand, post, p.min_run)
                if runs:
                    longest = max(length for _, length, _ in runs)
                    frac = longest / len(post)
                    if longest >= p.any_run or (frac >= p.min_post_fraction and longest >= p.min_post_run):
                        return Match(
                            True,
                            max(sim, frac),
                            post_id,
                            f"near-copy of post {post_id} (contains {longest} of its "
                            f"{len(post)} words verbatim)",
                        )
                    score = max(score, frac)
                    before = len(covered)
                    for start, length, _ in runs:
                        covered.update(range(start, start + length))
                    if len(covered) > before:
                        cover_from.append(post_id)
            if score > best.score:
                best = Match(False, min(score, 0.999), post_id)
        cover = len(covered) / len(cand)
        if cover >= p.min_candidate_fraction:
            return Match(
                True,
                max(best.score, cover),
                cover_from[0],
                f"near-copy: {cover:.0%} of its words are verbatim runs of post(s) "
                + ", ".join(cover_from[:3]),
            )
        return best if cover == 0 else Match(False, max(best.score, min(cover, 0.999)), best.post_id)


# --- selection ----------------------------------------------------------------------


class Checks(Protocol):
    """What `select` needs of the content checks (bot.content.ContentChecks), and the
    words and tags they allow (None: any), which the sampler spells from."""

    known_words: frozenset[str] | None
    known_marks: frozenset[str] | None

    def check_many(self, texts: list[str]) -> list[tuple[str, list[str]]]: ...


@dataclass(frozen=True)
class Verdict:
    """One candidate's fate. `final` is what would be posted (normalized, mentions
    defused); only post it when `ok`."""

    text: str
    ok: bool
    reasons: tuple[str, ...]
    final: str
    novelty: float  # 1 - the near-copy score: 1 = shares nothing with indexed posts
    resembles: str | None = None  # id of the indexed post it resembles most
    score: dict = field(default_factory=dict, compare=False)  # why it ranks where it does (bot/compose.py)
    rank: int | None = None  # 1 = what would be posted; None: not ranked (rejected)

    def as_json(self) -> dict:
        return {"text": self.text, "ok": self.ok, "reasons": list(self.reasons), "final": self.final,
                "novelty": round(self.novelty, 3), "resembles": self.resembles, "rank": self.rank,
                "score": self.score}


@dataclass
class Selection:
    """Candidates that passed (best first once bot.compose.rank ordered them; most novel
    first before that) and every rejection with its reasons."""

    passed: list[Verdict] = field(default_factory=list)
    rejected: list[Verdict] = field(default_factory=list)
    batches: int = 0

    @property
    def best(self) -> Verdict | None:
        return self.passed[0] if self.passed else None


def judge(candidates: Sequence[str], index: NearCopyIndex, checks: Checks) -> list[Verdict]:
    """A verdict for every candidate, in the order given: the content checks' reasons
    and, if the index finds one, the near-copy reason. Candidates are normalized
    text (trainer.text.normalize), as the sampler writes them."""
    contents = checks.check_many(list(candidates))
    tokens = [canonical_tokens(final) for final, _ in contents]
    verdicts = []
    for text, (final, reasons), m in zip(candidates, contents, index.check_tokens(tokens)):
        reasons = list(reasons) + ([m.reason] if m.copy else [])
        verdicts.append(Verdict(text, not reasons, tuple(reasons), final, round(1.0 - m.score, 6), m.post_id))
    return verdicts


def select(
    candidates: Sequence[str],
    index: NearCopyIndex,
    checks: Checks,
    *,
    seen: set[tuple[str, ...]] | None = None,
) -> Selection:
    """The candidates that pass, most novel first, and every rejection with its
    reasons. A candidate with the same words as an earlier one (in this batch, or in
    `seen`, which is updated) is rejected as a duplicate."""
    seen = set() if seen is None else seen
    result = Selection(batches=1)
    for v in judge(candidates, index, checks):
        words = tuple(canonical_tokens(v.final))
        if words in seen:
            v = replace(v, ok=False, reasons=v.reasons + ("duplicate: same words as another candidate",))
        seen.add(words)
        (result.passed if v.ok else result.rejected).append(v)
    result.passed.sort(key=lambda v: -v.novelty)  # stable: ties keep the sampler's order
    return result


# --- the store's side (I/O at the edge) -------------------------------------------------


def index_from_store(store: Store, handle: str, params: NearCopyParams | None = None) -> NearCopyIndex:
    """The near-copy index of one account: all its stored posts, then every post the
    bot recorded as imitating it. Rebuilt the same way after a restart, so the same
    store gives the same verdicts. BotError if the account has no stored posts."""
    posts = store.posts(handle)
    if not posts:
        name = handle.lstrip("@")
        if store.target(handle) is None:
            raise BotError(f"@{name} is not a target and has no stored posts (add it, or `import {name} FILE`)")
        raise BotError(f"no posts of @{name} are stored yet (fetch them, or `import {name} FILE`)")
    index = NearCopyIndex(params)
    index.add_many((p["id"], p["text"]) for p in posts)
    index.add_many((f"bot:{key}", text) for key, text in store.bot_post_texts(handle))
    return index
