"""The admin command line: `python -m bot COMMAND ...` (also installed as `xmimic`).

Each command is a small function `cmd_NAME(args) -> int` registered in `build_parser`;
user mistakes raise BotError/TrainerError and become one line on stderr.
"""
from __future__ import annotations

import argparse
import logging
import sys
from datetime import datetime, timezone
from pathlib import Path

from bot.errors import BotError
from trainer.errors import TrainerError


# --- commands -------------------------------------------------------------
# (each command group is added below by the module that owns it)


# --- sandbox / import (X client, store and ingest) ---
def cmd_sandbox(args: argparse.Namespace) -> int:
    """Serve the local X- or Mastodon-API-compatible sandbox until Ctrl-C or SIGTERM."""
    from bot.sandbox import mastodon, x
    from bot.settings import is_loopback

    # Its credentials are public, so serving it beyond this machine must be asked for.
    if not is_loopback(args.host) and not args.public:
        print(f"error: --host {args.host} is reachable from other machines; add --public to serve the "
              "sandbox (fixed, public credentials) there anyway", file=sys.stderr)
        return 2
    if args.platform == "mastodon":
        return mastodon.serve(port=args.port if args.port is not None else 8081, host=args.host)
    return x.serve(port=args.port if args.port is not None else 8080, host=args.host)


def cmd_import(args: argparse.Namespace) -> int:
    """Store an account's posts from a tweets.js, CSV or JSON Lines file."""
    from bot.ingest import import_posts
    from bot.settings import Settings
    from bot.store import Store

    settings = Settings.from_env()
    include_replies = settings.include_replies or args.include_replies
    with Store(settings.data_dir) as store:
        new, total = import_posts(
            store, args.handle, args.file, include_replies=include_replies, include_retweets=args.include_retweets
        )
    print(f"imported {new} new posts of @{args.handle.lstrip('@')} from {args.file} ({total} stored in all)")
    return 0


# --- check (originality and safety filter) ---
def cmd_check(args: argparse.Namespace) -> int:
    """Judge candidate posts, one a line on stdin, against an account's stored posts
    and the bot's own; print one JSON object a line, in input order."""
    import itertools
    import json

    from bot.content import DEFAULT_BANNED_WORDS_FILE, checks_from_store
    from bot.originality import index_from_store, judge
    from bot.settings import Settings
    from bot.store import Store
    from trainer.text import normalize

    s = Settings.from_env()  # flags not given: the same settings as the daemon's

    def pick(flag, setting):
        return setting if flag is None else flag

    with Store(pick(args.data_dir, s.data_dir)) as store:
        index = index_from_store(store, args.handle)
        checks = checks_from_store(
            store, now=datetime.now(timezone.utc), repeat_days=pick(args.repeat_days, s.repeat_days),
            mentions=pick(args.mentions, s.mentions_mode), min_words=pick(args.min_words, s.min_words),
            banned_words_file=pick(args.banned_words, s.banned_words_file) or DEFAULT_BANNED_WORDS_FILE,
        )
    lines = (line.rstrip("\r\n") for line in sys.stdin)
    while batch := list(itertools.islice(lines, 256)):
        for line, verdict in zip(batch, judge([normalize(line) for line in batch], index, checks)):
            print(json.dumps({**verdict.as_json(), "text": line}, ensure_ascii=False))
        sys.stdout.flush()
    return 0


# --- the daemon and its admin commands (bot/daemon.py) ---
def _settings(args: argparse.Namespace):
    from dataclasses import replace

    from bot.settings import Settings

    settings = Settings.from_env()
    if getattr(args, "data_dir", None):
        settings = replace(settings, data_dir=args.data_dir)
    return settings


def _bot(args: argparse.Namespace):
    from bot.daemon import Bot
    from bot.store import Store

    settings = _settings(args)
    return Bot(settings, Store(settings.data_dir))


def _print_json(value: object) -> None:
    import json

    print(json.dumps(value, ensure_ascii=False, sort_keys=True))


def cmd_targets(args: argparse.Namespace) -> int:
    """targets add|remove|list."""
    from bot.platforms import PLATFORM_NAMES, canonical
    from bot.platforms.base import CredentialsMissing

    bot = _bot(args)
    try:
        store = bot.store
        if args.action == "list":
            counts = store.bot_post_counts()
            rows = [_target_row(bot, t, counts) for t in store.targets()]
            if args.json:
                _print_json(rows)
            elif not rows:
                print("no targets (add one: python -m bot targets add HANDLE)")
            for r in rows if not args.json else []:
                model = f"model v{r['model_version']} ({r['heldout_bits_per_char']} bits/char)" if r["model_version"] else "no model"
                print(f"@{r['handle']:<24} {r['platform']:<8} {r['posts']:>6} posts  weight {r['weight']:<4g} {model}")
            return 0
        platform, name = canonical(args.handle, getattr(args, "platform", None))
        if args.action == "remove":
            if not store.remove_target(name):
                raise BotError(f"@{name} is not a target")
            print(f"removed @{name} (its posts and model stay stored)")
            return 0
        # add
        if args.weight <= 0:
            raise BotError("--weight must be above 0")
        if args.import_file:
            from bot.ingest import import_posts

            new, total = import_posts(store, name, args.import_file)  # first: a bad file adds nothing
            store.add_target(name, weight=args.weight, platform=platform)
            print(f"added @{name} with {new} imported posts ({total} stored)")
            return 0
        try:
            reader = bot.readers.for_target(platform, name)
        except CredentialsMissing:
            raise BotError("no X credentials to look the handle up: set them (see config/.env.example), "
                           f"or pass --import FILE with @{name}'s posts") from None
        user = reader.resolve(name)
        if user.get("protected"):
            raise BotError(f"@{user['username']} is protected: its posts are not public")
        # Bluesky and Mastodon spell handles as typed (lowercase); X gives the account's own case
        stored = user["username"] if platform == "x" else name
        store.add_target(stored, user["id"], weight=args.weight, platform=platform)
        print(f"added @{stored} on {PLATFORM_NAMES[platform]} (id {user['id']}); "
              "download its posts with: python -m bot fetch")
        return 0
    finally:
        bot.store.close()


def _target_row(bot, t: dict, counts: list[dict]) -> dict:
    from bot import backoff

    info = bot.store.model_info(t["handle"]) or {}
    mine = [c for c in counts if c["target"].lstrip("@") == t["handle"].lower() and c["status"] == "posted"]
    return {
        "handle": t["handle"], "platform": t.get("platform") or "x", "user_id": t.get("user_id"),
        "weight": float(t.get("weight") or 1),
        "posts": bot.store.post_count(t["handle"]), "model_version": info.get("version"),
        "heldout_bits_per_char": info.get("heldout_bits_per_char"), "trained_at": info.get("trained_at"),
        "bot_posts": sum(c["count"] for c in mine if c["kind"] == "post"),
        "bot_replies": sum(c["count"] for c in mine if c["kind"] == "reply"),
        "training_backoff": backoff.state(bot.store, "train", t["handle"]),
        "refresh_backoff": backoff.state(bot.store, "refresh", t["handle"]),
    }


def cmd_fetch(args: argparse.Namespace) -> int:
    """Download new posts of every target (or one) now."""
    bot = _bot(args)
    try:
        print(bot.refresh(args.handle))
        return 0
    finally:
        bot.store.close()


def cmd_train(args: argparse.Namespace) -> int:
    """Fine-tune a target's model now (in a child process)."""
    from bot.training import train_target

    bot = _bot(args)
    try:
        if bot.store.target(args.handle) is None:
            raise BotError(f"@{args.handle.lstrip('@')} is not a target")
        r = train_target(bot.store, args.handle, bot.settings, max_seconds=args.max_seconds)
        if args.json:
            _print_json(r)
        else:
            verdict = "registered" if r["replaced"] else f"not used: worse than the current model ({r['current_bits_per_char']})"
            print(f"@{r['handle']} model v{r['version']}: held-out {r['heldout_bits_per_char']} bits/char, "
                  f"{r['train_seconds']} s; {verdict}")
        return 0
    finally:
        bot.store.close()


def cmd_generate(args: argparse.Namespace) -> int:
    """Preview candidates with the filter's verdicts (nothing is posted)."""
    bot = _bot(args)
    try:
        selection = bot.generate(args.handle, mention=args.mention, n=args.n, seed=args.seed)
        verdicts = selection.passed + selection.rejected
        if args.json:
            _print_json({"handle": args.handle.lstrip("@"), "passed": len(selection.passed),
                         "rejected": len(selection.rejected), "candidates": [v.as_json() for v in verdicts]})
        else:
            for v in verdicts:
                mark = f"#{v.rank:<4}" if v.ok else "NO   "
                why = "" if v.ok else "  [" + "; ".join(v.reasons) + "]"
                print(f"{mark}{v.final}{why}")
            print(f"{len(selection.passed)} passed, {len(selection.rejected)} rejected; #1 would be posted "
                  "(--json shows each one's score)")
        return 0
    finally:
        bot.store.close()


def cmd_post(args: argparse.Namespace) -> int:
    """Post once now (the next target by rotation, or HANDLE)."""
    bot = _bot(args)
    try:
        bot.reconcile()
        outcome = bot.post(handle=args.handle, dry_run=args.dry_run)
        if args.json:
            _print_json(outcome.as_json())
        else:
            print(f"{outcome.status}" + (f" {outcome.api_id}" if outcome.api_id else "")
                  + (f" as @{outcome.target}" if outcome.target else "")
                  + (f": {outcome.text}" if outcome.text else "") + (f" ({outcome.reason})" if outcome.reason else ""))
        return 0 if outcome.status in ("posted", "dry-run") else 3
    finally:
        bot.store.close()


def cmd_replies(args: argparse.Namespace) -> int:
    """Read new mentions and answer them once."""
    bot = _bot(args)
    try:
        if not args.once:
            raise BotError("replies needs --once (the daemon, `run`, answers continuously)")
        if bot.platform is None or not bot.settings.has_credentials:
            raise BotError(f"no {bot.where} credentials: mentions cannot be read (see config/.env.example)")
        print(bot.answer_mentions(dry_run=args.dry_run) or "no new mentions")
        return 0
    finally:
        bot.store.close()


def cmd_status(args: argparse.Namespace) -> int:
    """Targets, post counts, models, last and next jobs, last errors, pauses, spend."""
    bot = _bot(args)
    try:
        store = bot.store
        counts = store.bot_post_counts()
        statuses: dict[str, int] = {}
        for c in counts:
            statuses[c["status"] or "?"] = statuses.get(c["status"] or "?", 0) + c["count"]
        jobs = store.jobs()
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")  # compared with stored ISO times
        paused = {name: until for name in jobs
                  if (until := store.get_cursor(f"paused_until:{name}")) and until > now}
        report = {
            "platform": bot.settings.platform,
            "mode": "live" if bot.sends else "dry-run",
            "data_dir": str(bot.settings.data_dir),
            "targets": [_target_row(bot, t, counts) for t in store.targets()],
            "bot_posts": statuses,
            "mentions_handled": len(store.handled_mentions()),
            "jobs": jobs,
            "next_slot": store.get_cursor("next_slot"),
            "posting_stopped": (jobs.get("posting") or {}).get("blocked"),
            "paused_until": paused,
            "cannot_post": {k: v for k, v in ((jobs.get("post") or {}).get("cannot_post") or {}).items()
                            if v["until"] > now},
            "api_spend": bot.meter.summary(),
        }
        if args.json:
            _print_json(report)
            return 0
        print(f"platform: {bot.where}   mode: {report['mode']}   state: {report['data_dir']}   next scheduled post: {report['next_slot'] or '-'}")
        if report["posting_stopped"]:
            print(f"POSTING STOPPED (until the settings are fixed and the bot restarted): {report['posting_stopped']}")
        print("targets:")
        for r in report["targets"]:
            model = f"model v{r['model_version']}, {r['heldout_bits_per_char']} bits/char" if r["model_version"] else "no model"
            print(f"  @{r['handle']:<24} {r['platform']:<8} {r['posts']:>6} posts  {model}  posted {r['bot_posts']}, replies {r['bot_replies']}")
            for what, b in (("fine-tune", r["training_backoff"]), ("download", r["refresh_backoff"])):
                if b and b.get("until", "") > now:
                    print(f"      {what} failed {b['failures']}x, next try {b['until']}: {b['error']}")
            if r["handle"].lower() in report["cannot_post"]:
                c = report["cannot_post"][r["handle"].lower()]
                print(f"      sits out of the rotation until {c['until']}: {c['reason']}")
        print("bot posts: " + (", ".join(f"{k} {v}" for k, v in sorted(statuses.items())) or "none")
              + f"; mentions handled: {report['mentions_handled']}")
        print("jobs:")
        for name, j in sorted(report["jobs"].items()):
            if name == "posting":
                continue
            state = "ok" if j.get("ok") else ("ERROR " + str(j.get("error")) if j.get("ok") is False else "-")
            pause = f"  paused until {paused[name]} (rate limit)" if name in paused else ""
            print(f"  {name:<9} last {j.get('last_run', '-')}  next {j.get('next_run', '-')}  {state}{pause}")
        spend = report["api_spend"]
        cap = f", daily cap ${spend['daily_cap_usd']:.2f}" if spend["daily_cap_usd"] is not None else ""
        print(f"X API spend (estimate): today ${spend['today']['usd']:.3f}, this month ${spend['month']['usd']:.3f}{cap}; "
              "calls today: " + (", ".join(f"{k} {v}" for k, v in sorted(spend["today"]["calls"].items())) or "none"))
        return 0
    finally:
        bot.store.close()


def cmd_run(args: argparse.Namespace) -> int:
    """Run the bot until SIGTERM/SIGINT (the sandbox demo with --sandbox)."""
    from bot.daemon import run

    settings = _settings(args)
    if not args.sandbox:
        return run(settings)
    from bot.demo import run_demo

    return run_demo(settings, platform=args.platform, port=args.port)


def build_parser() -> argparse.ArgumentParser:
    from bot.platforms import PLATFORMS

    parser = argparse.ArgumentParser(prog="python -m bot", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # --- subcommands are registered here (one add_parser block per command) ---
    p = sub.add_parser("sandbox", help="run a local X or Mastodon API sandbox (no account needed)")
    p.add_argument("--platform", choices=("x", "mastodon"), default="x", help="which API it speaks (default x; "
                   "Bluesky's own servers run locally instead: scripts/setup_bluesky.sh)")
    p.add_argument("--port", type=int, default=None, help="port to listen on (default 8080 for X, 8081 for "
                   "Mastodon; 0: any free port)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; "
                   "a non-loopback address needs --public)")
    p.add_argument("--public", action="store_true", help="allow a --host reachable from other machines")
    p.set_defaults(func=cmd_sandbox)

    p = sub.add_parser("import", help="store an account's posts from a tweets.js, CSV or JSON Lines file")
    p.add_argument("handle", metavar="HANDLE", help="the account the posts are from")
    p.add_argument("file", metavar="FILE", help="tweets.js (X data export), CSV with a text column, "
                   "or JSON Lines (.jsonl/.jsonl.gz)")
    p.add_argument("--include-replies", action="store_true", help="keep replies to other accounts (tweets.js)")
    p.add_argument("--include-retweets", action="store_true", help="keep retweets (RT @...)")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("check", help="judge candidate posts (stdin, one a line) against an account's posts")
    p.add_argument("handle", metavar="HANDLE", help="the account imitated (its posts must be stored)")
    p.add_argument("--data-dir", default=None, help="the bot's state directory (default: BOT_DATA_DIR)")
    p.add_argument("--banned-words", default=None, metavar="FILE", help="words and phrases never to post, one "
                   "a line (default: BOT_BANNED_WORDS_FILE, else config/banned_words.txt)")
    p.add_argument("--mentions", choices=("defuse", "reject"), default=None,
                   help="@mentions: defuse them so nobody is pinged, or reject the candidate (default: BOT_MENTIONS)")
    p.add_argument("--min-words", type=int, default=None, help="shortest candidate in words (default: BOT_MIN_WORDS)")
    p.add_argument("--repeat-days", type=int, default=None, help="reject repeats of what the bot posted in this "
                   "many days, any target (default: BOT_REPEAT_DAYS)")
    p.set_defaults(func=cmd_check)

    def data_dir(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data-dir", default=None, type=Path, help="the bot's state directory (default: BOT_DATA_DIR)")

    p = sub.add_parser("targets", help="add, remove or list the accounts the bot imitates")
    tsub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    t = tsub.add_parser("add", help="add an account (looked up through the API, or --import FILE)")
    t.add_argument("handle", metavar="HANDLE", help="@name (X), name.bsky.social (Bluesky) or @name@server (Mastodon)")
    t.add_argument("--platform", choices=PLATFORMS, default=None,
                   help="the platform the account is on (default: guessed from the handle's form)")
    t.add_argument("--import", dest="import_file", metavar="FILE", help="its posts from a tweets.js, CSV or JSON Lines file")
    t.add_argument("--weight", type=float, default=1.0, help="share of scheduled posts (default 1: plain rotation)")
    data_dir(t)
    t.set_defaults(func=cmd_targets)
    t = tsub.add_parser("remove", help="stop imitating an account (its posts and model stay stored)")
    t.add_argument("handle", metavar="HANDLE")
    data_dir(t)
    t.set_defaults(func=cmd_targets)
    t = tsub.add_parser("list", help="the targets, their post counts and models")
    t.add_argument("--json", action="store_true", help="one JSON list (stable keys)")
    data_dir(t)
    t.set_defaults(func=cmd_targets)

    p = sub.add_parser("fetch", help="download new posts of every target (or one) now")
    p.add_argument("handle", nargs="?", metavar="HANDLE")
    data_dir(p)
    p.set_defaults(func=cmd_fetch)

    p = sub.add_parser("train", help="fine-tune a target's model now (replaces it only if no worse)")
    p.add_argument("handle", metavar="HANDLE")
    p.add_argument("--max-seconds", type=float, default=None, help="budget (default BOT_FINETUNE_MAX_SECONDS)")
    p.add_argument("--json", action="store_true")
    data_dir(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("generate", help="preview candidate posts with the filter's verdicts")
    p.add_argument("handle", metavar="HANDLE")
    p.add_argument("-n", type=int, default=None, help="candidates per batch (default BOT_CANDIDATES, as the bot draws them)")
    p.add_argument("--mention", default=None, help="candidates for a reply to this text (as to a mention)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--json", action="store_true", help="one JSON object (stable keys)")
    data_dir(p)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("post", help="post once now (exit 3 when nothing passed the filter)")
    p.add_argument("handle", nargs="?", metavar="HANDLE", help="as this target (default: the next in rotation)")
    p.add_argument("--dry-run", action="store_true", help="log the text, send nothing")
    p.add_argument("--json", action="store_true")
    data_dir(p)
    p.set_defaults(func=cmd_post)

    p = sub.add_parser("replies", help="answer new mentions once")
    p.add_argument("--once", action="store_true", help="one pass, then exit")
    p.add_argument("--dry-run", action="store_true", help="log the replies, send nothing (mentions count as handled)")
    data_dir(p)
    p.set_defaults(func=cmd_replies)

    p = sub.add_parser("status", help="targets, models, post counts, last and next jobs, last errors")
    p.add_argument("--json", action="store_true", help="one JSON object (stable keys)")
    data_dir(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("run", help="run the bot until SIGTERM/Ctrl-C (--sandbox: the built-in demo)")
    p.add_argument("--sandbox", action="store_true", help="start a local platform and run against it (the demo)")
    p.add_argument("--platform", choices=PLATFORMS, default="x", help="the demo's platform with --sandbox: x and "
                   "mastodon need nothing; bluesky needs scripts/setup_bluesky.sh (default x)")
    p.add_argument("--port", type=int, default=0, help="sandbox port with --sandbox (default: any free port)")
    data_dir(p)
    p.set_defaults(func=cmd_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stdout,
    )
    try:
        return int(args.func(args) or 0)
    except (BotError, TrainerError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
