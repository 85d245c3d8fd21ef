"""Platforms benchmark: the demo's time to its first post and reply, the daemon's memory
with targets on all three platforms, and the HTTP requests a post and a reply cost.

    .venv/bin/python bench/platforms_bench.py [--platforms x,mastodon,bluesky] [--skip-demo]
        [--memory-seconds 60] [--posts 5] [--mentions 5] [--json FILE]

1. demo: `python -m bot run --sandbox --platform P` as a subprocess (fresh BOT_DATA_DIR,
   TF_CPP_MIN_LOG_LEVEL=2), its log read line by line: seconds from the process start to
   the model registered, the first "posted ... as @..." line and the first "... in reply
   to ..." line; then SIGTERM (must exit 0). It fine-tunes the committed base model, so
   this takes 2-3 min a platform; the platforms run one after another (never in parallel).
2. memory: `python -m bot run` posting on X (the X sandbox's account) with 10 targets
   spread over the platforms chosen (4 X, 3 Mastodon, 3 Bluesky by default): X accounts
   in the X sandbox, Mastodon accounts in the Mastodon sandbox (their home server), Bluesky
   accounts on a local PDS + AppView (BLUESKY_PUBLIC_API). Each target has the committed
   base model registered (no fine-tune; BOT_RETRAIN_NEW_POSTS is set out of reach) once its
   posts are downloaded (in this process, before the daemon starts); the daemon's refresh
   reads every target again at start; a post every 5 s, two mentions. VmRSS is
   sampled every 0.5 s for --memory-seconds; VmHWM at the end.
3. requests: an in-process `bot.daemon.Bot` against each local platform (bot/sandbox/local.py):
   the target added and its posts downloaded (a first refresh), then HTTP requests counted
   for one refresh with nothing new, --posts `post_slot` calls, --mentions
   `answer_mentions` calls that each answer exactly one new mention, and a few empty
   mention polls. X and Mastodon: the sandbox's request log (server side); Bluesky: a
   counting httpx transport given to the bot's BlueskyClient (client side: PDS + AppView).
   For X also the Meter's counts by kind (bot/costs.py) and the estimated cost per day at
   the default schedule (3 posts, 4 refreshes, 720 mention polls of which 3 answer one
   mention each).
"""
from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import platform as pyplatform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402

from bot.costs import DEFAULT_PRICES  # noqa: E402
from bot.daemon import Bot  # noqa: E402
from bot.platforms import canonical  # noqa: E402
from bot.sandbox import bluesky as bsky  # noqa: E402
from bot.sandbox import mastodon as mastodon_sandbox  # noqa: E402
from bot.sandbox import x as x_sandbox  # noqa: E402
from bot.sandbox.local import LocalMastodon, LocalX  # noqa: E402
from bot.settings import Settings  # noqa: E402
from bot.store import Store  # noqa: E402
from tests.bot_helpers import bot_env, register_model  # noqa: E402

BASE = REPO / "trainer" / "models" / "base.zip"
USERS = REPO.parent / "shared" / "data" / "users"
SAMPLE = REPO / "bot" / "sample_data" / "realDonaldTrump.jsonl.gz"
PLATFORMS = ("x", "mastodon", "bluesky")
POSTED_RE = re.compile(r"posted (\S+) as @(\S+)")


# --- the machine ------------------------------------------------------------------------------
def machine() -> dict:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = set(next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), []))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    mem = next((int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal")), 0) if Path("/proc/meminfo").exists() else 0
    return {"cpu": model, "cpus": os.cpu_count(), "avx2": "avx2" in flags, "avx512f": "avx512f" in flags,
            "memory_gb": round(mem / 1024 / 1024, 1), "commit": commit or "?", "python": pyplatform.python_version(),
            "os": pyplatform.platform(), "loadavg_at_start": [round(x, 2) for x in os.getloadavg()]}


def proc_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TWITTER_", "BOT_", "BLUESKY_", "MASTODON_"))}
    env.update({"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)})
    env.update(extra)
    return env


class LineReader:
    """Reads a process's output in a thread: (seconds since `t0`, line) for every line."""

    def __init__(self, proc: subprocess.Popen, t0: float, log_path: Path):
        self.lines: list[tuple[float, str]] = []
        self._log = open(log_path, "w", encoding="utf-8")
        self._thread = threading.Thread(target=self._read, args=(proc, t0), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen, t0: float) -> None:
        for raw in proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.lines.append((time.monotonic() - t0, line))
            self._log.write(line + "\n")
            self._log.flush()

    def first(self, pred) -> tuple[float, str] | None:
        return next(((t, line) for t, line in list(self.lines) if pred(line)), None)

    def close(self) -> None:
        self._thread.join(5)
        self._log.close()


def stop(proc: subprocess.Popen, timeout: float = 30.0) -> tuple[int | None, float]:
    t0 = time.monotonic()
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        code = None
    return code, time.monotonic() - t0


# --- 1. the demo ------------------------------------------------------------------------------------
def bench_demo(platform: str, work: Path, timeout: float) -> dict:
    folder = work / f"demo-{platform}"
    folder.mkdir()
    env = clean_env(BOT_DATA_DIR=str(folder / "data"))
    cmd = [sys.executable, "-m", "bot", "run", "--sandbox", "--platform", platform]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    reader = LineReader(proc, t0, folder / "demo.log")
    peak = 0
    post = reply = None
    deadline = t0 + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        post = reader.first(lambda s: "posted " in s and " as @" in s and " in reply to " not in s)
        reply = reader.first(lambda s: "posted " in s and " in reply to " in s)
        if post and reply:
            break
        time.sleep(0.2)
    peak = proc_kb(proc.pid, "VmHWM")
    died = proc.poll() is not None
    code, stop_s = stop(proc)
    reader.close()
    registered = reader.first(lambda s: "registered" in s and "model v" in s)
    mention = reader.first(lambda s: "demo: @" in s and "mentioned the bot" in s)
    errors = [line for _, line in reader.lines if " ERROR " in line or "Traceback" in line]
    result = {
        "platform": platform, "command": " ".join(["python", "-m", "bot", "run", "--sandbox", "--platform", platform]),
        "model_registered_s": registered[0] if registered else None,
        "mention_made_s": mention[0] if mention else None,
        "first_post_s": post[0] if post else None, "first_reply_s": reply[0] if reply else None,
        "first_post_line": post[1] if post else None, "first_reply_line": reply[1] if reply else None,
        "peak_rss_mb": round(peak / 1024), "exit_code": code, "sigterm_to_exit_s": round(stop_s, 2),
        "died_before_done": died, "error_lines": errors[:10], "log_lines": len(reader.lines),
    }
    if not (post and reply):
        result["log_tail"] = [line for _, line in reader.lines[-40:]]
    return result


# --- a local Bluesky network with more accounts -----------------------------------------------------
def start_bluesky(extra: dict[str, list[dict]]) -> bsky.BlueskyWorld:
    """The reference PDS + AppView with the usual target/fan/bot plus `extra` accounts
    (handle -> posts), everything seeded and indexed. close() stops it all."""
    reason = bsky.missing()
    if reason:
        raise RuntimeError(reason)
    running = bsky._Running()
    try:
        t0 = time.monotonic()
        running.services = bsky.Services(running.tmp)
        running.network = bsky.Network([bsky.TARGET, bsky.FAN, bsky.BOT, *extra], running.services, running.tmp)
        t1 = time.monotonic()
        running.network.control("POST", "/seed", {"handle": bsky.TARGET, "posts": bsky.seed_posts()})
        for handle, posts in extra.items():
            running.network.control("POST", "/seed", {"handle": handle, "posts": posts})
        running.network.control("POST", "/process-all")
        running.timings = {"start_s": t1 - t0, "seed_s": time.monotonic() - t1}
        running.world = bsky.BlueskyWorld(running.network)
        running.world.owner = running
        return running.world
    except BaseException:
        running.close()
        raise


def read_posts(path: Path, limit: int | None = None) -> list[dict]:
    out = []
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                row = json.loads(line)
                if row.get("text", "").strip():
                    out.append(row)
            if limit and len(out) >= limit:
                break
    return out


def account_posts(name: str, limit: int | None = None) -> list[dict]:
    """An account's posts from ../shared/data/users, else the shipped sample's."""
    path = USERS / f"{name}.jsonl.gz"
    return read_posts(path if path.is_file() else SAMPLE, limit)


# --- 3. requests per post and per reply --------------------------------------------------------------
class CountingTransport(httpx.BaseTransport):
    """An httpx transport that counts (method, host:port, path) of every request."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.log: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.log.append((request.method, f"{request.url.host}:{request.url.port}", request.url.path))
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def shape(path: str) -> str:
    """A path with its ids replaced, so requests group by endpoint."""
    return re.sub(r"/\d{3,}(?=/|$)", "/:id", path)


class Counted:
    """What one world's requests look like so far, whichever side counts them."""

    def __init__(self, world, transport: CountingTransport | None):
        self.world, self.transport = world, transport

    def log(self) -> list[tuple[str, str]]:
        if self.transport is not None:
            return [(m, p) for m, _, p in list(self.transport.log)]
        return [(m, p) for m, p, _ in self.world.sandbox.request_log]

    def measure(self, fn):
        before = len(self.log())
        t0 = time.monotonic()
        out = fn()
        took = time.monotonic() - t0
        new = self.log()[before:]
        return out, new, took


def make_bot(world, data_dir: Path, **extra: str) -> tuple[Bot, CountingTransport | None]:
    env = {**bot_env(None, data_dir, BASE), **world.bot_env(), "BOT_REPLY_BUDGET": "1000", "BOT_CANDIDATES": "32",
           **extra}
    settings = Settings.from_env(env, dotenv_path=None)
    bot = Bot(settings, Store(data_dir))
    transport = None
    if world.platform == "bluesky":
        from bot.platforms.bluesky import BlueskyClient

        transport = CountingTransport()
        bot.platform.close()
        bot.platform = BlueskyClient(settings, bot.store, sleep=bot._sleep, transport=transport)
        bot.readers.own = bot.platform
        bot.readers._clients.clear()
    mentions = bot.platform.mentions()
    if mentions:
        bot.store.set_cursor("mentions", str(max(m["position"] for m in mentions)))
    return bot, transport


def bench_requests(world, work: Path, posts: int, mentions: int, polls: int = 3) -> dict:
    # post_slot schedules the next slot on the daemon's scheduler, which an in-process Bot has not
    logging.getLogger("bot").addFilter(lambda r: "could not schedule the next post" not in r.getMessage())
    data = work / f"requests-{world.platform}" / "data"
    bot, transport = make_bot(world, data)
    counted = Counted(world, transport)
    meter_steps: dict[str, list[dict]] = {}

    def step(kind: str, fn):
        before = dict(bot.meter.day())
        out, reqs, took = counted.measure(fn)
        after = bot.meter.day()
        meter_steps.setdefault(kind, []).append({k: after.get(k, 0) - before.get(k, 0) for k in after
                                                 if after.get(k, 0) != before.get(k, 0)})
        return out, reqs, took

    try:
        platform, name = canonical(world.target)
        (user, add_reqs, _) = step("add", lambda: bot.readers.for_target(platform, name).resolve(name))
        handle = user["username"] if platform == "x" else name
        bot.store.add_target(handle, user["id"], platform=platform)
        first, first_reqs, first_s = step("first_refresh", bot.refresh)
        stored = bot.store.post_count(handle)
        again, again_reqs, again_s = step("refresh", bot.refresh)
        register_model(bot.store, handle, BASE)
        rows: dict[str, list] = {"post": [], "reply": [], "empty_poll": []}
        breakdown: dict[str, Counter] = {k: Counter() for k in rows}
        for n in range(posts):
            slot = (datetime.now(timezone.utc) + timedelta(minutes=n + 1)).replace(microsecond=0)
            summary, reqs, took = step("post", lambda: bot.post_slot(slot))
            rows["post"].append({"requests": len(reqs), "seconds": round(took, 2), "summary": summary})
            breakdown["post"].update(f"{m} {shape(p)}" for m, p in reqs)
        word = handle.split("@")[0].split(".")[0]
        for n in range(mentions):
            world.mention(f"@{world.bot_username} what would {word} say about jobs and the economy, take {n}?")
            world.settle()
            summary, reqs, took = step("reply", bot.answer_mentions)
            rows["reply"].append({"requests": len(reqs), "seconds": round(took, 2), "summary": summary})
            breakdown["reply"].update(f"{m} {shape(p)}" for m, p in reqs)
        for _ in range(polls):
            summary, reqs, took = step("empty_poll", bot.answer_mentions)
            rows["empty_poll"].append({"requests": len(reqs), "seconds": round(took, 2), "summary": summary})
            breakdown["empty_poll"].update(f"{m} {shape(p)}" for m, p in reqs)
        world.settle()
        out = {
            "platform": world.platform, "target": handle,
            "counted": "client side (httpx transport of the bot's BlueskyClient: PDS + AppView)"
                       if transport else "server side (the sandbox's request log)",
            "resolve_requests": len(add_reqs),
            "first_refresh": {"requests": len(first_reqs), "seconds": round(first_s, 2), "summary": first,
                              "posts_stored": stored, "by_endpoint": dict(Counter(f"{m} {shape(p)}" for m, p in first_reqs))},
            "refresh_nothing_new": {"requests": len(again_reqs), "seconds": round(again_s, 2), "summary": again,
                                    "by_endpoint": dict(Counter(f"{m} {shape(p)}" for m, p in again_reqs))},
        }
        for kind, values in rows.items():
            counts = [v["requests"] for v in values]
            out[kind] = {"median_requests": statistics.median(counts) if counts else None, "each": counts,
                         "median_seconds": statistics.median(v["seconds"] for v in values) if values else None,
                         "summaries": [v["summary"] for v in values],
                         "by_endpoint_total": dict(breakdown[kind])}
        replied = sum("1 replied" in (s or "") for s in out["reply"]["summaries"])
        out["reply"]["answered_one"] = replied
        out["post"]["posted"] = sum(": posted" in (s or "") for s in out["post"]["summaries"])
        if world.platform == "x":
            out["meter"] = {k: v for k, v in meter_steps.items()}
            out["cost"] = x_cost(meter_steps, dict(bot.meter.prices))
            out["meter_summary_today"] = bot.meter.summary()["today"]
        return out
    finally:
        bot.readers.close()
        if bot.platform is not None:
            bot.platform.close()
        bot.store.close()


def x_cost(steps: dict[str, list[dict]], prices: dict[str, float]) -> dict:
    """Cost per day at the default schedule: 3 posts, 4 refreshes (nothing new), 720
    mention polls of which 3 answer a mention, from the Meter's counts by kind."""
    def median_cost(kind: str) -> tuple[float, dict]:
        items = steps.get(kind) or [{}]
        costs = [sum(prices.get(k, 0.0) * n for k, n in c.items()) for c in items]
        return statistics.median(costs), items[len(items) // 2]

    per = {k: median_cost(k) for k in ("post", "reply", "refresh", "empty_poll", "first_refresh")}
    day = {"posts": 3 * per["post"][0], "replies": 3 * per["reply"][0], "refreshes": 4 * per["refresh"][0],
           "empty_polls": (720 - 3) * per["empty_poll"][0]}
    return {"per_call_usd": {k: round(v[0], 4) for k, v in per.items()},
            "per_call_counts": {k: v[1] for k, v in per.items()},
            "per_day_usd": {k: round(v, 4) for k, v in day.items()},
            "per_day_total_usd": round(sum(day.values()), 4),
            "per_month_usd": round(30 * sum(day.values()), 2),
            "not_included": f"the target's new posts: ${prices.get('post_read', DEFAULT_PRICES['post_read'])} each "
                            "on the next refresh; the first download of a target (first_refresh)"}


def local_world(platform: str, bluesky_world):
    if platform == "x":
        return LocalX()
    if platform == "mastodon":
        return LocalMastodon()
    return bluesky_world


# --- 2. memory with 10 targets ---------------------------------------------------------------------
def bench_memory(work: Path, platforms: list[str], bluesky_world, seconds: float, x_names: list[str],
                 masto_names: list[str], bsky_handles: list[str]) -> dict:
    data = work / "memory" / "data"
    data.parent.mkdir()
    xs = x_sandbox.start_sandbox(port=0)
    ms = mastodon_sandbox.start_sandbox(port=0) if "mastodon" in platforms else None
    proc = None
    try:
        t_setup = time.monotonic()
        targets: list[tuple[str, str]] = [("x", n) for n in x_names]
        for n in x_names:
            if n != "realDonaldTrump":
                xs.add_posts(n, [{"created_at": p["created_at"], "text": p["text"]} if n.startswith("acct") else
                                 {"id": p["id"], "created_at": p["created_at"], "text": p["text"]}
                                 for p in account_posts(n, 600 if n.startswith("acct") else None)])
        if ms is not None:
            for n in masto_names:
                if n != mastodon_sandbox.TARGET_USERNAME:
                    for p in account_posts(n, 600):
                        ms.add_status(n, p["text"], created_at=p.get("created_at"))
                targets.append(("mastodon", ms.handle(n)))
        if bluesky_world is not None:
            targets += [("bluesky", h) for h in bsky_handles]
        env = bot_env(xs.settings(), data, BASE, BOT_POST_INTERVAL="5", BOT_FIRST_POST_DELAY="0",
                      BOT_MENTIONS_INTERVAL="5", BOT_RETRAIN_NEW_POSTS="1000000", BOT_REPLY_BUDGET="100",
                      BOT_CANDIDATES="128", BOT_REAL_WORDS="true", BOT_TRAIN_INTERVAL="30")
        if bluesky_world is not None:
            env["BLUESKY_PUBLIC_API"] = bluesky_world.appview
        with Store(data) as store:
            bot = Bot(Settings.from_env(env, dotenv_path=None), store)
            for platform, handle in targets:
                p, name = canonical(handle, platform)
                user = bot.readers.for_target(p, name).resolve(name)
                stored = user["username"] if p == "x" else name
                store.add_target(stored, user["id"], platform=p)
            # the posts downloaded before the daemon starts (a model exists only once they
            # are: a model registered with no posts stored puts its target out of the rotation
            # for an hour at the first slot); the daemon's refresh then reads each target again
            downloaded = bot.refresh()
            for t in store.targets():
                register_model(store, t["handle"], BASE)
            bot.readers.close()
            bot.platform.close()
            added = [(t["handle"], t.get("platform")) for t in store.targets()]
        setup_s = time.monotonic() - t_setup
        log_path = work / "memory" / "bot.log"
        t0 = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "bot", "run"], cwd=work / "memory",
                                env={**env, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
        reader = LineReader(proc, t0, log_path)
        samples: list[tuple[float, int]] = []
        mention_at = [seconds * 0.35, seconds * 0.65]
        made = []
        while time.monotonic() - t0 < seconds and proc.poll() is None:
            now = time.monotonic() - t0
            if mention_at and now >= mention_at[0]:
                mention_at.pop(0)
                made.append(xs.add_mention(f"@{x_sandbox.BOT_USERNAME} what do you think about jobs, round {len(made)}?")["id"])
            samples.append((round(now, 1), proc_kb(proc.pid, "VmRSS")))
            time.sleep(0.5)
        hwm = proc_kb(proc.pid, "VmHWM")
        children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        died = proc.poll() is not None
        code, stop_s = stop(proc)
        reader.close()
        rss = [kb for _, kb in samples if kb]
        posted = [line for _, line in reader.lines if POSTED_RE.search(line)]
        replies = [line for line in posted if " in reply to " in line]
        refresh_lines = [(round(t, 1), line) for t, line in reader.lines if " +" in line and "@" in line and "refresh" in line]
        with Store(data) as store:
            per_target = {t["handle"]: store.post_count(t["handle"]) for t in store.targets()}
        errors = [line for _, line in reader.lines if " ERROR " in line or "Traceback" in line]
        first_post = next((t for t, line in reader.lines if POSTED_RE.search(line) and " in reply to " not in line), None)
        return {
            "targets": added, "posts_downloaded": per_target, "setup_refresh": downloaded, "setup_s": round(setup_s, 1),
            "sampled_s": round(time.monotonic() - t0 - stop_s, 1), "samples": len(rss),
            "rss_peak_vmhwm_mb": round(hwm / 1024), "rss_max_sampled_mb": round(max(rss) / 1024) if rss else None,
            "rss_median_mb": round(statistics.median(rss) / 1024) if rss else None,
            "rss_after_first_post_median_mb": round(statistics.median(
                [kb for t, kb in samples if first_post is not None and t >= first_post and kb]) / 1024)
            if first_post is not None else None,
            "rss_at_start_mb": round(rss[0] / 1024) if rss else None, "rss_at_end_mb": round(rss[-1] / 1024) if rss else None,
            "first_post_s": first_post, "posts": len(posted) - len(replies), "replies": len(replies),
            "mentions_made": len(made), "refresh_lines": refresh_lines[:5],
            "fine_tune_children_at_end": children,
            "exit_code": code, "sigterm_to_exit_s": round(stop_s, 2), "died": died, "error_lines": errors[:10],
            "rss_series_mb": [(t, round(kb / 1024)) for t, kb in samples[::4]],
        }
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        xs.close()
        if ms is not None:
            ms.close()


# --- the report -------------------------------------------------------------------------------------
def fmt(v, unit: str = "", nd: int = 1) -> str:
    return "-" if v is None else (f"{v:.{nd}f}{unit}" if isinstance(v, float) else f"{v}{unit}")


def report(result: dict) -> str:
    m = result["machine"]
    lines = ["# Platforms benchmark", "",
             f"`{result['command']}`, {result['date']}, {result['run_s'] / 60:.1f} min in all.", "",
             f"Machine: {m['cpu']}, {m['cpus']} CPUs, avx2 {'yes' if m['avx2'] else 'no'}, "
             f"avx512f {'yes' if m['avx512f'] else 'no'}, {m['memory_gb']} GB; load average at start "
             f"{m['loadavg_at_start']}, at end {result.get('loadavg_at_end')}; commit {m['commit']}.", ""]
    if result.get("demo"):
        lines += ["## 1. The demo (`python -m bot run --sandbox --platform P`)", "",
                  "| platform | model registered | first post | mention made | first reply | peak RSS | SIGTERM -> exit |",
                  "|---|---|---|---|---|---|---|"]
        for d in result["demo"]:
            lines.append(f"| {d['platform']} | {fmt(d['model_registered_s'], ' s')} | {fmt(d['first_post_s'], ' s')} | "
                         f"{fmt(d['mention_made_s'], ' s')} | {fmt(d['first_reply_s'], ' s')} | {d['peak_rss_mb']} MB | "
                         f"{d['sigterm_to_exit_s']:.2f} s, exit {d['exit_code']} |")
        lines.append("")
    mem = result.get("memory")
    if mem:
        by = Counter(p for _, p in mem["targets"])
        lines += ["## 2. Daemon memory, 10 targets (" + ", ".join(f"{n} {p}" for p, n in by.items()) + "), posting on X", "",
                  "| measure | value |", "|---|---|",
                  f"| resident memory, peak (VmHWM) | {mem['rss_peak_vmhwm_mb']} MB |",
                  f"| resident memory, median of {mem['samples']} samples over {mem['sampled_s']} s | {mem['rss_median_mb']} MB |",
                  f"| median after the first post | {fmt(mem['rss_after_first_post_median_mb'], ' MB')} |",
                  f"| at start / at end | {mem['rss_at_start_mb']} / {mem['rss_at_end_mb']} MB |",
                  f"| posts / replies (mentions made) | {mem['posts']} / {mem['replies']} ({mem['mentions_made']}) |",
                  f"| first post after start | {fmt(mem['first_post_s'], ' s')} |",
                  f"| posts stored | {sum(mem['posts_downloaded'].values())} over {len(mem['posts_downloaded'])} targets |",
                  f"| SIGTERM -> exit | {mem['sigterm_to_exit_s']:.2f} s, exit {mem['exit_code']} |", ""]
    if result.get("requests"):
        lines += ["## 3. HTTP requests (in-process Bot, median)", "",
                  "| platform | counted | per scheduled post | per answered mention | empty mention poll | refresh, nothing new | first refresh (posts) |",
                  "|---|---|---|---|---|---|---|"]
        for r in result["requests"]:
            if "error" in r:
                lines.append(f"| {r['platform']} | error: {r['error']} | | | | | |")
                continue
            lines.append(f"| {r['platform']} | {'client' if 'client' in r['counted'] else 'server'} | "
                         f"{fmt(r['post']['median_requests'])} | {fmt(r['reply']['median_requests'])} | "
                         f"{fmt(r['empty_poll']['median_requests'])} | {r['refresh_nothing_new']['requests']} | "
                         f"{r['first_refresh']['requests']} ({r['first_refresh']['posts_stored']}) |")
        lines.append("")
        for r in result["requests"]:
            if "error" in r:
                continue
            lines.append(f"{r['platform']}: per post by endpoint (total over {len(r['post']['each'])}): "
                         + ", ".join(f"{k} x{v}" for k, v in sorted(r['post']['by_endpoint_total'].items())))
            lines.append(f"{r['platform']}: per reply by endpoint (total over {len(r['reply']['each'])}): "
                         + ", ".join(f"{k} x{v}" for k, v in sorted(r['reply']['by_endpoint_total'].items())))
            lines.append("")
        x = next((r for r in result["requests"] if r.get("platform") == "x" and "cost" in r), None)
        if x:
            c = x["cost"]
            lines += ["X cost at the default schedule (bot/costs.py prices; the Meter's counts per call):", "",
                      "| item | counts per call | $ per call | a day | $ a day |", "|---|---|---|---|---|"]
            for item, key, n in (("scheduled post", "post", 3), ("answered mention", "reply", 3),
                                 ("refresh, nothing new", "refresh", 4), ("empty mention poll", "empty_poll", 717)):
                lines.append(f"| {item} | {c['per_call_counts'][key] or '-'} | {c['per_call_usd'][key]:.4f} | {n} | "
                             f"{c['per_day_usd'][{'post': 'posts', 'reply': 'replies', 'refresh': 'refreshes', 'empty_poll': 'empty_polls'}[key]]:.4f} |")
            lines += [f"| total | | | | **{c['per_day_total_usd']:.3f}** (${c['per_month_usd']:.2f} / 30 days) |", "",
                      f"Not included: {c['not_included']} (here {c['per_call_usd']['first_refresh']:.2f} $ for "
                      f"{x['first_refresh']['posts_stored']} posts).", ""]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--platforms", default=",".join(PLATFORMS), help="comma-separated: x,mastodon,bluesky")
    ap.add_argument("--skip-demo", action="store_true")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--skip-requests", action="store_true")
    ap.add_argument("--demo-timeout", type=float, default=420.0, help="seconds to wait for a demo's first reply")
    ap.add_argument("--memory-seconds", type=float, default=60.0)
    ap.add_argument("--posts", type=int, default=5)
    ap.add_argument("--mentions", type=int, default=5)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--keep", type=Path, default=None, help="copy the logs and state here")
    args = ap.parse_args()
    platforms = [p.strip() for p in args.platforms.split(",") if p.strip()]
    for p in platforms:
        if p not in PLATFORMS:
            ap.error(f"unknown platform {p!r}")
    t0 = time.monotonic()
    result: dict = {"command": " ".join([".venv/bin/python", "bench/platforms_bench.py", *sys.argv[1:]]),
                    "date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(), "platforms": platforms}
    work = Path(tempfile.mkdtemp(prefix="platforms-bench-"))
    world = None
    try:
        if not args.skip_demo:
            result["demo"] = []
            for p in platforms:
                print(f"[{time.monotonic() - t0:6.0f} s] demo on {p} ...", flush=True)
                d = bench_demo(p, work, args.demo_timeout)
                print(f"    first post {fmt(d['first_post_s'], ' s')}, first reply {fmt(d['first_reply_s'], ' s')}, "
                      f"exit {d['exit_code']}", flush=True)
                result["demo"].append(d)
        # a Bluesky post holds at most 300 graphemes: the texts cut to 280 characters
        bsky_extra = {h: [{"text": p["text"][:280], "created_at": p.get("created_at")} for p in account_posts(n, 300)]
                      for h, n in (("yang.test", "AndrewYang"), ("bernie.test", "BernieSanders"))}
        if "bluesky" in platforms and not (args.skip_memory and args.skip_requests):
            print(f"[{time.monotonic() - t0:6.0f} s] starting a Bluesky network ...", flush=True)
            world = start_bluesky(bsky_extra)
            result["bluesky_network"] = world.owner.timings
        if not args.skip_requests:
            result["requests"] = []
            for p in platforms:
                print(f"[{time.monotonic() - t0:6.0f} s] requests on {p} ...", flush=True)
                w = local_world(p, world)
                try:
                    r = bench_requests(w, work, args.posts, args.mentions)
                except Exception as exc:  # one platform's failure is reported, the others still run
                    r = {"platform": p, "error": f"{type(exc).__name__}: {exc}"}
                finally:
                    if w is not world:
                        w.close()
                print(f"    {json.dumps({k: r[k]['median_requests'] for k in ('post', 'reply', 'empty_poll')} if 'post' in r else r)}",
                      flush=True)
                result["requests"].append(r)
        if not args.skip_memory:
            print(f"[{time.monotonic() - t0:6.0f} s] memory, {args.memory_seconds:g} s ...", flush=True)
            n_x = 4 + (3 if "mastodon" not in platforms else 0) + (3 if "bluesky" not in platforms else 0)
            x_names = (["realDonaldTrump", "elonmusk", "BernieSanders", "KamalaHarris", "AndrewYang"]
                       + [f"acct{i}" for i in range(10)])[:n_x]
            result["memory"] = bench_memory(work, platforms, world if "bluesky" in platforms else None,
                                            args.memory_seconds, x_names,
                                            ["realDonaldTrump", "AndrewYang", "BernieSanders"],
                                            [bsky.TARGET, *bsky_extra])
    finally:
        if world is not None:
            world.close()
        result["run_s"] = time.monotonic() - t0
        result["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
        if args.keep:
            shutil.copytree(work, args.keep, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("*.zip", "*.sqlite*", "*.db*"))
        shutil.rmtree(work, ignore_errors=True)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(result, indent=1, default=str))
    print(report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
