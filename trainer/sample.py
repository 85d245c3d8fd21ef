"""Batched, stateful sampling on numpy alone.

The recurrent state is carried from one character to the next, so each new character
costs one step of the network (the prefix is never re-run). A batch of candidates
advances together, and a candidate that ends makes room for a new one at once, so
the batch stays full until the last few posts. An account's model mixes the
network's next-character distribution with its n-gram table's (ngram.py) before
temperature and top-k / top-p apply.
Numpy mirrors Keras' GRU/LSTM equations exactly (tests compare the two), which keeps
TensorFlow out of the posting process.
"""
from __future__ import annotations

import time

import numpy as np

from trainer import mixture, ngram
from trainer.data import EOS, PAD, UNK, Vocab
from trainer.errors import TrainerError
from trainer.model import Artifact
from trainer.spelling import Speller
from trainer.text import MAX_WEIGHTED_LENGTH, URL_SYMBOL, normalize, weighted_length

MAX_STEPS = 320  # characters; X's limit is 280 weighted
CLOCK_EVERY = 16  # steps between looks at the clock, when sampling has a time bound


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """In place. exp is the cheapest transcendental numpy has; exp overflowing to inf
    for very negative x still gives the right limit, 0."""
    np.negative(x, out=x)
    np.exp(x, out=x)
    x += 1.0
    return np.reciprocal(x, out=x)


def _tanh(x: np.ndarray) -> np.ndarray:
    """In place: tanh(x) = 2 sigmoid(2x) - 1."""
    x *= 2.0
    _sigmoid(x)
    x *= 2.0
    x -= 1.0
    return x


class StepNet:
    """The network as a function of (ids, state) -> (logits, state).

    Each layer's new output goes through one matrix product that yields both its
    recurrent term for the next step and what the layer above needs now (the next
    layer's input projection, or the logits): one product per layer per step."""

    def __init__(self, artifact: Artifact):
        cfg, w = artifact.config, [np.asarray(a, np.float32) for a in artifact.weights]
        self.cell, self.units = cfg.cell, cfg.units
        emb, layer_w, (out_w, out_b) = w[0], w[1:-2], w[-2:]
        layers = [layer_w[i : i + 3] for i in range(0, len(layer_w), 3)]
        gru = self.cell == "gru"
        # Keras' GRU (reset_after) has an input bias and a recurrent bias; the LSTM one bias.
        in_bias = [b[0] if gru else b for _, _, b in layers]
        rec_bias = [b[1] if gru else np.zeros_like(b) for _, _, b in layers]
        self.first_proj = emb @ layers[0][0] + in_bias[0]  # every character's, computed once
        self.fused, self.fused_bias = [], []
        for li, (_, rec, _) in enumerate(layers):
            above, above_b = (layers[li + 1][0], in_bias[li + 1]) if li + 1 < len(layers) else (out_w, out_b)
            self.fused.append(np.ascontiguousarray(np.concatenate([rec, above], axis=1)))
            self.fused_bias.append(np.concatenate([rec_bias[li], above_b]))
        self.rec_bias = rec_bias
        self.gates = rec_bias[0].shape[0]

    def initial_state(self, batch: int) -> list[np.ndarray]:
        """Per layer: the output h (and the LSTM's cell c), and h's recurrent term."""
        state = []
        for rb in self.rec_bias:
            state.append(np.zeros((batch, self.units), np.float32))
            if self.cell == "lstm":
                state.append(np.zeros((batch, self.units), np.float32))
            state.append(np.repeat(rb[None, :], batch, axis=0))
        return state

    def step(self, ids: np.ndarray, state: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        u, per = self.units, 2 if self.cell == "gru" else 3
        x = self.first_proj[ids]
        new_state = []
        for li, (w, b) in enumerate(zip(self.fused, self.fused_bias)):
            layer_state = state[per * li : per * (li + 1)]
            if self.cell == "gru":
                h, rec = layer_state
                zr = _sigmoid(x[:, : 2 * u] + rec[:, : 2 * u])
                z, r = zr[:, :u], zr[:, u:]
                r *= rec[:, 2 * u :]
                r += x[:, 2 * u :]
                hh = _tanh(r)
                h = hh + z * (h - hh)  # = z * h + (1 - z) * hh
                new_state.append(h)
            else:
                h, c, rec = layer_state
                g = x + rec
                ifo = _sigmoid(np.concatenate([g[:, : 2 * u], g[:, 3 * u :]], axis=1))
                c = ifo[:, u : 2 * u] * c + ifo[:, :u] * _tanh(g[:, 2 * u : 3 * u])
                h = ifo[:, 2 * u :] * _tanh(c.copy())
                new_state += [h, c]
            both = h @ w
            both += b
            new_state.append(both[:, : self.gates])
            x = both[:, self.gates :]
        return x, new_state


class Mixer:
    """The network's logits -> the account model's next-symbol weights at a
    temperature (unnormalized): the network alone, or mixed with the n-gram table's
    distribution (mixture.py) when the artifact has one."""

    def __init__(self, artifact: Artifact, temperature: float):
        self.table = artifact.ngram
        self.added = int(artifact.meta.get("vocab_added", 0))
        self.inv_t = np.float32(1.0 / temperature)
        if self.table is not None:
            # p^(1/T) of a product of powers: the temperature just scales the powers
            self.weights = np.asarray(artifact.meta["mixture_weights"], np.float32) * self.inv_t

    def fold(self, ids: np.ndarray) -> np.ndarray:
        """Ids as the table's contexts hold them (ngram.fold)."""
        return ids if self.table is None else self.table.fold(ids)

    def __call__(self, logits: np.ndarray, context: np.ndarray, forbidden: list[int]) -> np.ndarray:
        if self.table is None:
            logits *= self.inv_t  # softmax(logits / T): temperature for free
        else:
            table_p, bucket = self.table.distributions(context)
            logits = mixture.log_weights(logits, table_p, self.weights, bucket, self.added)
        logits[:, forbidden] = -np.inf
        logits -= logits.max(axis=1, keepdims=True)
        return np.exp(logits, out=logits)


def _choose(p: np.ndarray, rng: np.random.Generator, top_k: int, top_p: float) -> np.ndarray:
    """One symbol per row from unnormalized weights `p` (changed in place), after
    cutting to the top k and to the smallest set of symbols holding top_p of the mass."""
    rows = np.arange(len(p))
    if top_k and top_k < p.shape[1]:
        kth = np.partition(p, -top_k, axis=1)[:, -top_k][:, None]
        p[p < kth] = 0.0
    r = rng.random(len(p), dtype=np.float32)
    if top_p >= 1.0:
        cdf = np.cumsum(p, axis=1)
        u = (1 - r) * cdf[:, -1]  # in (0, total]: a symbol of weight 0 is never drawn
        return np.minimum((cdf < u[:, None]).sum(axis=1), p.shape[1] - 1).astype(np.int32)
    # In ascending order the symbols outside the nucleus are a prefix: the least likely
    # ones whose mass stays within 1 - top_p. Draw past that prefix, then find the
    # drawn weight's symbol (one sort of values, no argsort: numpy's is much slower).
    asc = np.sort(p, axis=1)
    cum = np.cumsum(asc, axis=1)
    total = cum[:, -1]
    dropped = (cum <= ((1 - top_p) * total)[:, None]).sum(axis=1)
    lo = np.where(dropped > 0, cum[rows, np.maximum(dropped - 1, 0)], 0)
    u = lo + (1 - r) * (total - lo)
    pos = np.minimum((cum < u[:, None]).sum(axis=1), p.shape[1] - 1)
    return (p == asc[rows, pos][:, None]).argmax(axis=1).astype(np.int32)


def sample(artifact: Artifact, n: int, **kwargs) -> list[str]:
    """Up to n new posts (sample_scored's texts without their bits per character)."""
    return [text for text, _ in sample_scored(artifact, n, **kwargs)]


def sample_scored(
    artifact: Artifact,
    n: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    prime: str = "",
    batch_size: int = 256,
    seed: int | None = None,
    net: StepNet | None = None,
    never_first: str = "",
    speller: Speller | None = None,
    max_seconds: float | None = None,
) -> list[tuple[str, float]]:
    """Up to n new posts, each with its bits per character under the account's model:
    its sampled symbols and its end, as trainer.evaluate scores a post, at the given
    temperature and before the nucleus cut, the spelling and `never_first` narrowed
    the choice (bot/compose.py chooses by it). Each post ends at the model's
    end-of-post and fits X's weighted length (longer ones are dropped, not cut, so no
    post ends mid-word). With `max_seconds`, sampling stops that long after it began,
    with the posts ended by then (a starved CPU makes a slot skip rather than run on).

    `prime` is the text every post starts with (replies use it to follow a mention);
    it is part of the returned text. No post continues the prime with a character of
    `never_first` (the bot passes "@." so that a post never opens like a reply).
    With a `speller` (spelling.py) every word written is one of its allowed words.

    A link ends the post: the model's weight for URL_SYMBOL goes to its end-of-post,
    so a post that would go on to a link ends where the link would stand ("Shameful.
    The women of Georgia deserve better.\n<link>" is posted without its link). Merely
    forbidding the link made the model write on where it meant to stop: mid-post line
    breaks and colons followed by anything."""
    deadline = None if max_seconds is None else time.monotonic() + max_seconds
    if n < 1:
        return []
    if temperature <= 0 or not 0 < top_p <= 1 or top_k < 0:
        raise TrainerError("sampling needs temperature > 0, 0 < top-p <= 1 and top-k >= 0")
    net = net or StepNet(artifact)
    rng = np.random.default_rng(seed)
    # a trailing space is meaningful in a prime: the next word starts fresh
    prime = normalize(prime) + (" " if prime[-1:].isspace() and prime.strip() else "")
    forbidden = [PAD, UNK]
    budget = MAX_WEIGHTED_LENGTH - weighted_length(prime)
    if budget <= 0:
        raise TrainerError("the priming text alone is longer than a post may be")
    # State after EOS + prime, computed once for one row and copied into every new row.
    prime_ids = list(artifact.vocab.encode(prime))
    logits, state = net.step(np.array([EOS], np.int32), net.initial_state(1))
    for i in prime_ids:
        logits, state = net.step(np.array([i], np.int32), state)
    mixer = Mixer(artifact, temperature)
    start = _Start(logits[0], [s[0] for s in state], ngram.start_context(mixer.fold(np.array(prime_ids, np.int64))),
                   speller.run(prime_ids) if speller else None)
    # Bounded: a model that never ends a post yields nothing rather than running on.
    # Generous, because a weak model at a low temperature may end only one candidate
    # in several within 280 characters.
    width = min(batch_size, n)
    first = [artifact.vocab.stoi[c] for c in never_first if c in artifact.vocab.stoi]
    with np.errstate(over="ignore"):
        texts = _run(net, mixer, start, width, n, 8 * n + width, rng, top_k, top_p, forbidden,
                     artifact.vocab.stoi[URL_SYMBOL], _char_weights(artifact.vocab), budget, first, speller, deadline)
    scored = [((prime + artifact.vocab.decode(t)).strip(), bits) for t, bits in texts]
    return [(t, bits) for t, bits in scored
            if len(t) > len(prime.strip()) and weighted_length(t) <= MAX_WEIGHTED_LENGTH][:n]


class _Start:
    """Where every candidate begins: the network's output and state after the prime."""

    def __init__(self, logits: np.ndarray, state: list[np.ndarray], context: np.uint64, spelling=None):
        self.logits, self.state, self.context, self.spelling = logits, state, context, spelling


def _run(net, mixer, start, width, n, limit, rng, top_k, top_p, forbidden, link, char_weight,
         budget, first_forbidden=(), speller: Speller | None = None,
         deadline: float | None = None) -> list[tuple[np.ndarray, float]]:
    """Sample until n posts have ended in time, `limit` candidates were started or
    time.monotonic() passed `deadline`; returns the ended posts' ids (without the prime)
    and bits per symbol."""
    logits = np.repeat(start.logits[None, :], width, axis=0)
    state = [np.repeat(s[None, :], width, axis=0) for s in start.state]
    context = np.full(width, start.context, np.uint64)
    chars = np.full((width, MAX_STEPS), PAD, np.int32)
    length = np.zeros(width, np.int64)
    weight = np.zeros(width, np.int64)
    bits = np.zeros(width, np.float64)
    spelling = [start.spelling] * width  # each row's place in its word (spelling.py)
    started, finished_so_far, done = width, 0, []
    step = 0
    while len(logits):
        if deadline is not None and step % CLOCK_EVERY == 0 and time.monotonic() > deadline:
            break
        step += 1
        p = mixer(logits, context, forbidden)
        p[:, EOS] += p[:, link]  # a link ends the post (see sample_scored)
        p[:, link] = 0.0
        total = p.sum(axis=1)  # the model's own weights: what it would score the symbol
        if len(first_forbidden):
            fresh_rows = np.flatnonzero(length == 0)
            if len(fresh_rows):
                p[np.ix_(fresh_rows, first_forbidden)] = 0.0
        stuck = _spell(p, spelling, speller) if speller else None
        ids = _choose(p, rng, top_k, top_p)
        rows = np.arange(len(ids))
        chars[rows, length] = ids
        length += 1
        weight += char_weight[ids]
        bits += np.log2(total / p[rows, ids])  # masks and the nucleus cut left the drawn weight as it was
        ended = ids == EOS
        finished = ended | (weight > budget) | (length >= MAX_STEPS)
        if stuck is not None:
            finished |= stuck
            ended &= ~stuck
            spelling = [speller.after(st, i) for st, i in zip(spelling, ids.tolist())]
        for r in np.flatnonzero(ended & (weight <= budget) & (length > 1)):
            done.append((chars[r, : length[r] - 1].copy(), float(bits[r] / length[r])))
        logits, state = net.step(ids, state)
        context = ngram.push(context, mixer.fold(ids))
        if not finished.any():
            continue
        if len(done) >= n:
            break
        # A finished row starts a new candidate while more may be needed: as many as
        # the posts still missing need at the success rate so far, so that the last
        # posts are not waited for one failed candidate after another.
        finished_so_far += int(finished.sum())
        success = max(len(done), 1) / finished_so_far
        wanted = int(np.ceil((n - len(done)) / success)) - int((~finished).sum())
        fresh = np.flatnonzero(finished)[: max(0, min(limit - started, wanted))]
        started += len(fresh)
        logits[fresh], context[fresh], length[fresh], weight[fresh], bits[fresh] = start.logits, start.context, 0, 0, 0
        chars[fresh] = PAD
        for s, s0 in zip(state, start.state):
            s[fresh] = s0
        for r in fresh.tolist():
            spelling[r] = start.spelling
        keep = ~finished
        keep[fresh] = True
        if not keep.all():
            logits, context, chars, length, weight, bits = (a[keep] for a in (logits, context, chars, length, weight, bits))
            state = [s[keep] for s in state]
            spelling = [st for st, k in zip(spelling, keep.tolist()) if k]
    return done


def _spell(p: np.ndarray, spelling: list, speller: Speller) -> np.ndarray:
    """Zeroes, in place, what the rows' words may not go on with. Returns the rows left
    with nothing to write (a word whose only endings the vocabulary lacks): they are
    given EOS to draw and must be dropped, not kept as posts."""
    rows, masks = [], []
    for r, st in enumerate(spelling):
        mask = speller.allowed(st)
        if mask is not None:
            rows.append(r)
            masks.append(mask)
    stuck = np.zeros(len(p), bool)
    if rows:
        sub = p[rows]
        sub[~np.stack(masks)] = 0.0
        dead = ~(sub > 0).any(axis=1)
        sub[dead, EOS] = 1.0
        p[rows] = sub
        stuck[np.asarray(rows)[dead]] = True
    return stuck


def _char_weights(vocab: Vocab) -> np.ndarray:
    # An upper bound of each character's weight (emoji sequences may count less);
    # the final weighted_length check is exact.
    w = np.array([weighted_length(c) if i >= 3 else 0 for i, c in enumerate(vocab.itos)], np.int64)
    return w
