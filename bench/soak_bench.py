"""Soak benchmark: the real daemon for many minutes against the sandbox, with faults
injected on a timeline the whole time; counts what must never happen.

    .venv/bin/python bench/soak_bench.py --minutes 30 [--json out.json] [--base tiny_base.zip] [--keep DIR]

Runs `python -m bot run` in a subprocess (its own temporary BOT_DATA_DIR, real HTTP, real
SQLite) against an in-process sandbox seeded with the shipped sample account
@realDonaldTrump, at short intervals (a post every ~20 s with jitter, mentions polled
every 5 s, refresh and fine-tune checks every 60 s, 3 s request timeout). The fine-tunes
start from a tiny base model (tests/bot_helpers.build_tiny_base) with a 20 s budget.
Meanwhile, in cycles: 429s with and without a reset header on the mentions, 503/500 on
posting and on the target's timeline, answers held back past the request timeout on
posting (the post lands, its answer is lost), dropped connections, a mention deleted
before the bot answers it, a chatty account the loop guard must stop, a steady trickle
of ordinary mentions (texts of real posts, tests/fixtures/crisislex_en.jsonl.gz) and of
new posts by the target (so that refresh and retraining keep running); once, 45 s
before the end, a "write_forbidden" 403 (a read-only app: the bot stops posting until
restarted, by design, so it is not part of the cycle). Sandbox features
that may be missing (timeline lag, delete_post, hide_post, the "lost" and
"write_forbidden" faults) are used when present; the output says which were.

Reports posts and replies made, duplicates (same normalized text, or two posts for one
slot), repeated replies (two replies to one mention), mentions made/answered/skipped
(with the bot's reasons), peak resident memory of the daemon and of its fine-tune
children, the state file's size after the first post and at the end, faults injected
by kind, the exit code after SIGTERM and ERROR/traceback lines in the bot's log.
Exits 1 when a duplicate or repeated reply was seen, the exit code was not 0 or the log
has a traceback, so it serves as a check. Prints a Markdown table, the command and the machine.
"""
from __future__ import annotations

import argparse
import gzip
import html
import json
import os
import platform
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bot.sandbox.x import BOT_USER_ID, BOT_USERNAME, KNOWN_USER_IDS, start_sandbox  # noqa: E402
from bot.platforms.text import comparable  # noqa: E402
from tests.bot_helpers import bot_env, build_tiny_base, kill9, start_bot  # noqa: E402

TARGET = "realDonaldTrump"
TARGET_ID = KNOWN_USER_IDS[TARGET.lower()]
MENTIONS_PATH = f"/2/users/{BOT_USER_ID}/mentions"
TIMELINE_PATH = f"/2/users/{TARGET_ID}/tweets"
POST_PATH = "/2/tweets"
CRISISLEX = REPO / "tests" / "fixtures" / "crisislex_en.jsonl.gz"
REQUEST_TIMEOUT_S = 3.0
FAULT_STEP_S = 10.0  # one timeline event every this many seconds
FORBID_BEFORE_END_S = 45.0  # the one write_forbidden fault comes this long before the end
LOOP_AUTHOR = "echo_bot_7"  # the chatty account the loop guard must stop
LOOP_BURST = 4  # its mentions per cycle (the reply budget is 3 an hour)
STOP_TIMEOUT_S = 30.0


def soak_env(sandbox, data_dir: Path, base: Path) -> dict[str, str]:
    """The daemon's environment: bot_env's sandbox settings with soak intervals."""
    return bot_env(
        sandbox.settings(), data_dir, base,
        BOT_POST_INTERVAL="20", BOT_POST_JITTER="5", BOT_FIRST_POST_DELAY="0",
        BOT_MENTIONS_INTERVAL="5", BOT_REFRESH_INTERVAL="60", BOT_TRAIN_INTERVAL="60",
        BOT_RETRAIN_NEW_POSTS="20", BOT_FINETUNE_MAX_SECONDS="20",
        BOT_REQUEST_TIMEOUT=str(REQUEST_TIMEOUT_S), BOT_LOOKUP_WINDOW="15", BOT_MAX_ATTEMPTS="3",
        BOT_BACKOFF_BASE="0.5", BOT_BACKOFF_MAX="5", BOT_RATE_LIMIT_MAX_WAIT="30",
        BOT_REPLY_BUDGET="3", BOT_REPLY_BACKLOG="600", BOT_MIN_WORDS="2",
        BOT_REAL_WORDS="false", BOT_DEFAULT_TARGET=TARGET,
    )


# --- texts of real posts ------------------------------------------------------------------
def real_texts(limit: int = 3000) -> list[str]:
    """Plain texts (HTML-unescaped: the sandbox escapes what it stores) of real posts."""
    out = []
    with gzip.open(CRISISLEX, "rt", encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                text = " ".join(html.unescape(json.loads(line)["text"]).split())
                if text and "xmimic" not in text.lower():
                    out.append(text)
            if len(out) >= limit:
                break
    random.Random(0).shuffle(out)
    return out


# --- what the sandbox offers ----------------------------------------------------------------
def sandbox_features(sandbox) -> dict[str, bool]:
    """Which of the optional sandbox features this checkout has."""
    kinds = set(getattr(sys.modules["bot.sandbox.x"], "FAULT_KINDS", ()))
    return {
        "set_timeline_lag": hasattr(sandbox, "set_timeline_lag"),
        "delete_post": hasattr(sandbox, "delete_post"),
        "hide_post": hasattr(sandbox, "hide_post"),
        "fault lost": "lost" in kinds,
        "fault write_forbidden": "write_forbidden" in kinds,
    }


@dataclass
class Soak:
    """Everything the run did to the bot and saw of it."""

    sandbox: object
    texts: list[str]
    features: dict[str, bool]
    faults: Counter = field(default_factory=Counter)
    mentions: dict[str, str] = field(default_factory=dict)  # mention id -> kind
    to_delete: list[tuple[str, str, int]] = field(default_factory=list)  # (id, how, mention GETs seen)
    deleted: dict[str, str] = field(default_factory=dict)  # mention id -> "deleted"/"hidden" (and if answered first)
    target_posts: int = 0
    n_text: int = 0

    def next_text(self) -> str:
        self.n_text += 1
        return self.texts[self.n_text % len(self.texts)][:240]


# --- the fault timeline ---------------------------------------------------------------------
def inject(soak: Soak, label: str, kind: str, **kw) -> None:
    try:
        soak.sandbox.inject(kind, **kw)
        soak.faults[label] += 1
    except ValueError:  # a fault kind this sandbox lacks
        soak.faults.setdefault(label + " (unavailable)", 0)


def mention(soak: Soak, kind: str, author: str, in_reply_to_id: str | None = None) -> dict:
    m = soak.sandbox.add_mention(soak.next_text(), author=author, in_reply_to_id=in_reply_to_id)
    soak.mentions[m["id"]] = kind
    return m


def mention_gets(sandbox) -> int:
    """Mention polls the sandbox answered with 200 so far."""
    return sum(1 for m, p, s in sandbox.request_log if m == "GET" and p == MENTIONS_PATH and s == 200)


def vanishing_mention(soak: Soak, how: str) -> None:
    """A mention that disappears (deleted or hidden) right after the bot's next poll reads it."""
    available = soak.features["delete_post" if how == "deleted" else "hide_post"]
    if not available:
        soak.faults.setdefault(f"mention {how} before the reply (unavailable)", 0)
        return
    m = mention(soak, f"{how} before the reply", f"gone_{len(soak.deleted) + len(soak.to_delete)}")
    soak.to_delete.append((m["id"], how, mention_gets(soak.sandbox)))
    soak.faults[f"mention {how} before the reply"] += 1


def settle_vanishing(soak: Soak) -> None:
    """Delete/hide the waiting mentions once a poll has come since they were made."""
    if not soak.to_delete:
        return
    gets = mention_gets(soak.sandbox)
    answered = {p["in_reply_to_id"] for p in soak.sandbox.posts_by(BOT_USERNAME, include_deleted=True)}
    for item in list(soak.to_delete):
        mid, how, seen = item
        if gets > seen:
            getattr(soak.sandbox, "delete_post" if how == "deleted" else "hide_post")(mid)
            soak.deleted[mid] = how + (" (after the reply)" if mid in answered else "")
            soak.to_delete.remove(item)


def loop_mentions(soak: Soak) -> None:
    """The chatty account: a burst of mentions, the first one answering the bot's last reply to it."""
    ours = soak.sandbox.posts_by(BOT_USERNAME, include_deleted=True)
    loop_ids = {mid for mid, kind in soak.mentions.items() if kind == "loop guard"}
    last = [p["id"] for p in ours if p["in_reply_to_id"] in loop_ids]
    for n in range(LOOP_BURST):
        mention(soak, "loop guard", LOOP_AUTHOR, in_reply_to_id=last[-1] if (n == 0 and last) else None)
    soak.faults["loop-guard mentions"] += LOOP_BURST


def fault_timeline(soak: Soak) -> list[tuple[str, callable]]:
    """One cycle of the timeline: (label, action), one every FAULT_STEP_S seconds."""
    slow = REQUEST_TIMEOUT_S + 2

    def f(label, kind, **kw):
        return label, lambda: inject(soak, label, kind, **kw)

    return [
        f("429 with reset on GET mentions", "429", method="GET", path=MENTIONS_PATH, reset_in=3),
        f("503 on POST /2/tweets", "503", method="POST", path=POST_PATH),
        f("503 on GET timeline", "503", method="GET", path=TIMELINE_PATH),
        ("mention deleted before the reply", lambda: vanishing_mention(soak, "deleted")),
        f("slow POST /2/tweets (lost answer)", "slow", method="POST", path=POST_PATH, delay=slow),
        f("429 without reset on GET mentions", "429", method="GET", path=MENTIONS_PATH),
        f("500 on POST /2/tweets", "500", method="POST", path=POST_PATH),
        ("loop-guard mentions", lambda: loop_mentions(soak)),
        f("disconnect on POST /2/tweets", "disconnect", method="POST", path=POST_PATH),
        f("500 on GET timeline", "500", method="GET", path=TIMELINE_PATH),
        f("lost on POST /2/tweets", "lost", method="POST", path=POST_PATH),
        ("mention hidden before the reply", lambda: vanishing_mention(soak, "hidden")),
    ]


def write_forbidden(soak: Soak) -> None:
    """Once, near the end: the app turns read-only. The bot stops posting until restarted
    (by design), so in the cycle it would end the soak's posting after the first round."""
    inject(soak, "write_forbidden on POST /2/tweets (once, near the end)", "write_forbidden",
           method="POST", path=POST_PATH)


def ordinary_mention(soak: Soak) -> None:
    mention(soak, "ordinary", f"reader_{len(soak.mentions)}")


def target_posts(soak: Soak, n: int = 2) -> None:
    """New posts by the target, so that refresh finds some and retraining comes round."""
    soak.sandbox.add_posts(TARGET, [soak.next_text() for _ in range(n)])
    soak.target_posts += n


# --- memory and state size ------------------------------------------------------------------
def proc_status(pid: int) -> dict[str, str]:
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    return dict(line.split(":", 1) for line in lines if ":" in line)


def kb(status: dict[str, str], key: str) -> int:
    value = status.get(key, "0 kB").split()
    return int(value[0]) if value else 0


def descendants(root: int) -> list[int]:
    """Pids of every process below `root` (fine-tune children and theirs)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            ppid = proc_status(int(entry.name)).get("PPid", "").strip()
            if ppid.isdigit():
                parents[int(entry.name)] = int(ppid)
    out, frontier = [], [root]
    while frontier:
        parent = frontier.pop()
        kids = [p for p, pp in parents.items() if pp == parent]
        out += kids
        frontier += kids
    return out


@dataclass
class Memory:
    daemon_hwm_kb: int = 0
    children_hwm_kb: dict[int, int] = field(default_factory=dict)

    def sample(self, pid: int) -> None:
        self.daemon_hwm_kb = max(self.daemon_hwm_kb, kb(proc_status(pid), "VmHWM"))
        for child in descendants(pid):
            hwm = kb(proc_status(child), "VmHWM")
            self.children_hwm_kb[child] = max(self.children_hwm_kb.get(child, 0), hwm)


def state_bytes(data_dir: Path) -> int:
    return sum(p.stat().st_size for p in (data_dir / "state.sqlite", data_dir / "state.sqlite-wal") if p.exists())


def wal_bytes(data_dir: Path) -> int:
    wal = data_dir / "state.sqlite-wal"
    return wal.stat().st_size if wal.exists() else 0


# --- running the daemon ---------------------------------------------------------------------
def add_target(env: dict[str, str], work: Path) -> None:
    subprocess.run([sys.executable, "-m", "bot", "targets", "add", TARGET], cwd=work,
                   env={**env, "PYTHONPATH": str(REPO)}, check=True, capture_output=True, timeout=120)


def soak_loop(soak: Soak, proc, data_dir: Path, seconds: float, memory: Memory) -> tuple[int | None, float]:
    """Drive the timeline for `seconds` (less if the daemon dies); returns the state's size
    once the first post landed and the seconds the soak ran."""
    rng = random.Random(1)
    cycle = fault_timeline(soak)
    start = time.monotonic()
    due = {"fault": start + FAULT_STEP_S, "mention": start + rng.uniform(15, 30), "target": start + 20,
           "memory": start, "forbid": start + max(seconds - FORBID_BEFORE_END_S, seconds * 0.75)}
    step, first_size = 0, None
    while time.monotonic() - start < seconds and proc.poll() is None:
        now = time.monotonic()
        if now >= due["fault"]:
            cycle[step % len(cycle)][1]()
            step += 1
            due["fault"] = now + FAULT_STEP_S
        if now >= due["forbid"]:
            write_forbidden(soak)
            due["forbid"] = float("inf")
        if now >= due["mention"]:
            ordinary_mention(soak)
            due["mention"] = now + rng.uniform(15, 30)
        if now >= due["target"]:
            target_posts(soak)
            due["target"] = now + 20
        if now >= due["memory"]:
            memory.sample(proc.pid)
            due["memory"] = now + 2
        settle_vanishing(soak)
        if first_size is None and soak.sandbox.posts_by(BOT_USERNAME, include_deleted=True):
            first_size = state_bytes(data_dir)
        time.sleep(0.5)
    return first_size, time.monotonic() - start


def stop_daemon(proc) -> tuple[int | None, float]:
    """SIGTERM, then wait; kill -9 (exit code None) if it does not leave in time."""
    if proc.poll() is not None:
        return proc.returncode, 0.0
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(STOP_TIMEOUT_S), time.monotonic() - t0
    except subprocess.TimeoutExpired:
        kill9(proc)
        return None, time.monotonic() - t0


# --- reading the results --------------------------------------------------------------------
def normalized(text: str) -> str:
    """The text as the bot compares it with what X serves (links, escaping, a reply's @handles)."""
    return comparable(text, reply=True)


def read_state(data_dir: Path, table: str) -> dict[str, dict]:
    """A table of the bot's state, read with plain sqlite3, read-only."""
    conn = sqlite3.connect(f"file:{data_dir / 'state.sqlite'}?mode=ro", uri=True)
    try:
        return {k: json.loads(v) for k, v in conn.execute(f'SELECT key, value FROM "{table}"')}
    except sqlite3.OperationalError:
        return {}
    finally:
        conn.close()


def slot_of(post: dict, by_id: dict[str, dict], by_text: dict[str, dict]) -> str | None:
    """The schedule slot a standalone post of the bot belongs to: its record found by the
    id X gave, else by its text (a post whose answer was lost is recorded without an id)."""
    record = by_id.get(post["id"]) or by_text.get(normalized(post["text"]))
    return record.get("slot") if record else None


def id_seconds(post_id: str) -> float:
    """When X made a post, from its snowflake id (seconds since X's epoch)."""
    return (int(post_id) >> 22) / 1000


def latencies(sandbox, replies: list[dict], standalone: list[dict]) -> dict:
    """Mention -> reply delays, and the longest gap between two standalone posts."""
    first = {}
    for p in replies:
        first.setdefault(p["in_reply_to_id"], p["id"])
    delays = sorted(id_seconds(r) - id_seconds(m) for m, r in first.items())
    times = [id_seconds(p["id"]) for p in standalone]
    gaps = [b - a for a, b in zip(times, times[1:])]
    return {
        "reply delay median s": round(delays[len(delays) // 2], 1) if delays else None,
        "reply delay max s": round(delays[-1], 1) if delays else None,
        "longest gap between posts s": round(max(gaps), 1) if gaps else None,
    }


def post_figures(sandbox, data_dir: Path) -> dict:
    ours = sandbox.posts_by(BOT_USERNAME, include_deleted=True)
    standalone = [p for p in ours if p["in_reply_to_id"] is None]
    replies = [p for p in ours if p["in_reply_to_id"]]
    records = list(read_state(data_dir, "bot_posts").values())
    by_id = {r["api_id"]: r for r in records if r.get("api_id")}
    by_text = {normalized(r.get("text") or ""): r for r in records if r.get("kind") == "post"}
    by_text_text = Counter(normalized(p["text"]) for p in ours)
    per_mention = Counter(p["in_reply_to_id"] for p in replies)
    per_slot = Counter(slot_of(p, by_id, by_text) for p in standalone)
    recorded_per_slot = Counter(r.get("slot") for r in records if r.get("kind") == "post" and r.get("status") == "posted")
    unrecorded = [p for p in ours if p["id"] not in by_id]
    return {
        "standalone posts": len(standalone),
        "replies": len(replies),
        "duplicate texts": sum(n - 1 for n in by_text_text.values() if n > 1),
        # two standalone posts of one slot: recorded as posted twice, or seen twice on X
        "duplicate slots": max(sum(n - 1 for s, n in per_slot.items() if s and n > 1),
                               sum(n - 1 for n in recorded_per_slot.values() if n > 1)),
        "repeated replies": sum(n - 1 for n in per_mention.values() if n > 1),
        "posts on X the state does not record as posted": len(unrecorded),
        "record statuses": dict(Counter(f"{r.get('kind')}:{r.get('status')}" for r in records)),
        "duplicate examples": [t for t, n in by_text_text.items() if n > 1][:3],
        "double-posted slots": sorted(s for s, n in per_slot.items() if s and n > 1),
        "repeated-reply mentions": sorted(m for m, n in per_mention.items() if n > 1),
        **latencies(sandbox, replies, standalone),
        "unrecorded posts": [{"id": p["id"], "in_reply_to_id": p["in_reply_to_id"], "text": p["text"][:80]}
                             for p in unrecorded],
    }


def mention_figures(soak: Soak, data_dir: Path) -> dict:
    handled = read_state(data_dir, "mentions")
    answered = {p["in_reply_to_id"] for p in soak.sandbox.posts_by(BOT_USERNAME, include_deleted=True)}
    by_kind: dict[str, Counter] = defaultdict(Counter)
    reasons = Counter()
    for mid, kind in soak.mentions.items():
        entry = handled.get(mid) or {}
        if mid in answered:
            outcome = "answered"
        elif entry.get("status") == "skipped":
            outcome = "skipped"
            reasons[re.sub(r"\d+", "N", str(entry.get("reason") or "?"))] += 1
        elif entry.get("status") in ("refused", "unknown"):
            # X refused the reply (deleted/hidden mention), or its answer was lost and it was given up
            outcome = str(entry["status"])
        else:
            outcome = "not handled"
        by_kind[kind][outcome] += 1
    return {
        "made": len(soak.mentions),
        "answered": sum(c["answered"] for c in by_kind.values()),
        "skipped": sum(c["skipped"] for c in by_kind.values()),
        "refused": sum(c["refused"] for c in by_kind.values()),
        "given up": sum(c["unknown"] for c in by_kind.values()),
        "not handled (yet)": sum(c["not handled"] for c in by_kind.values()),
        "by kind": {k: dict(v) for k, v in by_kind.items()},
        "skip reasons": dict(reasons),
        "vanished": dict(Counter(soak.deleted.values())),
    }


def log_figures(log_path: Path) -> dict:
    lines = log_path.read_text(errors="replace").splitlines() if log_path.exists() else []
    errors = [line for line in lines if " ERROR " in line]
    kinds = Counter(re.sub(r"\d+", "N", line.split(" ERROR ", 1)[1])[:140] for line in errors)
    return {
        "ERROR lines": len(errors),
        "tracebacks": sum(1 for line in lines if line.startswith("Traceback")),
        "WARNING lines": sum(1 for line in lines if " WARNING " in line),
        "ERROR kinds": dict(kinds.most_common(12)),
    }


def request_figures(sandbox) -> dict:
    """API answers by endpoint and status (0: connection dropped)."""
    def group(path: str) -> str:
        return re.sub(r"\d{5,}", "{id}", path)
    counts = Counter(f"{m} {group(p)} {s}" for m, p, s in sandbox.request_log)
    return dict(sorted(counts.items()))


def machine() -> dict:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = set(next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), []))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    return {"cpu": model, "cpus": os.cpu_count(), "commit": commit or "?", "avx2": "avx2" in flags,
            "avx512": any(f.startswith("avx512") for f in flags), "python": platform.python_version(),
            "os": platform.platform()}


# --- the report -------------------------------------------------------------------------------
def failures(result: dict) -> list[str]:
    p, lg = result["posts"], result["log"]
    out = []
    for name in ("duplicate texts", "duplicate slots", "repeated replies"):
        if p[name]:
            out.append(f"{name}: {p[name]}")
    if result["daemon died during the run"]:
        out.append(f"the daemon exited by itself after {result['soak_s']:.0f} s of soak")
    if result["exit code"] != 0:
        out.append(f"exit code after SIGTERM: {result['exit code']}")
    if lg["tracebacks"]:
        out.append(f"tracebacks in the log: {lg['tracebacks']}")
    return out


def table(result: dict) -> str:
    p, m, lg, mem = result["posts"], result["mentions"], result["log"], result["memory"]
    mb = lambda k: f"{k / 1024:.0f} MB"  # noqa: E731
    rows = [
        ("run", f"{result['soak_s'] / 60:.1f} of {result['minutes']:g} min of soak after setup "
                f"({result['setup_s']:.0f} s: base model, target, start)"
                + (" - the daemon exited by itself" if result["daemon died during the run"] else "")),
        ("standalone posts / replies", f"{p['standalone posts']} / {p['replies']}"),
        ("duplicates (same text / same slot)", f"{p['duplicate texts']} / {p['duplicate slots']}"),
        ("repeated replies (one mention answered twice)", str(p["repeated replies"])),
        ("mention -> reply delay, median / max", f"{p['reply delay median s']} s / {p['reply delay max s']} s"),
        ("longest gap between two standalone posts", f"{p['longest gap between posts s']} s (interval 20 +- 5 s)"),
        ("bot posts on X the state does not record as posted", str(p["posts on X the state does not record as posted"])),
        ("mentions made / answered / skipped / reply refused / given up (unknown) / not handled yet",
         f"{m['made']} / {m['answered']} / {m['skipped']} / {m['refused']} / {m['given up']} / {m['not handled (yet)']}"),
        ("skip reasons", "; ".join(f"{r} ({n})" for r, n in m["skip reasons"].items()) or "none"),
        ("peak memory, daemon (VmHWM)", mb(mem["daemon_hwm_kb"])),
        ("peak memory, fine-tune children (VmHWM, largest)",
         f"{mb(max(mem['children_hwm_kb'].values()))} ({len(mem['children_hwm_kb'])} child processes seen)"
         if mem["children_hwm_kb"] else "no child seen"),
        ("state file (sqlite + wal), after first post -> end",
         f"{(result['state bytes first'] or 0) / 1024:.0f} KB -> {result['state bytes end'] / 1024:.0f} KB"
         f" (end: wal {result['wal bytes end'] / 1024:.0f} KB)"),
        ("faults injected", "; ".join(f"{k}: {v}" for k, v in result["faults"].items())),
        ("target posts added during the run", str(result["target posts added"])),
        ("sandbox features available", ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in result["features"].items())),
        ("SIGTERM -> exit", f"{result['stop_s']:.1f} s, exit code {result['exit code']}"),
        ("log: ERROR lines / tracebacks / WARNING lines", f"{lg['ERROR lines']} / {lg['tracebacks']} / {lg['WARNING lines']}"),
    ]
    return "| measure | value |\n|---|---|\n" + "".join(f"| {a} | {b} |\n" for a, b in rows)


def report(result: dict) -> str:
    mach = result["machine"]
    lines = [
        "# Soak benchmark", "",
        f"`{result['command']}`", "",
        f"Machine: {mach['cpu']}, {mach['cpus']} CPUs, AVX2 {'yes' if mach['avx2'] else 'no'}, "
        f"AVX-512 {'yes' if mach['avx512'] else 'no'}; Python {mach['python']}; commit {mach['commit']} "
        f"(plus the working tree's changes); {time.strftime('%Y-%m-%d')}.", "",
        table(result),
        "Mentions by kind: " + json.dumps(result["mentions"]["by kind"]),
        "Bot post records by kind:status: " + json.dumps(result["posts"]["record statuses"]),
        "ERROR kinds in the log: " + (json.dumps(result["log"]["ERROR kinds"], indent=1) if result["log"]["ERROR kinds"] else "none"),
        "API answers by endpoint and status: " + json.dumps(result["requests"], indent=1),
    ]
    for name in ("duplicate examples", "double-posted slots", "repeated-reply mentions", "unrecorded posts"):
        if result["posts"][name]:
            lines.append(f"{name}: " + json.dumps(result["posts"][name], ensure_ascii=False))
    bad = failures(result)
    lines += ["", "RESULT: " + ("FAIL: " + "; ".join(bad) if bad else "ok (no duplicate, no repeated reply, exit 0, no traceback)")]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30.0, help="soak length after setup (default 30)")
    ap.add_argument("--json", type=Path, default=None, help="also write every figure here")
    ap.add_argument("--base", type=Path, default=None, help="tiny base model file (built there if missing)")
    ap.add_argument("--keep", type=Path, default=None, help="copy the bot's log and state here")
    args = ap.parse_args()

    t0 = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="soak-bench-"))
    data_dir, log_path = work / "data", work / "bot.log"
    sandbox = start_sandbox(port=0)
    proc = None
    try:
        base = build_tiny_base(args.base or work / "tiny_base.zip")
        features = sandbox_features(sandbox)
        if features["set_timeline_lag"]:
            sandbox.set_timeline_lag(5.0)
        soak = Soak(sandbox, real_texts(), features)
        env = soak_env(sandbox, data_dir, base)
        add_target(env, work)
        proc = start_bot(env, work, log_path)
        setup_s = time.monotonic() - t0
        memory = Memory()
        first_size, ran_s = soak_loop(soak, proc, data_dir, args.minutes * 60, memory)
        died = proc.poll() is not None
        if proc.poll() is None:
            memory.sample(proc.pid)
        exit_code, stop_s = stop_daemon(proc)
        result = {
            "command": " ".join([".venv/bin/python", "bench/soak_bench.py", *sys.argv[1:]]),
            "machine": machine(), "minutes": args.minutes, "setup_s": setup_s, "soak_s": ran_s,
            "daemon died during the run": died,
            "posts": post_figures(sandbox, data_dir), "mentions": mention_figures(soak, data_dir),
            "memory": {"daemon_hwm_kb": memory.daemon_hwm_kb, "children_hwm_kb": memory.children_hwm_kb},
            "state bytes first": first_size, "state bytes end": state_bytes(data_dir),
            "wal bytes end": wal_bytes(data_dir),
            "faults": dict(soak.faults), "target posts added": soak.target_posts, "features": features,
            "exit code": exit_code, "stop_s": stop_s, "log": log_figures(log_path),
            "requests": request_figures(sandbox),
        }
        print(report(result))
        if args.json:
            args.json.write_text(json.dumps(result, indent=1, default=str))
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            shutil.copy(log_path, args.keep / "bot.log")
            for name in ("state.sqlite", "state.sqlite-wal"):
                if (data_dir / name).exists():
                    shutil.copy(data_dir / name, args.keep / name)
        return 1 if failures(result) else 0
    finally:
        if proc is not None and proc.poll() is None:
            kill9(proc)
        sandbox.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
