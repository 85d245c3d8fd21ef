"""Small real datasets for the tests, all in the repository: a base corpus of many
authors (tests/fixtures, MIT) and one account (the sample timeline shipped with the
bot, Artistic-2.0). Larger data in ../shared/data only through `shared_data()`."""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import pytest

from trainer.data import Post, read_posts

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"
BASE_FIXTURE = FIXTURES / "crisislex_en.jsonl.gz"  # 3,000 posts of many authors
ACCOUNT_FILE = REPO / "bot" / "sample_data" / "realDonaldTrump.jsonl.gz"  # 3,200 posts of one account
SHARED_DATA = REPO.parent / "shared" / "data"
# .ci/run sets this where ../shared exists, so that CI never skips what needs it
REQUIRE_SHARED = "XMIMIC_REQUIRE_SHARED"
SKIP_REASON = "needs ../shared/data (absent in a fresh clone; CI runs it)"


@lru_cache(maxsize=None)
def base_sample(n: int = 3000) -> tuple[Post, ...]:
    """Up to n posts of many authors, in the fixture's order (spread over 32 crises)."""
    return tuple(read_posts(BASE_FIXTURE)[:n])


@lru_cache(maxsize=None)
def account_posts() -> tuple[Post, ...]:
    """One real account's 3,200 newest posts, oldest first."""
    return tuple(read_posts(ACCOUNT_FILE))


def shared_data() -> Path:
    """../shared/data, or skip the calling test (fail it where CI requires the folder)."""
    if not SHARED_DATA.is_dir():
        if os.environ.get(REQUIRE_SHARED) == "1":
            pytest.fail(f"{SHARED_DATA} is missing but {REQUIRE_SHARED}=1")
        pytest.skip(SKIP_REASON)
    return SHARED_DATA
