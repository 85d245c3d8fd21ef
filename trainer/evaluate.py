"""Held-out bits per character: how well a model predicts posts it never saw.

Every character of each post and its end-of-post are scored, each post starting
from a fresh state, exactly as the sampler starts a new post. An account's model is
its network mixed with its n-gram table (ngram.py); both parts are also reported alone.
"""
from __future__ import annotations

import math
import time

import numpy as np

from trainer import data
from trainer.data import Post
from trainer.model import Artifact, to_keras


def network_probs(artifact: Artifact, posts: list[Post], model=None, batch_size: int = 256) -> np.ndarray:
    """The network's probability of every scored symbol: posts in the given order,
    each post's characters and then its end-of-post (the order NGram.score uses)."""
    import tensorflow as tf

    model = model if model is not None else to_keras(artifact)
    # One graph for every batch width: Keras' predict functions retrace per new shape,
    # which costs seconds each for a recurrent network.
    forward = tf.function(lambda x: model(x, training=False),
                          input_signature=[tf.TensorSpec([None, None], tf.int32)])
    encoded = data.encode_posts(artifact.vocab, posts)
    by_length = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))  # little padding
    per_post: list[np.ndarray] = [np.zeros(0)] * len(encoded)
    for start in range(0, len(by_length), batch_size):
        rows = by_length[start : start + batch_size]
        x, y, _ = data.make_batch([encoded[i] for i in rows])
        logits = forward(x).numpy().astype(np.float64)
        top = logits.max(-1, keepdims=True)
        logz = np.log(np.exp(logits - top).sum(-1)) + top[..., 0]
        logp = np.take_along_axis(logits, y[..., None], -1)[..., 0] - logz
        for r, i in enumerate(rows):
            per_post[i] = np.exp(logp[r, : len(encoded[i]) + 1])
    return np.concatenate(per_post) if per_post else np.zeros(0)


def mixed_probs(artifact: Artifact, posts: list[Post], nn_p: np.ndarray) -> np.ndarray:
    """The artifact's probability of every scored symbol: the network's alone, or
    mixed with the n-gram table's when the artifact has one."""
    if artifact.ngram is None:
        return nn_p
    ngram_p, bucket = artifact.ngram.score(data.encode_posts(artifact.vocab, posts))
    w = np.asarray(artifact.meta["mixture_weights"])[bucket]
    return w * nn_p + (1 - w) * ngram_p


def to_bits(p: np.ndarray) -> float:
    """Mean negative log2-likelihood per scored symbol."""
    return float(-np.log2(p).mean())


def bits_per_char(artifact: Artifact, posts: list[Post], model=None) -> float:
    """Held-out bits per scored symbol (characters + end-of-post) of the whole artifact."""
    return to_bits(mixed_probs(artifact, posts, network_probs(artifact, posts, model)))


def evaluate_account(base: Artifact, posts: list[Post], max_seconds: float | None) -> dict:
    """Base vs fine-tuned vs the same network trained from scratch with the same
    time budget, all on the account's newest 10% (never trained on)."""
    from trainer.train import finetune, split_account

    _, _, heldout = split_account(posts)
    t0 = time.monotonic()
    tuned = finetune(base, posts, max_seconds=max_seconds)
    finetune_seconds = time.monotonic() - t0
    scratch = finetune(base, posts, max_seconds=max_seconds, from_scratch=True)
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
