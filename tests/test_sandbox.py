"""The sandbox speaks X API v2 as the live API does: checked with plain HTTP requests
(requests + OAuth 1.0a from requests-oauthlib, as tweepy signs them)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import requests
from requests_oauthlib import OAuth1

from bot.sandbox import (
    BOT_USER_ID,
    EMPTY_USERNAME,
    PROTECTED_USERNAME,
    SANDBOX_ACCESS_TOKEN,
    SANDBOX_ACCESS_TOKEN_SECRET,
    SANDBOX_BEARER_TOKEN,
    SANDBOX_CONSUMER_KEY,
    SANDBOX_CONSUMER_SECRET,
    SUSPENDED_USERNAME,
)
from bot.xclient import XClient

from tests.bot_helpers import REPO

OAUTH = OAuth1(SANDBOX_CONSUMER_KEY, SANDBOX_CONSUMER_SECRET, SANDBOX_ACCESS_TOKEN, SANDBOX_ACCESS_TOKEN_SECRET)
BEARER = {"Authorization": f"Bearer {SANDBOX_BEARER_TOKEN}"}
TRUMP = "25073877"


def get(sandbox, path, **params):
    return requests.get(sandbox.url + path, params=params, headers=BEARER, timeout=5)


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
