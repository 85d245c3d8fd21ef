"""Real training on real tweets with tiny models: loss falls, fine-tuning helps."""
import json
import math
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from trainer import data, model
from trainer.data import MIN_FINETUNE_POSTS, Vocab
from trainer.errors import TrainerError
from trainer.evaluate import bits_per_char, symbol_log_probs, to_bits
from trainer.model import Artifact, ModelConfig
from trainer.sample import sample
from trainer.train import FINETUNE_TRAIN, TrainConfig, finetune, fit

from tests.trainer_helpers import account_posts, base_sample, shared_data

TINY = ModelConfig(cell="gru", layers=1, units=64, embedding=16)


@pytest.fixture(scope="module")
def tiny_base() -> Artifact:
    posts = list(base_sample(3000))
    vocab = Vocab.build(p.text for p in posts)
    val, train = posts[:300], posts[300:]
    keras_model = model.build_model(TINY, len(vocab))
    untrained = Artifact(TINY, vocab, keras_model.get_weights())
    before = bits_per_char(untrained, val, model=keras_model)
    cfg = TrainConfig(batch_size=64, learning_rate=1e-2, steps_per_epoch=40, max_epochs=3, patience=2)
    result = fit(keras_model, data.encode_posts(vocab, train), data.encode_posts(vocab, val), cfg)
    art = Artifact(TINY, vocab, keras_model.get_weights(), {"kind": "base", "data_fingerprint": "test"})
    art.meta["before"], art.meta["after"] = before, bits_per_char(art, val)
    art.meta["fit"] = result
    return art


def test_loss_falls_on_real_tweets(tiny_base):
    before, after = tiny_base.meta["before"], tiny_base.meta["after"]
    assert before > math.log2(len(tiny_base.vocab)) - 1  # untrained: close to uniform
    assert after < before - 2.0  # it learned a lot about English in 100 steps
    assert tiny_base.meta["fit"]["best_val_loss"] / math.log(2) == pytest.approx(after, abs=0.1)


@pytest.mark.parametrize("account", ["sample timeline", "KamalaHarris"])
def test_finetuned_beats_base_on_held_out_posts(tiny_base, account):
    if account == "sample timeline":
        posts = list(account_posts())
    else:  # a second real account, where the project's data is at hand
        posts = data.read_posts(shared_data() / "users" / f"{account}.jsonl.gz")
    _, heldout = data.chronological_split(posts)
    # a fixed amount of work (not a time budget) so the test means the same on any machine
    cfg = replace(FINETUNE_TRAIN, learning_rate=5e-3, batch_size=64, steps_per_epoch=20, max_epochs=3)
    tuned = finetune(tiny_base, posts, max_seconds=None, cfg=cfg, learn_heldout=False)
    base_bpc = bits_per_char(tiny_base, heldout)
    assert tuned.meta["heldout_posts"] == len(heldout)
    assert tuned.meta["heldout_bits_per_char"] < base_bpc - 0.1
    # the model is the network mixed with the account's n-gram table: better than either
    # alone (a tiny network adds little to the table, a real one much more: BENCHMARKS.md)
    assert tuned.meta["heldout_network_bits_per_char"] < base_bpc
    assert tuned.meta["heldout_bits_per_char"] < tuned.meta["heldout_network_bits_per_char"] - 0.05
    # the table alone names no character of the account's own (ngram.fold): compared at the base vocabulary
    assert tuned.meta["heldout_bits_per_char_base_vocab"] < tuned.meta["heldout_ngram_bits_per_char"]
    assert bits_per_char(tuned, heldout) == pytest.approx(tuned.meta["heldout_bits_per_char"], abs=1e-3)
    # each held-out post's own figure, as percentiles: they spread around the mean
    spread = tuned.meta["heldout_post_bits"]
    assert len(spread) == 101 and spread == sorted(spread) and spread[0] < spread[-1]
    assert spread[10] < tuned.meta["heldout_bits_per_char"] < spread[90]
    one = bits_per_char(tuned, heldout[:1])
    assert spread[0] - 1e-3 <= one <= spread[-1] + 1e-3


def test_held_out_posts_are_learnt_once_scored_and_a_new_model_is_compared_on_posts_neither_learnt(tiny_base):
    posts = sorted(account_posts(), key=lambda p: p.created_at)
    cfg = replace(FINETUNE_TRAIN, learning_rate=5e-3, batch_size=64, steps_per_epoch=10, max_epochs=1)
    current = finetune(tiny_base, posts[:-40], max_seconds=None, cfg=cfg)
    _, old_heldout = data.chronological_split(posts[:-40])
    assert current.meta["heldout_ids_learnt"] == [p.id for p in old_heldout]
    assert bits_per_char(current, old_heldout) < current.meta["heldout_bits_per_char"] - 0.05  # learnt after scoring

    new = finetune(tiny_base, posts, max_seconds=None, cfg=cfg, current=current)
    base_size = len(tiny_base.vocab)
    unseen = posts[-40:]  # the 40 newest: in the new model's held-out posts, never learnt by the current one
    compared = new.meta["compared"]
    assert compared["posts"] == len(unseen)
    assert compared["current_bits_per_char"] == pytest.approx(
        to_bits(symbol_log_probs(current, unseen, base_size=base_size)), abs=1e-4)
    # the new model was scored before it learnt them too
    assert to_bits(symbol_log_probs(new, unseen, base_size=base_size)) < compared["bits_per_char"] - 0.05

    # trained again on the same posts, every held-out post is learnt: each model's own score from before
    again = finetune(tiny_base, posts, max_seconds=None, cfg=cfg, current=new)
    assert again.meta["compared"] == {"posts": 0, "bits_per_char": again.meta["heldout_bits_per_char_base_vocab"],
                                      "current_bits_per_char": new.meta["heldout_bits_per_char_base_vocab"]}


def test_a_grown_vocabulary_starts_as_the_model_it_grew_from(tiny_base):
    """New characters start as UNK: every old character keeps its probability, and UNK's
    is shared among UNK and the new ones."""
    grown_vocab = tiny_base.vocab.extended(["👍 ok 👍 🇺🇸"] * 5, min_count=5)
    assert grown_vocab.chars[-3:] == ["👍", "🇺", "🇸"] and grown_vocab.chars[:-3] == tiny_base.vocab.chars
    grown = Artifact(tiny_base.config, grown_vocab, model.grow_vocab(tiny_base, grown_vocab))
    ids = tiny_base.vocab.encode("Flood warning for the river")[None, :]
    before = _probs(tiny_base, ids)
    after = _probs(grown, ids)
    old = len(tiny_base.vocab)
    assert after[..., : data.UNK] == pytest.approx(before[..., : data.UNK], abs=1e-6)
    assert after[..., data.UNK + 1 : old] == pytest.approx(before[..., data.UNK + 1 :], abs=1e-6)
    unk_now = after[..., data.UNK] + after[..., old:].sum(-1)
    assert unk_now == pytest.approx(before[..., data.UNK], abs=1e-6)
    assert after[..., old:] == pytest.approx(np.repeat(after[..., data.UNK : data.UNK + 1], 3, axis=-1), abs=1e-7)
    # so, scored with the new characters as UNK again, it predicts posts as the base did
    posts = [replace(p, text=p.text + " 👍🇺🇸") for p in account_posts()[:50]]
    assert to_bits(symbol_log_probs(grown, posts, base_size=old)) == pytest.approx(bits_per_char(tiny_base, posts),
                                                                                  abs=1e-4)
    assert bits_per_char(grown, posts) > bits_per_char(tiny_base, posts)  # naming 👍 costs more than "UNK"


def _probs(art: Artifact, ids) -> np.ndarray:
    logits = model.to_keras(art)(ids).numpy().astype(np.float64)
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_finetuning_learns_the_accounts_own_characters(tiny_base):
    """Characters the base vocabulary lacks (most emoji) become the account model's own
    symbols, and what it writes uses them; before, they were UNK and never written."""
    posts = list(account_posts())
    assert "🦅" not in tiny_base.vocab.stoi
    # at the start of every post: at the end it would follow the posts' links (a link ends
    # a sampled post), and in half of them it is written too seldom to count reliably
    marked = [replace(p, text="🦅 " + p.text) for p in posts]
    cfg = replace(FINETUNE_TRAIN, learning_rate=5e-3, batch_size=64, steps_per_epoch=10, max_epochs=1)
    tuned = finetune(tiny_base, marked, max_seconds=None, cfg=cfg)
    assert "🦅" in tuned.vocab.stoi
    # the account's table counts them as UNK (ngram.fold): the network names them
    assert tuned.ngram.vocab_size == len(tiny_base.vocab)
    texts = sample(tuned, 200, seed=3)
    assert sum("🦅" in t for t in texts) >= 20


def test_time_budget_is_kept(tiny_base):
    posts = list(account_posts())
    tuned = finetune(tiny_base, posts, max_seconds=2, cfg=replace(FINETUNE_TRAIN, batch_size=8))
    assert tuned.meta["stopped_by"] == "time budget"


def test_too_few_posts_to_finetune(tiny_base):
    posts = list(account_posts())[: MIN_FINETUNE_POSTS - 1]
    with pytest.raises(TrainerError, match=f"at least {MIN_FINETUNE_POSTS}"):
        finetune(tiny_base, posts, max_seconds=1)


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "trainer", *args], capture_output=True, text=True, timeout=120)


def test_cli_finetune_and_sample_end_to_end(tmp_path, tiny_base):
    base_path = tmp_path / "base.zip"
    model.save(tiny_base, base_path)
    posts = tmp_path / "posts.txt"
    posts.write_text("\n".join(p.text.replace("\n", " ") for p in account_posts()[:400]))
    r = run_cli("finetune", "--posts", str(posts), "--out", str(tmp_path / "account.zip"), "--base", str(base_path),
                "--max-seconds", "3")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["train_posts"] > 300
    r = run_cli("sample", "--model", str(tmp_path / "account.zip"), "-n", "5", "--json", "--seed", "1")
    assert r.returncode == 0, r.stderr
    texts = [json.loads(line)["text"] for line in r.stdout.splitlines()]
    assert 1 <= len(texts) <= 5 and all(t.strip() for t in texts)


def test_base_training_resumes_after_a_kill(tmp_path):
    """A killed base run leaves its best model on disk, and a restart continues from
    the last checkpoint instead of starting over, even one cut short while written."""
    import os
    import signal
    import time

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(p.text.replace("\n", " ") for p in base_sample(3000)[:1500]))
    ckpt, out = tmp_path / "ckpt", tmp_path / "base.zip"
    cmd = [sys.executable, "-m", "trainer", "base", "--data", str(corpus), "--out", str(out),
           "--checkpoint-dir", str(ckpt), "--units", "32", "--embedding", "8", "--steps-per-epoch", "5"]
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while not (ckpt / "training_metadata.json.bkp").is_file() and time.monotonic() < deadline:
        time.sleep(0.2)  # two whole checkpoints: the latest and the one before
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert out.is_file() and any(ckpt.glob("*")), "the first run saved nothing before it was killed"
    latest = ckpt / "latest.weights.h5"  # as if the kill came while it was being written (seen in CI)
    latest.write_bytes(latest.read_bytes()[:96])
    good = model.load(out).meta["val_loss_nats"]
    second = subprocess.run(cmd[:-2] + ["--steps-per-epoch", "5", "--max-seconds", "8"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=180,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert second.returncode == 0, second.stdout
    epochs = [line for line in second.stdout.splitlines() if line.startswith("Epoch ")]
    assert epochs and not epochs[0].startswith("Epoch 1/"), epochs[:2]
    assert model.load(out).meta["val_loss_nats"] <= good
