"""Trainer benchmark: fine-tuning time and held-out bits/char per account, sampling
and training throughput.

    .venv/bin/python bench/trainer_bench.py [--base trainer/models/base.zip] [--accounts A B ...]
        [--max-seconds 80] [--skip-eval] [--skip-sampling] [--skip-cli]

Prints a Markdown table for BENCHMARKS.md and the command that produced it.
Reads the accounts from ../shared/data/users (not shipped with the product).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from trainer import data  # noqa: E402
from trainer.model import DEFAULT_BASE, load  # noqa: E402

USERS = REPO.parent / "shared" / "data" / "users"
# Interpolated Kneser-Ney character 7-gram anchors from the issue (bits/char, newest 10%).
KN7 = {"AndrewYang": 1.81, "KamalaHarris": 1.55, "BernieSanders": 1.65, "elonmusk": 2.08, "realDonaldTrump": 1.97}


def eval_accounts(base: Path, accounts: list[str], max_seconds: float) -> list[dict]:
    rows = []
    for acct in accounts:
        cmd = [sys.executable, "-m", "trainer", "evaluate", "--posts", str(USERS / f"{acct}.jsonl.gz"),
               "--base", str(base), "--max-seconds", str(max_seconds), "--json"]
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=True).stdout
        row = json.loads(out.strip().splitlines()[-1]) | {"account": acct}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def time_cli_finetune(base: Path, account: str, max_seconds: float, out: Path) -> float:
    """End to end, as a user runs it: process start, TensorFlow import, reading the
    posts, training, counting the n-gram table, held-out evaluation, writing the artifact."""
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "trainer", "finetune", "--posts", str(USERS / f"{account}.jsonl.gz"),
                    "--base", str(base), "--out", str(out), "--max-seconds", str(max_seconds)],
                   capture_output=True, text=True, cwd=REPO, check=True)
    return time.monotonic() - t0


def reference_sampler_posts_per_s(artifact, n_posts: int = 3, top_n: int = 3) -> float:
    """The reference design's sampler: one candidate at a time, the whole prefix run
    through the Keras model again for every new character, top-n sampling."""
    import numpy as np

    from trainer.model import to_keras

    model = to_keras(artifact)
    rng = np.random.default_rng(0)
    t0 = time.monotonic()
    for _ in range(n_posts):
        ids = [data.EOS]
        for _ in range(280):
            probs = np.asarray(model(np.array([ids], np.int32), training=False))[0, -1]
            top = np.argsort(-probs)[:top_n]
            p = np.exp(probs[top] - probs[top].max())
            nxt = int(rng.choice(top, p=p / p.sum()))
            if nxt == data.EOS:
                break
            ids.append(nxt)
    return n_posts / (time.monotonic() - t0)


def sampling(artifact, reference: bool = True, repeats: int = 3) -> dict:
    """Candidate posts a second (each ended within X's 280), median of `repeats` runs:
    this machine's speed varies by 10-20% from one minute to the next. Also the bound
    that the network's matrix products alone set: what the sampler would reach if
    everything else (gates, mixing, drawing) were free."""
    import numpy as np

    from trainer.sample import StepNet, sample

    net = StepNet(artifact)
    step, rows = net.step, []

    def counting_step(ids, state):
        rows.append(len(ids))
        return step(ids, state)

    net.step = counting_step
    sample(artifact, 16, net=net, seed=0)  # warm up
    res = {}
    for batch, n in ((1, 20), (256, 2048)):
        runs = []
        for rep in range(1 if batch == 1 else repeats):
            rows.clear()
            t0 = time.monotonic()
            got = sample(artifact, n, batch_size=batch, net=net, seed=1 + rep)
            runs.append((len(got) / (time.monotonic() - t0), got, sum(rows)))
        posts_per_s, got, row_steps = sorted(runs, key=lambda r: r[0])[len(runs) // 2]
        secs = len(got) / posts_per_s
        res[f"batch{batch}_posts_per_s"] = round(posts_per_s, 1)
        if len(runs) > 1:
            res[f"batch{batch}_posts_per_s_range"] = [round(min(r[0] for r in runs)), round(max(r[0] for r in runs))]
        res[f"batch{batch}_chars_per_s"] = round(sum(len(t) + 1 for t in got) / secs)
        res[f"batch{batch}_mean_post_chars"] = round(sum(len(t) for t in got) / max(len(got), 1), 1)
        res[f"batch{batch}_network_steps_per_post"] = round(row_steps / len(got), 1)  # ended ones and dropped ones
    h = np.random.default_rng(0).random((256, net.units), dtype=np.float32)
    for _ in range(20):
        [h @ w for w in net.fused]
    t0 = time.monotonic()
    for _ in range(200):
        [h @ w for w in net.fused]
    product_s = (time.monotonic() - t0) / 200
    res["matrix_products_ms_per_step_of_256"] = round(product_s * 1e3, 2)
    res["bound_posts_per_s_from_products_alone"] = round(256 / product_s / res["batch256_network_steps_per_post"])
    if reference:
        res["reference_posts_per_s"] = round(reference_sampler_posts_per_s(artifact), 2)
        res["ratio_batch256_vs_reference"] = round(res["batch256_posts_per_s"] / res["reference_posts_per_s"])
    return res


def filter_pass_rates(tuned, account: str = "AndrewYang", n: int = 512) -> dict:
    """What the bot keeps: the share of sampled candidates that pass the originality
    filter and content checks, for the account's model and for its network alone."""
    import dataclasses

    from bot.content import ContentChecks
    from bot.originality import NearCopyIndex, judge

    index = NearCopyIndex()
    index.add_many((p.id, p.text) for p in data.read_posts(USERS / f"{account}.jsonl.gz"))
    checks = ContentChecks()
    from trainer.sample import sample

    res = {}
    for name, art in (("mixed", tuned), ("network_alone", dataclasses.replace(tuned, ngram=None))):
        verdicts = judge(sample(art, n, seed=2), index, checks)
        near = sum(any(r.startswith("near-copy") for r in v.reasons) for v in verdicts)
        res[name] = {"candidates": len(verdicts), "pass": round(sum(v.ok for v in verdicts) / len(verdicts), 3),
                     "near_copy": round(near / len(verdicts), 3)}
    return res


def training_throughput(artifact, account: str = "AndrewYang", steps: int = 30) -> float:
    """Characters a second through fine-tuning steps on real posts."""
    from trainer.model import to_keras
    from trainer.tfimport import tensorflow_and_keras
    from trainer.train import FINETUNE_TRAIN

    _, keras = tensorflow_and_keras()

    model = to_keras(artifact)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    enc = data.encode_posts(artifact.vocab, data.read_posts(USERS / f"{account}.jsonl.gz"))
    batches = list(data.batches(enc, FINETUNE_TRAIN.batch_size))
    for x, y, w in batches[:5]:  # warm up the shapes
        model.train_on_batch(x, y, sample_weight=w)
    chars, t0 = 0, time.monotonic()
    for x, y, w in batches[5 : 5 + steps]:
        model.train_on_batch(x, y, sample_weight=w)
        chars += int((w > 0).sum())
    return chars / (time.monotonic() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", type=Path, default=DEFAULT_BASE)
    ap.add_argument("--accounts", nargs="*", default=sorted(p.name.split(".")[0] for p in USERS.glob("*.jsonl.gz")))
    ap.add_argument("--max-seconds", type=float, default=80)
    ap.add_argument("--skip-eval", action="store_true")
    ap.add_argument("--skip-sampling", action="store_true")
    ap.add_argument("--skip-cli", action="store_true")
    args = ap.parse_args()
    artifact = load(args.base)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.processor() or 'cpu'}; "
          f"base model: {artifact.config} val {artifact.meta.get('val_bits_per_char')} bits/char")
    tuned = REPO / "runs" / "bench-AndrewYang.zip"
    if not args.skip_cli:
        secs = time_cli_finetune(args.base, "AndrewYang", args.max_seconds, tuned)
        print(f"\nEnd-to-end `python -m trainer finetune` on AndrewYang: {secs:.0f} s wall clock")
    if not args.skip_sampling:
        print("\nSampling, base model (network alone):", json.dumps(sampling(artifact)))
        if tuned.exists():
            print("Sampling, AndrewYang's model (network + n-gram table):",
                  json.dumps(sampling(load(tuned), reference=False)))
            print("Originality filter and content checks on 512 candidates (T 0.8, top-p 0.95):",
                  json.dumps(filter_pass_rates(load(tuned))))
        from trainer.train import FINETUNE_TRAIN

        print(f"Training throughput (fine-tuning, batch {FINETUNE_TRAIN.batch_size}): "
              f"{training_throughput(artifact):.0f} chars/s")
    if not args.skip_eval:
        rows = eval_accounts(args.base, args.accounts, args.max_seconds)
        print("\n| account | posts | held-out | fine-tune s | base | scratch | fine-tuned network alone "
              "| n-gram table alone | **fine-tuned (mixed)** | KN 7-gram anchor |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            print(f"| {r['account']} | {r['posts']} | {r['heldout_posts']} | {r['finetune_seconds']:.0f} "
                  f"| {r['base_bits_per_char']:.3f} | {r['scratch_bits_per_char']:.3f} "
                  f"| {r['finetuned_network_bits_per_char']:.3f} | {r['ngram_bits_per_char']:.3f} "
                  f"| **{r['finetuned_bits_per_char']:.3f}** | {KN7.get(r['account'], float('nan')):.2f} |")
    print("\ncommand:", " ".join([Path(sys.executable).name, *sys.argv]))


if __name__ == "__main__":
    main()
