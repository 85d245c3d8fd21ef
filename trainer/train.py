"""Training loops: the base model on many accounts, and fine-tuning it on one account.

Both are Keras `fit` with a few callbacks: early stopping on a validation set, a
wall-clock budget, keeping the best weights, and (for the long base run) periodic
checkpoints that a restarted run resumes from.
"""
from __future__ import annotations

import hashlib
import logging
import math
import random
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from trainer import data, mixture, ngram
from trainer.data import Post, Vocab, split_account
from trainer.errors import TrainerError
from trainer.model import Artifact, ModelConfig, build_model, grow_vocab, save
from trainer.ngram import NGram
from trainer.tfimport import tensorflow_and_keras

tf, keras = tensorflow_and_keras()

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 128
    learning_rate: float = 2e-3
    steps_per_epoch: int | None = None  # None: one pass over the data; an "epoch" is a validation interval
    max_epochs: int = 1000
    patience: int = 3  # epochs without a better validation loss before stopping
    max_seconds: float | None = None
    seed: int = 0


BASE_TRAIN = TrainConfig(batch_size=128, learning_rate=2e-3, steps_per_epoch=400, patience=4)
# chosen on AndrewYang (held-out bits/char after 90 s: bs 32 lr 1e-3 2.019, bs 32 lr 3e-3 2.056,
# bs 64 lr 2e-3 2.008)
RECENT_POSTS = 300  # after fine-tuning, one more pass over this many of the newest posts of each part
FINETUNE_TRAIN = TrainConfig(batch_size=64, learning_rate=2e-3, patience=2, max_seconds=data.FINETUNE_SECONDS)


def fingerprint(posts: list[Post]) -> str:
    h = hashlib.sha256()
    for p in posts:
        h.update(p.text.encode("utf-8") + b"\x00")
    return h.hexdigest()[:16]


def fit(
    model,
    train_enc: list[np.ndarray],
    val_enc: list[np.ndarray],
    cfg: TrainConfig,
    checkpoint_dir: Path | None = None,
    on_improve: Callable[[float], None] | None = None,
    verbose: int = 0,
) -> dict:
    """Train `model` in place and leave it with its best validation weights.

    Returns {"epochs", "seconds", "best_val_loss" (nats/char), "stopped_by"}."""
    if not train_enc or not val_enc:
        raise TrainerError("nothing to train or validate on")
    model.compile(
        optimizer=keras.optimizers.Adam(cfg.learning_rate, clipnorm=1.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    steps = cfg.steps_per_epoch or math.ceil(len(train_enc) / cfg.batch_size)
    rng = random.Random(cfg.seed)

    def endless():
        while True:
            yield from data.batches(train_enc, cfg.batch_size, rng)

    spec = (
        tf.TensorSpec((None, None), tf.int32),
        tf.TensorSpec((None, None), tf.int32),
        tf.TensorSpec((None, None), tf.float32),
    )
    train_ds = tf.data.Dataset.from_generator(endless, output_signature=spec).prefetch(2)
    val_batches = list(data.batches(val_enc, 256))
    val_ds = tf.data.Dataset.from_generator(lambda: iter(val_batches), output_signature=spec)

    keeper = KeepBest(cfg.max_seconds, on_improve)
    callbacks = [keeper, keras.callbacks.EarlyStopping(monitor="val_loss", patience=cfg.patience)]
    if checkpoint_dir is not None:
        # double_checkpoint keeps the previous epoch's state too: a kill while the latest
        # is being written (seen in CI) falls back to it instead of failing the restart
        _drop_unreadable_checkpoint(Path(checkpoint_dir))
        callbacks.append(keras.callbacks.BackupAndRestore(str(checkpoint_dir), save_freq="epoch",
                                                          double_checkpoint=True))
    start = time.monotonic()
    model.fit(
        train_ds,
        steps_per_epoch=steps,
        epochs=cfg.max_epochs,
        validation_data=val_ds,
        validation_steps=len(val_batches),
        callbacks=callbacks,
        verbose=verbose,
        shuffle=False,  # data.batches shuffles
    )
    if keeper.best_weights is not None:
        model.set_weights(keeper.best_weights)
    return {
        "epochs": keeper.epochs,
        "seconds": round(time.monotonic() - start, 1),
        "best_val_loss": keeper.best,
        "stopped_by": "time budget" if keeper.out_of_time else "early stopping or max epochs",
    }


def _drop_unreadable_checkpoint(folder: Path) -> None:
    """A first checkpoint cut short by a kill has no previous one to fall back to:
    drop it (with its metadata), so the restart begins again instead of failing."""
    latest = folder / "latest.weights.h5"
    if not latest.is_file() or (folder / "latest.weights.h5.bkp").is_file():
        return
    import h5py

    try:
        h5py.File(latest, "r").close()
    except OSError:
        log.warning("the checkpoint in %s was cut short while written: starting again", folder)
        latest.unlink()
        (folder / "training_metadata.json").unlink(missing_ok=True)


class KeepBest(keras.callbacks.Callback):
    """Remembers the weights with the lowest validation loss and stops when the
    wall-clock budget is spent (checked every batch, so the budget holds)."""

    def __init__(self, max_seconds: float | None, on_improve: Callable[[float], None] | None):
        super().__init__()
        self.max_seconds = max_seconds
        self.on_improve = on_improve
        self.best = math.inf
        self.best_weights = None
        self.epochs = 0
        self.out_of_time = False

    def on_train_begin(self, logs=None):
        self.start = time.monotonic()
        self.lr0 = float(self.model.optimizer.learning_rate)

    def on_train_batch_end(self, batch, logs=None):
        if self.max_seconds is None:
            return
        used = (time.monotonic() - self.start) / self.max_seconds
        if used > 1:
            self.out_of_time = True
            self.model.stop_training = True
        elif used > 0.5 and batch % 10 == 0:
            # With a known budget, spend its second half lowering the learning rate
            # linearly to a tenth: a cheap, reliable gain at the end of a short run.
            self.model.optimizer.learning_rate.assign(self.lr0 * (1 - 1.8 * (used - 0.5)))

    def on_epoch_end(self, epoch, logs=None):
        self.epochs += 1
        val = (logs or {}).get("val_loss", math.inf)
        if val < self.best:
            self.best = float(val)
            self.best_weights = self.model.get_weights()
            if self.on_improve is not None:
                self.on_improve(self.best)


def train_base(
    data_path: str | Path,
    out: str | Path,
    model_config: ModelConfig = ModelConfig(),
    cfg: TrainConfig = BASE_TRAIN,
    checkpoint_dir: str | Path | None = None,
    val_posts: int = 5000,
    init: Artifact | None = None,
) -> Artifact:
    """Train a base model on a large corpus of many accounts' posts.

    The best model so far is written to `out` after every validation that improves,
    so an interrupted run always leaves a usable artifact; `checkpoint_dir` lets a
    restarted run resume where the last one stopped. `init` continues training an
    earlier base model (same corpus, so the same vocabulary) with a fresh optimizer."""
    t0 = time.monotonic()
    posts = data.read_posts(data_path)
    # The validation split is fixed (seed 0) so that a continued run never trains on
    # an earlier run's validation posts; cfg.seed only orders the training batches.
    random.Random(0).shuffle(posts)
    if len(posts) < 2 * val_posts:
        val_posts = max(1, len(posts) // 10)
    vocab = Vocab.build(p.text for p in posts)
    if init is not None:
        if init.vocab.itos != vocab.itos:
            raise TrainerError("--init model was trained on a different corpus (its vocabulary differs)")
        model_config = init.config
    val, train = posts[:val_posts], posts[val_posts:]
    train_enc, val_enc = data.encode_posts(vocab, train), data.encode_posts(vocab, val)
    log.info("base corpus: %d training posts, %d validation posts, vocabulary %d, read in %.0f s",
             len(train), len(val), len(vocab), time.monotonic() - t0)
    model = build_model(model_config, len(vocab))
    if init is not None:
        model.set_weights(init.weights)
    meta = {
        "kind": "base",
        "data": str(Path(data_path).name),
        "data_fingerprint": fingerprint(posts),
        "posts": len(train),
        "validation_posts": len(val),
        "train_config": cfg.__dict__,
        "continued_from": dict(init.meta) if init is not None else None,
    }

    def write_best(val_loss: float) -> None:
        meta.update(val_loss_nats=round(val_loss, 4), val_bits_per_char=round(val_loss / math.log(2), 4),
                    train_seconds=round(time.monotonic() - t0))
        save(Artifact(model_config, vocab, model.get_weights(), dict(meta)), out)
        log.info("validation loss %.4f nats/char (%.4f bits/char): saved %s", val_loss, val_loss / math.log(2), out)

    result = fit(model, train_enc, val_enc, cfg, Path(checkpoint_dir) if checkpoint_dir else None,
                 on_improve=write_best, verbose=1 if sys.stderr.isatty() else 2)
    meta.update(epochs=result["epochs"], stopped_by=result["stopped_by"], train_seconds=round(time.monotonic() - t0))
    artifact = Artifact(model_config, vocab, model.get_weights(), meta)
    save(artifact, out)
    return artifact


def finetune(
    base: Artifact,
    posts: list[Post],
    max_seconds: float | None = FINETUNE_TRAIN.max_seconds,
    cfg: TrainConfig = FINETUNE_TRAIN,
    from_scratch: bool = False,
    learn_heldout: bool = True,
    current: Artifact | None = None,
) -> Artifact:
    """Base model + one account's posts -> that account's model.

    Every layer is trained (the reference design's choice, and the better one here:
    see BENCHMARKS.md), and the account's n-gram table is counted and mixed in
    (ngram.py). The newest 10% are held out and scored; then, with learn_heldout,
    learnt too. Given the model in use (`current`), both are scored on the held-out
    posts it never learnt (meta "compared"). With from_scratch the same architecture
    starts from random weights instead: the baseline that shows what transfer learning buys."""
    from trainer.evaluate import post_bits, symbol_log_probs, symbol_log_probs_both, to_bits

    t0 = time.monotonic()
    train, stop_slice, heldout = split_account(posts)
    vocab = base.vocab.extended(p.text for p in train + stop_slice)
    train_enc, stop_enc = data.encode_posts(vocab, train), data.encode_posts(vocab, stop_slice)
    model = build_model(base.config, len(vocab))
    if not from_scratch:
        model.set_weights(grow_vocab(base, vocab))
    cfg = replace(cfg, max_seconds=max_seconds)
    if from_scratch:
        cfg = replace(cfg, learning_rate=BASE_TRAIN.learning_rate, patience=cfg.patience + 2)
    result = fit(model, train_enc, stop_enc, cfg)
    artifact = Artifact(base.config, vocab, model.get_weights(), {"vocab_added": len(vocab) - len(base.vocab)})
    # The mixture weights are chosen on the early-stopping slice with a table that has
    # not seen it; the table kept is then counted on the slice too (more phrases).
    # The table counts at the base vocabulary (ngram.fold says why).
    table_train, table_stop = ([ngram.fold(e, len(base.vocab)) for e in enc] for enc in (train_enc, stop_enc))
    weights = fit_mixture(artifact, model, NGram.fit(table_train, len(base.vocab)), stop_enc)
    artifact.meta["mixture_weights"] = weights
    artifact.ngram = NGram.fit(table_train + table_stop, len(base.vocab))
    # The network too gets the slice, once weights and stopping are decided: these are
    # the account's newest posts, the closest to what it writes next (-0.004 to
    # -0.005 bits/char held out on AndrewYang and KamalaHarris, a few seconds).
    recent = min(len(stop_enc), RECENT_POSTS)
    recent_pass(model, train_enc[-recent:] + stop_enc[-recent:], cfg)
    artifact.weights = model.get_weights()
    plain, merged = symbol_log_probs_both(artifact, heldout, len(base.vocab), model)
    heldout_bpc, base_vocab_bpc = to_bits(plain), to_bits(merged)
    network_bpc = to_bits(symbol_log_probs(artifact, heldout, model, table=False))
    # the table alone, at the base vocabulary it counts at
    ngram_bpc = to_bits(np.log(artifact.ngram.score(data.encode_posts(base.vocab, heldout))))
    held_enc = data.encode_posts(vocab, heldout)
    surprise = post_bits(plain, held_enc)
    compared = None if current is None else compare(current, base.vocab, heldout, merged, held_enc)
    if learn_heldout:
        # Scored, the held-out posts are learnt too: they are the account's newest, the
        # closest to what it writes next, and a bot that never learnt them would stay a
        # tenth of the account behind. The figures above are of the model before.
        recent_pass(model, held_enc[-RECENT_POSTS:], cfg)
        artifact.weights = model.get_weights()
        table_held = [ngram.fold(e, len(base.vocab)) for e in held_enc]
        artifact.ngram = NGram.fit(table_train + table_stop + table_held, len(base.vocab))
    artifact.meta = {
        "kind": "scratch" if from_scratch else "finetuned",
        "base_fingerprint": base.meta.get("data_fingerprint"),
        # which base model of that corpus (a continued run keeps the corpus' fingerprint)
        "base_val_bits_per_char": base.meta.get("val_bits_per_char"),
        "data_fingerprint": fingerprint(posts),
        "posts": len(posts),
        "vocab_added": len(vocab) - len(base.vocab),  # the account's own characters (Vocab.extended)
        "train_posts": len(train),
        "heldout_posts": len(heldout),
        "heldout_bits_per_char": round(heldout_bpc, 4),
        # the account's own characters as UNK, as the base model scores them
        "heldout_bits_per_char_base_vocab": round(base_vocab_bpc, 4),
        "heldout_network_bits_per_char": round(network_bpc, 4),
        "heldout_ngram_bits_per_char": round(ngram_bpc, 4),  # at the base vocabulary
        # each held-out post's bits per character, percentiles: how surprising the
        # account's new posts are to its model (bot/compose.py chooses by it)
        "heldout_post_bits": [round(float(b), 3) for b in np.percentile(surprise, np.arange(101))] if surprise else [],
        # learnt after they were scored: a later model is compared on the posts after them
        "heldout_ids_learnt": [p.id for p in heldout] if learn_heldout else [],
        "compared": compared,
        "mixture_weights": weights,
        "epochs": result["epochs"],
        "stopped_by": result["stopped_by"],
        "train_seconds": round(time.monotonic() - t0, 1),
    }
    return artifact


def compare(current: Artifact, base_vocab: Vocab, heldout: list[Post], heldout_logp: np.ndarray,
            held_enc: list[np.ndarray]) -> dict:
    """{"posts", "bits_per_char", "current_bits_per_char"}: the new model (its
    `heldout_logp`, scored at the base vocabulary before it learnt the held-out posts)
    and the current one on the held-out posts the current one never learnt, both with
    the characters they added to the base vocabulary as UNK (each adds the account's
    own, and naming them costs bits the other never pays). Where it learnt them all
    (the same posts trained again), each model's own score from before it learnt
    them ("posts": 0)."""
    from trainer.evaluate import symbol_log_probs, to_bits

    learnt = set(current.meta.get("heldout_ids_learnt", ()))
    fresh = [p.id not in learnt for p in heldout]
    if not any(fresh):
        return {"posts": 0, "bits_per_char": round(to_bits(heldout_logp), 4),
                "current_bits_per_char": current.meta.get("heldout_bits_per_char_base_vocab")}
    unseen = [p for p, f in zip(heldout, fresh) if f]
    size = len(base_vocab)
    same_base = current.vocab.itos[:size] == base_vocab.itos
    mine = heldout_logp[np.repeat(fresh, [len(e) + 1 for e in held_enc])]  # each post's symbols, then its end
    return {
        "posts": len(unseen),
        "bits_per_char": round(to_bits(mine), 4),
        "current_bits_per_char": round(to_bits(symbol_log_probs(current, unseen, base_size=size if same_base else None)), 4),
    }


def recent_pass(model, encoded: list[np.ndarray], cfg: TrainConfig) -> None:
    """One pass over `encoded` at a tenth of the learning rate (where a time-limited
    fine-tune ends), continuing the model's optimizer."""
    model.optimizer.learning_rate.assign(cfg.learning_rate / 10)
    for x, y, w in data.batches(encoded, cfg.batch_size, random.Random(cfg.seed)):
        model.train_on_batch(x, y, sample_weight=w)


def fit_mixture(artifact: Artifact, model, table: NGram, encoded: list[np.ndarray]) -> list[list[float]]:
    """The mixture's weights (mixture.py) that predict `encoded` best, its newest
    posts up to mixture.MAX_FIT_POSITIONS symbols (memory: the fit keeps whole rows)."""
    from trainer.evaluate import network_rows

    keep, symbols = [], 0
    for e in reversed(encoded):
        symbols += len(e) + 1
        if keep and symbols > mixture.MAX_FIT_POSITIONS:
            break
        keep.append(e)
    parts, order = [], []
    for rows, logp in network_rows(artifact, keep, model):
        parts.append(logp)
        order += rows
    keep = [keep[i] for i in order]  # network_rows batches by length: the table follows its order
    table_p, bucket = table.distributions(table.contexts_of(keep))
    return mixture.fit(np.concatenate(parts), table_p, ngram.targets(keep), bucket,
                       int(artifact.meta.get("vocab_added", 0)))
