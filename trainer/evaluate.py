"""Held-out bits per character: how well a model predicts posts it never saw.

Every character of each post and its end-of-post are scored, each post starting
from a fresh state, exactly as the sampler starts a new post. An account's model is
its network mixed with its n-gram table (ngram.py); both parts are also reported alone.
"""
from __future__ import annotations

import math
import time
import weakref
from typing import Iterator

import numpy as np

from trainer import data, mixture, ngram
from trainer.data import Post
from trainer.model import Artifact, to_keras


def network_rows(artifact: Artifact, encoded: list[np.ndarray], model=None,
                 batch_size: int = 128) -> Iterator[tuple[list[int], np.ndarray]]:
    """Batches of posts (similar lengths together): (their indices, the network's
    log-probability rows for their scored symbols, post after post)."""
    model = model if model is not None else to_keras(artifact)
    forward = _forward(model)
    by_length = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))  # little padding
    for start in range(0, len(by_length), batch_size):
        rows = by_length[start : start + batch_size]
        x, _, _ = data.make_batch([encoded[i] for i in rows])
        logp = forward(x).numpy()
        yield rows, np.concatenate([logp[r, : len(encoded[i]) + 1] for r, i in enumerate(rows)])


_forwards: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _forward(model):
    """The model's log-probabilities as one graph for every batch shape (Keras'
    predict functions retrace per new shape, which costs seconds each for a recurrent
    network), made once per model."""
    from trainer.tfimport import tensorflow_and_keras

    tf, _ = tensorflow_and_keras()
    if model not in _forwards:
        ref = weakref.ref(model)  # the cache must not keep the model alive
        _forwards[model] = tf.function(lambda x: tf.nn.log_softmax(ref()(x, training=False)),
                                       input_signature=[tf.TensorSpec([None, None], tf.int32)])
    return _forwards[model]


def symbol_log_probs(artifact: Artifact, posts: list[Post], model=None, table: bool = True,
                     base_size: int | None = None) -> np.ndarray:
    """Natural log-probability of every scored symbol (each post's characters, then
    its end-of-post): the network mixed with the artifact's n-gram table when it
    has one and `table` is true, else the network alone.

    With `base_size`, scored as if the vocabulary ended there: UNK and every symbol
    from base_size on count as one (UNK). An account's model adds its own characters
    to the base vocabulary (Vocab.extended), and naming 👍 is harder than saying
    "some unknown character": this keeps its figure comparable with the base model's."""
    return _scored(artifact, posts, model, table, [base_size])[0]


def symbol_log_probs_both(artifact: Artifact, posts: list[Post], base_size: int,
                          model=None) -> tuple[np.ndarray, np.ndarray]:
    """symbol_log_probs as the artifact scores them, and at `base_size`, from one pass
    of the network."""
    plain, merged = _scored(artifact, posts, model, True, [None, base_size])
    return plain, merged


def _scored(artifact: Artifact, posts: list[Post], model, table: bool,
            base_sizes: list[int | None]) -> list[np.ndarray]:
    """symbol_log_probs at each of `base_sizes`, one pass of the network for all."""
    encoded = data.encode_posts(artifact.vocab, posts)
    masks = []
    for size in base_sizes:
        merged = None
        if size is not None:
            merged = np.zeros(len(artifact.vocab), bool)
            merged[mixture.unk_class(len(artifact.vocab), len(artifact.vocab) - size)] = True
        masks.append(merged)
    per_post = [[np.zeros(0)] * len(encoded) for _ in masks]
    weights = np.asarray(artifact.meta.get("mixture_weights", []))
    for rows, logp in network_rows(artifact, encoded, model):
        chosen = [encoded[i] for i in rows]
        symbols = ngram.targets(chosen)
        mixed = table and artifact.ngram is not None
        lw = logp.astype(np.float64)
        if mixed:
            table_p, bucket = artifact.ngram.distributions(artifact.ngram.contexts_of(chosen))
            lw = mixture.log_weights(lw, table_p.astype(np.float64), weights, bucket,
                                     int(artifact.meta.get("vocab_added", 0)))
        ends = np.cumsum([len(e) + 1 for e in chosen])
        for merged, out in zip(masks, per_post):
            if merged is None and not mixed:  # the network's rows are normalized already
                picked = lw[np.arange(len(symbols)), symbols]
            else:
                picked = mixture.pick(lw, symbols, merged)
            for i, part in zip(rows, np.split(picked, ends[:-1])):
                out[i] = part
    return [np.concatenate(out) if out else np.zeros(0) for out in per_post]


def to_bits(logp: np.ndarray) -> float:
    """Mean negative log2-likelihood per scored symbol, from natural log-probabilities."""
    return float(-logp.mean() / math.log(2))


def post_bits(logp: np.ndarray, encoded: list[np.ndarray]) -> list[float]:
    """to_bits of each post, from the log-probabilities of every scored symbol (as
    symbol_log_probs gives them: post after post, each one's characters, then its end)."""
    ends = np.cumsum([len(e) + 1 for e in encoded])
    return [to_bits(part) for part in np.split(logp, ends[:-1])] if len(encoded) else []


def bits_per_char(artifact: Artifact, posts: list[Post], model=None) -> float:
    """Held-out bits per scored symbol (characters + end-of-post) of the whole artifact."""
    return to_bits(symbol_log_probs(artifact, posts, model))


def evaluate_account(base: Artifact, posts: list[Post], max_seconds: float | None) -> dict:
    """Base vs fine-tuned vs the same network trained from scratch with the same
    time budget, all on the account's newest 10% (never trained on)."""
    _, _, heldout = data.split_account(posts)  # too few posts: an error before TensorFlow loads
    from trainer.train import finetune

    t0 = time.monotonic()
    tuned = finetune(base, posts, max_seconds=max_seconds)  # timed as the bot fine-tunes
    finetune_seconds = time.monotonic() - t0
    scratch = finetune(base, posts, max_seconds=max_seconds, from_scratch=True, learn_heldout=False)
    return {
        "posts": len(posts),
        "heldout_posts": len(heldout),
        "base_bits_per_char": round(bits_per_char(base, heldout), 4),
        "finetuned_bits_per_char": tuned.meta["heldout_bits_per_char"],
        "scratch_bits_per_char": scratch.meta["heldout_bits_per_char"],
        # the two parts of the fine-tuned model alone, for comparison
        "finetuned_network_bits_per_char": tuned.meta["heldout_network_bits_per_char"],
        "ngram_bits_per_char": tuned.meta["heldout_ngram_bits_per_char"],
        "scratch_network_bits_per_char": scratch.meta["heldout_network_bits_per_char"],
        "mixture_weights": tuned.meta["mixture_weights"],
        "finetune_seconds": round(finetune_seconds, 1),
        "finetune_epochs": tuned.meta["epochs"],
        "scratch_epochs": scratch.meta["epochs"],
        "base_model": str(base.meta.get("data", "")),
    }
