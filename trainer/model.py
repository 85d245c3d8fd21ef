"""The network and its artifact.

The network: embedding -> a stack of LSTM or GRU layers -> logits over the vocabulary.
The artifact: one zip file holding `meta.json` (config, vocabulary, metadata),
`weights.npz` (plain arrays) and, for an account's model, `ngram.npz` (the account's
n-gram counts, mixed with the network: see ngram.py). Plain arrays keep the artifact
independent of Keras' file format and let the sampler run on numpy alone, without
importing TensorFlow.
"""
from __future__ import annotations

import dataclasses
import io
import json
import os
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trainer.data import UNK, Vocab
from trainer.errors import TrainerError
from trainer.ngram import BUCKETS, NGram

FORMAT_VERSION = 1
DEFAULT_BASE = Path(__file__).parent / "models" / "base.zip"


@dataclass(frozen=True)
class ModelConfig:
    cell: str = "gru"  # "gru" or "lstm"
    layers: int = 1
    units: int = 512
    embedding: int = 64

    def __post_init__(self) -> None:
        if self.cell not in ("gru", "lstm"):
            raise TrainerError(f"unknown cell type {self.cell!r} (use gru or lstm)")


@dataclass
class Artifact:
    config: ModelConfig
    vocab: Vocab
    weights: list[np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)
    ngram: NGram | None = None  # with meta["mixture_weights"]: see mixture.py


def build_model(config: ModelConfig, vocab_size: int):
    """The Keras model: ids (batch, time) -> logits (batch, time, vocab)."""
    from trainer.tfimport import tensorflow_and_keras

    _, keras = tensorflow_and_keras()
    layer = {"gru": keras.layers.GRU, "lstm": keras.layers.LSTM}[config.cell]
    inputs = keras.Input(shape=(None,), dtype="int32")
    x = keras.layers.Embedding(vocab_size, config.embedding)(inputs)
    for _ in range(config.layers):
        x = layer(config.units, return_sequences=True)(x)
    logits = keras.layers.Dense(vocab_size)(x)
    return keras.Model(inputs, logits)


def grow_vocab(artifact: Artifact, vocab: Vocab) -> list[np.ndarray]:
    """The artifact's weights for a larger vocabulary that starts with its own. Each new
    character starts as UNK: the base model saw it as UNK, so its contexts are known,
    and the output's UNK mass is shared among the new ones rather than multiplied."""
    old, new = len(artifact.vocab), len(vocab)
    if vocab.itos[:old] != artifact.vocab.itos:
        raise TrainerError("the new vocabulary does not extend the model's")
    if new == old:
        return list(artifact.weights)
    emb, *middle, out_w, out_b = artifact.weights
    added = new - old
    emb = np.concatenate([emb, np.repeat(emb[UNK : UNK + 1], added, axis=0)])
    out_w = np.concatenate([out_w, np.repeat(out_w[:, UNK : UNK + 1], added, axis=1)], axis=1)
    out_b = np.concatenate([out_b, np.full(added, out_b[UNK] - np.log(added + 1), out_b.dtype)])
    out_b[UNK] -= np.log(added + 1)
    return [emb, *middle, out_w, out_b]


def to_keras(artifact: Artifact):
    model = build_model(artifact.config, len(artifact.vocab))
    model.set_weights(artifact.weights)
    return model


def save(artifact: Artifact, path: str | Path) -> None:
    """Write atomically: a temp file in the same folder, fsync, rename. A crash at
    any point leaves either the old artifact or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": FORMAT_VERSION,
        "config": dataclasses.asdict(artifact.config),
        "vocab": artifact.vocab.chars,
        "meta": artifact.meta,
    }
    buf = io.BytesIO()
    np.savez(buf, *[w.astype(np.float32) for w in artifact.weights])
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            with zipfile.ZipFile(fh, "w", zipfile.ZIP_DEFLATED) as zf:
                zf.writestr("meta.json", json.dumps(meta, ensure_ascii=False, indent=1))
                zf.writestr("weights.npz", buf.getvalue())
                if artifact.ngram is not None:
                    grams = io.BytesIO()
                    np.savez(grams, **artifact.ngram.arrays())
                    zf.writestr("ngram.npz", grams.getvalue())
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a model is not a secret
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(path: str | Path) -> Artifact:
    path = Path(path)
    if not path.is_file():
        raise TrainerError(f"{path}: no such model file")
    try:
        with zipfile.ZipFile(path) as zf:
            meta = json.loads(zf.read("meta.json"))
            with np.load(io.BytesIO(zf.read("weights.npz"))) as npz:
                weights = [npz[f"arr_{i}"] for i in range(len(npz.files))]
            vocab = Vocab(meta["vocab"])
            ngram = None
            if "ngram.npz" in zf.namelist():
                with np.load(io.BytesIO(zf.read("ngram.npz"))) as npz:
                    ngram = NGram.from_arrays(npz, len(vocab))
                if np.shape(meta["meta"].get("mixture_weights")) != (BUCKETS, 2):
                    raise TrainerError(f"{path}: made by an earlier version of the trainer; fine-tune the account again")
        if meta.get("format") != FORMAT_VERSION:
            raise ValueError(f"format {meta.get('format')!r}, expected {FORMAT_VERSION}")
        config = ModelConfig(**meta["config"])
    except TrainerError:
        raise
    except Exception as exc:  # zip, json, npz and key errors all mean the same to a user
        raise TrainerError(f"{path}: not a valid model file ({exc.__class__.__name__}: {exc})") from None
    expected = 3 + config.layers * 3
    if len(weights) != expected:
        raise TrainerError(f"{path}: not a valid model file (has {len(weights)} arrays, expected {expected})")
    return Artifact(config, vocab, weights, meta.get("meta", {}), ngram)
