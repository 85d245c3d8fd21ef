"""The sandbox speaks X API v2 as the live API does: checked with plain HTTP requests
(requests + OAuth 1.0a from requests-oauthlib, as tweepy signs them)."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import unicodedata

import pytest
import requests
from requests_oauthlib import OAuth1

from bot.sandbox.x import (
    BOT_USER_ID,
    BOT_USERNAME,
    EMPTY_USERNAME,
    FAN_USERNAME,
    PROTECTED_USERNAME,
    SANDBOX_ACCESS_TOKEN,
    SANDBOX_ACCESS_TOKEN_SECRET,
    SANDBOX_BEARER_TOKEN,
    SANDBOX_CONSUMER_KEY,
    SANDBOX_CONSUMER_SECRET,
    SUSPENDED_USERNAME,
    is_loopback,
    start_sandbox,
)
from bot.platforms.x import XClient

from tests.bot_helpers import REPO, on_network_address

OAUTH = OAuth1(SANDBOX_CONSUMER_KEY, SANDBOX_CONSUMER_SECRET, SANDBOX_ACCESS_TOKEN, SANDBOX_ACCESS_TOKEN_SECRET)
BEARER = {"Authorization": f"Bearer {SANDBOX_BEARER_TOKEN}"}
TRUMP = "25073877"


def get(sandbox, path, **params):
    return requests.get(sandbox.url + path, params=params, headers=BEARER, timeout=5)


def post(sandbox, text, reply_to=None):
    body = {"text": text}
    if reply_to is not None:
        body["reply"] = {"in_reply_to_tweet_id": reply_to}
    return requests.post(sandbox.url + "/2/tweets", json=body, auth=OAUTH, timeout=5)


def ids(page):
    return [t["id"] for t in page.get("data", [])]


TCO = r"https://t\.co/[A-Za-z0-9]{10}"
REPLY_REFUSED = {"detail": "You attempted to reply to a Tweet that is deleted or not visible to you.",
                 "type": "about:blank", "title": "Forbidden", "status": 403}


def test_user_lookup_shapes(sandbox):
    ok = get(sandbox, "/2/users/by/username/realDonaldTrump", **{"user.fields": "protected"})
    assert ok.status_code == 200
    assert ok.json() == {"data": {"id": TRUMP, "name": "realDonaldTrump", "username": "realDonaldTrump", "protected": False}}
    for limit_header in ("x-rate-limit-limit", "x-rate-limit-remaining", "x-rate-limit-reset"):
        assert ok.headers[limit_header].isdigit()
    missing = get(sandbox, "/2/users/by/username/giggggfbgfb")
    assert missing.status_code == 200  # X answers 200 with only `errors`
    assert missing.json() == {"errors": [{
        "value": "giggggfbgfb", "detail": "Could not find user with username: [giggggfbgfb].",
        "title": "Not Found Error", "resource_type": "user", "parameter": "username",
        "resource_id": "giggggfbgfb", "type": "https://api.twitter.com/2/problems/resource-not-found"}]}
    suspended = get(sandbox, f"/2/users/by/username/{SUSPENDED_USERNAME}").json()
    assert suspended["errors"][0]["detail"] == f"User has been suspended: [{SUSPENDED_USERNAME}]."
    private_id = get(sandbox, f"/2/users/by/username/{PROTECTED_USERNAME}").json()["data"]["id"]
    private = get(sandbox, f"/2/users/{private_id}/tweets").json()
    assert "data" not in private
    assert private["errors"][0]["type"] == "https://api.twitter.com/2/problems/not-authorized-for-resource"


def test_timeline_paging_shape(sandbox):
    first = get(sandbox, f"/2/users/{TRUMP}/tweets", max_results=5, **{"tweet.fields": "created_at"}).json()
    assert [sorted(t) for t in first["data"]] == [["created_at", "edit_history_tweet_ids", "id", "text"]] * 5
    meta = first["meta"]
    assert meta["result_count"] == 5 and meta["newest_id"] == first["data"][0]["id"]
    assert meta["oldest_id"] == first["data"][-1]["id"] and meta["next_token"]
    assert first["data"][0]["created_at"].endswith(".000Z")
    second = get(sandbox, f"/2/users/{TRUMP}/tweets", max_results=5, pagination_token=meta["next_token"]).json()
    assert int(second["data"][0]["id"]) < int(meta["oldest_id"])
    window = get(sandbox, f"/2/users/{TRUMP}/tweets", max_results=100, since_id=second["meta"]["oldest_id"],
                 until_id=meta["newest_id"]).json()
    assert window["meta"]["result_count"] == 8  # strictly between the two ids
    assert get(sandbox, f"/2/users/{TRUMP}/tweets", since_id=meta["newest_id"]).json() == {"meta": {"result_count": 0}}


def test_exclude_replies_cuts_reach_to_800(sandbox):
    seen, token = 0, None
    while True:
        params = {"max_results": 100, "exclude": "replies,retweets"}
        if token:
            params["pagination_token"] = token
        page = get(sandbox, f"/2/users/{TRUMP}/tweets", **params).json()
        seen += page["meta"]["result_count"]
        token = page["meta"].get("next_token")
        if not token:
            break
    assert 790 <= seen < 800  # the newest 800, less the replies among them


def test_invalid_parameters_get_invalid_request_bodies(sandbox):
    bad = get(sandbox, f"/2/users/{TRUMP}/tweets", max_results=0)
    assert bad.status_code == 400
    assert bad.json()["errors"][0]["message"] == "The `max_results` query parameter value [0] is not between 5 and 100"
    assert bad.json()["type"] == "https://api.twitter.com/2/problems/invalid-request"
    assert get(sandbox, f"/2/users/{TRUMP}/tweets", pagination_token="garbage!").status_code == 400
    assert get(sandbox, f"/2/users/{TRUMP}/tweets", **{"tweet.fields": "nonsense"}).status_code == 400
    assert get(sandbox, f"/2/users/{TRUMP}/tweets", exclude="likes").status_code == 400


def test_authentication(sandbox):
    me = requests.get(sandbox.url + "/2/users/me", auth=OAUTH, timeout=5)
    assert me.status_code == 200 and me.json()["data"]["id"] == BOT_USER_ID
    assert me.headers["x-access-level"] == "read-write"
    wrong = OAuth1(SANDBOX_CONSUMER_KEY, "wrong", SANDBOX_ACCESS_TOKEN, SANDBOX_ACCESS_TOKEN_SECRET)
    refused = requests.get(sandbox.url + "/2/users/me", auth=wrong, timeout=5)
    assert refused.status_code == 401
    assert refused.json() == {"title": "Unauthorized", "type": "about:blank", "status": 401, "detail": "Unauthorized"}
    assert requests.get(sandbox.url + "/2/users/me", timeout=5).status_code == 401
    assert requests.get(sandbox.url + "/2/users/me", headers={"Authorization": "Bearer None"}, timeout=5).status_code == 401
    app_only = requests.get(sandbox.url + "/2/users/me", headers=BEARER, timeout=5)
    assert app_only.status_code == 403 and app_only.json()["title"] == "Unsupported Authentication"
    # A signed request cannot be replayed (same nonce and timestamp).
    prepared = requests.Request("GET", sandbox.url + "/2/users/me", auth=OAUTH).prepare()
    with requests.Session() as session:
        assert session.send(prepared, timeout=5).status_code == 200
        assert session.send(prepared, timeout=5).status_code == 401
    # The signature covers the query string: tampering with it is caught.
    signed = requests.Request("GET", sandbox.url + f"/2/users/{TRUMP}/tweets?max_results=5", auth=OAUTH).prepare()
    signed.url = signed.url.replace("max_results=5", "max_results=6")
    with requests.Session() as session:
        assert session.send(signed, timeout=5).status_code == 401


def test_create_and_delete(sandbox):
    created = requests.post(sandbox.url + "/2/tweets", json={"text": "Test Tweet"}, auth=OAUTH, timeout=5)
    assert created.status_code == 201
    assert created.json() == {"data": {"id": created.json()["data"]["id"], "text": "Test Tweet"}}
    again = requests.post(sandbox.url + "/2/tweets", json={"text": "Test Tweet"}, auth=OAUTH, timeout=5)
    assert again.status_code == 403
    assert again.json() == {"detail": "You are not allowed to create a Tweet with duplicate content.",
                            "type": "about:blank", "title": "Forbidden", "status": 403}
    too_long = requests.post(sandbox.url + "/2/tweets", json={"text": "é" * 281}, auth=OAUTH, timeout=5)
    assert too_long.status_code == 400 and "too long" in too_long.json()["errors"][0]["message"]
    fits = requests.post(sandbox.url + "/2/tweets", json={"text": "https://example.com/" + "a" * 200 + " " + "b" * 256},
                         auth=OAUTH, timeout=5)
    assert fits.status_code == 201  # a URL counts 23, whatever its length
    app_only = requests.post(sandbox.url + "/2/tweets", json={"text": "x"}, headers=BEARER, timeout=5)
    assert app_only.status_code == 403
    post_id = created.json()["data"]["id"]
    deleted = requests.delete(sandbox.url + f"/2/tweets/{post_id}", auth=OAUTH, timeout=5)
    assert deleted.status_code == 200 and deleted.json() == {"data": {"deleted": True}}
    not_ours = requests.delete(sandbox.url + f"/2/tweets/{sandbox.posts_by('realDonaldTrump')[0]['id']}", auth=OAUTH, timeout=5)
    assert not_ours.status_code == 403


def test_real_rate_limit_window(sandbox):
    remaining = []
    for _ in range(75):  # GET /2/users/me allows 75 requests a window
        answer = requests.get(sandbox.url + "/2/users/me", auth=OAUTH, timeout=5)
        remaining.append(int(answer.headers["x-rate-limit-remaining"]))
    assert remaining == list(range(74, -1, -1))
    limited = requests.get(sandbox.url + "/2/users/me", auth=OAUTH, timeout=5)
    assert limited.status_code == 429
    assert limited.json() == {"title": "Too Many Requests", "detail": "Too Many Requests", "type": "about:blank", "status": 429}
    assert 0 < int(limited.headers["x-rate-limit-reset"]) - time.time() <= 900


def test_mentions_endpoint_and_admin_http(sandbox):
    added = requests.post(sandbox.url + "/sandbox/mentions", json={"text": "hi bot", "author": "someone"}, timeout=5)
    assert added.status_code == 201
    mention = added.json()["data"]
    assert mention["text"] == "@xmimic_bot hi bot" and mention["user"] == "someone"
    page = get(sandbox, f"/2/users/{BOT_USER_ID}/mentions", expansions="author_id",
               **{"tweet.fields": "author_id,conversation_id"}).json()
    assert [t["id"] for t in page["data"]] == [mention["id"]]
    assert page["includes"]["users"][0]["username"] == "someone"
    fault = requests.post(sandbox.url + "/sandbox/faults", json={"kind": "503", "count": 1}, timeout=5)
    assert fault.status_code == 201
    assert get(sandbox, f"/2/users/{BOT_USER_ID}/mentions").status_code == 503
    assert get(sandbox, f"/2/users/{BOT_USER_ID}/mentions").status_code == 200
    assert requests.post(sandbox.url + "/sandbox/faults", json={"kind": "nonsense"}, timeout=5).status_code == 400
    posts = requests.get(sandbox.url + "/sandbox/posts", params={"username": "someone"}, timeout=5).json()["data"]
    assert [p["id"] for p in posts] == [mention["id"]]


def test_empty_account_and_unknown_route(sandbox):
    user_id = get(sandbox, f"/2/users/by/username/{EMPTY_USERNAME}").json()["data"]["id"]
    assert get(sandbox, f"/2/users/{user_id}/tweets").json() == {"meta": {"result_count": 0}}
    assert get(sandbox, "/2/nothing/here").status_code == 404
    assert get(sandbox, "/1.1/statuses/user_timeline.json").status_code == 404


def test_cli_serves_until_sigterm(sleeps):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "bot", "sandbox", "--port", "0"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = [proc.stdout.readline() for _ in range(7)]
        values = dict(line.strip().split("=", 1) for line in lines[1:])
        client = XClient(sleep=sleeps.append, consumer_key=values["TWITTER_CONSUMER_KEY"],
                         consumer_secret=values["TWITTER_CONSUMER_SECRET"], access_token=values["TWITTER_ACCESS_TOKEN"],
                         access_token_secret=values["TWITTER_ACCESS_TOKEN_SECRET"],
                         api_base_url=values["TWITTER_API_BASE_URL"])
        assert client.me()["id"] == BOT_USER_ID
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_cli_port_in_use_is_one_line_error():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        done = subprocess.run([sys.executable, "-m", "bot", "sandbox", "--port", str(port)], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert done.stderr.startswith("error: cannot start the sandbox") and done.stderr.count("\n") == 1
    assert "Traceback" not in done.stderr


# --- behaviour the bot depends on, as X has it ------------------------------------------------
def test_timeline_lag_hides_new_posts_but_not_from_the_duplicate_check():
    with start_sandbox(seed=None, timeline_lag=30) as sandbox:
        fan_id = get(sandbox, f"/2/users/by/username/{FAN_USERNAME}").json()["data"]["id"]
        mention = sandbox.add_mention("hello bot")
        created = post(sandbox, "Made just now", reply_to=mention["id"])
        assert created.status_code == 201
        new_id = created.json()["data"]["id"]
        # Neither the author's timeline nor the replied-to account's mentions show it yet...
        assert get(sandbox, f"/2/users/{BOT_USER_ID}/tweets").json() == {"meta": {"result_count": 0}}
        assert new_id not in ids(get(sandbox, f"/2/users/{fan_id}/mentions").json())
        # ...but X's duplicate check already sees it, and so does the admin view.
        assert post(sandbox, "Made just now", reply_to=mention["id"]).status_code == 403
        assert [p["id"] for p in sandbox.posts_by(BOT_USERNAME)] == [new_id]
        # Mentions made by others (not through POST /2/tweets) are not delayed.
        assert ids(get(sandbox, f"/2/users/{BOT_USER_ID}/mentions").json()) == [mention["id"]]

        # The lag is read at query time: lifting it (admin HTTP) shows the post at once.
        lifted = requests.post(sandbox.url + "/sandbox/config", json={"timeline_lag": 0}, timeout=5)
        assert lifted.status_code == 200 and lifted.json() == {"data": {"timeline_lag": 0.0}}
        assert ids(get(sandbox, f"/2/users/{BOT_USER_ID}/tweets").json()) == [new_id]
        assert new_id in ids(get(sandbox, f"/2/users/{fan_id}/mentions").json())

        # A short lag passes with time (new_id is already older than it).
        time.sleep(0.35)
        sandbox.set_timeline_lag(0.3)
        later = post(sandbox, "A second post").json()["data"]["id"]
        assert ids(get(sandbox, f"/2/users/{BOT_USER_ID}/tweets").json()) == [new_id]
        time.sleep(0.4)
        assert ids(get(sandbox, f"/2/users/{BOT_USER_ID}/tweets").json()) == [later, new_id]
        assert requests.post(sandbox.url + "/sandbox/config", json={"timeline_lag": -1}, timeout=5).status_code == 400


def test_links_become_tco_links_that_count_23(sandbox):
    text = "Read yang2020.com and https://www.example.org/a/very/long/path?x=1&y=2, or www.example.net. Mail bob@example.com, e.g. end.It"
    created = post(sandbox, text)
    assert created.status_code == 201
    answered = created.json()["data"]["text"]
    assert re.fullmatch(rf"Read {TCO} and {TCO}, or {TCO}\. Mail bob@example\.com, e\.g\. end\.It", answered)
    assert len(set(re.findall(TCO, answered))) == 3  # each link its own t.co address
    # Stored and served as answered.
    assert get(sandbox, f"/2/users/{BOT_USER_ID}/tweets").json()["data"][0]["text"] == answered
    assert sandbox.posts_by(BOT_USERNAME)[-1]["text"] == answered
    # A bare domain counts 23, whatever its own length: 257 + 1 + 23 = 281 is too long...
    short_domain = post(sandbox, "x" * 257 + " example.com")
    assert short_domain.status_code == 400 and "too long" in short_domain.json()["errors"][0]["message"]
    # ...and 256 + 1 + 23 = 280 fits, though the text itself is longer.
    assert post(sandbox, "y" * 256 + " a-much-much-much-longer-domain-name.com").status_code == 201


def test_duplicate_check_compares_normalized_text(sandbox):
    assert post(sandbox, "Tom & Jerry at https://example.com/a, Café").status_code == 201
    twins = [
        "Tom & Jerry  at\n https://other.example.org/b, Café ",  # whitespace, another link
        "Tom & Jerry at example.net, Café",  # a bare domain is a t.co link too
        unicodedata.normalize("NFD", "Tom & Jerry at https://example.com/a, Café"),  # decomposed é
    ]
    for twin in twins:
        refused = post(sandbox, twin)
        assert refused.status_code == 403, twin
        assert refused.json() == {"detail": "You are not allowed to create a Tweet with duplicate content.",
                                  "type": "about:blank", "title": "Forbidden", "status": 403}
    assert post(sandbox, "Tom & Jerry at https://example.com/a, Cafe").status_code == 201  # other words
    assert post(sandbox, "Tom &amp; Jerry at https://example.com/a, Café").status_code == 201  # literal "&amp;"


def test_replies_to_deleted_or_hidden_posts_are_refused(sandbox):
    deleted, hidden, visible = (sandbox.add_mention(t) for t in ("one", "two", "three"))
    before = ids(get(sandbox, f"/2/users/{BOT_USER_ID}/mentions").json())
    assert before == [visible["id"], hidden["id"], deleted["id"]]
    removed = requests.delete(sandbox.url + f"/sandbox/posts/{deleted['id']}", timeout=5)
    assert removed.status_code == 200 and removed.json()["data"]["deleted"] is True
    sandbox.hide_post(hidden["id"])  # e.g. its author blocked the bot
    # Neither shows in mentions any more; a reply to either is refused with X's body.
    assert ids(get(sandbox, f"/2/users/{BOT_USER_ID}/mentions").json()) == [visible["id"]]
    for gone in (deleted, hidden):
        refused = post(sandbox, "a reply", reply_to=gone["id"])
        assert refused.status_code == 403 and refused.json() == REPLY_REFUSED
    assert post(sandbox, "a reply", reply_to=visible["id"]).status_code == 201
    # Deleting the bot's own reply through the admin route works the same way.
    own = post(sandbox, "replied again", reply_to=visible["id"]).json()["data"]["id"]
    sandbox.delete_post(own)
    assert post(sandbox, "to my deleted post", reply_to=own).json() == REPLY_REFUSED
    hide = requests.post(sandbox.url + f"/sandbox/posts/{visible['id']}/hide", timeout=5)
    assert hide.status_code == 200 and hide.json()["data"]["hidden"] is True
    assert post(sandbox, "once more", reply_to=visible["id"]).json() == REPLY_REFUSED
    assert requests.delete(sandbox.url + "/sandbox/posts/12345", timeout=5).status_code == 404
    with pytest.raises(KeyError):
        sandbox.hide_post("12345")


def test_lost_answer_after_the_post_was_made(sandbox):
    sandbox.inject("lost", method="POST", path="/2/tweets")
    with pytest.raises(requests.ConnectionError) as dropped:
        post(sandbox, "Did this land?")
    assert "RemoteDisconnected" in repr(dropped.value)
    # It did land: X has it, and sending it again is a duplicate.
    assert [p["text"] for p in sandbox.posts_by(BOT_USERNAME)] == ["Did this land?"]
    assert sandbox.request_log[-1] == ("POST", "/2/tweets", 0)
    assert post(sandbox, "Did this land?").status_code == 403
    # "disconnect" still drops the request before any work is done.
    sandbox.inject("disconnect", method="POST", path="/2/tweets")
    with pytest.raises(requests.ConnectionError):
        post(sandbox, "Never made")
    assert [p["text"] for p in sandbox.posts_by(BOT_USERNAME)] == ["Did this land?"]


def test_write_forbidden_for_a_read_only_app(sandbox):
    sandbox.inject("write_forbidden", count=2)  # default: the write endpoints
    refused = post(sandbox, "Let me write")
    assert refused.status_code == 403 and refused.headers["x-access-level"] == "read"
    assert refused.json() == {
        "title": "Forbidden", "type": "https://api.twitter.com/2/problems/oauth1-permissions", "status": 403,
        "detail": "Your client app is not configured with the appropriate oauth1 app permissions for this endpoint.",
    }
    assert sandbox.posts_by(BOT_USERNAME) == []
    assert get(sandbox, f"/2/users/{TRUMP}/tweets").status_code == 200  # reads still work
    assert requests.delete(sandbox.url + "/2/tweets/1", auth=OAUTH, timeout=5).status_code == 403
    assert post(sandbox, "Let me write").status_code == 201  # both faults used up


def test_rate_limit_reset_hours_ahead(sandbox):
    sandbox.inject("429", count=2, path="/2/users/by/", reset_in=6 * 3600)
    for _ in range(2):
        limited = get(sandbox, "/2/users/by/username/realDonaldTrump")
        assert limited.status_code == 429 and limited.json()["title"] == "Too Many Requests"
        assert 6 * 3600 - 5 <= int(limited.headers["x-rate-limit-reset"]) - time.time() <= 6 * 3600
    assert get(sandbox, "/2/users/by/username/realDonaldTrump").status_code == 200


# --- security: the sandbox is for this machine ------------------------------------------------
def test_loopback_addresses():
    for host in ("127.0.0.1", "127.8.9.10", "localhost", "::1", "[::1]", "::ffff:127.0.0.1"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "", "::", "192.0.2.2", "10.1.2.3", "::ffff:10.0.0.1", "example.com"):
        assert not is_loopback(host), host


def test_cli_refuses_a_public_host_without_public():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "bot", "sandbox", "--host", "0.0.0.0", "--port", "0"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert done.stderr.startswith("error: --host 0.0.0.0") and done.stderr.count("\n") == 1
    assert "--public" in done.stderr and done.stdout == ""


def test_admin_routes_answer_only_loopback_clients():
    sandbox = on_network_address(start_sandbox)
    with sandbox:
        # Connecting to our own network address, the peer address is that address, not loopback.
        for method, path, body in (("GET", "/sandbox/posts?username=sandbox_fan", None),
                                   ("POST", "/sandbox/faults", {"kind": "503", "count": 5}),
                                   ("POST", "/sandbox/mentions", {"text": "from outside"}),
                                   ("POST", "/sandbox/config", {"timeline_lag": 99})):
            refused = requests.request(method, sandbox.url + path, json=body, timeout=5)
            assert refused.status_code == 404, path
            assert refused.json()["detail"] == "Sorry, that page does not exist."
        # Nothing took effect (no 503 fault, no mention, no lag); the API still answers everyone.
        assert get(sandbox, f"/2/users/{BOT_USER_ID}/mentions").json() == {"meta": {"result_count": 0}}
        assert sandbox.posts_by(FAN_USERNAME) == []
        created = post(sandbox, "Seen at once").json()["data"]["id"]
        assert ids(get(sandbox, f"/2/users/{BOT_USER_ID}/tweets").json()) == [created]
    # (From loopback the same routes work: every other test here uses them.)
