"""One account's character n-gram model (interpolated modified Kneser-Ney), mixed
with the network (mixture.py).

Why a classical model next to the network: an account repeats itself (its slogans,
names, hashtags, sign-offs), and a 7-gram table remembers every such phrase after
one look, which a network fine-tuned for a minute on a CPU does not. The network
knows the language; the table knows the account. Mixed with weights that depend on
what the table has seen of the context, the two predict held-out posts better than
either alone (BENCHMARKS.md has the figures).

Symbols are vocabulary ids (< 256), so an n-gram of up to 8 symbols packs exactly
into one uint64: the predicted symbol in the low byte, the symbol before it in the
next byte, and so on. Sorted keys group every continuation of a context together,
which makes both scoring and whole distributions a binary search away.
"""
from __future__ import annotations

import numpy as np

from trainer.data import EOS, UNK

ORDER = 7
CONTEXT = ORDER - 1
DENSE_CONTEXTS = 512  # orders with at most this many contexts keep dense rows too
KINDS = 4  # how many different symbols followed a context: 1, 2, 3, 4 or more
# Mixture buckets: the longest context the table has seen (0..CONTEXT symbols), and
# how many different symbols followed it. One symbol after six: nearly always right.
BUCKETS = ORDER * KINDS


def _mask(symbols: int) -> np.uint64:
    return np.uint64((1 << (8 * symbols)) - 1)


def _padded(encoded: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """All posts as one array, each as CONTEXT x EOS + text + EOS, and the positions
    of the symbols that are predicted (every character and the end-of-post)."""
    parts, targets, offset = [], [], 0
    for e in encoded:
        seq = np.concatenate([np.full(CONTEXT, EOS), e, [EOS]]).astype(np.uint64)
        parts.append(seq)
        targets.append(np.arange(offset + CONTEXT, offset + len(seq)))
        offset += len(seq)
    if not parts:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64)
    return np.concatenate(parts), np.concatenate(targets)


def _keys(flat: np.ndarray, targets: np.ndarray, n: int) -> np.ndarray:
    key = flat[targets].copy()
    for j in range(1, n):
        key |= flat[targets - j] << np.uint64(8 * j)
    return key


class NGram:
    """Counts by order (1..ORDER): sorted keys and counts; raw counts for the highest
    order, continuation counts (distinct left extensions) below it, as Kneser-Ney has it."""

    def __init__(self, keys: list[np.ndarray], counts: list[np.ndarray], vocab_size: int):
        self.keys = [np.asarray(k, np.uint64) for k in keys]
        self.counts = [np.asarray(c, np.uint32) for c in counts]
        self.vocab_size = vocab_size
        self._derive()

    @classmethod
    def fit(cls, encoded: list[np.ndarray], vocab_size: int) -> "NGram":
        flat, targets = _padded(encoded)
        top_keys, top_counts = np.unique(_keys(flat, targets, ORDER), return_counts=True)
        keys, counts = [top_keys], [top_counts]
        for n in range(ORDER - 1, 0, -1):
            # continuation count of an n-gram: how many distinct symbols precede it
            k, c = np.unique(keys[0] & _mask(n), return_counts=True)
            keys.insert(0, k)
            counts.insert(0, c)
        return cls(keys, counts, vocab_size)

    def _derive(self) -> None:
        """Per order: the contexts, where their continuations start, the discounted
        probability of each n-gram, and each context's back-off weight."""
        self.ctx_keys, self.ctx_start, self.ctx_gamma, self.alpha = [], [], [], []
        self.symbol = [(k & np.uint64(0xFF)).astype(np.int64) for k in self.keys]
        for keys, counts in zip(self.keys, self.counts):
            c = counts.astype(np.int64)
            n = [int((c == i).sum()) for i in (1, 2, 3, 4)]
            y = n[0] / (n[0] + 2 * n[1]) if n[0] and n[1] else 0.5
            # modified Kneser-Ney: three discounts, for counts 1, 2 and 3+ (Chen & Goodman)
            d = np.array([0.0,
                          1 - 2 * y * n[1] / n[0] if n[0] else 0.5,
                          2 - 3 * y * n[2] / n[1] if n[1] else 1.0,
                          3 - 4 * y * n[3] / n[2] if n[2] else 1.5]).clip(0.0, None)
            d_each = d[np.minimum(c, 3)]
            ctx = keys >> np.uint64(8)
            starts = np.flatnonzero(np.r_[True, ctx[1:] != ctx[:-1]]) if len(ctx) else np.zeros(0, np.int64)
            total = np.add.reduceat(c, starts) if len(c) else np.zeros(0, np.int64)
            lost = np.add.reduceat(d_each, starts) if len(c) else np.zeros(0)
            which = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(c)]))
            self.ctx_keys.append(ctx[starts])
            self.ctx_start.append(np.r_[starts, len(c)].astype(np.int64))
            self.ctx_gamma.append((lost / np.maximum(total, 1)).astype(np.float64))
            self.alpha.append(((c - d_each) / np.maximum(total[which], 1)).astype(np.float64))
        # Orders with few contexts (1 and 2) also as dense rows, one per context: most of
        # a distribution's entries are theirs, and a dense row is added in one step.
        self.dense = []
        for n in range(ORDER):
            contexts = len(self.ctx_keys[n])
            if contexts > DENSE_CONTEXTS:
                self.dense.append(None)
                continue
            rows = np.zeros((contexts, self.vocab_size), np.float32)
            which = np.repeat(np.arange(contexts), np.diff(self.ctx_start[n]))
            rows[which, self.symbol[n]] = self.alpha[n]
            self.dense.append(rows)

    def arrays(self) -> dict[str, np.ndarray]:
        out = {f"keys{n + 1}": k for n, k in enumerate(self.keys)}
        out |= {f"counts{n + 1}": c for n, c in enumerate(self.counts)}
        out["vocab_size"] = np.array(self.vocab_size)
        return out

    @classmethod
    def from_arrays(cls, arrays, vocab_size: int) -> "NGram":
        """`vocab_size`: the model's, for a table saved before tables said their own."""
        if "vocab_size" in arrays:
            vocab_size = int(arrays["vocab_size"])
        return cls([arrays[f"keys{n}"] for n in range(1, ORDER + 1)],
                   [arrays[f"counts{n}"] for n in range(1, ORDER + 1)], vocab_size)

    def fold(self, ids: np.ndarray) -> np.ndarray:
        """Ids of a vocabulary that extends the table's as the table counted them (fold)."""
        return fold(ids, self.vocab_size)

    def contexts_of(self, encoded: list[np.ndarray]) -> np.ndarray:
        """contexts() of posts encoded at a vocabulary that extends the table's."""
        return contexts([self.fold(e) for e in encoded])

    def _find(self, table: np.ndarray, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        i = np.minimum(np.searchsorted(table, wanted), max(len(table) - 1, 0))
        found = table[i] == wanted if len(table) else np.zeros(len(wanted), bool)
        return i, found

    def score(self, encoded: list[np.ndarray]) -> np.ndarray:
        """The probability of each scored symbol: posts in order, each post's
        characters then its end-of-post, as evaluate.py scores them."""
        flat, targets = _padded(encoded)
        p = np.full(len(targets), 1.0 / self.vocab_size)
        for n in range(1, ORDER + 1):
            key = _keys(flat, targets, n)
            ci, cfound = self._find(self.ctx_keys[n - 1], key >> np.uint64(8))
            if not cfound.any():
                break
            ki, kfound = self._find(self.keys[n - 1], key)
            seen = np.where(kfound, self.alpha[n - 1][ki], 0.0)
            p = np.where(cfound, seen + self.ctx_gamma[n - 1][ci] * p, p)
        return p

    def distributions(self, context: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rows, vocab) next-symbol probabilities and each row's mixture bucket, for
        packed contexts (the last CONTEXT symbols, the newest in the low byte).

        Unrolled, the interpolation is a sum over orders: order n's discounted counts
        weigh the product of the back-off weights of the longer contexts seen (1 for
        an unseen one), and the uniform distribution the product of all of them. So
        every sparse row of counts is added once, in one bincount."""
        rows, vocab = len(context), self.vocab_size
        gamma = np.ones((rows, ORDER + 1))
        bucket = np.zeros(rows, np.int64)
        found_at = []
        live = np.arange(rows)
        for n in range(1, ORDER + 1):
            ci, found = self._find(self.ctx_keys[n - 1], context[live] & _mask(n - 1))
            live, ci = live[found], ci[found]
            if len(live) == 0:
                break
            gamma[live, n] = self.ctx_gamma[n - 1][ci]
            kinds = self.ctx_start[n - 1][ci + 1] - self.ctx_start[n - 1][ci]
            bucket[live] = (n - 1) * KINDS + np.minimum(kinds, KINDS) - 1
            found_at.append((n, live, ci))
        # scale[:, n]: the product of gamma over the orders above n
        scale = np.cumprod(gamma[:, ::-1], axis=1)[:, ::-1]
        scale = np.concatenate([scale[:, 1:], np.ones((rows, 1))], axis=1)
        p = np.zeros((rows, vocab), np.float32)
        flat, weights = [], []
        for n, live, ci in found_at:
            if self.dense[n - 1] is not None:
                if len(live) == rows:
                    p += scale[:, n : n + 1] * self.dense[n - 1][ci]
                else:
                    p[live] += scale[live, n : n + 1] * self.dense[n - 1][ci]
                continue
            start, stop = self.ctx_start[n - 1][ci], self.ctx_start[n - 1][ci + 1]
            lengths = stop - start
            entry = np.repeat(start - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())
            row = np.repeat(live, lengths)
            flat.append(row * vocab + self.symbol[n - 1][entry])
            weights.append(self.alpha[n - 1][entry] * scale[row, n])
        if flat:
            p += np.bincount(np.concatenate(flat), np.concatenate(weights), rows * vocab).reshape(rows, vocab)
        p += (scale[:, 0] / vocab)[:, None]
        return p, bucket


def fold(ids: np.ndarray, vocab_size: int) -> np.ndarray:
    """Ids of a vocabulary that extends one of `vocab_size` (Vocab.extended) as a table
    counted at that size holds them: an account's own characters as UNK.

    Why an account's table is counted at the base vocabulary: Kneser-Ney discounts
    each symbol's count, so a context followed by nine rare emoji loses nine discounts
    where it lost one to UNK. AndrewYang's model predicted held-out posts 0.016
    bits/char worse with its table counted on its own characters (BENCHMARKS.md);
    which emoji it is, the network says."""
    ids = np.asarray(ids)
    return np.where(ids >= vocab_size, UNK, ids).astype(ids.dtype)


def contexts(encoded: list[np.ndarray]) -> np.ndarray:
    """The packed context before every scored symbol, in NGram.score's order."""
    flat, targets = _padded(encoded)
    return _keys(flat, targets - 1, CONTEXT)


def targets(encoded: list[np.ndarray]) -> np.ndarray:
    """Every scored symbol: each post's characters and then its end-of-post."""
    flat, where = _padded(encoded)
    return flat[where].astype(np.int64)


def push(context: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Packed contexts after appending one symbol to each."""
    return ((context << np.uint64(8)) | ids.astype(np.uint64)) & _mask(CONTEXT)


def start_context(prefix: list[int]) -> np.uint64:
    """The packed context of a post that has begun with `prefix` (ids)."""
    ctx = np.array([0], np.uint64)
    for i in [EOS] * CONTEXT + list(prefix):
        ctx = push(ctx, np.array([i]))
    return ctx[0]
