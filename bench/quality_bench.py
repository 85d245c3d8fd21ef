"""Quality benchmark: what the bot would post for each account, against the account's
real new posts and against a Markov-chain ("ebooks") bot.

    .venv/bin/python bench/quality_bench.py [--accounts A,B] [--posts 120] [--mentions 40]
        [--seed 0] [--models-dir runs/quality_models] [--json OUT]

Needs the `bench` extra (scikit-learn, markovify): .venv/bin/pip install -c requirements.lock -e '.[bench]'.
Reads the accounts from ../shared/data/users and the base corpus from ../shared/data.

Per account (the newest 3,200 posts, as X's API serves a timeline, so that every
account is about the same size):
  * split chronologically: the oldest 90% are trained on, the newest 10% are the
    "real new posts" the bot's output is compared with (never trained on);
  * fine-tune as the bot does (trainer.train.finetune, 80 s), cached in --models-dir
    by the training posts' fingerprint;
  * the bot's real state in a temporary data dir (store with the training posts, the
    model registered, Settings of a dry run), and the daemon's own Bot.generate:
    --posts scheduled posts (the chosen candidate, `selection.best.final`) and
    --mentions replies to mentions that are real posts of the other accounts;
  * the Markov baseline: markovify.NewlineText (state size 2) over the training
    posts, sentences that share an 8-word run with a training post or that the bot's
    own near-copy index calls a copy dropped; its "replies" are the first of up to
    300 sentences that shares a content word with the mention.
Metrics per system (rows) and account (columns): median length (also as posted: no
links, no reply's opening @handles, which the bot never posts) and the
Kolmogorov-Smirnov statistic of the length distribution against the real new posts;
the share of real words (seen 3+ times in the base corpus or the account's training
posts); the share opening with an @handle; detectability (5-fold cross-validated
accuracy of a character 1-4-gram TF-IDF + logistic regression telling the texts from
the real new posts, balanced, mean of 5 draws; 0.5 = indistinguishable); attribution
(the share a character 1-5-gram classifier over the five accounts, trained on their
training posts, gives to the right account); the copy rate (an 8-word run in common
with a training post, or the same words); distinct word bigrams over 100 texts;
duplicates within the system. Reply metrics pair each text with a mention: for the
reply systems that is its own mention, for the others the pairing is arbitrary (the
chance level). In the "real new posts" block, the length KS and the detectability
compare the account's older real posts (the newest end of the training part, as many
as the new ones) with the new ones: the floor, what time alone changes.
All metrics read the visible text: the zero-width characters the bot puts after "@"
to defuse a mention are removed first (a classifier would otherwise key on them).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from statistics import median

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import quality_metrics as qm  # noqa: E402

from bot.originality import NearCopyIndex  # noqa: E402
from trainer.data import Post, chronological_split, read_posts  # noqa: E402
from trainer.model import DEFAULT_BASE, load, save  # noqa: E402

DATA = REPO.parent / "shared" / "data"
USERS = DATA / "users"
BASE_CORPUS = DATA / "base_tweets.jsonl.gz"
TIMELINE_CAP = 3200  # posts X's API serves of one timeline
FINETUNE_SECONDS = 80  # the bot's default budget (Settings.finetune_max_seconds)
REAL_WORD_MIN = 3  # a word seen this often in the base corpus or the account is real
MIN_MENTION_WORDS = 6
MARKOV_REPLY_TRIES = 300
SYSTEMS = ("real new posts", "bot posts", "bot replies", "markov", "markov replies")


@dataclass
class Account:
    handle: str
    train: list[Post]  # oldest 90% of the newest TIMELINE_CAP posts
    new: list[Post]  # newest 10%: never trained on

    @property
    def older(self) -> list[Post]:
        """The real posts just before the new ones, as many: the detectability floor."""
        return self.train[-len(self.new):]


def load_account(handle: str) -> Account:
    posts = sorted(enumerate(read_posts(USERS / f"{handle}.jsonl.gz")), key=lambda ip: (ip[1].created_at or "", ip[0]))
    train, new = chronological_split([p for _, p in posts][-TIMELINE_CAP:])
    return Account(handle, train, new)


def texts(posts: list[Post]) -> list[str]:
    return [p.text for p in posts]


# --- the account's model ---------------------------------------------------------------


def account_model(acct: Account, models_dir: Path) -> tuple[Path, dict, bool]:
    """The cached fine-tuned model of the account's training posts, or a new one.
    Returns (path, meta, cached)."""
    from trainer.train import fingerprint, finetune  # imports TensorFlow

    path = models_dir / f"{acct.handle}.zip"
    wanted = fingerprint(acct.train)
    base = load(DEFAULT_BASE)
    if path.is_file():
        meta = load(path).meta
        # "vocab_added": made by a trainer that learns the account's own characters;
        # the base's validation loss tells a continued base model from the one before;
        # "heldout_ids_learnt": by one that learns its held-out posts once scored
        if (meta.get("data_fingerprint") == wanted and "vocab_added" in meta
                and meta.get("base_val_bits_per_char") == base.meta.get("val_bits_per_char")
                and meta.get("heldout_ids_learnt")):
            return path, meta, True
    log(f"@{acct.handle}: fine-tuning on {len(acct.train)} posts ({FINETUNE_SECONDS} s budget) ...")
    art = finetune(base, acct.train, max_seconds=FINETUNE_SECONDS)
    save(art, path)
    return path, art.meta, False


# --- the bot ---------------------------------------------------------------------------


def pick_mentions(accounts: dict[str, Account], handle: str, m: int, seed: int) -> list[str]:
    """`m` real posts of the other accounts, as mentions: 6+ words, not opening with
    an @handle (a reply to someone else reads oddly as a mention). Fixed by the seed."""
    pool = [p.text for name, a in sorted(accounts.items()) if name != handle for p in a.train + a.new
            if len(qm.words(p.text)) >= MIN_MENTION_WORDS and not qm.opens_with_handle_share([p.text])]
    return random.Random(f"mentions:{seed}:{handle}").sample(pool, min(m, len(pool)))


def bot_settings(data_dir: str):
    """The settings a dry run gets: BOT_* variables of this environment apply (to
    benchmark other knobs), credentials and .env never do."""
    from bot.settings import Settings

    env = {k: v for k, v in os.environ.items() if k.startswith("BOT_")} | {"BOT_DATA_DIR": data_dir}
    return Settings.from_env(env=env, dotenv_path=None)


@dataclass
class BotRun:
    posts: list[str]
    replies: list[str | None]  # None: nothing passed the filter
    post_seconds: list[float]
    reply_seconds: list[float]
    skipped_posts: int
    skipped_replies: int
    skip_reasons: Counter
    errors: list[str]


def run_bot(acct: Account, model_path: Path, meta: dict, mentions: list[str], n_posts: int, seed: int) -> BotRun:
    """Posts and replies exactly as the daemon writes them: its store, its Bot, its
    generate()."""
    from bot.daemon import Bot
    from bot.store import Store

    with tempfile.TemporaryDirectory(prefix="quality-bench-") as tmp, Store(tmp) as store:
        handle = acct.handle
        store.add_target(handle)
        store.add_posts(handle, [{"id": p.id, "created_at": p.created_at, "text": p.text, "user": handle}
                                 for p in acct.train])
        path = Path(tmp) / "models" / f"{handle}.zip"
        path.parent.mkdir()
        shutil.copyfile(model_path, path)
        store.register_model(handle, {"path": str(path), "version": 1, "posts": len(acct.train),
                                      "heldout_bits_per_char": meta["heldout_bits_per_char"]})
        bot = Bot(bot_settings(tmp), store)
        run = BotRun([], [], [], [], 0, 0, Counter(), [])
        bot.generate(handle, seed=seed + 999_999)  # loads the model: a running daemon has it cached

        def one(**kwargs) -> tuple[str | None, float]:
            t0 = time.perf_counter()
            try:
                selection = bot.generate(handle, **kwargs)
            except Exception as exc:  # report and go on: one failure should not lose the run
                run.errors.append(f"{type(exc).__name__}: {exc}")
                return None, time.perf_counter() - t0
            secs = time.perf_counter() - t0
            if selection.best is None:
                run.skip_reasons.update({r.split(":")[0] for v in selection.rejected for r in v.reasons})
                return None, secs
            return selection.best.final, secs

        for i in range(n_posts):
            text, secs = one(seed=seed + i)
            run.post_seconds.append(secs)
            run.skipped_posts += text is None
            if text is not None:
                run.posts.append(text)
        for j, mention in enumerate(mentions):
            text, secs = one(seed=seed + 100_000 + j, mention=mention)
            run.reply_seconds.append(secs)
            run.skipped_replies += text is None
            run.replies.append(text)
        return run


# --- the Markov baseline -----------------------------------------------------------------


class MarkovBot:
    """What an ebooks bot posts: markovify over the account's posts, one post a line,
    with the same originality bar as the bot (no 8-word run of a training post, and
    not a copy to the bot's near-copy index)."""

    def __init__(self, acct: Account, copies: qm.CopyTest, seed: int):
        import markovify

        random.seed(seed)  # markovify draws from the random module
        # one post a line (line breaks inside a post would split it into several);
        # well_formed=False keeps posts with quotes or parentheses in the corpus
        lines = "\n".join(" ".join(t.split()) for t in texts(acct.train))
        self.model = markovify.NewlineText(lines, state_size=2, well_formed=False)
        self.copies = copies
        self.index = NearCopyIndex()
        self.index.add_many((p.id, p.text) for p in acct.train)
        self.dropped = 0

    def sentence(self) -> str | None:
        for _ in range(20):
            text = self.model.make_short_sentence(280, tries=100)
            if text is None:
                continue
            if self.copies.is_copy(text) or self.index.check(text).copy:
                self.dropped += 1
                continue
            return text
        return None

    def posts(self, n: int) -> list[str]:
        out = [self.sentence() for _ in range(n)]
        return [t for t in out if t is not None]

    def reply(self, mention: str, stop: frozenset[str]) -> str | None:
        """Keyword reply: the first sentence sharing a content word with the mention."""
        wanted, first = qm.content_words(mention, stop), None
        for _ in range(MARKOV_REPLY_TRIES):
            text = self.sentence()
            if text is None:
                continue
            first = first or text
            if wanted & qm.content_words(text, stop):
                return text
        return first


# --- metrics -------------------------------------------------------------------------


@dataclass
class Context:
    """What every system of one account is measured against."""

    acct: Account
    mentions: list[str]
    base_counts: dict[str, int]
    account_counts: Counter
    copies: qm.CopyTest
    attribution: qm.Attribution
    seed: int


def system_metrics(name: str, got: list[str], replies: list[str | None] | None, ctx: Context) -> dict:
    """Every metric of one system's texts. `replies`: the reply systems' texts paired
    with ctx.mentions (None where nothing passed); else texts are paired in order."""
    new = texts(ctx.acct.new)
    # the real-new-posts block compares the older real posts with the new: the floor
    reference, compared = (texts(ctx.acct.older), new) if name == "real new posts" else (got, new)
    paired = replies if replies is not None else got[: len(ctx.mentions)]
    return {
        "texts": len(got),
        "median_chars": qm.median_length(got),
        "median_chars_as_posted": qm.median_length([t for t in map(qm.as_posted, got) if t]),
        "length_ks": qm.length_ks(reference, compared),
        "real_word_share": qm.real_word_share(got, ctx.base_counts, ctx.account_counts, REAL_WORD_MIN),
        "opens_with_handle": qm.opens_with_handle_share(got),
        "detectability": qm.detectability(reference, compared, ctx.seed),
        "detectability_as_posted": _detectability_as_posted(reference, compared, ctx.seed),
        "attributed_right": ctx.attribution.share(got, ctx.acct.handle),
        "copy_rate": ctx.copies.rate(got),
        "distinct_bigrams_100": qm.distinct_bigrams(got),
        "duplicates": qm.duplicate_share(got),
        **{f"reply_{k}": v for k, v in qm.reply_metrics(ctx.mentions[: len(paired)], paired).items()},
    }


def _detectability_as_posted(texts_a: list[str], texts_b: list[str], seed: int) -> float:
    """Detectability with both sides as the bot's rules allow (qm.as_posted); texts
    left empty (a bare link) are dropped."""
    a, b = ([t for t in map(qm.as_posted, side) if t] for side in (texts_a, texts_b))
    return qm.detectability(a, b, seed)


def measure_account(acct: Account, ctx: Context, run: BotRun, markov: MarkovBot, n_posts: int) -> dict:
    stop = qm.stop_words()
    markov_posts = markov.posts(n_posts)
    markov_replies = [markov.reply(m, stop) for m in ctx.mentions]
    bot_replies = [r for r in run.replies if r is not None]
    systems = {
        "real new posts": system_metrics("real new posts", texts(acct.new), None, ctx),
        "bot posts": system_metrics("bot posts", run.posts, None, ctx),
        "bot replies": system_metrics("bot replies", bot_replies, run.replies, ctx),
        "markov": system_metrics("markov", markov_posts, None, ctx),
        "markov replies": system_metrics("markov replies", [r for r in markov_replies if r is not None],
                                         markov_replies, ctx),
    }
    systems["real new posts"]["detectability_at_bot_size"] = qm.detectability(
        texts(acct.older)[: len(run.posts)], texts(acct.new)[: len(run.posts)], ctx.seed)
    systems["real new posts"]["detectability_as_posted_at_bot_size"] = _detectability_as_posted(
        texts(acct.older)[: len(run.posts)], texts(acct.new)[: len(run.posts)], ctx.seed)
    for name, secs, skipped in (("bot posts", run.post_seconds, run.skipped_posts),
                                ("bot replies", run.reply_seconds, run.skipped_replies)):
        systems[name].update(seconds_median=median(secs) if secs else float("nan"),
                             seconds_max=max(secs, default=float("nan")), skipped=skipped)
    systems["markov"]["dropped_as_copies"] = markov.dropped
    return {"systems": systems,
            "texts": {"bot posts": run.posts, "bot replies": run.replies, "markov": markov_posts,
                      "markov replies": markov_replies},
            "mentions": ctx.mentions}


# --- report --------------------------------------------------------------------------

ROWS = [  # (key, label, format)
    ("texts", "texts", "{:.0f}"),
    ("median_chars", "median length (chars)", "{:.0f}"),
    ("median_chars_as_posted", "  same, links and reply @s cut", "{:.0f}"),
    ("length_ks", "length KS vs real new", "{:.3f}"),
    ("real_word_share", "real-word share", "{:.3f}"),
    ("opens_with_handle", "opens with @handle", "{:.3f}"),
    ("detectability", "detectability (0.5 = none)", "{:.3f}"),
    ("detectability_at_bot_size", "  floor at bot posts' size", "{:.3f}"),
    ("detectability_as_posted", "  same, links and reply @s cut", "{:.3f}"),
    ("detectability_as_posted_at_bot_size", "  its floor at bot posts' size", "{:.3f}"),
    ("attributed_right", "attributed to the account", "{:.3f}"),
    ("copy_rate", "copy rate (8-word run/same)", "{:.3f}"),
    ("distinct_bigrams_100", "distinct bigrams, 100 texts", "{:.3f}"),
    ("duplicates", "duplicates within system", "{:.3f}"),
    ("reply_shares_content_word", "reply: shares content word", "{:.3f}"),
    ("reply_tfidf_cosine", "reply: TF-IDF cosine", "{:.3f}"),
    ("reply_repeats_4_mention_words", "reply: repeats 4+ words", "{:.3f}"),
    ("seconds_median", "seconds per text, median", "{:.2f}"),
    ("seconds_max", "seconds per text, max", "{:.2f}"),
    ("skipped", "skipped (nothing passed)", "{:.0f}"),
    ("dropped_as_copies", "dropped as copies", "{:.0f}"),
]


def fmt(value, pattern: str) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    return pattern.format(value)


def print_report(results: dict[str, dict]) -> None:
    handles = list(results)
    width = max(16, *(len(h) + 2 for h in handles))
    head = f"{'':<30}" + "".join(f"{h:>{width}}" for h in handles)
    print("\nModels (fine-tuned on the training posts)")
    print(head)
    for key, label, pattern in (("train_posts", "training posts", "{:.0f}"), ("new_posts", "real new posts", "{:.0f}"),
                                ("heldout_bits_per_char", "held-out bits/char", "{:.3f}"),
                                ("heldout_bits_per_char_base_vocab", "  its own characters as UNK", "{:.3f}"),
                                ("vocab_added", "characters added", "{:.0f}"),
                                ("train_seconds", "fine-tuning seconds", "{:.0f}")):
        print(f"{label:<30}" + "".join(f"{fmt(results[h]['model'].get(key), pattern):>{width}}" for h in handles))
    for system in SYSTEMS:
        print(f"\n{system}" + (" (length KS and detectability: older real posts vs new = the floor)"
                               if system == "real new posts" else ""))
        print(head)
        for key, label, pattern in ROWS:
            values = [results[h]["systems"][system].get(key) for h in handles]
            if all(v is None for v in values):
                continue
            print(f"{label:<30}" + "".join(f"{fmt(v, pattern):>{width}}" for v in values))
    print("\n(reply rows of the non-reply systems pair texts with mentions arbitrarily: the chance level)")


def print_examples(results: dict[str, dict], k: int = 3) -> None:
    print("\nExamples (first texts of each system)")
    for handle, r in results.items():
        print(f"@{handle}")
        for system in ("bot posts", "markov"):
            for t in r["texts"][system][:k]:
                print(f"  [{system}] {qm.visible(t)!r}")
        for m, rb, rm in list(zip(r["mentions"], r["texts"]["bot replies"], r["texts"]["markov replies"]))[:k]:
            print(f"  [mention] {m!r}\n    [bot reply] {rb if rb is None else qm.visible(rb)!r}\n"
                  f"    [markov reply] {rm!r}")


def no_nan(value):
    """NaN (a metric with nothing to measure) as null: strict JSON has no NaN."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: no_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [no_nan(v) for v in value]
    return value


def machine() -> str:
    model, flags = platform.processor() or "cpu", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    avx512 = sorted(f for f in flags if f.startswith("avx512"))
    return (f"{model}, {os.cpu_count()} cores, {platform.machine()}; avx2 {'yes' if 'avx2' in flags else 'no'}, "
            f"avx512 {' '.join(avx512) if avx512 else 'no'}")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- main ----------------------------------------------------------------------------


def main() -> None:
    all_accounts = sorted(p.name.split(".")[0] for p in USERS.glob("*.jsonl.gz"))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--accounts", default=",".join(all_accounts), help="comma-separated (default: all five)")
    ap.add_argument("--posts", type=int, default=120, help="scheduled posts per account")
    ap.add_argument("--mentions", type=int, default=40, help="mentions answered per account")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--models-dir", type=Path, default=REPO / "runs" / "quality_models")
    ap.add_argument("--json", type=Path, default=None, help="write every number (and the texts) here")
    args = ap.parse_args()
    chosen = [a.strip() for a in args.accounts.split(",") if a.strip()]
    unknown = sorted(set(chosen) - set(all_accounts))
    if unknown:
        ap.error(f"no timeline for {', '.join(unknown)} in {USERS}")
    command = " ".join([".venv/bin/python", "bench/quality_bench.py", *sys.argv[1:]])

    accounts = {h: load_account(h) for h in all_accounts}  # all five: the attribution classifier needs them
    log("counting base-corpus words (cached after the first run) ...")
    base_counts = qm.base_word_counts(BASE_CORPUS, args.models_dir / f"base_words_min{REAL_WORD_MIN}.pkl",
                                      REAL_WORD_MIN)
    log("training the attribution classifier on the five accounts' training posts ...")
    attribution = qm.Attribution({h: texts(a.train) for h, a in accounts.items()})

    results: dict[str, dict] = {}
    for handle in chosen:
        acct = accounts[handle]
        path, meta, cached = account_model(acct, args.models_dir)
        log(f"@{handle}: model {'cached' if cached else 'trained'}, held-out {meta['heldout_bits_per_char']} bits/char")
        mentions = pick_mentions(accounts, handle, args.mentions, args.seed)
        t0 = time.monotonic()
        run = run_bot(acct, path, meta, mentions, args.posts, args.seed)
        log(f"@{handle}: bot wrote {len(run.posts)} posts and {sum(r is not None for r in run.replies)} replies "
            f"in {time.monotonic() - t0:.0f} s; skipped {run.skipped_posts}/{run.skipped_replies}"
            + (f"; {len(run.errors)} errors, first: {run.errors[0]}" if run.errors else ""))
        copies = qm.CopyTest(texts(acct.train))
        ctx = Context(acct, mentions, base_counts, qm.count_words(texts(acct.train)), copies, attribution, args.seed)
        markov = MarkovBot(acct, copies, args.seed)
        r = measure_account(acct, ctx, run, markov, args.posts)
        r["model"] = {"train_posts": len(acct.train), "new_posts": len(acct.new), "cached": cached,
                      "heldout_bits_per_char": meta.get("heldout_bits_per_char"),
                      "heldout_bits_per_char_base_vocab": meta.get("heldout_bits_per_char_base_vocab"),
                      "vocab_added": meta.get("vocab_added"), "train_seconds": meta.get("train_seconds")}
        r["bot"] = {"skip_reasons": dict(run.skip_reasons), "errors": run.errors,
                    "post_seconds": [round(s, 4) for s in run.post_seconds],
                    "reply_seconds": [round(s, 4) for s in run.reply_seconds]}
        results[handle] = r
        log(f"@{handle}: measured")

    print_report(results)
    print_examples(results)
    for handle, r in results.items():
        if r["bot"]["skip_reasons"] or r["bot"]["errors"]:
            print(f"@{handle}: reasons in skipped selections {r['bot']['skip_reasons']}; errors {r['bot']['errors'][:3]}")
    bot_env = {k: v for k, v in os.environ.items() if k.startswith("BOT_")}
    print(f"\nBOT_* settings: {bot_env or 'the defaults'}")
    print("command:", command)
    print("machine:", machine())
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {"command": command, "machine": machine(), "bot_env": bot_env, "accounts": results}
        args.json.write_text(json.dumps(no_nan(report), ensure_ascii=False, indent=1, allow_nan=False))


if __name__ == "__main__":
    main()
