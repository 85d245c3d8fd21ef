"""Helpers for the daemon/CLI tests: a tiny base model, a daemon subprocess, waiting."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent


def build_tiny_base(path: Path) -> Path:
    """A tiny GRU base model (32 units) trained for a few seconds on real posts: enough
    to write word-like text and end its posts; built once per test session. A fixed
    number of steps with no time budget, so a slow or busy machine trains the same model."""
    if path.is_file():
        return path
    from tests.trainer_helpers import base_sample
    from trainer import data, model
    from trainer.data import Vocab
    from trainer.model import Artifact, ModelConfig
    from trainer.tfimport import tensorflow_and_keras
    from trainer.train import TrainConfig, fit

    tensorflow_and_keras()[1].utils.set_random_seed(0)
    posts = list(base_sample(2000))
    vocab = Vocab.build(p.text for p in posts)
    config = ModelConfig(cell="gru", layers=1, units=32, embedding=16)
    net = model.build_model(config, len(vocab))
    cfg = TrainConfig(batch_size=64, learning_rate=1e-2, steps_per_epoch=20, max_epochs=3, patience=2, max_seconds=None)
    fit(net, data.encode_posts(vocab, posts[200:]), data.encode_posts(vocab, posts[:200]), cfg)
    model.save(Artifact(config, vocab, net.get_weights(), {"kind": "base", "data_fingerprint": "tiny-test"}), path)
    return path


def bot_env(sandbox_settings, data_dir: Path, base_model: Path, **extra: str) -> dict[str, str]:
    """Environment for a bot subprocess talking to the X sandbox (None: to no X), with
    short intervals."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TWITTER_", "BOT_", "BLUESKY_", "MASTODON_"))}
    if sandbox_settings is not None:
        env.update({
            "TWITTER_CONSUMER_KEY": sandbox_settings.consumer_key,
            "TWITTER_CONSUMER_SECRET": sandbox_settings.consumer_secret,
            "TWITTER_ACCESS_TOKEN": sandbox_settings.access_token,
            "TWITTER_ACCESS_TOKEN_SECRET": sandbox_settings.access_token_secret,
            "TWITTER_API_BASE_URL": sandbox_settings.api_base_url,
        })
    env.update({
        "BOT_DATA_DIR": str(data_dir), "BOT_BASE_MODEL": str(base_model),
        "BOT_MAX_ATTEMPTS": "2", "BOT_LOOKUP_WINDOW": "3", "BOT_BACKOFF_BASE": "0.1", "BOT_BACKOFF_MAX": "0.5",
        "BOT_POST_JITTER": "0", "BOT_MENTIONS_INTERVAL": "1", "BOT_TRAIN_INTERVAL": "2",
        "BOT_FINETUNE_MAX_SECONDS": "3", "BOT_CANDIDATES": "32", "TF_CPP_MIN_LOG_LEVEL": "2",
        # the tiny test model spells too badly for the real-words check (tests/test_compose.py has it)
        "BOT_REAL_WORDS": "false",
        "PYTHONUNBUFFERED": "1",
    })
    env.update(extra)
    return env


def start_bot(env: dict[str, str], cwd: Path, log_path: Path, *args: str) -> subprocess.Popen:
    """`python -m bot run` in its own process group (so a kill -9 can take its children)."""
    return subprocess.Popen(
        [sys.executable, "-m", "bot", *args] if args else [sys.executable, "-m", "bot", "run"],
        cwd=cwd, env={**env, "PYTHONPATH": str(REPO)}, stdout=open(log_path, "ab"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def kill9(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(10)


def on_network_address(start_sandbox: Callable[..., Any]) -> Any:
    """A sandbox served on an address of this machine that is not loopback, for tests
    that its admin routes refuse clients from the network; the test is skipped where
    the machine has no such address or may not bind it."""
    import socket

    from bot.settings import is_loopback

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # UDP connect sends nothing; it picks the outgoing address
            address = probe.getsockname()[0]
        except OSError:
            address = None
    if address is None or is_loopback(address) or address == "0.0.0.0":
        pytest.skip("this machine has no non-loopback address to connect from")
    try:
        return start_sandbox(seed=None, host=address)
    except Exception as exc:  # noqa: BLE001 (a container may not let us bind it)
        pytest.skip(f"cannot serve on {address}: {exc}")


def stop(proc: subprocess.Popen, timeout: float = 10.0) -> float:
    """SIGTERM; the daemon must exit 0 within `timeout`. Returns the seconds it took."""
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout) == 0
    return time.monotonic() - t0


def wait_for(what: str, check: Callable[[], object], timeout: float, proc: subprocess.Popen | None = None,
             log_path: Path | None = None) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.2)
    log = log_path.read_text(errors="replace")[-4000:] if log_path and log_path.exists() else ""
    raise AssertionError(f"timed out waiting for {what}; bot log:\n{log}")


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_base_path(tmp_path_factory) -> Path:
    """The tiny base model's file, shared by every test module of the session."""
    return build_tiny_base(tmp_path_factory.getbasetemp() / "tiny_base.zip")


def register_model(store, handle: str, model_path: Path) -> None:
    """Make `model_path` the target's current model, as a finished fine-tune would,
    so that a test can post without waiting for one."""
    import shutil

    folder = Path(store.data_dir) / "models" / handle.lower()
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(model_path, folder / "v1.zip")
    store.register_model(handle, {"path": str(folder / "v1.zip"), "version": 1, "posts": store.post_count(handle),
                                  "heldout_bits_per_char": 9.9})
    store.set_cursor(f"trained_on:{handle.lower()}", str(store.post_count(handle)))
