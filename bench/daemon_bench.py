"""Daemon benchmark: resident memory with 10 targets (models loaded on demand) and post
latency from the schedule's tick to the post being accepted (sampling + filter + HTTP).

    .venv/bin/python bench/daemon_bench.py [--posts 12] [--model PATH]

Runs `python -m bot run` as a subprocess against the sandbox (real HTTP, real SQLite).
10 targets: the 5 accounts of ../shared/data/users, each twice (a second handle with
the same posts), every one with its own copy of a model registered (no fine-tuning
here: the trainer's benchmarks measure that). The model is --model, else the committed
base model, else a model of the base model's size (GRU 1x384) with random weights whose
end-of-post bias is raised so that it writes short posts (memory and compute are those
of the real size; the text is noise, so the filter's minimum word count is lowered).
Figures are printed, as a table for BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bot.sandbox.x import BOT_USERNAME, start_sandbox  # noqa: E402
from bot.store import Store  # noqa: E402
from trainer.data import EOS, Post, Vocab, encode_posts  # noqa: E402
from trainer.model import DEFAULT_BASE, Artifact, ModelConfig, load, save  # noqa: E402
from trainer.ngram import BUCKETS, NGram  # noqa: E402
from trainer.text import normalize  # noqa: E402

USERS = REPO.parent / "shared" / "data" / "users"


def random_model(path: Path, texts: list[str]) -> Path:
    cfg = ModelConfig(cell="gru", layers=1, units=384, embedding=64)
    vocab = Vocab.build(texts)
    v, e, u = len(vocab), cfg.embedding, cfg.units
    rng = np.random.default_rng(0)
    weights = [rng.normal(0, 0.3, (v, e)), rng.normal(0, 0.1, (e, 3 * u)), rng.normal(0, 0.05, (u, 3 * u)),
               np.zeros((2, 3 * u)), rng.normal(0, 0.1, (u, v)), np.zeros(v)]
    weights[-1][EOS] = 2.5
    weights[-1][vocab.stoi[" "]] = 2.0
    save(Artifact(cfg, vocab, [w.astype(np.float32) for w in weights], {"kind": "random-benchmark"}), path)
    return path


def account_model(art: Artifact, posts: list[dict], path: Path) -> None:
    """The given network with the account's own n-gram table, as fine-tuning leaves
    it (the newest 3,200 posts: what X's timeline gives the bot), so that memory and
    latency include the table."""
    newest = sorted(posts, key=lambda p: p["created_at"] or "")[-3200:]
    table = NGram.fit(encode_posts(art.vocab, [Post(p["id"], p["created_at"], normalize(p["text"])) for p in newest]),
                      len(art.vocab))
    meta = {"kind": "benchmark", "mixture_weights": [[0.55, 0.55]] * BUCKETS}  # typical fitted weights
    save(Artifact(art.config, art.vocab, art.weights, meta, table), path)


def read(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def proc_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--posts", type=int, default=12, help="scheduled posts to time (default 12)")
    ap.add_argument("--model", type=Path, default=None)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="daemon-bench-"))
    sandbox = start_sandbox(port=0)
    proc = None
    try:
        data = work / "data"
        accounts = {f.name.split(".")[0]: read(f) for f in sorted(USERS.glob("*.jsonl.gz"))}
        model = args.model or (DEFAULT_BASE if DEFAULT_BASE.is_file() else None)
        kind = "given" if args.model else ("committed base model" if model else "random GRU 1x384")
        if model is None:
            model = random_model(work / "random.zip", [p["text"] for ps in accounts.values() for p in ps[:500]])
        art = load(model)
        with Store(data) as store:
            for name, posts in accounts.items():
                for handle in (name, name[:13] + "_2"):
                    sandbox.add_posts(handle, [{**p, "user": handle} for p in posts])
                    store.add_target(handle, sandbox.add_user(handle)["id"])
                    store.add_posts(handle, [{**p, "user": handle} for p in posts])
                    folder = data / "models" / handle.lower()
                    folder.mkdir(parents=True, exist_ok=True)
                    account_model(art, posts, folder / "v1.zip")
                    store.register_model(handle, {"path": str(folder / "v1.zip"), "version": 1,
                                                  "posts": store.post_count(handle), "heldout_bits_per_char": 0})
                    store.set_cursor(f"trained_on:{handle.lower()}", str(store.post_count(handle)))
            targets = len(store.targets())
        s = sandbox.settings()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TWITTER_", "BOT_"))}
        env.update({"TWITTER_CONSUMER_KEY": s.consumer_key, "TWITTER_CONSUMER_SECRET": s.consumer_secret,
                    "TWITTER_ACCESS_TOKEN": s.access_token, "TWITTER_ACCESS_TOKEN_SECRET": s.access_token_secret,
                    "TWITTER_API_BASE_URL": s.api_base_url, "BOT_DATA_DIR": str(data), "BOT_POST_INTERVAL": "3",
                    "BOT_POST_JITTER": "0", "BOT_FIRST_POST_DELAY": "0", "BOT_MENTIONS_INTERVAL": "5",
                    "PYTHONPATH": str(REPO), **({"BOT_MIN_WORDS": "1"} if kind.startswith("random") else {})})
        log = work / "bot.log"
        proc = subprocess.Popen([sys.executable, "-m", "bot", "run"], cwd=work, env=env,
                                stdout=open(log, "wb"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60 + 10 * args.posts
        rss_samples = []
        while time.monotonic() < deadline:
            rss_samples.append(proc_kb(proc.pid, "VmRSS"))
            with Store(data) as store:
                done = [e for e in store.bot_posts() if e.get("status") == "posted"]
            if len(done) >= args.posts:
                break
            time.sleep(0.5)
        peak = proc_kb(proc.pid, "VmHWM")
        proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        code = proc.wait(15)
        stop_s = time.monotonic() - t0
        with Store(data) as store:
            done = [e for e in store.bot_posts() if e.get("status") == "posted"]
        lat = np.array([e["latency_s"] for e in done])
        posted_as = sorted({e["target"] for e in done})
        if not len(lat):
            print(log.read_text()[-3000:])
            raise SystemExit("no post was made")
        cmd = "bench/daemon_bench.py " + " ".join(sys.argv[1:])
        rows = [
            ("targets", f"{targets} (each with its own model file; posts rotated through {len(posted_as)} of them)"),
            ("model", f"{kind}: {art.config.cell.upper()} {art.config.layers}x{art.config.units}, "
                      f"{sum(w.size for w in art.weights):,} parameters, plus each account's n-gram table"),
            ("resident memory, peak (VmHWM)", f"{peak / 1024:.0f} MB"),
            ("resident memory, median while posting", f"{np.median(rss_samples) / 1024:.0f} MB"),
            ("post latency, tick -> posted (median)", f"{np.median(lat):.2f} s"),
            ("post latency, tick -> posted (max)", f"{lat.max():.2f} s"),
            ("posts timed", f"{len(lat)} (64 candidates a batch, filter, POST over HTTP)"),
            ("SIGTERM -> exit", f"{stop_s:.2f} s, exit code {code}"),
        ]
        text = ("# Daemon benchmark\n\n"
                f"`{cmd.strip()}` on this machine ({os.cpu_count()} CPUs), {time.strftime('%Y-%m-%d')}.\n\n"
                "| measure | value |\n|---|---|\n" + "".join(f"| {a} | {b} |\n" for a, b in rows))
        print(text)
        assert len(sandbox.posts_by(BOT_USERNAME)) == len(done)
        return 0
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        sandbox.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
