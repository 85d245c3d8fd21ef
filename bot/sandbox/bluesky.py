"""A real Bluesky network on this machine, for the demo and the tests: PLC + PDS + AppView
from the reference implementation (bluesky/network.mjs over npm @atproto/dev-env), with
private PostgreSQL and Redis under a temp dir.

    world = start_local()       # (bot/sandbox/local.py's API; the tests' fixture `bluesky_world`)
    world.bot_env()             # what the bot needs to post there as `world.bot_username`
    world.mention("hi")         # the fan mentions the bot (a real mention facet)
    world.settle()              # wait until the AppView indexed every write so far
    world.close()               # stops the network, Redis and PostgreSQL, removes their files

Needs `bash scripts/setup_bluesky.sh` once (node 22 + dev-env, PostgreSQL, Redis).
`python -m bot.sandbox.bluesky` runs one until Ctrl-C and prints the bot's environment.
"""
from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import httpx

from bot.errors import BotError

REPO = Path(__file__).resolve().parents[2]
BLUESKY_DIR = REPO / "bluesky"
NODE = BLUESKY_DIR / "node_modules" / ".bin" / "node"
READY_MARK = BLUESKY_DIR / "node_modules" / ".xmimic-ready"  # written by scripts/setup_bluesky.sh
SAMPLE = REPO / "bot" / "sample_data" / "realDonaldTrump.jsonl.gz"
TARGET, FAN, BOT = "trump.test", "fan.test", "xmimic-bot.test"
SEED_POSTS = 300
START_TIMEOUT = 120.0


def _pg_bin() -> Path | None:
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name))
    return versions[-1].parent if versions else None


def missing() -> str | None:
    """Why a network cannot start here, or None when everything is installed."""
    if not NODE.exists() or not READY_MARK.exists():
        return "the Bluesky network is not installed: run `bash scripts/setup_bluesky.sh`"
    if _pg_bin() is None:
        return "PostgreSQL is missing: run `bash scripts/setup_bluesky.sh`"
    if shutil.which("redis-server") is None:
        return "redis-server is missing: run `bash scripts/setup_bluesky.sh`"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} while starting")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {timeout:g} s")


class Services:
    """A private PostgreSQL cluster and Redis under `root`, on free ports (the AppView's)."""

    def __init__(self, root: Path):
        self.root = root
        self.procs: list[subprocess.Popen] = []
        self.logs = [open(root / "postgres.log", "wb"), open(root / "redis.log", "wb")]
        self.pg_port = _free_port()
        self.redis_port = _free_port()
        pg = _pg_bin()
        assert pg is not None
        data, sock = root / "pg", root / "pgsock"
        data.mkdir()
        sock.mkdir()
        # postgres refuses to run as root: run it as the Debian package's user
        as_user: list[str] = []
        if os.geteuid() == 0:
            os.chmod(root, 0o755)
            shutil.chown(data, "postgres", "postgres")
            shutil.chown(sock, "postgres", "postgres")
            as_user = ["runuser", "-u", "postgres", "--"]
        subprocess.run([*as_user, str(pg / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
                        "--no-sync", "-E", "UTF8"], check=True, capture_output=True)
        self.procs.append(subprocess.Popen(
            [*as_user, str(pg / "postgres"), "-D", str(data), "-p", str(self.pg_port), "-k", str(sock),
             "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=200"],
            stdout=subprocess.DEVNULL, stderr=self.logs[0], start_new_session=True,
        ))
        self.procs.append(subprocess.Popen(
            ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(root)],
            stdout=self.logs[1], stderr=subprocess.STDOUT, start_new_session=True,
        ))
        _wait_port(self.pg_port, self.procs[0], "postgres")
        _wait_port(self.redis_port, self.procs[1], "redis-server")
        self._wait_pg_ready(pg, sock)

    def _wait_pg_ready(self, pg: Path, sock: Path) -> None:
        for _ in range(100):
            if subprocess.run([str(pg / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.pg_port)],
                              capture_output=True).returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError("postgres did not become ready")

    def env(self) -> dict[str, str]:
        return {"DB_POSTGRES_URL": f"postgresql://postgres@127.0.0.1:{self.pg_port}/postgres",
                "REDIS_HOST": f"127.0.0.1:{self.redis_port}"}

    def close(self) -> None:
        for proc in reversed(self.procs):
            _stop(proc)
        for f in self.logs:
            f.close()


def _stop(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)  # its own session: runuser's child included
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


class Network:
    """bluesky/network.mjs running with `handles` as accounts; `.info` is its JSON line."""

    def __init__(self, handles: list[str], services: Services, tmp: Path):
        env = {**os.environ, **services.env(), "TMPDIR": str(tmp),  # the PDS's data dirs go there
               "PATH": f"{NODE.parent}:{os.environ.get('PATH', '')}", "NODE_ENV": "test"}
        self.log_path = tmp / "network.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [str(NODE), str(BLUESKY_DIR / "network.mjs"), *handles], cwd=BLUESKY_DIR, env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
            start_new_session=True,
        )
        line = self._first_line()
        self.info = json.loads(line)
        self.accounts = {a["handle"]: a for a in self.info["accounts"]}
        self.http = httpx.Client(base_url=self.info["control"], timeout=60.0, trust_env=False)

    def _first_line(self) -> str:
        out: list[bytes] = []
        reader = threading.Thread(target=lambda: out.append(self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(START_TIMEOUT)
        if not out or not out[0].strip():
            _stop(self.proc)
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the Bluesky network did not start within {START_TIMEOUT:g} s: {tail}")
        return out[0].decode()

    def control(self, method: str, path: str, body: dict | None = None, **params: str) -> dict:
        answer = self.http.request(method, path, json=body, params=params or None)
        if answer.status_code != 200:
            raise RuntimeError(f"network control {method} {path}: {answer.status_code} {answer.text[:300]}")
        return answer.json()

    def close(self) -> None:
        self.http.close()
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()  # network.mjs shuts down when stdin closes
                self.proc.wait(20)
            except (subprocess.TimeoutExpired, OSError):
                _stop(self.proc)
        self.proc.stdout.close()
        self._log.close()


class BlueskyWorld:
    """The shared behaviour suite's view of one platform: a target with real posts, a fan,
    and the bot's account, on a real local Bluesky network."""

    platform = "bluesky"

    def __init__(self, network: Network, target: str = TARGET, fan: str = FAN, bot: str = BOT):
        self.network = network
        self.target = target
        self.fan = fan
        self.bot_username = bot
        self.pds: str = network.info["pds"]
        self.appview: str = network.info["appview"]
        self._xrpc = httpx.Client(base_url=self.pds + "/xrpc", timeout=30.0, trust_env=False)
        self.owner: _Running | None = None  # what start_local started, stopped by close()

    def did(self, handle: str) -> str:
        return self.network.accounts[handle]["did"]

    def bot_env(self) -> dict[str, str]:
        return {
            "BOT_PLATFORM": "bluesky",
            "BLUESKY_HANDLE": self.bot_username,
            "BLUESKY_APP_PASSWORD": self.network.accounts[self.bot_username]["app_password"],
            "BLUESKY_SERVICE": self.pds,
            "BLUESKY_PUBLIC_API": self.appview,
        }

    def mention(self, text: str, reply_to: str | None = None) -> str:
        """The fan posts `text` mentioning the bot ("@bot " put in front when the text lacks
        it), as a reply to `reply_to` if given; its URI, indexed by the AppView on return."""
        if f"@{self.bot_username}" not in text:
            text = f"@{self.bot_username} {text}"
        return self.post_as(self.fan, text, mention=self.bot_username, reply_to=reply_to)

    def post_as(self, handle: str, text: str, mention: str | None = None, reply_to: str | None = None) -> str:
        body: dict = {"handle": handle, "text": text}
        if mention:
            body["mention"] = mention
        if reply_to:
            body["reply_to"] = reply_to
        uri = self.network.control("POST", "/post", body)["uri"]
        self.settle()
        return uri

    def bot_posts(self) -> list[dict]:
        """The bot's posts as its PDS holds them, oldest first: {"id", "text", "in_reply_to_id"}."""
        return [{"id": r["uri"], "text": r["value"]["text"],
                 "in_reply_to_id": (r["value"].get("reply") or {}).get("parent", {}).get("uri")}
                for r in self.records(self.bot_username)]

    def records(self, handle: str, collection: str = "app.bsky.feed.post") -> list[dict]:
        """Every record of the collection in the account's repo, oldest first (raw listRecords)."""
        out, cursor = [], None
        while True:
            params = {"repo": self.did(handle), "collection": collection, "limit": 100}
            if cursor:
                params["cursor"] = cursor
            page = self._xrpc.get("/com.atproto.repo.listRecords", params=params).raise_for_status().json()
            out.extend(page["records"])
            cursor = page.get("cursor")
            if not cursor or not page["records"]:
                return out[::-1]

    def settle(self) -> None:
        self.network.control("POST", "/process-all")

    def close(self) -> None:
        """Close this view; a world from start_local also stops what it started."""
        self._xrpc.close()
        owner, self.owner = self.owner, None
        if owner is not None:
            owner.close()


class _Running:
    """Everything one world started, stopped in reverse order by close()."""

    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="xmimic-bsky-"))
        self.services: Services | None = None
        self.network: Network | None = None
        self.world: BlueskyWorld | None = None
        self.timings: dict[str, float] = {}

    def close(self) -> None:
        for part in (self.world, self.network, self.services):
            if part is not None:
                try:
                    part.close()
                except Exception:  # teardown goes on: the next part must still be stopped
                    pass
        shutil.rmtree(self.tmp, ignore_errors=True)


def seed_posts(count: int = SEED_POSTS) -> list[dict]:
    """The first `count` sample posts with text, as {"text", "created_at"}."""
    out = []
    with gzip.open(SAMPLE, "rt", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if row.get("text", "").strip():
                out.append({"text": row["text"], "created_at": row.get("created_at")})
            if len(out) >= count:
                break
    return out


def start_world() -> tuple[BlueskyWorld, _Running]:
    """Start services + network, seed the target; (world, handle to close everything)."""
    running = _Running()
    try:
        t0 = time.monotonic()
        running.services = Services(running.tmp)
        t1 = time.monotonic()
        running.network = Network([TARGET, FAN, BOT], running.services, running.tmp)
        t2 = time.monotonic()
        running.network.control("POST", "/seed", {"handle": TARGET, "posts": seed_posts()})
        running.network.control("POST", "/process-all")
        t3 = time.monotonic()
        running.timings = {"services_s": t1 - t0, "network_s": t2 - t1, "seed_s": t3 - t2}
        running.world = BlueskyWorld(running.network)
        return running.world, running
    except BaseException:
        running.close()
        raise




def start_local() -> BlueskyWorld:
    """Start a network (BotError saying what to install when a part is missing)."""
    reason = missing()
    if reason:
        raise BotError(reason)
    world, running = start_world()
    world.owner = running
    return world


if __name__ == "__main__":
    why = missing()
    if why:
        raise SystemExit(why)
    world, running = start_world()
    try:
        print(json.dumps({"timings": running.timings, "env": world.bot_env(), "target": world.target,
                          "fan": world.fan}, indent=1), flush=True)
        print("running; Ctrl-C stops it", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        running.close()
