"""The trainer's command line: python -m trainer {base,finetune,sample,evaluate}."""
from __future__ import annotations

import argparse
import collections
import json
import logging
import sys
from pathlib import Path

from trainer.data import FINETUNE_SECONDS
from trainer.errors import TrainerError
from trainer.model import DEFAULT_BASE

DEFAULT_BASE_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "base_tweets.jsonl.gz"


def _base_corpus(args: argparse.Namespace) -> Path:
    """--data, or the project's base corpus where it is at hand."""
    data = args.data or (DEFAULT_BASE_DATA if DEFAULT_BASE_DATA.exists() else None)
    if data is None:
        raise TrainerError("no base corpus: pass --data FILE (gzip JSON Lines or text, one post a line)")
    if not Path(data).is_file():
        raise TrainerError(f"{data}: no such file")
    return Path(data)


def cmd_base(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from trainer.model import ModelConfig, load

    data = _base_corpus(args)
    init = load(args.init) if args.init else None
    from trainer.train import BASE_TRAIN, train_base

    cfg = replace(BASE_TRAIN, max_seconds=args.max_seconds, batch_size=args.batch_size,
                  learning_rate=args.learning_rate, steps_per_epoch=args.steps_per_epoch,
                  seed=args.seed)
    config = ModelConfig(cell=args.cell, layers=args.layers, units=args.units, embedding=args.embedding)
    art = train_base(data, args.out, config, cfg, checkpoint_dir=args.checkpoint_dir, init=init)
    print(json.dumps({k: art.meta.get(k) for k in ("val_bits_per_char", "val_loss_nats", "posts", "epochs", "train_seconds")}))
    return 0


def cmd_words(args: argparse.Namespace) -> int:
    from trainer import words
    from trainer.data import read_posts

    texts = [p.text for p in read_posts(_base_corpus(args))]
    posts = [words.words(t) for t in texts]
    counts = collections.Counter(w for ws in posts for w in ws)
    forms = words.usual_forms(words.written(texts))
    shares = words.main_language_shares(posts, counts)
    n = words.save(counts, args.out, args.min_count, forms, shares)
    print(json.dumps({"words": n, "distinct_seen": len(counts), "min_count": args.min_count,
                      "forms": sum(f != w for w, f in forms.items() if counts[w] >= args.min_count),
                      "other_language": sum(s < words.OTHER_SHARE for w, s in shares.items()
                                            if counts[w] >= args.min_count),
                      "out": str(args.out)}))
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    from trainer.data import read_posts, split_account
    from trainer.model import load, save

    # Everything a user can get wrong is checked before TensorFlow loads (seconds, and
    # start-up lines of its own on some CPUs).
    base = load(args.base)
    posts = read_posts(args.posts)
    split_account(posts)
    from trainer.train import finetune

    art = finetune(base, posts, max_seconds=args.max_seconds)
    save(art, args.out)
    print(json.dumps({k: v for k, v in art.meta.items() if k != "heldout_ids_learnt"}))  # the artifact keeps them
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from trainer.model import load
    from trainer.sample import sample

    art = load(args.model)
    texts = sample(art, args.n, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                   prime=args.prime, seed=args.seed)
    for t in texts:
        print(json.dumps({"text": t}, ensure_ascii=False) if args.json else t.replace("\n", " / "))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from trainer.data import read_posts
    from trainer.evaluate import evaluate_account
    from trainer.model import load

    result = evaluate_account(load(args.base), read_posts(args.posts), args.max_seconds)
    if args.json:
        print(json.dumps(result))
    else:
        rows = [("base", "base"), ("fine-tuned (mixed)", "finetuned"), ("scratch (mixed)", "scratch"),
                ("  its network alone", "finetuned_network"), ("  its n-gram table alone", "ngram")]
        print(f"{'model':<26}{'held-out bits/char':>20}")
        for label, key in rows:
            print(f"{label:<26}{result[key + '_bits_per_char']:>20.3f}")
        print(f"{result['heldout_posts']} held-out posts; fine-tuning took {result['finetune_seconds']} s")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trainer", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    b = sub.add_parser("base", help="train a base model on many accounts' posts")
    b.add_argument("--data", type=Path, help=f"corpus (default {DEFAULT_BASE_DATA} when present)")
    b.add_argument("--out", type=Path, required=True, help="artifact to write (the best so far is kept there)")
    b.add_argument("--max-seconds", type=float, help="wall-clock budget")
    b.add_argument("--checkpoint-dir", type=Path, help="resume from / write periodic checkpoints here")
    b.add_argument("--init", type=Path, help="continue training this base model (its sizes are kept)")
    b.add_argument("--cell", choices=["gru", "lstm"], default="gru")
    b.add_argument("--layers", type=int, default=1)
    b.add_argument("--units", type=int, default=384)
    b.add_argument("--embedding", type=int, default=64)
    b.add_argument("--batch-size", type=int, default=128)
    b.add_argument("--learning-rate", type=float, default=2e-3)
    b.add_argument("--steps-per-epoch", type=int, default=400, help="training steps between validations")
    b.add_argument("--seed", type=int, default=0, help="order of the training batches (use a new one with --init)")
    b.set_defaults(func=cmd_base)

    w = sub.add_parser("words", help="the base corpus's real words and their usual forms (the bot posts no other words)")
    w.add_argument("--data", type=Path, help=f"corpus (default {DEFAULT_BASE_DATA} when present)")
    w.add_argument("--out", type=Path, default=Path(__file__).parent / "models" / "words.txt.gz")
    w.add_argument("--min-count", type=int, default=3, help="seen at least this often")
    w.set_defaults(func=cmd_words)

    f = sub.add_parser("finetune", help="fine-tune the base model on one account's posts")
    f.add_argument("--posts", type=Path, required=True, help="gzip JSON Lines or text, one post a line")
    f.add_argument("--out", type=Path, required=True)
    f.add_argument("--base", type=Path, default=DEFAULT_BASE)
    f.add_argument("--max-seconds", type=float, default=FINETUNE_SECONDS)
    f.set_defaults(func=cmd_finetune)

    s = sub.add_parser("sample", help="generate candidate posts")
    s.add_argument("--model", type=Path, required=True)
    s.add_argument("-n", type=int, default=10)
    s.add_argument("--temperature", type=float, default=1.0, help="the bot's default (BOT_TEMPERATURE)")
    s.add_argument("--top-k", type=int, default=0, help="0: no top-k cut")
    s.add_argument("--top-p", type=float, default=1.0, help="1: no nucleus cut, the bot's default (BOT_TOP_P)")
    s.add_argument("--prime", default="", help="text the post continues from (replies use it)")
    s.add_argument("--seed", type=int)
    s.add_argument("--json", action="store_true", help="one JSON object a line")
    s.set_defaults(func=cmd_sample)

    e = sub.add_parser("evaluate", help="held-out bits/char: base vs fine-tuned vs scratch")
    e.add_argument("--posts", type=Path, required=True)
    e.add_argument("--base", type=Path, default=DEFAULT_BASE)
    e.add_argument("--max-seconds", type=float, default=FINETUNE_SECONDS, help="budget for fine-tuning and for scratch")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_evaluate)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    try:
        return args.func(args)
    except TrainerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
