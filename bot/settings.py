"""Every setting of the bot, as one frozen dataclass built from the environment and `.env`.

Settings are plain data: read and validated once at start (`Settings.from_env()`), then
passed to whatever needs them. No other module reads the environment.

Adding a setting: add a field (with its default) below, then one line in `from_env`.
Secrets are declared with `field(repr=False)` so that they never show up in a repr, a
log line or an error message.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dotenv import dotenv_values

from bot.errors import BotError

DEFAULT_API_BASE_URL = "https://api.twitter.com"
CREDENTIAL_VARS = (
    "TWITTER_CONSUMER_KEY",
    "TWITTER_CONSUMER_SECRET",
    "TWITTER_ACCESS_TOKEN",
    "TWITTER_ACCESS_TOKEN_SECRET",
)


@dataclass(frozen=True)
class Settings:
    # --- X API credentials (OAuth 1.0a user context; needed to post) ---
    consumer_key: str | None = field(default=None, repr=False)
    consumer_secret: str | None = field(default=None, repr=False)
    access_token: str | None = field(default=None, repr=False)
    access_token_secret: str | None = field(default=None, repr=False)
    # Optional app-only token for reads; without it reads use the user context too.
    bearer_token: str | None = field(default=None, repr=False)
    # Every request goes to this host (the sandbox: http://127.0.0.1:8080).
    api_base_url: str = DEFAULT_API_BASE_URL

    # --- state ---
    data_dir: Path = Path("data")

    # --- X API behaviour ---
    request_timeout: float = 15.0  # seconds, for every single request
    max_attempts: int = 5  # tries per API call (first try included) on 429/5xx/timeouts
    backoff_base: float = 1.0  # seconds: first retry waits up to this, doubling each time
    backoff_max: float = 60.0  # seconds: cap of one backoff wait
    rate_limit_max_wait: float = 900.0  # seconds: wait for a 429's reset at most this long
    include_replies: bool = False  # keep a target's replies to other accounts

    @property
    def has_credentials(self) -> bool:
        """True when the four OAuth 1.0a values are set: the bot can post."""
        return all((self.consumer_key, self.consumer_secret, self.access_token, self.access_token_secret))

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, dotenv_path: str | Path | None = ".env"
    ) -> Settings:
        """Settings from `env` (default: the process environment) over the `.env` file.

        A variable set in the environment wins over the same one in `.env`; an empty
        value counts as unset. Raises BotError (one line) on the first bad value.
        """
        values: dict[str, str] = {}
        if dotenv_path is not None and Path(dotenv_path).is_file():
            values.update({k: v for k, v in dotenv_values(dotenv_path).items() if v is not None})
        values.update(os.environ if env is None else env)
        r = _Reader(values)

        settings = cls(
            consumer_key=r.secret("TWITTER_CONSUMER_KEY"),
            consumer_secret=r.secret("TWITTER_CONSUMER_SECRET"),
            access_token=r.secret("TWITTER_ACCESS_TOKEN"),
            access_token_secret=r.secret("TWITTER_ACCESS_TOKEN_SECRET"),
            bearer_token=r.secret("TWITTER_BEARER_TOKEN"),
            api_base_url=r.url("TWITTER_API_BASE_URL", DEFAULT_API_BASE_URL),
            data_dir=r.path("BOT_DATA_DIR", Path("data")),
            request_timeout=r.number("BOT_REQUEST_TIMEOUT", 15.0, low=0.1, high=600),
            max_attempts=r.integer("BOT_MAX_ATTEMPTS", 5, low=1, high=20),
            backoff_base=r.number("BOT_BACKOFF_BASE", 1.0, low=0, high=600),
            backoff_max=r.number("BOT_BACKOFF_MAX", 60.0, low=0, high=3600),
            rate_limit_max_wait=r.number("BOT_RATE_LIMIT_MAX_WAIT", 900.0, low=0, high=86400),
            include_replies=r.boolean("BOT_INCLUDE_REPLIES", False),
        )
        _check_credentials(r)
        return settings


def _check_credentials(r: _Reader) -> None:
    # Half a set of OAuth values is always a mistake; say which ones are missing.
    present = [name for name in CREDENTIAL_VARS if r.secret(name)]
    if present and len(present) < len(CREDENTIAL_VARS):
        missing = ", ".join(name for name in CREDENTIAL_VARS if name not in present)
        raise BotError(f"incomplete X credentials: {missing} not set (set all four, or none to run dry)")


class _Reader:
    """Typed access to string settings; each method names the variable in its error."""

    def __init__(self, values: Mapping[str, str]):
        self.values = values

    def _raw(self, name: str) -> str | None:
        value = self.values.get(name)
        if value is None or not value.strip():
            return None
        return value.strip()

    def secret(self, name: str) -> str | None:
        value = self._raw(name)
        if value is not None and any(ch.isspace() for ch in value):
            # never echo the value: it is a secret
            raise BotError(f"{name} contains whitespace; check for a stray quote or line break")
        return value

    def url(self, name: str, default: str) -> str:
        value = self._raw(name) or default
        if not re.fullmatch(r"https?://[^/\s?#]+(/[^\s?#]*)?", value):
            raise BotError(f"{name} must be an http(s) URL such as http://127.0.0.1:8080, not {value!r}")
        return value.rstrip("/")

    def path(self, name: str, default: Path) -> Path:
        value = self._raw(name)
        return Path(value).expanduser() if value else default

    def number(self, name: str, default: float, *, low: float, high: float) -> float:
        value = self._raw(name)
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError:
            raise BotError(f"{name} must be a number of seconds, not {value!r}") from None
        if not low <= number <= high:
            raise BotError(f"{name} must be between {low:g} and {high:g}, not {value!r}")
        return number

    def integer(self, name: str, default: int, *, low: int, high: int) -> int:
        value = self._raw(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise BotError(f"{name} must be a whole number, not {value!r}") from None
        if not low <= number <= high:
            raise BotError(f"{name} must be between {low} and {high}, not {value!r}")
        return number

    def boolean(self, name: str, default: bool) -> bool:
        value = self._raw(name)
        if value is None:
            return default
        lowered = value.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise BotError(f"{name} must be true or false, not {value!r}")
