"""BlueskyClient against a real local Bluesky network (PLC + PDS + AppView of the reference
implementation, bot/sandbox/bluesky.py): the real atproto SDK over real HTTP, state in a
real SQLite store. Faults are injected at the HTTP transport (a request really sent and its
answer thrown away, a request never sent), never by mocking our code."""
from __future__ import annotations

import dataclasses
import uuid

import httpx
import pytest
from atproto_client import Client

from bot.platforms.base import (
    AccountUnavailable,
    CredentialsRejected,
    OutcomeUnknown,
    PostRefused,
    RateLimited,
    ServiceUnavailable,
)
from bot.platforms.bluesky import SESSION_CURSOR, BlueskyClient, graphemes, tid_for
from bot.settings import Settings
from bot.store import Store
from bot.sandbox.bluesky import SEED_POSTS, BlueskyWorld, seed_posts


class Transport(httpx.HTTPTransport):
    """The real HTTP transport, recording every XRPC method called, with faults on demand:
    `fail[nsid] = [action, ...]` consumes one action per matching request:
      "lost"    send it, let the server act, then drop the answer (a ReadError)
      "unsent"  raise a timeout without sending it
      (status, headers)   answer this status without sending it"""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []
        self.fail: dict[str, list] = {}

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        nsid = request.url.path.rsplit("/", 1)[-1]
        self.calls.append(nsid)
        actions = self.fail.get(nsid)
        if actions:
            action = actions.pop(0)
            if action == "lost":
                answer = super().handle_request(request)
                answer.read()
                answer.close()
                raise httpx.ReadError("injected: the answer was lost", request=request)
            if action == "unsent":
                raise httpx.ReadTimeout("injected: timed out", request=request)
            status, headers = action
            return httpx.Response(status, headers=headers, json={"error": "Injected", "message": "injected"},
                                  request=request)
        return super().handle_request(request)


@pytest.fixture
def world(bluesky_world: BlueskyWorld) -> BlueskyWorld:
    return bluesky_world


@pytest.fixture
def settings(world: BlueskyWorld) -> Settings:
    return dataclasses.replace(Settings.from_env(world.bot_env(), dotenv_path=None), lookup_window=3.0,
                               backoff_base=0.01)


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "data") as st:
        yield st


@pytest.fixture
def client(settings, store):
    c = BlueskyClient(settings, store, sleep=lambda s: None)
    yield c
    c.close()


def unique(text: str) -> str:
    return f"{text} {uuid.uuid4().hex[:8]}"


def _record(world: BlueskyWorld, uri: str) -> dict:
    did, collection, rkey = uri[len("at://"):].split("/")
    answer = world._xrpc.get("/com.atproto.repo.getRecord", params={"repo": did, "collection": collection, "rkey": rkey})
    return answer.raise_for_status().json()["value"]


# --- reading a target ---------------------------------------------------------------------------
def test_resolve_and_fetch_every_post_in_pages(world, settings):
    spy = Transport()
    c = BlueskyClient(settings, sleep=lambda s: None, transport=spy)
    account = c.resolve("@Trump.test")
    assert account["id"] == world.did(world.target) and account["username"] == world.target
    posts = c.fetch_posts(account["id"], username=account["username"])
    assert spy.calls.count("app.bsky.feed.getAuthorFeed") >= 3  # 300 posts, 100 a page
    assert len(posts) == SEED_POSTS
    assert [p["text"] for p in posts] == [p["text"] for p in seed_posts()]  # oldest first
    assert len({p["id"] for p in posts}) == SEED_POSTS
    assert all(p["id"].startswith(f"at://{account['id']}/app.bsky.feed.post/") for p in posts)
    assert posts[0]["created_at"] == "2016-09-06T17:08:51.000000Z"
    assert {p["kind"] for p in posts} == {"post"} and {p["user"] for p in posts} == {world.target}
    assert c.fetch_posts(account["id"], limit=5) == posts[-5:]
    c.close()


def test_fetch_since_the_newest_returns_only_newer(world, client):
    did = world.did(world.target)
    newest = client.fetch_posts(did, username=world.target)[-1]["id"]
    assert client.fetch_posts(did, since_id=newest, username=world.target) == []
    new = [world.post_as(world.target, unique("new post one")), world.post_as(world.target, unique("new post two"))]
    try:
        got = client.fetch_posts(did, since_id=newest, username=world.target)
        assert [p["id"] for p in got] == new
        assert client.fetch_posts(did, since_id=new[0], username=world.target)[0]["id"] == new[1]
    finally:
        for uri in new:
            world.network.control("POST", "/delete", {"handle": world.target, "uri": uri})
        world.settle()


def test_fetch_leaves_out_reposts_and_replies_to_others(world, client, settings):
    did = world.did(world.target)
    newest = client.fetch_posts(did, username=world.target)[-1]["id"]
    fan_post = world.post_as(world.fan, unique("a fan's post"))
    made = [world.network.control("POST", "/repost", {"handle": world.target, "uri": fan_post})["uri"],
            world.post_as(world.target, unique("a reply to the fan"), reply_to=fan_post),
            world.post_as(world.target, unique("thread start"))]
    made.append(world.post_as(world.target, unique("thread continued"), reply_to=made[2]))
    world.settle()
    try:
        got = client.fetch_posts(did, since_id=newest, username=world.target)
        assert [(p["id"], p["kind"]) for p in got] == [(made[2], "post"), (made[3], "reply")]
        with_replies = BlueskyClient(dataclasses.replace(settings, include_replies=True))
        assert [p["id"] for p in with_replies.fetch_posts(did, since_id=newest)] == made[1:]
        with_replies.close()
    finally:
        for uri in [*made, fan_post]:
            owner = world.fan if uri == fan_post else world.target
            world.network.control("POST", "/delete", {"handle": owner, "uri": uri})
        world.settle()


def test_unknown_handle(client):
    with pytest.raises(AccountUnavailable) as caught:
        client.resolve("nobody-at-all.test")
    assert caught.value.reason == "unknown" and "does not exist on Bluesky" in str(caught.value)
    with pytest.raises(AccountUnavailable):
        client.fetch_posts("did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", username="gone.test")


def test_reads_give_up_after_max_attempts(settings):
    spy = Transport()
    spy.fail["app.bsky.actor.getProfile"] = [(500, {})] * 10
    spy.fail["com.atproto.identity.resolveHandle"] = ["unsent"]
    waits: list[float] = []
    c = BlueskyClient(settings, sleep=waits.append, transport=spy)
    with pytest.raises(ServiceUnavailable) as caught:
        c.resolve("trump.test")
    assert spy.calls.count("app.bsky.actor.getProfile") == settings.max_attempts
    assert "\n" not in str(caught.value) and len(waits) == 1 + settings.max_attempts - 1
    c.close()


def test_reads_retry_5xx_then_succeed(world, settings):
    spy = Transport()
    spy.fail["app.bsky.actor.getProfile"] = [(503, {}), (502, {})]
    waits: list[float] = []
    c = BlueskyClient(settings, sleep=waits.append, transport=spy)
    assert c.resolve(world.target)["id"] == world.did(world.target)
    assert spy.calls.count("app.bsky.actor.getProfile") == 3 and len(waits) == 2
    c.close()


def test_rate_limit_carries_the_reset_time(settings):
    spy = Transport()
    spy.fail["com.atproto.identity.resolveHandle"] = [(429, {"ratelimit-reset": "1900000000"})]
    c = BlueskyClient(settings, transport=spy)
    with pytest.raises(RateLimited) as caught:
        c.resolve("trump.test")
    assert caught.value.reset_at == 1900000000
    c.close()


# --- posting ---------------------------------------------------------------------------------
def test_post_lands_on_the_pds_without_facets_and_pings_nobody(world, client):
    text = unique("Great talk with @trump.test today, see https://example.com")
    uri = client.post(text)
    assert uri.startswith(f"at://{world.did(world.bot_username)}/app.bsky.feed.post/")
    assert [p for p in world.bot_posts() if p["id"] == uri] == [{"id": uri, "text": text, "in_reply_to_id": None}]
    record = _record(world, uri)
    assert record["text"] == text and "facets" not in record
    world.settle()
    notes = world.network.control("GET", "/notifications", handle=world.target)["notifications"]
    assert not [n for n in notes if n["uri"] == uri]  # the "@trump.test" in the text pinged nobody
    assert client.find_own_post(text) == uri


def test_reply_threads_with_root_and_parent(world, client):
    root = world.mention(unique("first"))
    first = client.reply(unique("bot answer"), root)
    assert _record(world, first)["reply"]["root"]["uri"] == root
    assert _record(world, first)["reply"]["parent"]["uri"] == root
    world.settle()
    again = world.mention(unique("and again"), reply_to=first)
    second = client.reply(unique("bot answer two"), again)
    reply = _record(world, second)["reply"]
    assert reply["root"]["uri"] == root and reply["parent"]["uri"] == again
    own = {p["id"]: p for p in client.recent_own_posts()}
    assert own[second]["conversation_id"] == root and own[second]["in_reply_to_id"] == again


def test_reply_to_a_deleted_post_is_refused(world, client):
    gone = world.mention(unique("soon gone"))
    world.network.control("POST", "/delete", {"handle": world.fan, "uri": gone})
    before = len(world.bot_posts())
    with pytest.raises(PostRefused):
        client.reply(unique("too late"), gone)
    assert len(world.bot_posts()) == before


def test_mentions_with_position_author_and_conversation(world, client):
    client.me()
    start = client.mentions()
    since = max([m["position"] for m in start], default=None)
    root = world.mention(unique("what do you think"))
    found = client.mentions(since=since)
    assert [m["id"] for m in found] == [root]
    m = found[0]
    assert isinstance(m["position"], int) and (since is None or m["position"] > since)
    assert m["author"] == world.fan and m["author_id"] == world.did(world.fan)
    assert m["conversation_id"] == root and m["in_reply_to_id"] is None
    assert m["created_at"].endswith("Z") and world.bot_username in m["text"]
    bot_reply = client.reply(unique("an answer"), root)
    world.settle()
    answer = world.mention(unique("answer to the answer"), reply_to=bot_reply)
    newer = client.mentions(since=m["position"])
    assert [x["id"] for x in newer] == [answer]
    assert newer[0]["conversation_id"] == root and newer[0]["in_reply_to_id"] == bot_reply
    assert client.mentions(since=newer[0]["position"]) == []


def test_fits_at_the_300_grapheme_edge(client):
    assert client.fits("a" * 300) and not client.fits("a" * 301)
    accented = "e\u0301" * 300  # 600 code points, 300 graphemes
    assert graphemes(accented) == 300 and client.fits(accented) and not client.fits(accented + "x")
    family = "\U0001F468\u200D\U0001F469\u200D\U0001F467"  # one grapheme, 18 bytes
    assert graphemes(family * 3) == 3 and graphemes("\U0001F1E9\U0001F1EA\U0001F1EB\U0001F1F7") == 2
    assert not client.fits(family * 200)  # 200 graphemes but 3,600 bytes
    # the PDS agrees: 300 graphemes are taken, 301 refused as a post (not as a bot failure)
    assert client.post(accented)
    with pytest.raises(PostRefused):
        client.post(accented + "x")


def test_delete(world, client):
    uri = client.post(unique("to be deleted"))
    assert client.delete(uri) is True
    assert uri not in {p["id"] for p in world.bot_posts()}
    assert client.delete(uri) is False


# --- the session ----------------------------------------------------------------------------
def sessions(world: BlueskyWorld) -> int:
    return world.network.control("GET", "/sessions", did=world.did(world.bot_username))["sessions"]


def test_session_is_stored_and_reused(world, settings, store):
    before = sessions(world)
    first = BlueskyClient(settings, store)
    assert first.me() == {"id": world.did(world.bot_username), "username": world.bot_username}
    assert sessions(world) == before + 1
    assert store.get_cursor(SESSION_CURSOR)
    assert settings.bluesky_app_password not in store.get_cursor(SESSION_CURSOR)
    first.close()

    spy = Transport()
    second = BlueskyClient(settings, store, transport=spy)
    uri = second.post(unique("posted on a reused session"))
    assert "com.atproto.server.createSession" not in spy.calls
    assert sessions(world) == before + 1  # the server saw no new login
    assert uri in {p["id"] for p in world.bot_posts()}
    second.close()

    store.set_cursor(SESSION_CURSOR, "damaged")  # an unusable session: one login with the password
    third = BlueskyClient(settings, store, transport=spy)
    third.me()
    assert spy.calls.count("com.atproto.server.createSession") == 1 and sessions(world) == before + 2
    third.close()


def test_wrong_password_is_rejected_without_leaking_it(settings, store):
    bad = dataclasses.replace(settings, bluesky_app_password="wrong-pass-1234")
    c = BlueskyClient(bad, store)
    with pytest.raises(CredentialsRejected) as caught:
        c.post("never sent")
    assert "wrong-pass-1234" not in str(caught.value) and "\n" not in str(caught.value)
    assert store.get_cursor(SESSION_CURSOR) is None


def test_bot_label_is_added_and_the_profile_kept(world, settings, store):
    raw = Client(base_url=world.pds)
    raw.login(world.bot_username, world.network.accounts[world.bot_username]["app_password"])
    did = world.did(world.bot_username)
    raw.com.atproto.repo.put_record({"repo": did, "collection": "app.bsky.actor.profile", "rkey": "self",
                                     "record": {"$type": "app.bsky.actor.profile", "displayName": "Parody bot",
                                                "description": "not the real one"}})
    raw.request.close()
    c = BlueskyClient(settings, store)
    c.me()
    profile = _record(world, f"at://{did}/app.bsky.actor.profile/self")
    assert profile["displayName"] == "Parody bot" and profile["description"] == "not the real one"
    assert [v["val"] for v in profile["labels"]["values"]] == ["bot"]
    c.close()
    again = BlueskyClient(settings, store)  # already labelled: left alone, no second label
    again.me()
    assert [v["val"] for v in _record(world, f"at://{did}/app.bsky.actor.profile/self")["labels"]["values"]] == ["bot"]
    again.close()


# --- lost answers -----------------------------------------------------------------------------
def copies(world: BlueskyWorld, text: str) -> int:
    return sum(1 for p in world.bot_posts() if p["text"] == text)


def test_a_lost_answer_does_not_double_post(world, settings, store):
    spy = Transport()
    c = BlueskyClient(settings, store, sleep=lambda s: None, transport=spy)
    c.me()
    text = unique("the answer to this one gets lost")
    spy.fail["com.atproto.repo.createRecord"] = ["lost"]
    uri = c.post(text)
    assert copies(world, text) == 1 and uri in {p["id"] for p in world.bot_posts()}
    assert spy.calls.count("com.atproto.repo.createRecord") == 1  # found, not sent again
    c.close()


def test_a_timeout_before_sending_is_retried_once_under_the_same_key(world, settings, store):
    spy = Transport()
    c = BlueskyClient(settings, store, sleep=lambda s: None, transport=spy)
    c.me()
    text = unique("this one times out first")
    spy.fail["com.atproto.repo.createRecord"] = ["unsent", "lost"]  # then the retry's answer is lost too
    uri = c.post(text)
    assert copies(world, text) == 1 and uri in {p["id"] for p in world.bot_posts()}
    c.close()


def test_a_post_that_cannot_be_confirmed_is_given_up(world, settings, store):
    spy = Transport()
    waits: list[float] = []
    c = BlueskyClient(settings, store, sleep=waits.append, transport=spy)
    c.me()
    text = unique("nothing about this one is known")
    spy.fail["com.atproto.repo.createRecord"] = ["lost"] * 10
    spy.fail["com.atproto.repo.getRecord"] = ["unsent"] * 200
    with pytest.raises(OutcomeUnknown):
        c.post(text)
    assert copies(world, text) == 1  # every retry reused the record key: it landed once
    assert sum(waits) >= settings.lookup_window
    c.close()


def test_the_record_key_comes_from_the_slot_so_a_restart_finds_the_post_and_never_resends(world, settings, store):
    key = store.record_bot_post({"kind": "post", "text": "x", "status": "intent"})
    text = unique("Sent under the key of its slot")
    first = BlueskyClient(settings, store, sleep=lambda s: None)
    uri = first.post(text, key=key)
    assert uri.rsplit("/", 1)[-1] == tid_for(key)
    first.close()
    again = BlueskyClient(settings, store, sleep=lambda s: None)  # a restarted daemon
    # found by its key even when the text no longer compares (e.g. an edited record)
    assert again.find_own_post("some other text", key=key) == uri
    assert again.post(text, key=key) == uri  # sending it again under its key lands nothing new
    assert copies(world, text) == 1
    assert again.find_own_post("some other text", key=store.record_bot_post({"text": "y"})) is None
    again.close()
