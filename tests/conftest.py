"""Shared fixtures: a sandbox X API on 127.0.0.1 (real HTTP) and a store on a temp dir."""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.sandbox.x import Sandbox, start_sandbox
from bot.store import Store
from tests.bot_helpers import bot_env, tiny_base_path  # noqa: F401  (tiny_base_path is a fixture)
from tests.worlds import bluesky_world, mastodon_world  # noqa: F401  (fixtures)
from tests.trainer_helpers import shared_data


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    """A sandbox seeded with the shipped sample account, on a free port; closed afterwards."""
    sb = start_sandbox(port=0)
    try:
        yield sb
    finally:
        sb.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "data") as st:
        yield st


@pytest.fixture
def sleeps() -> list[float]:
    """What the X client would have slept (tests pass `sleep=sleeps.append`)."""
    return []


@pytest.fixture
def shared_users() -> Path:
    """../shared/data/users: real timelines (read only); the test is skipped without them."""
    return shared_data() / "users"


@pytest.fixture
def env(sandbox, tmp_path, tiny_base_path, monkeypatch):
    """The bot's environment, also applied to this process (for in-process CLI calls)."""
    values = bot_env(sandbox.settings(), tmp_path / "data", tiny_base_path)
    for key in [k for k in os.environ if k.startswith(("TWITTER_", "BOT_"))]:
        monkeypatch.delenv(key)
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)  # no stray .env
    return values
