"""The Mastodon client against the Mastodon sandbox: the real Mastodon.py over real HTTP on
127.0.0.1, and the sandbox's own routes checked with plain requests."""
from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
import requests

from bot.errors import BotError
from bot.platforms.base import (
    AccessDenied,
    AccountUnavailable,
    CredentialsMissing,
    CredentialsRejected,
    OutcomeUnknown,
    PostRefused,
    RateLimited,
    ServiceUnavailable,
)
from bot.platforms.mastodon import MastodonClient, home_server, status_length
from bot.platforms.text import html_to_text
from bot.sandbox.mastodon import (
    BOT_USERNAME,
    FAN_ACCESS_TOKEN,
    FAN_USERNAME,
    LOCKED_USERNAME,
    RATE_LIMIT,
    SANDBOX_ACCESS_TOKEN,
    SANDBOX_READ_TOKEN,
    SUSPENDED_USERNAME,
    TARGET_USERNAME,
    Sandbox,
    start_sandbox,
)
from bot.settings import Settings
from tests.bot_helpers import on_network_address
from tests.worlds import mastodon_world  # noqa: F401  (a fixture)

TARGET = "targetacct"


@pytest.fixture
def sb() -> Iterator[Sandbox]:
    """A sandbox without the sample archive (fast); tests add what they need."""
    sandbox = start_sandbox(seed=None)
    try:
        yield sandbox
    finally:
        sandbox.close()


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def bot(sb, sleeps) -> Iterator[MastodonClient]:
    client = MastodonClient(sb.settings(), sleep=sleeps.append)
    yield client
    client.close()


def reader(sb: Sandbox, **overrides) -> MastodonClient:
    base, _ = home_server(sb.handle(TARGET), sb.settings(**overrides))
    return MastodonClient(sb.settings(**overrides), api_base_url=base, sleep=lambda s: None)


def api(sb: Sandbox, method: str, path: str, token: str | None = SANDBOX_ACCESS_TOKEN, **kwargs) -> requests.Response:
    headers = kwargs.pop("headers", {})
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return requests.request(method, sb.url + path, headers=headers, timeout=5, **kwargs)


# --- reading a target ---------------------------------------------------------------------------
def test_resolve_and_fetch_page_newest_first_and_stop_at_since(sb):
    texts = [f"Status number {n} of the target." for n in range(95)]
    ids = [sb.add_status(TARGET, t, created_at=f"2024-01-01T00:{n // 60:02d}:{n % 60:02d}Z")["id"]
           for n, t in enumerate(texts)]
    client = reader(sb)
    account = client.resolve(sb.handle(TARGET))
    assert account == {"id": sb.account(TARGET)["id"], "username": TARGET}

    before = sb.count_requests("GET", "/api/v1/accounts/")
    posts = client.fetch_posts(account["id"], username=TARGET)
    assert [p["id"] for p in posts] == ids  # oldest first, every page
    assert [p["text"] for p in posts] == texts
    assert posts[0] == {"id": ids[0], "created_at": "2024-01-01T00:00:00.000000Z", "text": texts[0],
                        "user": TARGET, "kind": "post"}
    # 40 + 40 + 15, and the empty page the last Link header points to (as on Mastodon)
    assert sb.count_requests("GET", "/api/v1/accounts/") - before == 4

    newer = client.fetch_posts(account["id"], since_id=ids[49], username=TARGET)
    assert [p["id"] for p in newer] == ids[50:]
    assert [p["id"] for p in client.fetch_posts(account["id"], limit=5)] == ids[-5:]
    assert client.fetch_posts(TARGET, since_id=ids[-1]) == []  # a handle is looked up first


def test_the_sample_archive_is_served_as_public_statuses():
    with start_sandbox() as sandbox:
        client = reader(sandbox)
        account = client.resolve(sandbox.handle(TARGET_USERNAME))
        posts = client.fetch_posts(account["id"], limit=60)
        assert len(posts) == 60 and posts[-1]["created_at"].startswith("2018-01-01")
        assert all(p["kind"] == "post" and p["text"] for p in posts)
        assert len(sandbox.statuses_by(TARGET_USERNAME)) == 3200
        # the archive's replies ("@name ...") are replies to others: kept only when asked for
        replies = [s for s in sandbox.statuses_by(TARGET_USERNAME) if s["in_reply_to_id"]]
        assert len(replies) == 8


def test_unknown_and_suspended_accounts(sb):
    client = reader(sb)
    with pytest.raises(AccountUnavailable) as unknown:
        client.resolve(f"@nobody_here@{sb.domain}")
    assert unknown.value.reason == "unknown"
    assert str(unknown.value) == f"@nobody_here@{sb.domain} does not exist on Mastodon"
    with pytest.raises(AccountUnavailable) as suspended:
        client.resolve(sb.handle(SUSPENDED_USERNAME))
    assert suspended.value.reason == "suspended"
    suspended_id = sb.account(SUSPENDED_USERNAME)["id"]
    with pytest.raises(AccountUnavailable):
        client.fetch_posts(suspended_id, username=SUSPENDED_USERNAME)
    with pytest.raises(BotError):
        client.resolve("not a handle")


def test_only_the_accounts_own_public_uncovered_statuses_are_training_data(sb):
    keep = sb.add_status(TARGET, "A public post.")["id"]
    unlisted = sb.add_status(TARGET, "An unlisted post.", visibility="unlisted")["id"]
    sb.add_status(TARGET, "Followers only.", visibility="private")
    sb.add_status(TARGET, "A direct message to @sandbox_fan", visibility="direct")
    sb.add_status(TARGET, "Spoilers for the finale.", spoiler_text="TV spoilers")
    other = sb.add_status(FAN_USERNAME, "The fan's post.")["id"]
    sb.add_reblog(TARGET, other)
    to_fan = sb.add_status(TARGET, "@sandbox_fan thanks!", in_reply_to_id=other)["id"]
    thread = sb.add_status(TARGET, "And a second part.", in_reply_to_id=keep)["id"]

    account_id = sb.account(TARGET)["id"]
    assert [p["id"] for p in reader(sb).fetch_posts(account_id)] == [keep, unlisted, thread]
    # the bot's token does not make private statuses training data either
    as_bot = MastodonClient(sb.settings())
    assert [p["id"] for p in as_bot.fetch_posts(account_id)] == [keep, unlisted, thread]
    with_replies = reader(sb, include_replies=True).fetch_posts(account_id)
    assert [(p["id"], p["kind"]) for p in with_replies] == [
        (keep, "post"), (unlisted, "post"), (to_fan, "reply"), (thread, "post")]
    assert with_replies[2]["text"] == "@sandbox_fan thanks!"
    # an account with only followers-only statuses has nothing to read
    assert reader(sb).fetch_posts(sb.account(LOCKED_USERNAME)["id"]) == []


REAL_CONTENT = (
    '<p>Big news &amp; more: read <a href="https://example.com/news/2024/03/a-very-long-article-name" '
    'target="_blank" rel="nofollow noopener noreferrer" translate="no"><span class="invisible">https://</span>'
    '<span class="ellipsis">example.com/news/2024/03/a-ver</span><span class="invisible">y-long-article-name'
    '</span></a> with <span class="h-card" translate="no"><a href="https://mastodon.social/@Gargron" '
    'class="u-url mention">@<span>Gargron</span></a></span> <a href="https://mastodon.social/tags/News" '
    'class="mention hashtag" rel="tag">#<span>News</span></a></p><p>Line one<br />line two &lt;3 &#39;quoted&#39;'
    '</p><p>:blobcat: done</p>'
)
REAL_TEXT = ("Big news & more: read https://example.com/news/2024/03/a-very-long-article-name with @Gargron #News"
             "\n\nLine one\nline two <3 'quoted'\n\n:blobcat: done")


def test_html_is_turned_back_into_text(sb):
    status_id = sb.add_html_status(TARGET, REAL_CONTENT)
    (post,) = reader(sb).fetch_posts(sb.account(TARGET)["id"])
    assert post["id"] == status_id and post["text"] == REAL_TEXT
    # the sandbox renders as Mastodon does, and the client reads its own text back
    text = "Tom & Jerry <3\n\nsee https://example.org/a/really/long/path/to/something?x=1 #Cartoons\nby @sandbox_fan"
    rendered = sb.add_status(TARGET, text)
    assert rendered["content"].startswith("<p>Tom &amp; Jerry &lt;3</p><p>see <a href=")
    assert '<span class="invisible">https://</span>' in rendered["content"]
    assert html_to_text(rendered["content"]) == text
    assert html_to_text("") == "" and html_to_text("<p>a</p>\n<p>b</p>") == "a\n\nb"


# --- the bot's account --------------------------------------------------------------------------
def test_me_marks_the_account_as_a_bot_once(sb):
    assert sb.account(BOT_USERNAME)["bot"] is False
    client = MastodonClient(sb.settings())
    assert client.me() == {"id": sb.account(BOT_USERNAME)["id"], "username": BOT_USERNAME,
                           "name": "xmimic sandbox bot"}
    assert sb.account(BOT_USERNAME)["bot"] is True
    client.me()
    MastodonClient(sb.settings()).me()  # already a bot: not asked again
    assert sb.count_requests("PATCH") == 1
    assert client.can_post and not reader(sb).can_post


def test_a_read_only_token_reads_but_cannot_post(sb, sleeps):
    client = MastodonClient(sb.settings(mastodon_access_token=SANDBOX_READ_TOKEN), sleep=sleeps.append)
    assert client.me()["username"] == BOT_USERNAME  # the bot flag could not be set: said, not fatal
    assert sb.account(BOT_USERNAME)["bot"] is False
    with pytest.raises(AccessDenied) as denied:
        client.post("A post the token may not make.", key="k")
    assert denied.value.status == 403 and "outside the authorized scopes" in str(denied.value)
    assert sb.statuses_by(BOT_USERNAME) == [] and sleeps == []


def test_post_uses_visibility_and_content_warning_from_the_settings(sb):
    MastodonClient(sb.settings()).post("An unlisted post.", key="a")
    loud = MastodonClient(sb.settings(mastodon_visibility="public", mastodon_spoiler_text="bot post"))
    loud.post("A public post behind a warning.", key="b")
    first, second = sb.statuses_by(BOT_USERNAME)
    assert (first["visibility"], first["spoiler_text"]) == ("unlisted", "")
    assert (second["visibility"], second["spoiler_text"]) == ("public", "bot post")


def test_a_defused_mention_stays_text_both_ways(sb, bot):
    bot.post("Say hi to @\u200bsandbox_fan and mail me@xmimic.example", key="a")
    (status,) = sb.statuses_by(BOT_USERNAME)
    assert status["mentions"] == [] and "h-card" not in status["content"]
    assert sb.notifications_of(FAN_USERNAME) == []
    # the fan writes the bot's name defused or inside an address: no notification, no mention
    sb.add_status(FAN_USERNAME, "@\u200bxmimic_bot is a bot, so is fan@xmimic_bot")
    assert bot.mentions() == []
    sb.add_status(FAN_USERNAME, "(@xmimic_bot) hello")  # after a non-word character: a mention
    assert [m["text"] for m in bot.mentions()] == ["(@xmimic_bot) hello"]


def test_mentions_since_and_threads(sb, bot):
    first = sb.add_mention("Hello bot")
    (mention,) = bot.mentions()
    assert mention == {
        "id": first["id"], "position": mention["position"], "author_id": sb.account(FAN_USERNAME)["id"],
        "author": FAN_USERNAME, "text": "@xmimic_bot Hello bot", "created_at": mention["created_at"],
        "in_reply_to_id": None, "in_reply_to_user_id": None, "conversation_id": first["id"],
    }
    assert isinstance(mention["position"], int) and mention["created_at"].endswith("Z")
    assert bot.mentions(since=mention["position"]) == []

    reply_id = bot.reply("Hello fan", first["id"], key="reply-1")
    reply = sb.status(reply_id)
    assert reply["text"] == "@sandbox_fan Hello fan" and reply["in_reply_to_id"] == first["id"]
    assert [n["status_id"] for n in sb.notifications_of(FAN_USERNAME)] == [reply_id]

    second = sb.add_mention("And again", in_reply_to_id=reply_id)
    sb.add_mention("Followers only", visibility="private")  # never answered in public
    sb.add_mention("A direct one", visibility="direct")
    (later,) = bot.mentions(since=mention["position"])
    assert later["id"] == second["id"] and later["position"] > mention["position"]
    assert later["in_reply_to_id"] == reply_id and later["in_reply_to_user_id"] == bot.me()["id"]
    assert later["conversation_id"] == first["id"]  # the thread's root, not the parent

    # a fresh client (a restart) finds the root through the thread's context
    deeper = sb.add_mention("Deeper still", in_reply_to_id=second["id"])
    fresh = MastodonClient(sb.settings())
    roots = {m["id"]: m["conversation_id"] for m in fresh.mentions(since=later["position"])}
    assert roots == {deeper["id"]: first["id"]}
    assert [p["conversation_id"] for p in bot.recent_own_posts()] == [first["id"]]


def test_many_mentions_are_paged_oldest_first(sb, bot):
    made = [sb.add_mention(f"Mention {n}")["id"] for n in range(90)]
    assert [m["id"] for m in bot.mentions()] == made  # 80 + 10
    positions = [m["position"] for m in bot.mentions(since=None)]
    assert positions == sorted(positions)


def test_a_reply_to_a_deleted_status_is_refused(sb, bot):
    gone = sb.add_mention("Soon gone")
    sb.delete_status(gone["id"])
    with pytest.raises(PostRefused) as refused:
        bot.reply("Too late", gone["id"], key="r")
    assert refused.value.status == 404 and "\n" not in str(refused.value)
    assert sb.statuses_by(BOT_USERNAME) == []
    assert bot.mentions() == []  # its notification went with it


def test_delete(sb, bot):
    status_id = bot.post("Delete me.", key="d")
    assert bot.delete(status_id) is True
    assert bot.delete(status_id) is False
    assert sb.statuses_by(BOT_USERNAME) == []


# --- idempotency: a lost answer lands once ------------------------------------------------------
def test_a_lost_answer_is_sent_again_and_lands_once(sb, bot, sleeps):
    sb.inject("lost", method="POST", path="/api/v1/statuses")
    status_id = bot.post("Posted once, whatever the network does.", key="slot-1")
    assert [s["id"] for s in sb.statuses_by(BOT_USERNAME)] == [status_id]
    assert [code for m, p, code in sb.request_log if m == "POST"] == [0, 200]
    assert len(sleeps) == 1
    # the daemon sending the same record again (after a crash) lands nothing new either
    assert bot.post("Posted once, whatever the network does.", key="slot-1") == status_id
    assert bot.post("Posted once, whatever the network does.", key="slot-2") != status_id
    assert len(sb.statuses_by(BOT_USERNAME)) == 2


def test_every_answer_lost_falls_back_to_the_look_up(sb, bot, sleeps):
    sb.inject("lost", count=5, method="POST", path="/api/v1/statuses")
    status_id = bot.reply("Found & kept <3", sb.add_mention("hi")["id"], key="r1")
    assert [s["id"] for s in sb.statuses_by(BOT_USERNAME)] == [status_id]
    assert sb.count_requests("POST") == 5


def test_outcome_unknown_when_the_look_up_fails_too(sb, sleeps):
    client = MastodonClient(sb.settings(lookup_window=2), sleep=sleeps.append)
    client.me()
    sb.inject("lost", count=5, method="POST", path="/api/v1/statuses")
    sb.inject("500", count=100, method="GET", path=f"/api/v1/accounts/{client.me()['id']}/statuses")
    with pytest.raises(OutcomeUnknown) as unknown:
        client.post("Maybe posted.", key="x")
    assert "never sent again" in str(unknown.value) and "\n" not in str(unknown.value)
    assert len(sb.statuses_by(BOT_USERNAME)) == 1  # it did land: the caller must not send it again


def test_a_connection_that_never_opens_is_service_unavailable_not_unknown(sleeps):
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    settings = Settings(platform="mastodon", mastodon_api_base_url=f"http://127.0.0.1:{port}",
                        mastodon_access_token="t", request_timeout=1)
    client = MastodonClient(settings, sleep=sleeps.append)
    with pytest.raises(ServiceUnavailable) as down:
        client.me()
    assert f"127.0.0.1:{port}" in str(down.value) and len(sleeps) == 4


# --- errors -------------------------------------------------------------------------------------
def test_401_is_credentials_rejected_and_stops_posting(sb, bot):
    sb.inject("401")
    with pytest.raises(CredentialsRejected) as rejected:
        bot.post("Refused.", key="a")
    message = str(rejected.value)
    assert "MASTODON_ACCESS_TOKEN" in message and SANDBOX_ACCESS_TOKEN not in message and "\n" not in message
    requests_before = sb.count_requests()
    with pytest.raises(CredentialsRejected):
        bot.post("Not even tried.", key="b")
    assert sb.count_requests() == requests_before
    wrong = MastodonClient(sb.settings(mastodon_access_token="wrong-token"))
    with pytest.raises(CredentialsRejected):
        wrong.me()
    with pytest.raises(CredentialsMissing):
        reader(sb).post("A reader has no account.", key="c")


def test_429_waits_for_a_near_reset_and_gives_up_on_a_far_one(sb, bot, sleeps):
    sb.inject("429", reset_in=30, path="/api/v1/accounts/verify_credentials")
    assert bot.me()["username"] == BOT_USERNAME
    assert len(sleeps) == 1 and 28 <= sleeps[0] <= 33

    sb.inject("429", reset_in=7200, method="POST")
    with pytest.raises(RateLimited) as limited:
        bot.post("Later.", key="a")
    assert limited.value.reset_at == pytest.approx(time.time() + 7200, abs=5)
    assert "too far away" in str(limited.value) and len(sleeps) == 1
    assert sb.statuses_by(BOT_USERNAME) == []


def test_5xx_is_retried_then_service_unavailable(sb, sleeps):
    sb.add_account(TARGET)
    client = reader(sb)
    client._sleep = sleeps.append
    sb.inject("503", count=2)
    assert client.resolve(TARGET)["username"] == TARGET
    assert len(sleeps) == 2
    sb.inject("500", count=5)
    with pytest.raises(ServiceUnavailable) as failed:
        client.resolve(TARGET)
    assert failed.value.status == 500 and "5 tries" in str(failed.value) and "\n" not in str(failed.value)
    assert len(sleeps) == 2 + 4


def test_text_over_the_limit_is_refused_and_fits_knows_the_limit(sb, bot):
    link = "https://example.com/" + "a" * 100  # counts 23
    assert bot.fits("x" * 500) and not bot.fits("x" * 501)
    assert bot.fits("x" * 476 + " " + link) and not bot.fits("x" * 477 + " " + link)
    assert bot.fits("@someone@example.social " + "x" * 490)  # a remote mention counts its local part
    assert bot.fits("e\u0301" * 500)  # a combining accent adds nothing
    assert sb.count_requests("GET", "/api/v2/instance") == 1  # asked once
    assert bot.post("x" * 476 + " " + link, key="edge")
    with pytest.raises(PostRefused) as refused:
        bot.post("x" * 477 + " " + link, key="over")
    assert refused.value.status == 422 and "character limit of 500" in str(refused.value)
    warned = MastodonClient(sb.settings(mastodon_spoiler_text="bot"))
    assert warned.fits("x" * 497) and not warned.fits("x" * 498)  # the warning counts too
    assert status_length("x" * 10 + " https://a.example/b", "cw") == 10 + 1 + 23 + 2


def test_find_own_post_compares_as_the_server_shows_text(sb, bot):
    text = "Tom & Jerry <3 https://example.com/a/really/long/path/to/something/else"
    status_id = bot.post(text, key="a")
    assert bot.find_own_post(text) == status_id
    assert bot.find_own_post("Another text") is None
    mention = sb.add_mention("hi")
    reply_id = bot.reply("Thanks & bye", mention["id"], key="b")
    assert bot.find_own_post("Thanks & bye", in_reply_to_id=mention["id"]) == reply_id
    assert bot.find_own_post("Thanks & bye", in_reply_to_id=status_id) is None


def test_home_server():
    own = Settings(platform="mastodon", mastodon_api_base_url="http://127.0.0.1:8081", mastodon_access_token="t")
    assert home_server("@realDonaldTrump@127.0.0.1:8081", own) == ("http://127.0.0.1:8081", "realDonaldTrump")
    assert home_server("Gargron@Mastodon.Social", own) == ("https://mastodon.social", "Gargron")
    assert home_server("@someone@127.0.0.1:9999", own) == ("http://127.0.0.1:9999", "someone")
    assert home_server("@someone@localhost", Settings()) == ("http://localhost", "someone")
    assert home_server("xmimic_bot", own) == ("http://127.0.0.1:8081", "xmimic_bot")
    for bad in ("@", "no spaces@x y", "@a@b@c"):
        with pytest.raises(BotError):
            home_server(bad, own)
    with pytest.raises(BotError):
        home_server("name", Settings())
    with pytest.raises(BotError):
        MastodonClient(own, api_base_url="http://example.com")  # a token in clear over the network


def test_the_world_driver(mastodon_world):  # noqa: F811 (the fixture)
    env = mastodon_world.bot_env()
    settings = Settings.from_env(env, dotenv_path=None)
    assert settings.platform == "mastodon" and settings.has_credentials
    client = MastodonClient(settings)
    mention_id = mastodon_world.mention(f"@{mastodon_world.bot_username} hello")
    (mention,) = client.mentions()
    assert mention["id"] == mention_id and mention["author"] == mastodon_world.fan
    reply_id = client.reply("Hello to you", mention_id, key="w")
    assert mastodon_world.bot_posts() == [{"id": reply_id, "text": "@sandbox_fan Hello to you",
                                           "in_reply_to_id": mention_id}]
    base, name = home_server(mastodon_world.target, settings)
    assert name == TARGET_USERNAME
    assert MastodonClient(settings, api_base_url=base).resolve(mastodon_world.target)["username"] == TARGET_USERNAME
    mastodon_world.settle()


# --- the sandbox's own routes ----------------------------------------------------------------------
def test_statuses_paging_and_link_headers(sb):
    ids = [sb.add_status(TARGET, f"Post {n}")["id"] for n in range(5)]
    account_id = sb.account(TARGET)["id"]
    path = f"/api/v1/accounts/{account_id}/statuses"
    first = api(sb, "GET", path, token=None, params={"limit": 2})
    assert first.status_code == 200 and [s["id"] for s in first.json()] == [ids[4], ids[3]]
    assert first.links["next"]["url"] == f"{sb.url}{path}?limit=2&max_id={ids[3]}"
    assert first.links["prev"]["url"] == f"{sb.url}{path}?limit=2&min_id={ids[4]}"
    second = requests.get(first.links["next"]["url"], timeout=5)
    assert [s["id"] for s in second.json()] == [ids[2], ids[1]]
    oldest_above = api(sb, "GET", path, params={"min_id": ids[0], "limit": 2}).json()
    assert [s["id"] for s in oldest_above] == [ids[2], ids[1]]  # the oldest above min_id, newest first
    since = api(sb, "GET", path, params={"since_id": ids[0], "limit": 2}).json()
    assert [s["id"] for s in since] == [ids[4], ids[3]]
    empty = api(sb, "GET", path, params={"max_id": ids[0]})
    assert empty.json() == [] and "Link" not in empty.headers
    for n in range(50):
        sb.add_status(TARGET, f"More {n}")
    assert len(api(sb, "GET", path, params={"limit": 100}).json()) == 40  # clamped, as Mastodon does
    status = first.json()[0]
    assert set(status) >= {"id", "created_at", "content", "account", "in_reply_to_id", "in_reply_to_account_id",
                           "visibility", "spoiler_text", "reblog", "mentions", "url", "uri"}
    assert status["account"]["acct"] == TARGET and status["content"] == "<p>Post 4</p>"
    for name in ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"):
        assert name in first.headers


def test_create_status_honours_the_idempotency_key(sb):
    headers = {"Idempotency-Key": "same-key"}
    one = api(sb, "POST", "/api/v1/statuses", data={"status": "First"}, headers=dict(headers))
    again = api(sb, "POST", "/api/v1/statuses", data={"status": "Changed text"}, headers=dict(headers))
    assert one.status_code == again.status_code == 200
    assert one.json()["id"] == again.json()["id"] and again.json()["content"] == "<p>First</p>"
    by_fan = api(sb, "POST", "/api/v1/statuses", token=FAN_ACCESS_TOKEN, data={"status": "Fan"}, headers=dict(headers))
    assert by_fan.json()["id"] != one.json()["id"]  # keys are per account
    assert [s["text"] for s in sb.statuses_by(BOT_USERNAME)] == ["First"]
    other = api(sb, "POST", "/api/v1/statuses", data={"status": "Second"})
    assert other.json()["id"] != one.json()["id"] and len(sb.statuses_by(BOT_USERNAME)) == 2


def test_create_status_refusals(sb):
    too_long = api(sb, "POST", "/api/v1/statuses", data={"status": "x" * 501})
    assert too_long.status_code == 422
    assert too_long.json() == {"error": "Validation failed: Text character limit of 500 exceeded"}
    gone = sb.add_status(FAN_USERNAME, "Gone soon")["id"]
    sb.delete_status(gone)
    reply = api(sb, "POST", "/api/v1/statuses", data={"status": "Hi", "in_reply_to_id": gone})
    assert reply.status_code == 404 and "does not appear to exist" in reply.json()["error"]
    private = sb.add_status(FAN_USERNAME, "Private", visibility="private")["id"]
    assert api(sb, "POST", "/api/v1/statuses", data={"status": "Hi", "in_reply_to_id": private}).status_code == 404
    assert api(sb, "POST", "/api/v1/statuses", token=None, data={"status": "Hi"}).status_code == 401
    assert api(sb, "POST", "/api/v1/statuses", token="bad", data={"status": "Hi"}).json() == {
        "error": "The access token is invalid"}
    read_only = api(sb, "POST", "/api/v1/statuses", token=SANDBOX_READ_TOKEN, data={"status": "Hi"})
    assert read_only.status_code == 403 and read_only.json() == {"error": "This action is outside the authorized scopes"}
    assert api(sb, "GET", f"/api/v1/statuses/{private}", token=None).status_code == 404
    assert api(sb, "GET", f"/api/v1/statuses/{private}", token=FAN_ACCESS_TOKEN).status_code == 200
    assert sb.statuses_by(BOT_USERNAME) == []


def test_mentions_are_parsed_as_mastodon_does(sb):
    cases = {
        "@xmimic_bot hi": True, "hi @xmimic_bot": True, "(@xmimic_bot)": True, "@XMIMIC_BOT caps": True,
        f"@xmimic_bot@{sb.domain.split(':')[0]} with the domain": True,
        "@\u200bxmimic_bot defused": False, "me@xmimic_bot": False, "x=@xmimic_bot": False,
        "https://host/@xmimic_bot": False, "@xmimic_botty": False,
    }
    for text, mentions in cases.items():
        status = sb.add_status(FAN_USERNAME, text)
        assert (status["mentions"] == [BOT_USERNAME]) is mentions, text
    assert len(sb.notifications_of(BOT_USERNAME)) == sum(cases.values())


def test_notifications_route(sb):
    made = [sb.add_mention(f"n{n}")["id"] for n in range(3)]
    page = api(sb, "GET", "/api/v1/notifications", params={"types[]": ["mention"], "limit": 2})
    assert [n["status"]["id"] for n in page.json()] == [made[2], made[1]]
    assert all(n["type"] == "mention" and n["account"]["acct"] == FAN_USERNAME for n in page.json())
    following = requests.get(page.links["next"]["url"], headers={"Authorization": f"Bearer {SANDBOX_ACCESS_TOKEN}"},
                             timeout=5)
    assert [n["status"]["id"] for n in following.json()] == [made[0]]
    newest = int(page.json()[0]["id"])
    assert api(sb, "GET", "/api/v1/notifications", params={"since_id": newest}).json() == []
    assert api(sb, "GET", "/api/v1/notifications", params={"exclude_types[]": ["mention"]}).json() == []
    assert api(sb, "GET", "/api/v1/notifications", token=None).status_code == 401


def test_instance_and_update_credentials(sb):
    v2 = api(sb, "GET", "/api/v2/instance/", token=None).json()
    assert v2["configuration"]["statuses"]["max_characters"] == 500 and v2["version"].startswith("4.")
    assert api(sb, "GET", "/api/v1/instance/", token=None).json()["version"] == v2["version"]
    updated = api(sb, "PATCH", "/api/v1/accounts/update_credentials", data={"bot": "true"})
    assert updated.status_code == 200 and updated.json()["bot"] is True and "source" in updated.json()
    assert api(sb, "PATCH", "/api/v1/accounts/update_credentials", token=SANDBOX_READ_TOKEN,
               data={"bot": "false"}).status_code == 403
    assert sb.account(BOT_USERNAME)["bot"] is True


def test_rate_limit_of_300_per_5_minutes(sb):
    for _ in range(RATE_LIMIT - 1):
        assert api(sb, "GET", "/api/v1/accounts/verify_credentials").status_code == 200
    last = api(sb, "GET", "/api/v1/accounts/verify_credentials")
    assert last.headers["X-RateLimit-Remaining"] == "0"
    limited = api(sb, "GET", "/api/v1/accounts/verify_credentials")
    assert limited.status_code == 429 and limited.json() == {"error": "Too many requests"}
    assert limited.headers["X-RateLimit-Reset"].endswith("Z")
    assert api(sb, "GET", "/api/v1/instance", token=FAN_ACCESS_TOKEN).status_code == 200  # per token


def test_admin_routes_answer_only_loopback_clients():
    sandbox = on_network_address(start_sandbox)
    with sandbox:
        for method, path, body in (("GET", f"/sandbox/statuses?username={FAN_USERNAME}", None),
                                   ("POST", "/sandbox/faults", {"kind": "503", "count": 5}),
                                   ("POST", "/sandbox/mentions", {"text": "from outside"}),
                                   ("POST", "/sandbox/statuses", {"username": FAN_USERNAME, "text": "x"})):
            refused = requests.request(method, sandbox.url + path, json=body, timeout=5)
            assert refused.status_code == 404, path
        assert sandbox.statuses_by(FAN_USERNAME) == []
        assert requests.get(sandbox.url + "/api/v1/instance", timeout=5).status_code == 200  # no 503 fault


def test_admin_routes_from_loopback(sb):
    made = requests.post(sb.url + "/sandbox/mentions", json={"text": "via HTTP"}, timeout=5)
    assert made.status_code == 201 and made.json()["text"] == "@xmimic_bot via HTTP"
    listed = requests.get(sb.url + "/sandbox/statuses", params={"username": FAN_USERNAME}, timeout=5).json()
    assert [s["id"] for s in listed] == [made.json()["id"]]
    assert requests.delete(f"{sb.url}/sandbox/statuses/{made.json()['id']}", timeout=5).status_code == 200
    assert sb.statuses_by(FAN_USERNAME) == []
    assert requests.post(sb.url + "/sandbox/faults", json={"kind": "500"}, timeout=5).status_code == 201
    assert requests.get(sb.url + "/api/v1/instance", timeout=5).status_code == 500
    assert requests.post(sb.url + "/sandbox/faults", json={"kind": "nope"}, timeout=5).status_code == 400
