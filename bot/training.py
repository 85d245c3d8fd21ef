"""Fine-tuning a target's model, in a child process.

Why a child process: importing TensorFlow costs ~2 s and ~400 MB, and a fine-tune
holds a CPU for a minute or more. In a child (`python -m bot.training ...`) the
daemon's own memory stays small, its posting thread keeps running, and a SIGTERM can
abandon a fine-tune at once (the child is killed; the half-trained model was never
registered, so nothing is lost). A daemon killed outright (kill -9) cannot kill its
child, so the child watches for that itself and stops.

The child trains, then measures the new model and the current one on the same
held-out posts (the newest 10% of the account's posts *now*: comparing each model's
own held-out figure would compare different posts). The parent registers the new
model only if its held-out loss is no worse; the artifact is written atomically by
trainer.model.save and switched to by one store transaction.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from bot.errors import BotError
from bot.settings import Settings
from bot.store import Store
from trainer.data import MIN_FINETUNE_POSTS

log = logging.getLogger(__name__)
CHILD_MARGIN_S = 120.0  # the child may run its budget plus loading, measuring and saving



def needs_training(store: Store, handle: str, settings: Settings) -> str | None:
    """Why `handle` should be fine-tuned now ("no model", "N new posts"), or None."""
    count = store.post_count(handle)
    if count < MIN_FINETUNE_POSTS:
        return None
    tried = store.get_cursor(f"trained_on:{handle.lower()}")
    info = store.model_info(handle)
    last = int(tried) if tried is not None else (int(info["posts"]) if info else None)
    if last is None:
        return "no model yet" if info is None else None
    if count - last >= settings.retrain_new_posts:
        return f"{count - last} new posts since the last fine-tune"
    if info is None and count > last:
        return "no model yet and new posts arrived"
    return None


def train_target(
    store: Store, handle: str, settings: Settings, *, max_seconds: float | None = None,
    stop: threading.Event | None = None, running: list | None = None,
) -> dict:
    """Fine-tune `handle` in a child process and register the result if it is no worse.

    Returns {"handle", "replaced": bool, "heldout_bits_per_char", "current_bits_per_char",
    "version", "path", "train_seconds"}. Raises BotError with one line on failure.
    `running` receives the child's Popen while it runs (so a shutdown can kill it)."""
    target = store.target(handle)
    name = target["handle"] if target else handle.lstrip("@")
    posts = store.posts(name)
    if len(posts) < MIN_FINETUNE_POSTS:
        raise BotError(f"@{name} has {len(posts)} posts stored: fine-tuning needs at least {MIN_FINETUNE_POSTS}")
    base = Path(settings.base_model)
    if not base.is_file():
        raise BotError(f"no base model at {base}: set BOT_BASE_MODEL to a model file (python -m trainer base ...)")
    current = store.model_info(name)
    version = int(current["version"]) + 1 if current else 1
    folder = settings.data_dir / "models" / name.lower()
    folder.mkdir(parents=True, exist_ok=True)
    posts_file = folder / "posts.jsonl"
    out = folder / f"v{version}.zip"
    with open(posts_file, "w", encoding="utf-8") as fh:
        for p in posts:
            fh.write(json.dumps({"id": p["id"], "created_at": p["created_at"], "text": p["text"]}, ensure_ascii=False) + "\n")
    budget = settings.finetune_max_seconds if max_seconds is None else max_seconds
    cmd = [sys.executable, "-m", "bot.training", "--posts", str(posts_file), "--base", str(base),
           "--out", str(out), "--max-seconds", str(budget)]
    if current and Path(current["path"]).is_file():
        cmd += ["--current", current["path"]]
    log.info("fine-tuning @%s on %d posts (budget %g s, base %s)", name, len(posts), budget, base)
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())
    if running is not None:
        running.append(child)
    limit = budget + CHILD_MARGIN_S
    try:
        stdout, stderr = child.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        child.kill()
        child.communicate()
        out.unlink(missing_ok=True)
        raise BotError(f"fine-tuning @{name} did not finish within {limit:g} s (budget {budget:g} s): stopped") from None
    finally:
        if running is not None:
            running.remove(child)
        posts_file.unlink(missing_ok=True)
    if stop is not None and stop.is_set():
        out.unlink(missing_ok=True)
        raise BotError(f"fine-tuning @{name} abandoned: the bot is stopping")
    if child.returncode != 0:
        out.unlink(missing_ok=True)
        lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
        why = lines[-1].removeprefix("error: ") if lines else f"exit code {child.returncode}"
        raise BotError(f"fine-tuning @{name} failed: {why}")
    result = json.loads(stdout.strip().splitlines()[-1])
    store.set_cursor(f"trained_on:{name.lower()}", str(len(posts)))
    new_bpc, compared = result["heldout_bits_per_char"], result.get("compared") or {}
    old_bpc = compared.get("current_bits_per_char")
    outcome = {"handle": name, "heldout_bits_per_char": new_bpc, "current_bits_per_char": old_bpc,
               "train_seconds": result.get("train_seconds"), "version": version, "path": str(out)}
    if old_bpc is not None and compared["bits_per_char"] > old_bpc:
        out.unlink(missing_ok=True)
        log.info("@%s: new model is worse on %s held-out posts (%.4f > %.4f bits/char): kept version %s",
                 name, compared["posts"] or "its", compared["bits_per_char"], old_bpc, current["version"])
        return {**outcome, "replaced": False}
    store.register_model(name, {
        "path": str(out), "version": version, "posts": len(posts), "train_posts": result.get("train_posts"),
        "heldout_posts": result.get("heldout_posts"), "heldout_bits_per_char": new_bpc,
        "train_seconds": result.get("train_seconds"), "stopped_by": result.get("stopped_by"),
        "trained_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    })
    if current and current.get("path") != str(out):
        # keep one previous version beside the current one; older ones go
        old = folder / f"v{int(current['version']) - 1}.zip"
        old.unlink(missing_ok=True)
    log.info("@%s: model version %d registered (held-out %.4f bits/char%s)", name, version, new_bpc,
             f", was {old_bpc:.4f}" if old_bpc is not None else "")
    return {**outcome, "replaced": True}


def child_env() -> dict[str, str]:
    """The fine-tune child's environment: the bot's, without its X credentials (the
    child reads files only; a secret it does not hold cannot leak from it)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWITTER_")}
    env["TF_CPP_MIN_LOG_LEVEL"] = env.get("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


# --- the child process --------------------------------------------------------------------
def _exit_with_parent(poll_seconds: float = 1.0) -> None:
    """Exit when the daemon that started this child is gone: nobody would register
    the model, and a restarted daemon starts the same fine-tune again."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:  # an orphan is adopted by another process
            time.sleep(poll_seconds)
        os._exit(3)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _child(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot.training", description="fine-tune one account (child process)")
    parser.add_argument("--posts", required=True)
    parser.add_argument("--base", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--max-seconds", type=float, required=True)
    parser.add_argument("--current", default=None, help="the model in use, compared on the held-out posts it never learnt")
    args = parser.parse_args(argv)
    _exit_with_parent()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    from trainer.data import read_posts, split_account
    from trainer.errors import TrainerError
    from trainer.model import load, save

    try:
        posts, base = read_posts(args.posts), load(args.base)
        split_account(posts)  # too few posts: said before TensorFlow loads
        from trainer.train import finetune

        # the current model is scored in the fine-tune, on the held-out posts it never learnt
        current = load(args.current) if args.current else None
        artifact = finetune(base, posts, max_seconds=args.max_seconds, current=current)
        save(artifact, args.out)
    except TrainerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(artifact.meta))
    return 0


if __name__ == "__main__":
    sys.exit(_child())
