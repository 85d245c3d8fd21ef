"""How an account's network and its n-gram table (ngram.py) are combined.

A log-linear mixture, a product of the two experts:

    p(s) ∝ p_network(s)^a · p_table(s)^c

with one pair (a, c) per bucket, the bucket saying how much the table knows here
(ngram.BUCKETS: the longest context it has seen and how many different symbols
followed it). Where the table has seen a long context followed by one symbol only,
it is nearly always right and gets a large c; where it has seen nothing, the
network has it to itself.

Why a product and not a weighted sum: a sum can only hedge between the two, a
product also sharpens where both agree. On AndrewYang and KamalaHarris it predicted
held-out posts 0.02-0.025 bits/char better than the per-bucket weighted sum that
came before it (BENCHMARKS.md). The log-likelihood is concave in (a, c), so a few
Newton steps find each bucket's best pair.

An account's own characters (Vocab.extended: its emoji, which the base vocabulary
leaves to UNK) form one class with UNK. The product is taken over that class as one
symbol, as it was before they were added, and only the class's share is split among
its members. A product of powers splits a probability over nine symbols into less
than it gave one: AndrewYang's model scored 1.822 bits/char at the base vocabulary
split that way, 1.804 as a class (1.791 before the characters were added; BENCHMARKS.md).
The table itself counts the class as UNK (ngram.fold), so the network alone
splits it: 1.785.
"""
from __future__ import annotations

import numpy as np

from trainer.data import UNK
from trainer.ngram import BUCKETS

MIN_POSITIONS = 200  # a bucket seen less often than this in the fitting data uses the overall pair
MAX_FIT_POSITIONS = 60_000  # symbols to fit on: plenty for 2 x BUCKETS numbers, and memory stays small


def log_weights(net_logits: np.ndarray, table_p: np.ndarray, weights: np.ndarray, bucket: np.ndarray,
                added: int = 0) -> np.ndarray:
    """(rows, vocab) unnormalized log-probabilities of the mixture; the last `added`
    symbols are the account's own characters, in UNK's class.

    `net_logits` may be the network's raw logits: a constant per row (its log
    normalizer times a) cancels when the row is normalized."""
    w = weights[bucket]
    vocab = net_logits.shape[1]
    log_table = np.log(table_p)
    if added:
        cls = unk_class(vocab, added)
        narrow = table_p.shape[1] < vocab
        if narrow:  # a table counted at the base vocabulary (ngram.fold): its UNK is the class
            class_table = log_table[:, UNK].copy()
            log_table = np.pad(log_table, ((0, 0), (0, vocab - table_p.shape[1])))
        else:
            class_table = np.log(table_p[:, cls].sum(axis=1))
    out = w[:, :1] * net_logits
    out += w[:, 1:] * log_table
    if added:
        if narrow:
            # the network's own odds split the class: its power would flatten them, and
            # UNK, which is never written, would keep a share the account's characters had
            out[:, cls] = net_logits[:, cls]
        total = w[:, 0] * np.logaddexp.reduce(net_logits[:, cls], axis=1) + w[:, 1] * class_table
        out[:, cls] += (total - np.logaddexp.reduce(out[:, cls], axis=1))[:, None]
    return out


def unk_class(vocab_size: int, added: int) -> np.ndarray:
    """The columns of UNK and the account's own characters (the vocabulary's last `added`)."""
    return np.r_[UNK, np.arange(vocab_size - added, vocab_size)]


def log_probs(net_logp: np.ndarray, table_p: np.ndarray, weights: np.ndarray, bucket: np.ndarray,
              targets: np.ndarray, added: int = 0) -> np.ndarray:
    """Natural log-probability of each row's target symbol under the mixture."""
    return pick(log_weights(net_logp.astype(np.float64), table_p.astype(np.float64), weights, bucket, added),
                targets)


def pick(lw: np.ndarray, targets: np.ndarray, merged: np.ndarray | None = None) -> np.ndarray:
    """Normalized log-probability of each row's target from unnormalized log weights;
    of the class `merged` as one symbol, for a target in it (evaluate.symbol_log_probs)."""
    top = lw.max(axis=1, keepdims=True)
    e = np.exp(lw - top)
    log_z = np.log(e.sum(axis=1)) + top[:, 0]
    out = lw[np.arange(len(targets)), targets] - log_z
    if merged is not None:
        rows = np.flatnonzero(merged[targets])
        out[rows] = np.log(e[np.ix_(rows, np.flatnonzero(merged))].sum(axis=1)) + top[rows, 0] - log_z[rows]
    return out


def fit(net_logp: np.ndarray, table_p: np.ndarray, targets: np.ndarray, bucket: np.ndarray,
        added: int = 0) -> list[list[float]]:
    """The pair (a, c) for every bucket that predicts these targets best: with UNK's
    class as one symbol when `added` symbols are in it (log_weights)."""
    if added:
        base = net_logp.shape[1] - added
        cls = unk_class(net_logp.shape[1], added)
        net_class = np.logaddexp.reduce(net_logp[:, cls].astype(np.float64), axis=1)
        table_class = table_p[:, UNK] if table_p.shape[1] == base else table_p[:, cls].sum(axis=1)
        net_logp, table_p = net_logp[:, :base].copy(), table_p[:, :base].copy()
        net_logp[:, UNK], table_p[:, UNK] = net_class, table_class
        targets = np.where(targets >= base, UNK, targets)
    features = (net_logp.astype(np.float32), np.log(table_p, dtype=np.float32))
    overall = _newton(features, targets, np.array([1.0, 0.0]))
    weights = []
    for b in range(BUCKETS):
        rows = np.flatnonzero(bucket == b)
        if len(rows) < MIN_POSITIONS:
            weights.append(overall)
        else:
            weights.append(_newton((features[0][rows], features[1][rows]), targets[rows], overall))
    return [[round(float(x), 4) for x in w] for w in weights]


def _newton(features: tuple[np.ndarray, np.ndarray], targets: np.ndarray, start: np.ndarray,
            steps: int = 25) -> np.ndarray:
    """Maximum likelihood (a, c) of a two-feature log-linear model by Newton's method."""
    f1, f2 = features
    picked = np.arange(len(targets)), targets
    theta = start.astype(np.float64)
    for _ in range(steps):
        lw = np.float32(theta[0]) * f1
        lw += np.float32(theta[1]) * f2
        lw -= lw.max(axis=1, keepdims=True)
        p = np.exp(lw, out=lw)
        p /= p.sum(axis=1, keepdims=True)
        q1, q2 = p * f1, p * f2
        e1, e2 = q1.sum(axis=1, dtype=np.float64), q2.sum(axis=1, dtype=np.float64)
        grad = np.array([(f1[picked] - e1).sum(), (f2[picked] - e2).sum()])
        # the Hessian is minus the features' covariance under the model, summed over rows
        c11 = ((q1 * f1).sum(axis=1, dtype=np.float64) - e1 * e1).sum()
        c12 = ((q1 * f2).sum(axis=1, dtype=np.float64) - e1 * e2).sum()
        c22 = ((q2 * f2).sum(axis=1, dtype=np.float64) - e2 * e2).sum()
        step = np.linalg.solve(np.array([[c11, c12], [c12, c22]]) + 1e-6 * np.eye(2), grad)
        theta += step
        if np.abs(step).max() < 1e-3:
            break
    return theta
