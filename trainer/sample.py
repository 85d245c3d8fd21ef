"""Batched, stateful sampling on numpy alone.

The recurrent state is carried from one character to the next, so each new character
costs one step of the network (the prefix is never re-run), and a batch of candidates
advances together; finished candidates leave the batch so the rest run faster.
Numpy mirrors Keras' GRU/LSTM equations exactly (tests compare the two), which keeps
TensorFlow out of the posting process.
"""
from __future__ import annotations

import numpy as np

from trainer.data import EOS, PAD, UNK, Vocab
from trainer.errors import TrainerError
from trainer.model import Artifact
from trainer.text import MAX_WEIGHTED_LENGTH, URL_SYMBOL, normalize, weighted_length

MAX_STEPS = 320  # characters; X's limit is 280 weighted


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (np.tanh(0.5 * x) + 1.0)  # stable for large |x|


class StepNet:
    """The network as a function of (ids, state) -> (logits, state)."""

    def __init__(self, artifact: Artifact):
        cfg, w = artifact.config, [np.asarray(a, np.float32) for a in artifact.weights]
        self.cell, self.units = cfg.cell, cfg.units
        emb, layer_w, (self.out_w, self.out_b) = w[0], w[1:-2], w[-2:]
        self.layers = [layer_w[i : i + 3] for i in range(0, len(layer_w), 3)]
        # The first layer's input projection of every character, computed once.
        kernel, _, bias = self.layers[0]
        self.first_proj = emb @ kernel + (bias[0] if self.cell == "gru" else bias)

    def initial_state(self, batch: int) -> list[np.ndarray]:
        n = 1 if self.cell == "gru" else 2
        return [np.zeros((batch, self.units), np.float32) for _ in range(n * len(self.layers))]

    def step(self, ids: np.ndarray, state: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        x = None
        new_state = []
        u = self.units
        for li, (kernel, rec, bias) in enumerate(self.layers):
            if self.cell == "gru":
                proj = self.first_proj[ids] if li == 0 else x @ kernel + bias[0]
                h = state[li]
                inner = h @ rec
                inner += bias[1]
                zr = proj[:, : 2 * u] + inner[:, : 2 * u]
                zr = _sigmoid(zr)
                z, r = zr[:, :u], zr[:, u:]
                hh = np.tanh(proj[:, 2 * u :] + r * inner[:, 2 * u :])
                x = hh + z * (h - hh)  # = z * h + (1 - z) * hh
                new_state.append(x)
            else:
                proj = self.first_proj[ids] if li == 0 else x @ kernel + bias
                h, c = state[2 * li], state[2 * li + 1]
                g = h @ rec
                g += proj
                i, f = _sigmoid(g[:, :u]), _sigmoid(g[:, u : 2 * u])
                c = f * c + i * np.tanh(g[:, 2 * u : 3 * u])
                x = _sigmoid(g[:, 3 * u :]) * np.tanh(c)
                new_state += [x, c]
        return x @ self.out_w + self.out_b, new_state


def _choose(logits: np.ndarray, rng: np.random.Generator, temperature: float, top_k: int, top_p: float) -> np.ndarray:
    logits *= np.float32(1.0 / max(temperature, 1e-4))
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits, out=logits)
    if top_k and top_k < probs.shape[1]:
        kth = np.partition(probs, -top_k, axis=1)[:, -top_k][:, None]
        probs[probs < kth] = 0.0
    if top_p < 1.0:
        # keep the smallest set of most likely symbols whose mass reaches top_p: find
        # the probability of the last one kept, per row (a sort of values, no argsort)
        desc = -np.sort(-probs, axis=1)
        cum = np.cumsum(desc, axis=1)
        last = (cum < top_p * cum[:, -1:]).sum(axis=1).clip(max=probs.shape[1] - 1)
        probs[probs < desc[np.arange(len(desc)), last][:, None]] = 0.0
    cdf = np.cumsum(probs, axis=1)
    u = rng.random((probs.shape[0], 1), dtype=np.float32) * cdf[:, -1:]
    return (cdf < u).sum(axis=1).astype(np.int32).clip(0, probs.shape[1] - 1)


def sample(
    artifact: Artifact,
    n: int,
    temperature: float = 0.8,
    top_k: int = 0,
    top_p: float = 0.95,
    prime: str = "",
    batch_size: int = 256,
    seed: int | None = None,
    allow_urls: bool = False,
    net: StepNet | None = None,
) -> list[str]:
    """Up to n new posts; each ends at the model's end-of-post and fits X's weighted
    length (longer ones are dropped, not cut, so no post ends mid-word).

    `prime` is the text every post starts with (replies use it to follow a mention);
    it is part of the returned text."""
    if n < 1:
        return []
    if temperature <= 0 or not 0 < top_p <= 1 or top_k < 0:
        raise TrainerError("sampling needs temperature > 0, 0 < top-p <= 1 and top-k >= 0")
    net = net or StepNet(artifact)
    rng = np.random.default_rng(seed)
    # a trailing space is meaningful in a prime: the next word starts fresh
    prime = normalize(prime) + (" " if prime[-1:].isspace() and prime.strip() else "")
    forbidden = [PAD, UNK] + ([] if allow_urls else [artifact.vocab.stoi[URL_SYMBOL]])
    budget = MAX_WEIGHTED_LENGTH - weighted_length(prime)
    if budget <= 0:
        raise TrainerError("the priming text alone is longer than a post may be")
    # State after EOS + prime, computed once for one row and copied to the batch.
    logits, state = net.step(np.array([EOS], np.int32), net.initial_state(1))
    for i in artifact.vocab.encode(prime):
        logits, state = net.step(np.array([i], np.int32), state)
    char_weight = _char_weights(artifact.vocab)
    out: list[str] = []
    for _ in range(-(-n // batch_size) * 2):  # bounded: a model that never ends a post yields nothing
        if len(out) >= n:
            break
        out += _sample_batch(net, artifact.vocab, min(batch_size, n - len(out)), logits, state, rng,
                             temperature, top_k, top_p, forbidden, char_weight, budget, prime)
    return out[:n]


def _sample_batch(net, vocab, b, logits0, state0, rng, temperature, top_k, top_p, forbidden,
                  char_weight, budget, prime) -> list[str]:
    state = [np.repeat(s, b, axis=0) for s in state0]
    logits = np.repeat(logits0, b, axis=0)
    rows = np.arange(b)  # which candidate each live row is
    weight = np.zeros(b, np.int64)
    chars = np.full((b, MAX_STEPS), PAD, np.int32)
    done = []
    for t in range(MAX_STEPS):
        logits[:, forbidden] = -np.inf
        ids = _choose(logits, rng, temperature, top_k, top_p)
        chars[rows, t] = ids
        weight[rows] += char_weight[ids]
        ended = ids == EOS
        too_long = weight[rows] > budget
        done += [r for r in rows[ended & ~too_long]]
        keep = ~(ended | too_long)
        if not keep.all():
            rows, ids = rows[keep], ids[keep]
            state = [s[keep] for s in state]
        if len(rows) == 0:
            break
        logits, state = net.step(ids, state)
    texts = [(prime + vocab.decode(chars[r])).strip() for r in done]
    return [t for t in texts if len(t) > len(prime.strip()) and weighted_length(t) <= MAX_WEIGHTED_LENGTH]


def _char_weights(vocab: Vocab) -> np.ndarray:
    # An upper bound of each character's weight (emoji sequences may count less);
    # the final weighted_length check is exact.
    w = np.array([weighted_length(c) if i >= 3 else 0 for i, c in enumerate(vocab.itos)], np.int64)
    return w
