"""XClient (tweepy underneath) against the sandbox over real HTTP: paging, refresh, account
errors, every fault the X API has, and posting that never double-posts."""
from __future__ import annotations

import gzip
import json
import logging
import socket
import time

import pytest

from bot.costs import Meter, SpendCapReached
from bot.errors import BotError
from bot.sandbox.x import (
    BOT_USERNAME,
    EMPTY_USERNAME,
    PROTECTED_USERNAME,
    SANDBOX_ACCESS_TOKEN,
    SANDBOX_ACCESS_TOKEN_SECRET,
    SANDBOX_BEARER_TOKEN,
    SANDBOX_CONSUMER_KEY,
    SANDBOX_CONSUMER_SECRET,
    DEFAULT_SEED,
    SUSPENDED_USERNAME,
    start_sandbox,
)
from bot.settings import Settings
from bot.platforms.base import (
    AccessDenied,
    AccountUnavailable,
    CredentialsMissing,
    CredentialsRejected,
    DuplicatePost,
    OutcomeUnknown,
    PostRefused,
    RateLimited,
    ServiceUnavailable,
)
from bot.platforms.text import comparable
from bot.platforms.x import XClient

TIMELINE = "/2/users/25073877/tweets"  # realDonaldTrump's timeline in the sandbox
ATTEMPTS = 4


@pytest.fixture
def client(sandbox, sleeps):
    # 10 s: with two test runs sharing 2 cores, a 100-post page once took over 2 s four
    # times in a row (tests of timeouts make their own client with a short one)
    c = XClient(sandbox.settings(max_attempts=ATTEMPTS, request_timeout=10.0), sleep=sleeps.append)
    yield c
    c.close()


def _newest(path, n):
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        posts = [json.loads(line) for line in handle]
    return sorted(posts, key=lambda p: int(p["id"]))[-n:]


# --- accounts and timelines ----------------------------------------------------------------
def test_me_and_resolve(client):
    assert client.me()["username"] == BOT_USERNAME
    user = client.resolve("@REALDONALDTRUMP")
    assert user == {"id": "25073877", "username": "realDonaldTrump", "name": "realDonaldTrump", "protected": False}
    assert client.resolve(PROTECTED_USERNAME)["protected"] is True


def test_paging_stops_at_the_3200_cap(shared_users, sleeps):
    full = shared_users / "realDonaldTrump.jsonl.gz"  # 20,638 posts; the API serves the newest 3,200
    with start_sandbox(seed=[full]) as sb:
        # A generous timeout: on a busy machine one page once took over the default 15 s,
        # and the client's (correct) retry made it 33 requests.
        client = XClient(sb.settings(), sleep=sleeps.append, request_timeout=60)
        posts = client.fetch_posts("realDonaldTrump", include_replies=True)
        assert sb.count_requests("GET", TIMELINE) == 32  # 100 a page
    newest = _newest(full, 3200)
    assert [p["id"] for p in posts] == [p["id"] for p in newest]  # oldest first, exactly the newest 3,200
    assert posts[-1] == {k: newest[-1][k] for k in ("id", "user", "created_at", "text")}
    assert sleeps == []


def test_replies_left_out_by_default_without_losing_reach(client, sandbox):
    newest = _newest(DEFAULT_SEED[0], 3200)  # what the sandbox serves
    replies = {p["id"] for p in newest if p["text"].startswith("@")}
    assert replies  # the sample has some
    posts = client.fetch_posts("realDonaldTrump")
    assert len(posts) == 3200 - len(replies)  # exclude=replies would have cut the reach to 800
    assert not replies & {p["id"] for p in posts}
    self_reply = sandbox.add_posts("realDonaldTrump", [{"text": "@realDonaldTrump part 2 of a thread",
                                                        "in_reply_to_user_id": "25073877"}])
    assert client.fetch_posts("realDonaldTrump", since_id=posts[-1]["id"])[0]["id"] == self_reply[0]


def test_limit_takes_the_newest(client, sandbox):
    posts = client.fetch_posts("realDonaldTrump", limit=250, include_replies=True)
    assert len(posts) == 250
    assert posts[-1]["id"] == sandbox.posts_by("realDonaldTrump")[-1]["id"]
    assert sandbox.count_requests("GET", TIMELINE) == 3


def test_refresh_fetches_only_new_posts(client, sandbox, store):
    assert store.add_posts("realDonaldTrump", client.fetch_posts("realDonaldTrump")) == 3192
    since = store.newest_post_id("realDonaldTrump")
    before = sandbox.count_requests("GET", TIMELINE)
    sandbox.add_posts("realDonaldTrump", ["A brand new post!", "RT @someone: not ours", "And another one."])
    fresh = client.fetch_posts("realDonaldTrump", since_id=since)
    assert [p["text"] for p in fresh] == ["A brand new post!", "And another one."]  # oldest first, no retweet
    assert sandbox.count_requests("GET", TIMELINE) == before + 1
    assert store.add_posts("realDonaldTrump", fresh) == 2
    assert client.fetch_posts("realDonaldTrump", since_id=store.newest_post_id("realDonaldTrump")) == []


@pytest.mark.parametrize(
    ("handle", "reason", "words"),
    [("no_such_user", "unknown", "does not exist"), (PROTECTED_USERNAME, "protected", "protected"),
     (SUSPENDED_USERNAME, "suspended", "suspended")],
)
def test_unavailable_accounts_are_named(client, handle, reason, words):
    with pytest.raises(AccountUnavailable) as caught:
        client.fetch_posts(handle)
    assert caught.value.reason == reason and caught.value.handle.lower() == handle.lower()
    assert str(caught.value).startswith(f"@{handle}") and words in str(caught.value)


def test_protected_timeline_error_from_the_api(client):
    private = client.resolve(PROTECTED_USERNAME)
    with pytest.raises(AccountUnavailable, match="protected"):
        client.fetch_posts(private["id"])  # by id: the timeline answer itself says so


def test_bad_handle_refused_before_any_request(client, sandbox):
    with pytest.raises(BotError, match="not an X handle"):
        client.fetch_posts("not a handle!")
    assert sandbox.count_requests() == 0


def test_empty_timeline(client, sandbox):
    assert client.fetch_posts(EMPTY_USERNAME) == []
    assert sandbox.count_requests("GET", "/2/users/by/username/") == 1


# --- faults ----------------------------------------------------------------------------------
def test_429_with_reset_header_waits_for_the_reset(client, sandbox, sleeps):
    sandbox.inject("429", count=2, path=TIMELINE, reset_in=30)
    assert len(client.fetch_posts("realDonaldTrump", limit=10)) == 10
    assert sandbox.count_requests("GET", TIMELINE) == 3
    assert len(sleeps) == 2 and all(29 <= s <= 32 for s in sleeps)


def test_429_without_reset_header_is_bounded(client, sandbox, sleeps):
    sandbox.inject("429", count=1000, path=TIMELINE)  # tweepy's wait_on_rate_limit would recurse forever
    with pytest.raises(RateLimited, match=f"hit trying to download @realDonaldTrump's posts \\({ATTEMPTS} tries"):
        client.fetch_posts("realDonaldTrump")
    assert sandbox.count_requests("GET", TIMELINE) == ATTEMPTS
    assert len(sleeps) == ATTEMPTS - 1 and all(0 <= s <= client.settings.backoff_max for s in sleeps)


def test_429_resetting_too_late_is_not_waited_for(client, sandbox, sleeps):
    sandbox.inject("429", count=5, path=TIMELINE, reset_in=7200)
    with pytest.raises(RateLimited, match="too far away") as caught:
        client.fetch_posts("realDonaldTrump")
    assert caught.value.reset_at is not None
    assert sandbox.count_requests("GET", TIMELINE) == 1 and sleeps == []


def test_monthly_usage_cap_is_not_retried(client, sandbox, sleeps):
    sandbox.inject("usage_cap", count=5)
    with pytest.raises(RateLimited, match="usage cap"):
        client.me()
    assert sandbox.count_requests() == 1 and sleeps == []


def test_server_error_then_success(client, sandbox, sleeps):
    sandbox.inject("500", count=2, path="/2/users/by/username/")
    assert client.resolve("realDonaldTrump")["id"] == "25073877"
    assert sandbox.count_requests() == 3 and len(sleeps) == 2


def test_server_errors_every_time(client, sandbox, sleeps):
    sandbox.inject("503", count=100)
    with pytest.raises(ServiceUnavailable, match="503"):
        client.me()
    assert sandbox.count_requests() == ATTEMPTS


def test_timeout_is_retried_then_reported(sandbox, sleeps):
    client = XClient(sandbox.settings(request_timeout=0.3, max_attempts=2), sleep=sleeps.append)
    sandbox.inject("slow", count=1, delay=2.0)
    assert client.me()["username"] == BOT_USERNAME  # second try answers at once
    sandbox.inject("slow", count=2, delay=2.0, path="/2/users/by/")
    with pytest.raises(ServiceUnavailable, match="did not answer"):
        client.resolve("realDonaldTrump")
    assert len(sleeps) == 2


def test_unreachable_host(sleeps):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = Settings(consumer_key="k", consumer_secret="s", access_token="1-t", access_token_secret="ts",
                        api_base_url=f"http://127.0.0.1:{port}", max_attempts=2)
    with pytest.raises(ServiceUnavailable, match=f"cannot reach http://127.0.0.1:{port}"):
        XClient(settings, sleep=sleeps.append).me()


def test_tier_refusal_names_the_call(client, sandbox):
    sandbox.inject("tier", path=TIMELINE)
    with pytest.raises(AccessDenied, match="download @realDonaldTrump's posts .*403"):
        client.fetch_posts("realDonaldTrump")


# --- credentials ----------------------------------------------------------------------------
def test_wrong_keys_are_rejected_by_the_signature_check(sandbox, sleeps):
    client = XClient(sandbox.settings(consumer_secret="not-the-secret"), sleep=sleeps.append)
    with pytest.raises(CredentialsRejected, match="401"):
        client.me()
    assert sleeps == []  # a 401 is not retried


def test_401_stops_posting(client, sandbox):
    sandbox.inject("401", path="/2/tweets")
    with pytest.raises(CredentialsRejected):
        client.post("first try")
    posts_sent = sandbox.count_requests("POST")
    with pytest.raises(CredentialsRejected, match="not trying to post"):
        client.post("second try")
    assert sandbox.count_requests("POST") == posts_sent == 1
    assert sandbox.posts_by(BOT_USERNAME) == []


def test_bearer_token_reads_and_bad_bearer(sandbox, sleeps):
    reader = XClient(sandbox.settings(bearer_token=SANDBOX_BEARER_TOKEN), sleep=sleeps.append)
    assert len(reader.fetch_posts("realDonaldTrump", limit=5)) == 5
    bad = XClient(Settings(bearer_token="wrong", api_base_url=sandbox.url), sleep=sleeps.append)
    with pytest.raises(CredentialsRejected, match="TWITTER_BEARER_TOKEN"):
        bad.resolve("realDonaldTrump")
    with pytest.raises(CredentialsMissing):
        bad.post("no user context, no posting")


def test_no_credentials_at_all():
    with pytest.raises(CredentialsMissing, match="TWITTER_CONSUMER_KEY"):
        XClient(Settings())


def test_secrets_never_logged_or_in_errors(sandbox, sleeps, caplog):
    caplog.set_level(logging.DEBUG)
    client = XClient(sandbox.settings(bearer_token=SANDBOX_BEARER_TOKEN), sleep=sleeps.append)
    client.fetch_posts("realDonaldTrump", limit=5)
    client.post("a post to log")
    bad = XClient(sandbox.settings(access_token_secret="wrong-secret-value"), sleep=sleeps.append)
    with pytest.raises(CredentialsRejected) as caught:
        bad.post("never sent")
    logged = caplog.text + str(caught.value)
    for secret in (SANDBOX_CONSUMER_KEY, SANDBOX_CONSUMER_SECRET, SANDBOX_ACCESS_TOKEN,
                   SANDBOX_ACCESS_TOKEN_SECRET, SANDBOX_BEARER_TOKEN, "wrong-secret-value"):
        assert secret not in logged
    assert "posted" in caplog.text  # the log did record what happened


# --- posting ----------------------------------------------------------------------------------
def test_post_reply_delete(client, sandbox):
    post_id = client.post("Fish & chips <3")
    [stored] = sandbox.posts_by(BOT_USERNAME)
    assert stored["id"] == post_id and stored["text"] == "Fish &amp; chips &lt;3"  # as X stores it
    mention = sandbox.add_mention("say something like Trump")
    reply_id = client.reply("Tremendous!", mention["id"])
    reply = sandbox.posts_by(BOT_USERNAME)[-1]
    assert reply["id"] == reply_id and reply["in_reply_to_id"] == mention["id"]
    assert reply["conversation_id"] == mention["conversation_id"]
    assert reply["text"] == "@sandbox_fan Tremendous!"
    assert client.delete(post_id) is True
    assert client.delete(post_id) is False
    assert [p["id"] for p in sandbox.posts_by(BOT_USERNAME)] == [reply_id]
    assert client.find_own_post("Tremendous!", mention["id"]) == reply_id
    assert client.find_own_post("Fish & chips <3") is None


def test_duplicate_content(client, sandbox):
    client.post("Same words twice")
    with pytest.raises(DuplicatePost):
        client.post("Same words twice")
    sandbox.inject("duplicate")
    with pytest.raises(DuplicatePost):
        client.post("Never posted before")
    assert sandbox.count_requests("POST") == 3  # a duplicate is never retried
    assert [p["text"] for p in sandbox.posts_by(BOT_USERNAME)] == ["Same words twice"]


def test_post_that_timed_out_but_landed_is_not_posted_twice(sandbox, sleeps):
    client = XClient(sandbox.settings(request_timeout=0.3), sleep=sleeps.append)
    sandbox.inject("slow", method="POST", path="/2/tweets", delay=2.0)  # served, answer lost
    post_id = client.post("Only once, please")
    assert [(p["id"], p["text"]) for p in sandbox.posts_by(BOT_USERNAME)] == [(post_id, "Only once, please")]
    assert sandbox.count_requests("POST") == 1


def test_a_post_whose_answer_is_lost_and_that_never_shows_up_is_given_up_not_resent(client, sandbox, sleeps):
    mention = sandbox.add_mention("hello")
    sandbox.inject("500", method="POST", path="/2/tweets")  # X may have created it: nobody knows
    with pytest.raises(OutcomeUnknown, match="given up, never sent again"):
        client.reply("Hello to you", mention["id"])
    assert sandbox.count_requests("POST") == 1 and sandbox.posts_by(BOT_USERNAME) == []
    assert 0 < sum(sleeps) <= client.settings.lookup_window  # looked for it over the window, then stopped
    sandbox.inject("disconnect", method="POST", path="/2/tweets")
    with pytest.raises(OutcomeUnknown):
        client.post("Dropped on the way")
    assert sandbox.count_requests("POST") == 2


def test_a_lost_answer_is_found_on_a_lagging_timeline(sandbox):
    sandbox.set_timeline_lag(1.5)  # the post reaches the bot's timeline 1.5 s after it was made
    client = XClient(sandbox.settings(request_timeout=0.5, lookup_window=10), sleep=time.sleep)
    sandbox.inject("slow", method="POST", path="/2/tweets", delay=1.0)  # created, answer too late
    post_id = client.post("Ship it: https://example.com/a?b=1 & more")
    posts = sandbox.posts_by(BOT_USERNAME)
    assert [p["id"] for p in posts] == [post_id] and "t.co/" in posts[0]["text"]  # found despite the rewritten link
    assert sandbox.count_requests("POST") == 1


def test_a_lost_answer_with_an_unreadable_timeline_is_given_up(sandbox, sleeps):
    client = XClient(sandbox.settings(request_timeout=1.0), sleep=sleeps.append)
    sandbox.inject("slow", method="POST", path="/2/tweets", delay=3.0)  # served, answer lost
    sandbox.inject("tier", method="GET", path=f"/2/users/{client.me()['id']}/tweets", count=10)
    try:
        with pytest.raises(OutcomeUnknown, match="cannot be read"):
            client.post("Did it land?")
    finally:
        client.close()
    assert sandbox.count_requests("POST") == 1


def test_posts_that_certainly_did_not_arrive_are_retried(client, sandbox, sleeps):
    sandbox.inject("429", method="POST", path="/2/tweets", reset_in=2)
    post_id = client.post("Second time lucky")
    assert [p["id"] for p in sandbox.posts_by(BOT_USERNAME)] == [post_id]
    assert sandbox.count_requests("POST") == 2


def test_refusals_say_whether_they_are_about_the_post_or_the_bot(client, sandbox):
    with pytest.raises(PostRefused, match="deleted or not visible"):
        client.reply("into the void", "12345")
    mention = sandbox.add_mention("hello there")
    sandbox.delete_post(mention["id"])
    with pytest.raises(PostRefused):
        client.reply("too late", mention["id"])
    sandbox.inject("write_forbidden", method="POST", path="/2/tweets")
    with pytest.raises(AccessDenied) as refused:
        client.post("A read-only app cannot post this")
    assert not isinstance(refused.value, PostRefused)


def test_comparable_text_ignores_what_x_changes():
    sent = "Caf\u0065\u0301 &  news:  yang2020.com and https://example.com/x"
    served = "Caf\u00e9 &amp; news: https://t.co/AbCdEf1234 and https://t.co/ZyXwVu9876"
    assert comparable(sent) == comparable(served)
    assert comparable("@sandbox_fan @other thanks", reply=True) == comparable("thanks", reply=True)
    assert comparable("one thing") != comparable("another thing")


def test_calls_are_counted_and_priced(sandbox, store):
    meter = Meter(store)
    client = XClient(sandbox.settings(), meter=meter)
    posts = client.fetch_posts("realDonaldTrump", limit=150)
    client.post("A post worth $0.015")
    client.me()
    day = meter.day()
    assert day["user_read"] == 1 and day["post"] == 1 and day["owned_read"] == 1  # owned: GET /2/users/me
    assert day["post_read"] >= len(posts)  # every post returned is billed, replies dropped here included
    assert meter.summary()["today"]["usd"] == pytest.approx(meter.cost(day))
    capped = XClient(sandbox.settings(), meter=Meter(store, daily_cap=meter.cost(day) + 0.02))
    with pytest.raises(SpendCapReached, match="reads paused"):
        capped.fetch_posts("realDonaldTrump")  # reads stop at 80% of the cap...
    capped.post("...posts still go out")  # ...posts at the cap
    with pytest.raises(SpendCapReached, match="posts paused"):
        capped.post("this one would pass the cap")


def test_too_long_text_is_refused(client):
    with pytest.raises(BotError, match="too long"):
        client.post("x" * 281)


# --- mentions ----------------------------------------------------------------------------------
def test_mentions_since_a_cursor(client, sandbox):
    assert client.mentions() == []
    first = sandbox.add_mention("@xmimic_bot do Trump")
    own = client.post("An original thought")
    second = sandbox.add_mention("love this", author="another_fan", in_reply_to_id=own)
    found = client.mentions()
    assert [m["id"] for m in found] == [first["id"], second["id"]]  # oldest first
    assert found[0]["author"] == "sandbox_fan" and found[0]["text"] == "@xmimic_bot do Trump"
    assert found[1]["author"] == "another_fan" and found[1]["in_reply_to_id"] == own
    assert found[1]["conversation_id"] == own and found[1]["in_reply_to_user_id"] == client.me()["id"]
    assert found[1]["referenced_tweets"] == [{"type": "replied_to", "id": own}]
    assert found[1]["created_at"].endswith("Z")
    third = sandbox.add_mention("one more")
    assert [m["id"] for m in client.mentions(since=found[-1]["position"])] == [third["id"]]
