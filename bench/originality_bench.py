"""Benchmark of the near-copy filter (bot/originality.py): recall on near-copies,
false rejects on novel posts, and speed at 3,200 and at ~1,000,000 indexed posts.

    .venv/bin/python bench/originality_bench.py                 # everything
    .venv/bin/python bench/originality_bench.py --skip-1m       # accuracy + 3,200 only
    .venv/bin/python bench/originality_bench.py --sweep         # threshold grid

Positives: real posts of each account in ../shared/data/users, perturbed in each way
the filter must catch, checked against an index of all that account's posts.
Negatives: the account's newest 10% checked against an index of its older 90%, and
posts of the other accounts checked against the account's full index. Only posts of
at least MIN_WORDS words are used on both sides (shorter ones fail the content
checks' minimum length before the index is asked). Deterministic (fixed seed).
"""
from __future__ import annotations

import argparse
import gc
import gzip
import itertools
import json
import random
import re
import resource
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.content import ContentChecks  # noqa: E402
from bot.originality import NearCopyIndex, NearCopyParams, canonical_tokens, select  # noqa: E402
from trainer.text import fits, normalize  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
MIN_WORDS = 4
KINDS = [
    "exact", "case", "punctuation", "urls_mentions", "inserted", "deleted", "replaced",
    "verbatim_run", "short_run", "truncated", "glued",
]


def read_jsonl(path: Path, limit: int | None = None) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in itertools.islice(fh, limit)]


def nwords(text: str) -> int:
    return len(canonical_tokens(text))


# --- perturbations: each takes (post text, rng, helpers) and returns a candidate or None

_PUNCT_RE = re.compile(r"[^\w\s@#:/.]")
_URL_RE = re.compile(r"(?:https?://|www\.)\S+")
_MENTION_RE = re.compile(r"@\w+")


def p_exact(text, rng, other_words, account_posts):
    return text


def p_case(text, rng, other_words, account_posts):
    return rng.choice([str.upper, str.lower, str.swapcase, str.title])(text)


def p_punctuation(text, rng, other_words, account_posts):
    words = _PUNCT_RE.sub("", text).split()  # every punctuation mark dropped ...
    out = []
    for w in words:  # ... then random new marks and odd spacing
        out.append(w + rng.choice(["", "", "", ",", "!", "...", " -", "?!"]))
    return rng.choice([" ", "  ", "\n", " \t "]).join(out)


def p_urls_mentions(text, rng, other_words, account_posts):
    if not (_URL_RE.search(text) or _MENTION_RE.search(text)):
        return None
    choice = rng.randrange(3)
    if choice == 0:  # all URLs and mentions gone
        out = _MENTION_RE.sub("", _URL_RE.sub("", text))
    elif choice == 1:  # other URLs and other people
        out = _URL_RE.sub("https://t.co/AbCdEf123", text)
        out = _MENTION_RE.sub(lambda m: "@" + rng.choice(["someone", "nasa", "jack_b"]), out)
    else:  # URLs as the model writes them, plus a new mention
        out = "@newsdesk " + normalize(text)
    return out


def _edit_count(n: int) -> int:
    # "a few words": 1 in short posts, up to 3 in long ones
    return 1 if n < 10 else 2 if n < 20 else 3


def p_inserted(text, rng, other_words, account_posts):
    words = text.split()
    for _ in range(_edit_count(nwords(text))):
        words.insert(rng.randrange(len(words) + 1), rng.choice(other_words))
    return " ".join(words)


def p_deleted(text, rng, other_words, account_posts):
    words = text.split()
    k = _edit_count(nwords(text))
    if len(words) - k < MIN_WORDS:
        return None
    for _ in range(k):
        del words[rng.randrange(len(words))]
    return " ".join(words)


def p_replaced(text, rng, other_words, account_posts):
    words = text.split()
    for i in rng.sample(range(len(words)), min(len(words), _edit_count(nwords(text)))):
        words[i] = rng.choice(other_words)
    return " ".join(words)


def _run_inside(text, rng, other_words, pad: tuple[int, int]):
    """70% of the post's words, in one run, with new words on both sides (each side
    `pad` words long at random), shortened to fit 280 if need be."""
    words = text.split()
    k = -(-len(words) * 7 // 10)
    start = rng.randrange(len(words) - k + 1)
    before = [rng.choice(other_words) for _ in range(rng.randint(*pad))]
    after = [rng.choice(other_words) for _ in range(rng.randint(*pad))]
    out = " ".join(before + words[start : start + k] + after)
    while not fits(out) and len(before) + len(after) > 2:
        (before if len(before) > len(after) else after).pop()
        out = " ".join(before + words[start : start + k] + after)
    return out if fits(out) else None


def p_verbatim_run(text, rng, other_words, account_posts):
    # 70% of a long post's words, in one run, inside new words on both sides
    return _run_inside(text, rng, other_words, (2, 12)) if nwords(text) >= 10 else None


def p_short_run(text, rng, other_words, account_posts):
    # 70% of a short post (8-10 words) in one run inside new text: "Honestly, <6 of 9
    # words> and that is that." (the blind spot the quality issue measured: 16% passed)
    if not 8 <= nwords(text) <= 10 or len(text.split()) > 10:
        return None
    return _run_inside(text, rng, other_words, (1, 6))


def p_truncated(text, rng, other_words, account_posts):
    words = text.split()
    if nwords(text) < 10:
        return None
    return " ".join(words[: max(1, round(len(words) * rng.uniform(0.5, 0.9)))])


def p_glued(text, rng, other_words, account_posts):
    if nwords(text) < 5:
        return None
    for _ in range(20):
        other = rng.choice(account_posts)
        if other is not text and nwords(other) >= 5:
            out = f"{text} {other}" if rng.random() < 0.5 else f"{other} {text}"
            if fits(normalize(out)):
                return out
    return None


PERTURB = {k: globals()["p_" + k] for k in KINDS}


# --- accuracy -------------------------------------------------------------------------


def load_accounts(users_dir: Path) -> dict[str, list[dict]]:
    return {p.name.split(".")[0]: read_jsonl(p) for p in sorted(users_dir.glob("*.jsonl.gz"))}


def build(posts: list[dict], params: NearCopyParams) -> NearCopyIndex:
    index = NearCopyIndex(params)
    index.add_many((p["id"], p["text"]) for p in posts)
    return index


def make_cases(accounts: dict[str, list[dict]], per_kind: int, seed: int):
    """Positives {account: [(kind, text)]} and negatives {account: [(kind, text)]}."""
    rng = random.Random(seed)
    positives, negatives = {}, {}
    for name, posts in accounts.items():
        texts = [p["text"] for p in posts]
        eligible = [t for t in texts if nwords(t) >= MIN_WORDS]
        other_words = [w for o, ps in accounts.items() if o != name for p in ps[:2000] for w in p["text"].split()
                       if w.isalpha()]
        cases = []
        for kind in KINDS:
            made = 0
            for text in rng.sample(eligible, len(eligible)):
                cand = PERTURB[kind](text, rng, other_words, eligible)
                if cand is not None and nwords(cand) >= MIN_WORDS:
                    cases.append((kind, cand))
                    made += 1
                    if made == per_kind:
                        break
        positives[name] = cases
        n_held = max(1, round(len(posts) * 0.1))
        held = [("heldout", p["text"]) for p in posts[-n_held:] if nwords(p["text"]) >= MIN_WORDS]
        others = [("other_account", t) for o, ps in accounts.items() if o != name
                  for t in rng.sample([p["text"] for p in ps if nwords(p["text"]) >= MIN_WORDS], 500)]
        negatives[name] = held + others
    return positives, negatives


def evaluate(accounts, positives, negatives, params: NearCopyParams) -> dict:
    hits = {k: [0, 0] for k in KINDS}
    fr = {"heldout": [0, 0], "other_account": [0, 0]}
    self_repeats = 0  # held-out posts >= 90% the words of an older post of the account
    rejected_examples = []
    for name, posts in accounts.items():
        full = build(posts, params)
        for (kind, text), m in zip(positives[name], full.check_many([t for _, t in positives[name]])):
            hits[kind][0] += m.copy
            hits[kind][1] += 1
        n_held = max(1, round(len(posts) * 0.1))
        older = build(posts[:-n_held], params)
        for kind, index in (("heldout", older), ("other_account", full)):
            texts = [t for k, t in negatives[name] if k == kind]
            for text, m in zip(texts, index.check_many(texts)):
                fr[kind][0] += m.copy
                fr[kind][1] += 1
                self_repeats += kind == "heldout" and m.copy and m.score >= 0.9
                if m.copy and len(rejected_examples) < 400:
                    rejected_examples.append((name, kind, text, m.reason))
    tp = sum(h for h, _ in hits.values())
    npos = sum(n for _, n in hits.values())
    fp = sum(h for h, _ in fr.values())
    nneg = sum(n for _, n in fr.values())
    return {
        "recall": {k: h / n for k, (h, n) in hits.items()},
        "positives": {k: n for k, (_, n) in hits.items()},
        "recall_all": tp / npos,
        "false_reject": {k: h / n for k, (h, n) in fr.items()},
        "negatives": {k: n for k, (_, n) in fr.items()},
        "false_reject_all": fp / nneg,
        "self_repeats": self_repeats,
        "examples": rejected_examples,
    }


# --- speed ------------------------------------------------------------------------------


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 2**20


def best_rate(run, n: int, repeat: int = 3) -> float:
    """Items per second, best of `repeat` runs (this 2-core machine is shared)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t0)
    return n / best


def throughput(index: NearCopyIndex, texts: list[str], batch: int) -> float:
    def run():
        for i in range(0, len(texts), batch):
            index.check_many(texts[i : i + batch])

    return best_rate(run, len(texts))


def select_throughput(index: NearCopyIndex, texts: list[str], batch: int) -> float:
    checks = ContentChecks()

    def run():
        for i in range(0, len(texts), batch):
            select(texts[i : i + batch], index, checks)

    return best_rate(run, len(texts))


def speed_small(accounts, params, account: str) -> dict:
    posts = accounts[account]
    t0 = time.perf_counter()
    index = build(posts, params)
    index.check("warm up")
    build_s = time.perf_counter() - t0
    novel = [normalize(p["text"]) for o, ps in accounts.items() if o != account for p in ps[:2000]
             if nwords(p["text"]) >= MIN_WORDS]
    return {
        "account": account,
        "posts": len(posts),
        "build_s": build_s,
        "candidates": len(novel),
        "per_s_batch256": throughput(index, novel, 256),
        "per_s_batch1": throughput(index, novel[:3000], 1),
        "select_per_s_batch256": select_throughput(index, novel, 256),
    }


def speed_large(base: Path, accounts, params, limit: int | None, seed: int) -> dict:
    gc.collect()
    rss0 = rss_mb()
    t0 = time.perf_counter()
    index = NearCopyIndex(params)
    n = 0
    with gzip.open(base, "rt", encoding="utf-8") as fh:
        for line in itertools.islice(fh, limit):
            rec = json.loads(line)
            index.add(rec["id"], rec["text"])
            n += 1
    index.check("warm up")  # sorts the shingle arrays
    build_s = time.perf_counter() - t0
    gc.collect()
    mem = rss_mb() - rss0
    novel = [normalize(p["text"]) for ps in accounts.values() for p in ps[:1500] if nwords(p["text"]) >= MIN_WORDS]
    # near-copies of indexed posts, to see recall hold up at this size
    rng = random.Random(seed)
    with gzip.open(base, "rt", encoding="utf-8") as fh:
        sample = [json.loads(line)["text"] for line in itertools.islice(fh, 0, limit, 97)]
    sample = [t for t in sample if nwords(t) >= MIN_WORDS]
    other_words = [w for ps in accounts.values() for p in ps[:500] for w in p["text"].split() if w.isalpha()]
    pos = {}
    for kind in KINDS:
        cands = [c for t in rng.sample(sample, min(len(sample), 600))
                 if (c := PERTURB[kind](t, rng, other_words, sample)) is not None and nwords(c) >= MIN_WORDS]
        pos[kind] = cands[:300]
    recall = {k: sum(m.copy for m in index.check_many(c)) / max(1, len(c)) for k, c in pos.items()}
    novel_rejected = sum(m.copy for m in index.check_many(novel)) / len(novel)
    budgets = {}  # the postings budget trades recall for speed at this size
    for budget in (300, 1000, 3000):
        index.params = replace(params, postings_budget=budget)
        allpos = [c for cs in pos.values() for c in cs]
        budgets[budget] = (
            sum(m.copy for m in index.check_many(allpos)) / len(allpos),
            sum(m.copy for m in index.check_many(novel)) / len(novel),
            throughput(index, novel, 256),
        )
    index.params = params
    return {
        "posts": n,
        "build_s": build_s,
        "index_mb": mem,
        "per_s_batch256": throughput(index, novel, 256),
        "per_s_batch1": throughput(index, novel[:2000], 1),
        "recall_1m": recall,
        "novel_rejected_1m": novel_rejected,
        "budgets": budgets,
    }


# --- report ------------------------------------------------------------------------------


def print_accuracy(res: dict) -> None:
    print("\nRecall on near-copies (share rejected):")
    for k in KINDS:
        print(f"  {k:<15} {res['recall'][k]:7.2%}  (n={res['positives'][k]})")
    print(f"  {'overall':<15} {res['recall_all']:7.2%}  (n={sum(res['positives'].values())})")
    print("False rejects on novel posts:")
    for k, v in res["false_reject"].items():
        print(f"  {k:<15} {v:7.2%}  (n={res['negatives'][k]})")
    print(f"  {'overall':<15} {res['false_reject_all']:7.2%}  (n={sum(res['negatives'].values())})")
    held_rejected = round(res["false_reject"]["heldout"] * res["negatives"]["heldout"])
    rest = held_rejected - res["self_repeats"]
    print(f"  of the {held_rejected} held-out posts rejected, {res['self_repeats']} share >= 90% of their words with"
          f" an older post (the account repeating itself); the other {rest} are "
          f"{rest / (res['negatives']['heldout'] - res['self_repeats']):.2%} of the rest")


def sweep(accounts, positives, negatives, base: NearCopyParams) -> None:
    grid = {
        "min_similarity": [0.6, 0.65, 0.7, 0.75],
        "min_run": [4, 5, 6, 7],
        "min_post_run": [5, 6, 7, 8],
        "min_post_fraction": [0.5, 0.6, 0.7],
        "min_candidate_fraction": [0.7, 0.8, 0.9],
    }
    print("\nOne parameter at a time from the defaults: recall / false reject")
    for name, values in grid.items():
        for v in values:
            res = evaluate(accounts, positives, negatives, replace(base, **{name: v}))
            print(f"  {name}={v:<6} recall {res['recall_all']:.2%}  false-reject {res['false_reject_all']:.2%}  "
                  f"(heldout {res['false_reject']['heldout']:.2%}, other {res['false_reject']['other_account']:.2%})"
                  f"  worst kind {min(res['recall'].items(), key=lambda kv: kv[1])}")
    for shingle in (1, 2, 3):
        params = replace(base, shingle=shingle)
        res = evaluate(accounts, positives, negatives, params)
        sp = speed_small(accounts, params, "AndrewYang")
        print(f"  shingle={shingle} recall {res['recall_all']:.2%}  false-reject {res['false_reject_all']:.2%}  "
              f"{sp['per_s_batch256']:.0f} candidates/s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users-dir", type=Path, default=DATA / "users")
    ap.add_argument("--base", type=Path, default=DATA / "base_tweets.jsonl.gz")
    ap.add_argument("--per-kind", type=int, default=300, help="positives per kind and account")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--speed-account", default="AndrewYang")
    ap.add_argument("--large-limit", type=int, default=None, help="index only this many base posts")
    ap.add_argument("--skip-1m", action="store_true")
    ap.add_argument("--sweep", action="store_true", help="print a threshold grid instead")
    ap.add_argument("--show-rejects", type=int, default=0, help="print N rejected negatives")
    args = ap.parse_args()

    print("command: .venv/bin/python " + " ".join(["bench/originality_bench.py"] + sys.argv[1:]))
    params = NearCopyParams()
    print(f"params: {params}")
    accounts = load_accounts(args.users_dir)
    positives, negatives = make_cases(accounts, args.per_kind, args.seed)
    if args.sweep:
        sweep(accounts, positives, negatives, params)
        return
    res = evaluate(accounts, positives, negatives, params)
    print_accuracy(res)
    for name, kind, text, reason in res["examples"][: args.show_rejects]:
        print(f"  [{name} {kind}] {text[:110]!r} -> {reason}")
    sp = speed_small(accounts, params, args.speed_account)
    print(f"\nSpeed against {sp['account']} ({sp['posts']} posts, index built in {sp['build_s']:.2f} s), "
          f"{sp['candidates']} novel candidates:")
    print(f"  index.check_many, batches of 256: {sp['per_s_batch256']:,.0f} candidates/s")
    print(f"  index.check, one at a time:       {sp['per_s_batch1']:,.0f} candidates/s")
    print(f"  select() with content checks, 256: {sp['select_per_s_batch256']:,.0f} candidates/s")
    if not args.skip_1m:
        lg = speed_large(args.base, accounts, params, args.large_limit, args.seed)
        print(f"\nLarge index: {lg['posts']:,} posts of {args.base.name}")
        print(f"  build {lg['build_s']:.1f} s, resident memory of the index {lg['index_mb']:,.0f} MB")
        print(f"  index.check_many, batches of 256: {lg['per_s_batch256']:,.0f} candidates/s")
        print(f"  index.check, one at a time:       {lg['per_s_batch1']:,.0f} candidates/s")
        print("  recall on near-copies of indexed posts: "
              + ", ".join(f"{k} {v:.1%}" for k, v in lg["recall_1m"].items()))
        print(f"  posts of the 5 user accounts (none is in this corpus) rejected: {lg['novel_rejected_1m']:.2%}")
        print("  postings_budget: recall on all near-copies / user posts rejected / candidates/s (batches of 256)")
        for budget, (rec, rej, rate) in lg["budgets"].items():
            print(f"    {budget:>5}: {rec:.2%} / {rej:.2%} / {rate:,.0f}")


if __name__ == "__main__":
    main()
