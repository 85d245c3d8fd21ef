"""Held-out bits per character: how well a model predicts posts it never saw.

Every character of each post and its end-of-post are scored, each post starting
from a fresh state, exactly as the sampler starts a new post.
"""
from __future__ import annotations

import math
import time

import numpy as np

from trainer import data
from trainer.data import Post
from trainer.model import Artifact, to_keras


def bits_per_char(artifact: Artifact, posts: list[Post], model=None, batch_size: int = 256) -> float:
    """Mean negative log2-likelihood per scored symbol (characters + end-of-post)."""
    import tensorflow as tf

    model = model if model is not None else to_keras(artifact)
    # One graph for every batch width: Keras' predict functions retrace per new shape,
    # which costs seconds each for a recurrent network.
    forward = tf.function(lambda x: model(x, training=False),
                          input_signature=[tf.TensorSpec([None, None], tf.int32)])
    encoded = data.encode_posts(artifact.vocab, posts)
    total_nats, count = 0.0, 0
    for x, y, w in data.batches(encoded, batch_size):
        logits = forward(x).numpy().astype(np.float64)
        logz = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
        picked = np.take_along_axis(logits, y[..., None], -1)[..., 0]
        real = w > 0
        total_nats += float((logz - picked)[real].sum())
        count += int(real.sum())
    return total_nats / count / math.log(2)


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
        "finetune_seconds": round(finetune_seconds, 1),
        "finetune_epochs": tuned.meta["epochs"],
        "scratch_epochs": scratch.meta["epochs"],
        "base_model": str(base.meta.get("data", "")),
    }

