"""The admin command line: `python -m bot COMMAND ...` (also installed as `xmimic`).

Each command is a small function `cmd_NAME(args) -> int` registered in `build_parser`;
user mistakes raise BotError/TrainerError and become one line on stderr.
"""
from __future__ import annotations

import argparse
import logging
import sys

from bot.errors import BotError
from trainer.errors import TrainerError


# --- commands -------------------------------------------------------------
# (each command group is added below by the module that owns it)


# --- sandbox / import (X client, store and ingest) ---
def cmd_sandbox(args: argparse.Namespace) -> int:
    """Serve the local X-API-compatible sandbox until Ctrl-C or SIGTERM."""
    from bot.sandbox import serve

    return serve(port=args.port, host=args.host)


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
    from datetime import datetime, timezone

    from bot.content import DEFAULT_BANNED_WORDS_FILE, checks_from_store
    from bot.originality import index_from_store, judge
    from bot.store import Store
    from trainer.text import normalize

    if args.data_dir is None:
        from bot.settings import Settings

        args.data_dir = Settings.from_env().data_dir
    with Store(args.data_dir) as store:
        index = index_from_store(store, args.handle)
        checks = checks_from_store(
            store, now=datetime.now(timezone.utc), repeat_days=args.repeat_days, mentions=args.mentions,
            min_words=args.min_words, banned_words_file=args.banned_words or DEFAULT_BANNED_WORDS_FILE,
        )
    lines = (line.rstrip("\r\n") for line in sys.stdin)
    while batch := list(itertools.islice(lines, 256)):
        for line, verdict in zip(batch, judge([normalize(line) for line in batch], index, checks)):
            print(json.dumps({**verdict.as_json(), "text": line}, ensure_ascii=False))
        sys.stdout.flush()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bot", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # --- subcommands are registered here (one add_parser block per command) ---
    p = sub.add_parser("sandbox", help="run the local X API sandbox (no X account needed)")
    p.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080; 0: any free port)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
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
    p.add_argument("--banned-words", default=None, metavar="FILE",
                   help="words and phrases never to post, one a line (default: config/banned_words.txt)")
    p.add_argument("--mentions", choices=("defuse", "reject"), default="defuse",
                   help="@mentions: defuse them so nobody is pinged (default) or reject the candidate")
    p.add_argument("--min-words", type=int, default=4, help="shortest candidate, in words (default 4)")
    p.add_argument("--repeat-days", type=int, default=30,
                   help="reject repeats of what the bot posted in this many days, any target (default 30)")
    p.set_defaults(func=cmd_check)
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
