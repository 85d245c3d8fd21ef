"""The admin CLI against the sandbox over real HTTP and a real store: exit codes,
one-line errors, stable --json output, dry runs that send nothing."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bot.cli import build_parser, main
from bot.sandbox.x import BOT_USERNAME, PROTECTED_USERNAME, SAMPLE_DIR
from bot.store import Store
from tests.bot_helpers import REPO, bot_env, register_model, tiny_base_path  # noqa: F401

TARGET = "realDonaldTrump"


@pytest.fixture
def ready(env, tmp_path, tiny_base_path):
    """A target with its posts fetched and a model registered."""
    assert main(["targets", "add", TARGET]) == 0
    assert main(["fetch"]) == 0
    with Store(tmp_path / "data") as store:
        register_model(store, TARGET, tiny_base_path)
    return tmp_path / "data"


def test_every_command_has_help(capsys):
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    for name in ["targets", "fetch", "import", "train", "generate", "check", "post", "replies", "status", "sandbox", "run"]:
        assert name in commands
        with pytest.raises(SystemExit) as exit_:
            main([name, "--help"])
        assert exit_.value.code == 0
    assert "--dry-run" in capsys.readouterr().out


def test_targets_add_list_remove_and_clear_errors(env, capsys, sandbox):
    assert main(["targets", "add", "@realdonaldtrump", "--weight", "2"]) == 0
    assert "added @realDonaldTrump" in capsys.readouterr().out  # X's spelling of the handle
    assert main(["targets", "add", "no_such_user_x"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "@no_such_user_x does not exist" in err
    assert main(["targets", "add", PROTECTED_USERNAME]) == 1
    assert "protected" in capsys.readouterr().err
    assert main(["targets", "add", "bad handle!"]) == 1
    assert main(["targets", "add", "Importee", "--import", str(SAMPLE_DIR / "realDonaldTrump.jsonl.gz")]) == 1
    assert "holds posts of @realDonaldTrump" in capsys.readouterr().err  # nothing half-stored
    capsys.readouterr()
    assert main(["targets", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["handle"], r["weight"], r["posts"], r["model_version"]) for r in rows] == [(TARGET, 2.0, 0, None)]
    assert main(["targets", "remove", TARGET]) == 0
    assert main(["targets", "remove", TARGET]) == 1
    capsys.readouterr()
    assert main(["targets", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_targets_add_with_import_needs_no_credentials(tmp_path, monkeypatch, capsys):
    for key in [k for k in os.environ if k.startswith(("TWITTER_", "BOT_"))]:
        monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BOT_DATA_DIR", str(tmp_path / "data"))
    assert main(["targets", "add", TARGET]) == 1
    assert "--import FILE" in capsys.readouterr().err
    assert main(["targets", "add", TARGET, "--import", str(SAMPLE_DIR / "realDonaldTrump.jsonl.gz")]) == 0
    with Store(tmp_path / "data") as store:
        assert store.post_count(TARGET) == 3200 and store.target(TARGET)


def test_generate_json_and_status_json(ready, capsys):
    assert main(["generate", TARGET, "-n", "8", "--seed", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"handle", "passed", "rejected", "candidates"}
    assert out["passed"] + out["rejected"] == len(out["candidates"]) >= 1
    for c in out["candidates"]:
        assert set(c) == {"text", "ok", "reasons", "final", "novelty", "resembles", "rank", "score"}
        assert c["ok"] == (not c["reasons"]) == (c["rank"] is not None)
        if c["ok"]:
            assert {"length", "length_gap", "target_quantile"} <= set(c["score"])
    ranks = [c["rank"] for c in out["candidates"] if c["ok"]]
    assert ranks == list(range(1, len(ranks) + 1))  # the order of the choice, #1 first
    assert main(["status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert set(status) == {"platform", "mode", "data_dir", "targets", "bot_posts", "mentions_handled", "jobs", "next_slot",
                           "posting_stopped", "paused_until", "cannot_post", "api_spend"}
    assert status["api_spend"]["today"]["calls"]["post_read"] > 0  # the fetch was counted
    assert status["mode"] == "live" and status["targets"][0]["model_version"] == 1
    assert main(["generate", "elonmusk"]) == 1
    assert "no model yet" in capsys.readouterr().err


def test_post_dry_run_sends_nothing_then_post_sends_one(ready, sandbox, capsys):
    gets = sandbox.count_requests("GET")
    assert main(["post", "--dry-run", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "dry-run" and out["target"] == TARGET and out["text"]
    assert sandbox.count_requests("POST") == 0 and sandbox.posts_by(BOT_USERNAME) == []
    assert sandbox.count_requests("GET") == gets  # nothing pending: no reconcile read either
    assert main(["post", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "posted"
    assert [p["id"] for p in sandbox.posts_by(BOT_USERNAME)] == [out["api_id"]]
    with Store(ready) as store:
        assert [e["status"] for e in store.bot_posts()] == ["dry-run", "posted"]


def test_no_credentials_means_dry_run(ready, tmp_path, monkeypatch, capsys, sandbox):
    for key in [k for k in os.environ if k.startswith("TWITTER_")]:
        monkeypatch.delenv(key)
    assert main(["post"]) == 0
    assert "dry-run" in capsys.readouterr().out
    assert main(["status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["mode"] == "dry-run"
    assert sandbox.count_requests("POST") == 0
    assert main(["replies", "--once"]) == 1
    assert "no X credentials" in capsys.readouterr().err


def test_replies_once_answers_each_mention_once(ready, sandbox, capsys):
    m = sandbox.add_mention("what would realDonaldTrump say about taxes")
    assert main(["replies", "--once"]) == 0
    assert "1 replied" in capsys.readouterr().out
    assert main(["replies", "--once"]) == 0
    assert "no new mentions" in capsys.readouterr().out
    replies = [p for p in sandbox.posts_by(BOT_USERNAME) if p["in_reply_to_id"]]
    assert [r["in_reply_to_id"] for r in replies] == [m["id"]]


def test_bad_setting_is_one_line_error_in_a_subprocess(tmp_path):
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("TWITTER_", "BOT_"))},
           "BOT_POST_INTERVAL": "soon", "BOT_DATA_DIR": str(tmp_path / "d"), "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "bot", "status"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr == "error: BOT_POST_INTERVAL must be a number of seconds, not 'soon'\n"
