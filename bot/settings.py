"""Every setting of the bot, as one frozen dataclass built from the environment and `.env`.

Settings are plain data: read and validated once at start (`Settings.from_env()`), then
passed to whatever needs them. No other module reads the environment.

Adding a setting: add a field (with its default) below, then one line in `from_env`.
Secrets are declared with `field(repr=False)` so that they never show up in a repr, a
log line or an error message.
"""
from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from dotenv import dotenv_values

from bot.errors import BotError
from trainer.model import DEFAULT_BASE

DEFAULT_API_BASE_URL = "https://api.twitter.com"
DEFAULT_BLUESKY_SERVICE = "https://bsky.social"
DEFAULT_BLUESKY_PUBLIC_API = "https://public.api.bsky.app"
PLATFORMS = ("x", "bluesky", "mastodon")
CREDENTIAL_VARS = (
    "TWITTER_CONSUMER_KEY",
    "TWITTER_CONSUMER_SECRET",
    "TWITTER_ACCESS_TOKEN",
    "TWITTER_ACCESS_TOKEN_SECRET",
)
PLATFORM_CREDENTIALS = {
    "X": CREDENTIAL_VARS,
    "Bluesky": ("BLUESKY_HANDLE", "BLUESKY_APP_PASSWORD"),
    "Mastodon": ("MASTODON_API_BASE_URL", "MASTODON_ACCESS_TOKEN"),
}


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

    # --- where the bot account lives: "x", "bluesky" or "mastodon" (bot/platforms/) ---
    platform: str = "x"
    # Bluesky: the bot's handle and an app password (never the account password); its PDS;
    # the AppView that serves public reads without login.
    bluesky_handle: str | None = None
    bluesky_app_password: str | None = field(default=None, repr=False)
    bluesky_service: str = DEFAULT_BLUESKY_SERVICE
    bluesky_public_api: str = DEFAULT_BLUESKY_PUBLIC_API
    # Mastodon: the bot's server and an access token with the read and write scopes.
    mastodon_api_base_url: str | None = None
    mastodon_access_token: str | None = field(default=None, repr=False)
    mastodon_visibility: str = "unlisted"  # of the bot's posts: "public" or "unlisted"
    mastodon_spoiler_text: str | None = None  # a content warning on every post, if set

    # --- state ---
    data_dir: Path = Path("data")
    retention_days: float = 90.0  # records of posts and mentions older than this are pruned

    # --- X API behaviour ---
    request_timeout: float = 15.0  # seconds, for every single request
    max_attempts: int = 5  # tries per API call (first try included) on 429/5xx/timeouts
    backoff_base: float = 1.0  # seconds: first retry waits up to this, doubling each time
    backoff_max: float = 60.0  # seconds: cap of one backoff wait
    rate_limit_max_wait: float = 900.0  # seconds: wait for a 429's reset at most this long
    include_replies: bool = False  # keep a target's replies to other accounts
    lookup_window: float = 60.0  # seconds: look for a post whose answer was lost this long (timelines lag)

    # --- what calls cost (bot/costs.py); prices in USD, defaults from X's 2026 price list ---
    prices: tuple[tuple[str, float], ...] = ()  # overrides of bot.costs.DEFAULT_PRICES
    daily_spend_cap: float | None = None  # USD a UTC day: reads stop at 80% of it, posts at 100%

    # --- models (bot/training.py) ---
    base_model: Path = DEFAULT_BASE  # the base model every fine-tune starts from
    finetune_max_seconds: float = 80.0  # wall-clock training budget of one fine-tune (the table etc. add 10-30 s)
    train_backoff: float = 3600.0  # a target whose fine-tune failed waits this long, doubling...
    train_backoff_max: float = 86400.0  # ...up to this
    retrain_new_posts: int = 50  # fine-tune again once this many new posts arrived

    # --- schedule (bot/daemon.py; every interval in seconds) ---
    refresh_interval: float = 6 * 3600.0  # download every target's new posts
    train_interval: float = 600.0  # look for a target whose model is missing or stale
    post_interval: float = 8 * 3600.0  # one scheduled post every this long...
    post_jitter: float = 1800.0  # ...give or take up to this much
    post_cron: str | None = None  # or a crontab line ("0 9,13,18 * * *"): replaces the interval
    first_post_delay: float | None = None  # first slot after start; None: one post_interval
    quiet_hours: tuple[int, int] | None = None  # (start, end) hours: no scheduled posts then
    timezone: str = "UTC"  # of quiet hours and of the cron line
    mentions_interval: float = 120.0  # poll the bot's mentions

    # --- replies (bot/replies.py) ---
    reply_budget: int = 3  # replies to one account per hour at most
    reply_max_depth: int = 3  # no reply once the bot replied this often in one conversation
    reply_backlog: float = 3600.0  # mentions older than this (after downtime) get no reply
    blocklist: frozenset[str] = frozenset()  # lowercase handles never answered
    default_target: str | None = None  # imitated when a mention names no target

    # --- composing (bot/compose.py + the filter) ---
    candidates: int = 128  # candidates sampled per batch (the choice needs a pool: bot/compose.py)
    max_batches: int = 3  # most batches drawn for one slot (bot/compose.py)
    compose_seconds: float = 8.0  # no further batch past this once a candidate passed (bot/compose.py)
    temperature: float = 1.0
    real_words: bool = True  # post only words of the base corpus or the account (trainer/words.py)
    top_p: float = 1.0  # no nucleus cut: BENCHMARKS.md, session 17
    min_words: int = 2  # a post has at least this many words (BENCHMARKS.md, session 25)
    repeat_days: int = 30  # never repeat what the bot posted in this many days
    mentions_mode: str = "defuse"  # @mentions in generated text: "defuse" or "reject"
    banned_words_file: Path | None = None  # None: config/banned_words.txt

    # --- modes ---
    dry_run: bool = False  # log what would be posted, send nothing (always so without credentials)

    @property
    def sends(self) -> bool:
        """True when posts and replies really go out (credentials and not a dry run)."""
        return self.has_credentials and not self.dry_run

    @property
    def has_credentials(self) -> bool:
        """True when the bot's platform has what posting needs (X: the four OAuth 1.0a
        values; Bluesky: handle and app password; Mastodon: server and access token)."""
        if self.platform == "bluesky":
            return bool(self.bluesky_handle and self.bluesky_app_password)
        if self.platform == "mastodon":
            return bool(self.mastodon_api_base_url and self.mastodon_access_token)
        return self.has_x_credentials

    @property
    def has_x_credentials(self) -> bool:
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
            platform=r.choice("BOT_PLATFORM", "x", PLATFORMS),
            bluesky_handle=r.handle("BLUESKY_HANDLE", platform="bluesky"),
            bluesky_app_password=r.secret("BLUESKY_APP_PASSWORD"),
            bluesky_service=r.url("BLUESKY_SERVICE", DEFAULT_BLUESKY_SERVICE),
            bluesky_public_api=r.url("BLUESKY_PUBLIC_API", DEFAULT_BLUESKY_PUBLIC_API),
            mastodon_api_base_url=r.optional_url("MASTODON_API_BASE_URL"),
            mastodon_access_token=r.secret("MASTODON_ACCESS_TOKEN"),
            mastodon_visibility=r.choice("MASTODON_VISIBILITY", "unlisted", ("public", "unlisted")),
            mastodon_spoiler_text=r.text("MASTODON_SPOILER_TEXT"),
            data_dir=r.path("BOT_DATA_DIR", Path("data")),
            retention_days=r.number("BOT_RETENTION_DAYS", 90.0, low=1, high=36500),
            lookup_window=r.number("BOT_LOOKUP_WINDOW", 60.0, low=0, high=3600),
            prices=r.prices("BOT_PRICES"),
            daily_spend_cap=r.optional_number("BOT_DAILY_SPEND_CAP", low=0, high=10**6),
            request_timeout=r.number("BOT_REQUEST_TIMEOUT", 15.0, low=0.1, high=600),
            max_attempts=r.integer("BOT_MAX_ATTEMPTS", 5, low=1, high=20),
            backoff_base=r.number("BOT_BACKOFF_BASE", 1.0, low=0, high=600),
            backoff_max=r.number("BOT_BACKOFF_MAX", 60.0, low=0, high=3600),
            rate_limit_max_wait=r.number("BOT_RATE_LIMIT_MAX_WAIT", 900.0, low=0, high=86400),
            include_replies=r.boolean("BOT_INCLUDE_REPLIES", False),
            base_model=r.path("BOT_BASE_MODEL", DEFAULT_BASE),
            finetune_max_seconds=r.number("BOT_FINETUNE_MAX_SECONDS", 80.0, low=1, high=86400),
            train_backoff=r.number("BOT_TRAIN_BACKOFF", 3600.0, low=1, high=30 * 86400),
            train_backoff_max=r.number("BOT_TRAIN_BACKOFF_MAX", 86400.0, low=1, high=30 * 86400),
            retrain_new_posts=r.integer("BOT_RETRAIN_NEW_POSTS", 50, low=1, high=10**6),
            refresh_interval=r.number("BOT_REFRESH_INTERVAL", 6 * 3600.0, low=1, high=30 * 86400),
            train_interval=r.number("BOT_TRAIN_INTERVAL", 600.0, low=1, high=30 * 86400),
            post_interval=r.number("BOT_POST_INTERVAL", 8 * 3600.0, low=1, high=30 * 86400),
            post_jitter=r.number("BOT_POST_JITTER", 1800.0, low=0, high=86400),
            post_cron=r.cron("BOT_POST_CRON"),
            first_post_delay=r.optional_number("BOT_FIRST_POST_DELAY", low=0, high=30 * 86400),
            quiet_hours=r.hours("BOT_QUIET_HOURS"),
            timezone=r.timezone("BOT_TIMEZONE", "UTC"),
            mentions_interval=r.number("BOT_MENTIONS_INTERVAL", 120.0, low=1, high=86400),
            reply_budget=r.integer("BOT_REPLY_BUDGET", 3, low=0, high=1000),
            reply_max_depth=r.integer("BOT_REPLY_MAX_DEPTH", 3, low=0, high=1000),
            reply_backlog=r.number("BOT_REPLY_BACKLOG", 3600.0, low=0, high=30 * 86400),
            blocklist=r.handles("BOT_BLOCKLIST"),
            default_target=r.handle("BOT_DEFAULT_TARGET"),
            candidates=r.integer("BOT_CANDIDATES", 128, low=1, high=4096),
            max_batches=r.integer("BOT_MAX_BATCHES", 3, low=1, high=100),
            compose_seconds=r.number("BOT_COMPOSE_SECONDS", 8.0, low=0, high=3600),
            temperature=r.number("BOT_TEMPERATURE", 1.0, low=0.05, high=5),
            real_words=r.boolean("BOT_REAL_WORDS", True),
            top_p=r.number("BOT_TOP_P", 1.0, low=0.01, high=1),
            min_words=r.integer("BOT_MIN_WORDS", 2, low=1, high=50),
            repeat_days=r.integer("BOT_REPEAT_DAYS", 30, low=0, high=3650),
            mentions_mode=r.choice("BOT_MENTIONS", "defuse", ("defuse", "reject")),
            banned_words_file=r.path("BOT_BANNED_WORDS_FILE", None),
            dry_run=r.boolean("BOT_DRY_RUN", False),
        )
        _check_credentials(r)
        return settings


def _check_credentials(r: _Reader) -> None:
    # Half a set of credentials is always a mistake; say which ones are missing.
    for platform, names in PLATFORM_CREDENTIALS.items():
        present = [name for name in names if r.secret(name)]
        if present and len(present) < len(names):
            missing = ", ".join(name for name in names if name not in present)
            raise BotError(f"incomplete {platform} credentials: {missing} not set (set all, or none to run dry)")


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach ("localhost", 127.x, ::1,
    ::ffff:127.x); False for everything else, "" and 0.0.0.0 included."""
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]").split("%")[0])
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


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
        match = re.fullmatch(r"(https?)://([^/\s?#]+)(/[^\s?#]*)?", value)
        if not match:
            raise BotError(f"{name} must be an http(s) URL such as http://127.0.0.1:8080, not {value!r}")
        if match[1] == "http" and not is_loopback(urlsplit(value).hostname or ""):
            # the OAuth signatures and the bearer token would cross the network in clear
            raise BotError(f"{name} must use https:// for any host but this machine (127.0.0.1, localhost, [::1]), "
                           f"not {value!r}")
        return value.rstrip("/")

    def optional_url(self, name: str) -> str | None:
        return self.url(name, "") if self._raw(name) else None

    def text(self, name: str) -> str | None:
        return self._raw(name)

    def prices(self, name: str) -> tuple[tuple[str, float], ...]:
        from bot.costs import DEFAULT_PRICES

        out = []
        for part in re.split(r"[,\s]+", self._raw(name) or ""):
            if not part:
                continue
            kind, _, price = part.partition("=")
            try:
                value = float(price)
            except ValueError:
                value = -1.0
            if kind not in DEFAULT_PRICES or value < 0:
                raise BotError(f"{name} must list kind=USD pairs such as post=0.015,post_read=0.005 (kinds: "
                               f"{', '.join(DEFAULT_PRICES)}), not {part!r}")
            out.append((kind, value))
        return tuple(out)

    def path(self, name: str, default: Path | None) -> Path | None:
        value = self._raw(name)
        return Path(value).expanduser() if value else default

    def optional_number(self, name: str, *, low: float, high: float) -> float | None:
        return None if self._raw(name) is None else self.number(name, 0.0, low=low, high=high)

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = (self._raw(name) or default).lower()
        if value not in choices:
            raise BotError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
        return value

    def handle(self, name: str, platform: str | None = None) -> str | None:
        from bot.platforms import canonical

        value = self._raw(name)
        if value is None:
            return None
        try:
            return canonical(value, platform)[1]
        except BotError as exc:
            raise BotError(f"{name}: {exc}") from None

    def handles(self, name: str) -> frozenset[str]:
        """Lowercase handles of any platform, separated by commas or spaces."""
        from bot.platforms import canonical

        out = set()
        for part in re.split(r"[,\s]+", self._raw(name) or ""):
            if part:
                try:
                    out.add(canonical(part)[1].lower())
                except BotError as exc:
                    raise BotError(f"{name} must list handles separated by commas: {exc}") from None
        return frozenset(out)

    def hours(self, name: str) -> tuple[int, int] | None:
        value = self._raw(name)
        if value is None:
            return None
        match = re.fullmatch(r"(\d{1,2})\s*-\s*(\d{1,2})", value)
        if not match or int(match[1]) > 23 or int(match[2]) > 23 or match[1] == match[2]:
            raise BotError(f"{name} must be two different hours 0-23 like 23-7 (no posts from 23:00 to 07:00), not {value!r}")
        return int(match[1]), int(match[2])

    def timezone(self, name: str, default: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        value = self._raw(name) or default
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise BotError(f"{name} must be a time zone such as Europe/Berlin or UTC, not {value!r}") from None
        return value

    def cron(self, name: str) -> str | None:
        value = self._raw(name)
        if value is None:
            return None
        from apscheduler.triggers.cron import CronTrigger

        try:
            CronTrigger.from_crontab(value)
        except ValueError as exc:
            raise BotError(f"{name} must be a crontab line such as '0 9,13,18 * * *', not {value!r} ({exc})") from None
        return value

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
