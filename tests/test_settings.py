"""Settings from the environment and .env: precedence, validation, secrets kept out of repr."""
from __future__ import annotations

from pathlib import Path

import pytest

from bot.errors import BotError
from bot.settings import Settings

CREDS = {
    "TWITTER_CONSUMER_KEY": "ck-secret-1",
    "TWITTER_CONSUMER_SECRET": "cs-secret-2",
    "TWITTER_ACCESS_TOKEN": "123-at-secret-3",
    "TWITTER_ACCESS_TOKEN_SECRET": "ats-secret-4",
}


def test_defaults_without_anything(tmp_path):
    settings = Settings.from_env({}, dotenv_path=tmp_path / "missing.env")
    assert settings == Settings()
    assert settings.api_base_url == "https://api.twitter.com" and settings.data_dir == Path("data")
    assert settings.include_replies is False and settings.has_credentials is False


def test_environment_wins_over_dotenv(tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        "TWITTER_CONSUMER_KEY=from-dotenv\nTWITTER_CONSUMER_SECRET=cs\nTWITTER_ACCESS_TOKEN=1-at\n"
        "TWITTER_ACCESS_TOKEN_SECRET=ats\nBOT_DATA_DIR=/tmp/from-dotenv\nBOT_MAX_ATTEMPTS=7\n"
    )
    settings = Settings.from_env({"TWITTER_CONSUMER_KEY": "from-env", "BOT_INCLUDE_REPLIES": "yes",
                                  "TWITTER_API_BASE_URL": "http://127.0.0.1:8080/"}, dotenv_path=dotenv)
    assert settings.consumer_key == "from-env" and settings.access_token == "1-at"
    assert settings.data_dir == Path("/tmp/from-dotenv") and settings.max_attempts == 7
    assert settings.include_replies is True and settings.api_base_url == "http://127.0.0.1:8080"
    assert settings.has_credentials


def test_secrets_are_not_in_repr(tmp_path):
    settings = Settings.from_env({**CREDS, "TWITTER_BEARER_TOKEN": "bearer-secret-5"}, dotenv_path=None)
    text = repr(settings) + str(settings)
    for secret in (*CREDS.values(), "bearer-secret-5"):
        assert secret not in text
    assert "api_base_url='https://api.twitter.com'" in text  # the rest is shown


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TWITTER_CONSUMER_KEY": "k"}, "incomplete X credentials: TWITTER_CONSUMER_SECRET, TWITTER_ACCESS_TOKEN, "
                                         "TWITTER_ACCESS_TOKEN_SECRET not set"),
        ({"TWITTER_API_BASE_URL": "127.0.0.1:8080"}, "TWITTER_API_BASE_URL must be an http(s) URL"),
        ({"BOT_REQUEST_TIMEOUT": "soon"}, "BOT_REQUEST_TIMEOUT must be a number of seconds, not 'soon'"),
        ({"BOT_REQUEST_TIMEOUT": "0"}, "BOT_REQUEST_TIMEOUT must be between"),
        ({"BOT_MAX_ATTEMPTS": "2.5"}, "BOT_MAX_ATTEMPTS must be a whole number"),
        ({"BOT_INCLUDE_REPLIES": "maybe"}, "BOT_INCLUDE_REPLIES must be true or false"),
        # the OAuth signatures and tokens would cross the network in clear
        ({"TWITTER_API_BASE_URL": "http://api.example.com"}, "TWITTER_API_BASE_URL must use https:// for any host but"),
        ({"TWITTER_API_BASE_URL": "http://127.0.0.1.evil.com:80"}, "TWITTER_API_BASE_URL must use https://"),
        ({"BOT_PRICES": "post=free"}, "BOT_PRICES must list kind=USD pairs"),
        ({"BOT_PRICES": "tweet=0.01"}, "BOT_PRICES must list kind=USD pairs"),
        ({"BOT_DAILY_SPEND_CAP": "-1"}, "BOT_DAILY_SPEND_CAP must be between"),
        ({"BOT_PLATFORM": "threads"}, "BOT_PLATFORM must be one of"),
        ({"BLUESKY_HANDLE": "bot.bsky.social"}, "incomplete Bluesky credentials: BLUESKY_APP_PASSWORD not set"),
        ({"BLUESKY_HANDLE": "nodots", "BLUESKY_APP_PASSWORD": "a"}, "BLUESKY_HANDLE: 'nodots' is not a Bluesky handle"),
        ({"BLUESKY_SERVICE": "http://bsky.example"}, "BLUESKY_SERVICE must use https://"),
        ({"MASTODON_ACCESS_TOKEN": "t"}, "incomplete Mastodon credentials: MASTODON_API_BASE_URL not set"),
        ({"MASTODON_VISIBILITY": "direct"}, "MASTODON_VISIBILITY must be one of"),
        ({"BOT_BLOCKLIST": "fan, bad!handle"}, "BOT_BLOCKLIST must list handles"),
    ],
)
def test_bad_values_are_one_line_errors(env, message):
    with pytest.raises(BotError) as caught:
        Settings.from_env(env, dotenv_path=None)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_plain_http_only_to_this_machine_and_prices_override_the_defaults():
    for url in ("http://127.0.0.1:8080", "http://localhost:9", "http://[::1]:8080", "https://api.x.com"):
        assert Settings.from_env({"TWITTER_API_BASE_URL": url}, dotenv_path=None).api_base_url == url
    s = Settings.from_env({"BOT_PRICES": "post=0.02, post_read=0.004", "BOT_DAILY_SPEND_CAP": "1.5"}, dotenv_path=None)
    assert dict(s.prices) == {"post": 0.02, "post_read": 0.004} and s.daily_spend_cap == 1.5


def test_a_bad_secret_is_reported_without_its_value():
    with pytest.raises(BotError, match="TWITTER_CONSUMER_SECRET contains whitespace") as caught:
        Settings.from_env({**CREDS, "TWITTER_CONSUMER_SECRET": "half of it\nthe other half"}, dotenv_path=None)
    assert "half" not in str(caught.value)


def test_empty_values_count_as_unset():
    settings = Settings.from_env({"TWITTER_CONSUMER_KEY": "", "BOT_DATA_DIR": "  ", "TWITTER_BEARER_TOKEN": ""},
                                 dotenv_path=None)
    assert settings == Settings()


def test_settings_are_frozen():
    with pytest.raises(AttributeError):
        Settings().max_attempts = 3  # type: ignore[misc]


def test_each_platform_names_the_bot_account_and_handles_of_any_platform_are_accepted():
    bluesky = Settings.from_env({"BOT_PLATFORM": "bluesky", "BLUESKY_HANDLE": "@MyBot.bsky.social",
                                 "BLUESKY_APP_PASSWORD": "app-pass-1"}, dotenv_path=None)
    assert bluesky.has_credentials and bluesky.bluesky_handle == "mybot.bsky.social"
    assert "app-pass-1" not in repr(bluesky)
    mastodon = Settings.from_env({"BOT_PLATFORM": "mastodon", "MASTODON_API_BASE_URL": "https://mastodon.example",
                                  "MASTODON_ACCESS_TOKEN": "tok-2"}, dotenv_path=None)
    assert mastodon.has_credentials and mastodon.mastodon_visibility == "unlisted" and "tok-2" not in repr(mastodon)
    assert not Settings.from_env({"BOT_PLATFORM": "mastodon", **CREDS}, dotenv_path=None).has_credentials  # X keys
    mixed = Settings.from_env({"BOT_BLOCKLIST": "@Fan, other.bsky.social, @who@Mastodon.Example",
                               "BOT_DEFAULT_TARGET": "trump.test"}, dotenv_path=None)
    assert mixed.blocklist == {"fan", "other.bsky.social", "who@mastodon.example"}
    assert mixed.default_target == "trump.test"
