"""The platforms the behaviour suite (tests/test_platforms.py) runs on, as fixtures: the
local platforms of bot/sandbox/local.py (one API for all three)."""
from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from bot.sandbox import bluesky
from bot.sandbox.local import LocalMastodon

__all__ = ["mastodon_world", "bluesky_world"]


@pytest.fixture
def mastodon_world() -> Iterator[LocalMastodon]:
    """A fresh Mastodon sandbox with the bot, a fan and the sample target."""
    world = LocalMastodon()
    try:
        yield world
    finally:
        world.close()


@pytest.fixture(scope="session")
def bluesky_world() -> Iterator[bluesky.BlueskyWorld]:
    """One real Bluesky network for the whole test session (the target seeded with 300
    posts). Skipped, with the reason, where scripts/setup_bluesky.sh has not run; a
    failure instead with XMIMIC_REQUIRE_BLUESKY=1 (CI)."""
    reason = bluesky.missing()
    if reason:
        if os.environ.get("XMIMIC_REQUIRE_BLUESKY") == "1":
            pytest.fail(f"XMIMIC_REQUIRE_BLUESKY=1 but {reason}", pytrace=False)
        pytest.skip(reason)
    world = bluesky.start_local()
    print(f"\nbluesky network up: {', '.join(f'{k} {v:.1f} s' for k, v in world.owner.timings.items())}")
    try:
        yield world
    finally:
        world.close()
