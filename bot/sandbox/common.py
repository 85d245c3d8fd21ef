"""The plumbing the X and Mastodon sandboxes (bot/sandbox/x.py, bot/sandbox/mastodon.py) share.

  Fault, World        faults waiting for requests (429, 5xx, slow, disconnect, lost...),
                      the lock, the request log
  RateWindows         request budgets that renew when their window ends
  SandboxServer       a threaded HTTP server on one address (IPv4 or IPv6)
  SandboxHandler      one request: the loopback-only /sandbox/ admin routes (faults among
                      them), faults applied around the platform's answer, JSON replies
  SandboxHandle       the Python handle of a running sandbox: close, inject, the log
  open_server, run_in_thread, serve_until_stopped, read_jsonl, iso_to_ms

What each platform says stays in its module: routes, JSON shapes, authentication, world
state, error bodies, rate-limit headers and what an injected fault answers.
"""
from __future__ import annotations

import gzip
import json
import logging
import re
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self, TypeVar
from urllib.parse import parse_qs, urlsplit

from bot.errors import BotError
from bot.settings import is_loopback

Answer = tuple[int, Any, dict[str, str]]  # status, JSON body (None: empty), headers


class Reply(Exception):
    """Raised inside a route to answer at once with this status, body and headers."""

    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None):
        super().__init__(status)
        self.status, self.body, self.headers = status, body, headers or {}


# --- faults ------------------------------------------------------------------------------------
@dataclass
class Fault:
    kind: str
    count: int = 1
    method: str | None = None
    path: str | None = None  # a prefix of the request path, e.g. "/2/tweets" or "/api/v1/statuses"
    reset_in: float | None = None  # 429: the rate-limit reset this many seconds ahead; None: no header
    delay: float = 1.0  # slow: seconds the answer is held back (after the work is done)

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and (self.path is None or path.startswith(self.path))


class World:
    """What every sandbox's state holds besides its platform's: the lock that every access
    holds, the faults waiting for requests and the log of API requests. A platform names
    the kinds it can inject in `fault_kinds`."""

    fault_kinds: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.faults: list[Fault] = []
        self.log: deque[tuple[str, str, int]] = deque(maxlen=100000)

    def make_fault(self, kind: str, count: int = 1, method: str | None = None, path: str | None = None,
                   reset_in: float | None = None, delay: float = 1.0) -> Fault:
        """A Fault of one of `fault_kinds` (ValueError for any other); the method upper-cased."""
        if kind not in self.fault_kinds:
            raise ValueError(f"unknown fault {kind!r}; one of {', '.join(self.fault_kinds)}")
        return Fault(kind=kind, count=int(count), method=method.upper() if method else None, path=path,
                     reset_in=reset_in, delay=float(delay))

    def add_fault(self, fault: Fault) -> None:
        with self.lock:
            self.faults.append(fault)

    def clear_faults(self) -> None:
        with self.lock:
            self.faults.clear()

    def fault_applies(self, fault: Fault, method: str, path: str) -> bool:
        """Whether `fault` takes this request (a platform narrows it further)."""
        return fault.matches(method, path)

    def take_fault(self, method: str, path: str) -> Fault | None:
        """The first fault that applies to this request, one of its count spent."""
        with self.lock:
            for fault in self.faults:
                if self.fault_applies(fault, method, path):
                    fault.count -= 1
                    if fault.count <= 0:
                        self.faults.remove(fault)
                    return fault
        return None

    def record(self, method: str, path: str, status: int) -> None:
        with self.lock:
            self.log.append((method, path, status))


class RateWindows:
    """One request budget per key, renewed in full once its window has ended; the caller
    holds its world's lock."""

    def __init__(self) -> None:
        self._windows: dict[Hashable, list[float]] = {}  # key -> [reset epoch, remaining]

    def spend(self, key: Hashable, limit: int, next_reset: Callable[[float], float]) -> tuple[float, int]:
        """Count one request: (the window's reset epoch, what remains after it), or
        remaining -1 when the window was already spent. `next_reset(now)`: the end of a
        window opened now."""
        now = time.time()
        window = self._windows.get(key)
        if window is None or now >= window[0]:
            window = self._windows[key] = [next_reset(now), float(limit)]
        if window[1] <= 0:
            return window[0], -1
        window[1] -= 1
        return window[0], int(window[1])


# --- HTTP --------------------------------------------------------------------------------------
class SandboxServer(ThreadingHTTPServer):
    """A threaded HTTP server whose `world` a subclass sets; `closing` wakes slow answers."""

    daemon_threads = True
    allow_reuse_address = True
    label = "sandbox"  # how its log lines name it
    world: World

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]):
        if ":" in address[0]:
            self.address_family = socket.AF_INET6  # an IPv6 host such as ::1
        super().__init__(address, handler)
        self.closing = threading.Event()

    def handle_error(self, request: Any, client_address: Any) -> None:
        _log(self).debug("%s: error while answering %s", self.label, client_address, exc_info=True)


class SandboxHandler(BaseHTTPRequestHandler):
    """One request to a sandbox. /sandbox/ is the admin API, for loopback clients only;
    any other path is the platform's, answered by `_api` unless a fault takes it first.

    A platform sets the bodies of its 404 and 500 answers and supplies `_api`,
    `_fault_reply` and `_admin`; `_read_query` and `_admin_body` shape its parameters
    and admin answers."""

    server: SandboxServer
    route_not_found: Any = None  # the body of a 404 for a path with no route
    server_error: Any = None  # the body of a 500 from the platform's API
    admin_error: Any = None  # the body of a 500 from an admin route
    passive_faults: tuple[str, ...] = ("slow", "lost")  # kinds under which `_api` still runs

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib's name)
        _log(self).debug(f"{self.server.label}: " + format, *args)

    def do_GET(self) -> None:  # noqa: N802 (stdlib's names)
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")

    # what a platform supplies ------------------------------------------------------------------
    def _read_query(self, values: dict[str, list[str]]) -> dict[str, Any]:
        """The query parameters as the platform's routes take them (default: every value)."""
        return values

    def _api(self, method: str, path: str, query: dict[str, Any], body: bytes, fault: Fault | None) -> Answer:
        raise NotImplementedError

    def _fault_reply(self, fault: Fault) -> Answer:
        """The answer a fault not in `passive_faults` gives instead of the API's."""
        raise NotImplementedError

    def _admin(self, method: str, path: str, query: dict[str, Any], request: dict) -> tuple[int, Any] | None:
        """A platform's own admin route: (status, data), or None when there is no such route."""
        return None

    def _admin_body(self, data: Any) -> Any:
        """An admin answer's JSON body around its data (default: the data itself)."""
        return data

    # the flow of a request ---------------------------------------------------------------------
    def _dispatch(self, method: str) -> None:
        world = self.server.world
        parts = urlsplit(self.path)
        path = parts.path.rstrip("/") or "/"  # Mastodon.py asks for /api/v1/instance/
        query = self._read_query(parse_qs(parts.query, keep_blank_values=True))
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if path.startswith("/sandbox/"):
            self._send(*self._answer_admin(method, path, query, body))
            return
        fault = world.take_fault(method, path)
        if fault is not None and fault.kind == "disconnect":
            self._drop(method, path)  # before any work: nothing happened
            return
        if fault is not None and fault.kind not in self.passive_faults:
            status, payload, headers = self._fault_reply(fault)
        else:
            status, payload, headers = self._guarded(
                method, self.server_error, lambda: self._api(method, path, query, body, fault))
        if fault is not None and fault.kind == "lost":
            self._drop(method, path)  # after the work: done, but the client cannot know
            return
        world.record(method, path, status)
        if fault is not None and fault.kind == "slow":
            # The work is done; only the answer is late, as when an answer is lost on the way.
            self.server.closing.wait(fault.delay)
        self._send(status, payload, headers)

    def _guarded(self, method: str, error_body: Any, answer: Callable[[], Answer]) -> Answer:
        try:
            return answer()
        except Reply as reply:
            return reply.status, reply.body, reply.headers
        except Exception:  # a bug in the sandbox must still answer, as a 500
            _log(self).exception("%s: internal error on %s %s", self.server.label, method, self.path)
            return 500, error_body, {}

    def _answer_admin(self, method: str, path: str, query: dict[str, Any], body: bytes) -> Answer:
        # Only this machine may steer the sandbox: to anyone else the routes do not exist.
        if not is_loopback(str(self.client_address[0])):
            return 404, self.route_not_found, {}
        return self._guarded(method, self.admin_error, lambda: self._admin_route(method, path, query, body))

    def _admin_route(self, method: str, path: str, query: dict[str, Any], body: bytes) -> Answer:
        try:
            request = json.loads(body) if body else {}
        except ValueError:
            raise Reply(400, {"error": "body is not JSON"}) from None
        world = self.server.world
        try:
            if (method, path) == ("POST", "/sandbox/faults"):
                fault = world.make_fault(**request)
                world.add_fault(fault)
                answer: tuple[int, Any] | None = 201, asdict(fault)
            elif (method, path) == ("DELETE", "/sandbox/faults"):
                world.clear_faults()
                answer = 200, []
            else:
                answer = self._admin(method, path, query, request)
        except (KeyError, TypeError, ValueError) as exc:
            raise Reply(400, {"error": f"bad request: {exc}"}) from None
        if answer is None:
            raise Reply(404, {"error": f"no admin route {method} {path}"})
        return answer[0], self._admin_body(answer[1]), {}

    def _drop(self, method: str, path: str) -> None:
        """Close the connection without a byte of answer: the client sees it drop
        (http.client's RemoteDisconnected, a ConnectionError in requests)."""
        self.server.world.record(method, path, 0)
        self.close_connection = True

    def _send(self, status: int, payload: Any, headers: dict[str, str]) -> None:
        data = b"" if payload is None else json.dumps(payload, ensure_ascii=False).encode("utf-8")
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up waiting (a timeout test); nothing to do


def match_route(routes: Iterable[tuple[str, re.Pattern[str], str]], method: str,
                path: str) -> tuple[str, re.Match[str]] | None:
    """The name and match of the first route for this method and path, or None."""
    for route_method, pattern, name in routes:
        match = pattern.fullmatch(path)
        if match and route_method == method:
            return name, match
    return None


def _log(obj: object) -> logging.Logger:
    # The platform module's logger, so that its lines keep the name they always had.
    return logging.getLogger(type(obj).__module__)


# --- the Python handle ---------------------------------------------------------------------------
class SandboxHandle:
    """A running sandbox (its server and the thread serving it). Thread-safe; close() when
    done. `api_prefix`: where the platform's API paths start."""

    api_prefix = "/"

    def __init__(self, server: SandboxServer, thread: threading.Thread):
        self._server = server
        self._thread = thread
        self._world = server.world

    def close(self) -> None:
        """Stop serving; wakes slow answers so that no thread is left behind."""
        self._server.closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def inject(self, kind: str, *, count: int = 1, method: str | None = None, path: str | None = None,
               reset_in: float | None = None, delay: float = 1.0) -> None:
        """Answer the next `count` matching API requests with a fault instead (the kinds:
        the class' docstring); method/path (a prefix) narrow the match. Dropped requests
        log status 0. ValueError for an unknown kind."""
        self._world.add_fault(self._world.make_fault(kind, count=count, method=method, path=path,
                                                     reset_in=reset_in, delay=delay))

    def clear_faults(self) -> None:
        self._world.clear_faults()

    @property
    def request_log(self) -> list[tuple[str, str, int]]:
        """(method, path, status) of every API request so far (status 0: dropped)."""
        with self._world.lock:
            return list(self._world.log)

    def count_requests(self, method: str | None = None, path_prefix: str | None = None) -> int:
        """How many API requests (of `method`, if given) had a path starting with
        `path_prefix` (default: the platform's API prefix)."""
        prefix = self.api_prefix if path_prefix is None else path_prefix
        return sum(1 for m, p, _ in self.request_log if (method is None or m == method) and p.startswith(prefix))


# --- starting and serving ------------------------------------------------------------------------
ServerT = TypeVar("ServerT", bound=SandboxServer)


def open_server(make: Callable[[], ServerT], host: str, port: int, name: str) -> ServerT:
    """`make()`, its failure to bind as a BotError that names the `name` and the address."""
    try:
        return make()
    except OSError as exc:
        raise BotError(f"cannot start the {name} on {host}:{port}: {exc.strerror or exc}") from None


def run_in_thread(server: SandboxServer, name: str) -> threading.Thread:
    """Serve in a daemon thread, started; a short poll keeps close() quick."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=name, daemon=True)
    thread.start()
    return thread


def serve_until_stopped(sandbox: SandboxHandle, lines: Iterable[str]) -> int:
    """Print `lines` (how to reach the sandbox), serve until SIGINT or SIGTERM, close the
    sandbox and return 0 (`python -m bot sandbox`)."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for line in lines:
            print(line, flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sandbox.close()
    print("sandbox stopped", flush=True)
    return 0


# --- data ----------------------------------------------------------------------------------------
def read_jsonl(path: Path) -> Iterable[dict]:
    """The objects of a JSON Lines file, gzip-compressed if its name ends in .gz."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


def iso_to_ms(value: str) -> int:
    """Epoch milliseconds of an ISO 8601 time (UTC when it names no zone)."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return int(parsed.timestamp() * 1000)
