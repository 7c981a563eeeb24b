"""``/metrics`` for Prometheus and the live page at ``/``, served by the coordinator (``--metrics-bind``,
``metrics_bind=``).

:class:`RunMetrics` watches a :class:`~coordinator.coordinator.Coordinator` as one of its observers: once
per closed second, on the coordinator's thread, it reads the fleet (:func:`fleet_view`) and feeds the pure
:class:`~coordinator.live_metrics.Board` and the live page's :class:`~coordinator.live_feed.History`; a
small HTTP server on a thread of its own serves

- ``/metrics``: the board's latest frame, from a registry of its own (no process or platform collectors);
- ``/``: the live page (:mod:`coordinator.live_page`), and once the run has ended its HTML report;
- ``/live.json``: what the page polls (:func:`~coordinator.live_feed.feed`).

Read-only: GET and HEAD, any other method gets 405. Loopback unless the caller names another address.
After the run it stays up until every kind of reader that watched the run (Prometheus, a live page) has
read its end once (:func:`end_seen`), or :data:`END_LINGER_S` seconds.

Nothing here may break a run: a failure while building the figures is logged once and the run goes on.
"""

from __future__ import annotations

import collections
import ipaddress
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import PurePath
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.registry import Collector

from coordinator.aggregate import ClosedInterval
from coordinator.costs import cost_of
from coordinator.live_feed import EventLog, History, Plan, Query, feed, point_of
from coordinator.live_metrics import Board, FleetView, Frame, Identity, families
from coordinator.live_page import PAGE, PAGE_POLICY, REPORT_POLICY
from loadgen.errors import BindError

if TYPE_CHECKING:
    from coordinator.coordinator import Coordinator

log = logging.getLogger("loadgen.metrics")

END_LINGER_S = 5.0
"""Seconds the endpoint stays up after the run at most, waiting for its readers to read the end."""
THRESHOLDS_EVERY = 5
"""Closed seconds between two judgements of the thresholds on the run so far (a results document each)."""
DEFAULT_HOST = "127.0.0.1"


def parse_metrics_bind(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT`` or ``PORT`` (host 127.0.0.1), ``[::1]:PORT``; port 0 picks a free one.
    Raises ValueError with a one-line reason."""
    text = text.strip()
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = "", text
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{text!r}: write an IPv6 address in brackets, [::1]:PORT")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"{text!r}: expected HOST:PORT, :PORT or PORT") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"{text!r}: port {port} is out of range 0..65535")
    return host or DEFAULT_HOST, port


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str) -> str | None:
    """The warning for a metrics address beyond loopback (None on loopback)."""
    if is_loopback(host):
        return None
    return (
        f"WARNING: the metrics on {host} are readable by anyone who can reach it (no authentication); "
        "for remote access prefer loopback behind a reverse proxy that authenticates"
    )


def end_seen(watched: frozenset[str], read_end: frozenset[str]) -> bool:
    """Whether the server may leave: every kind of reader that read the run while it went on (``metrics``,
    ``page``) has read its end; when nobody watched, once anybody has."""
    return bool(read_end) and watched <= read_end


def fleet_view(coord: Coordinator, thresholds: Mapping[str, bool], *, finished: bool = False) -> FleetView:
    """What ``coord`` knows of its run now (on its own thread)."""
    requests: dict[str, dict[str, int]] = {}
    flows: dict[str, dict[str, int]] = {}
    for name, by_name in coord.agg.names.items():
        c = by_name.counts
        (flows if name in coord.agg.flows else requests)[name] = {"ok": c.ok, **c.errors}
    states: collections.Counter[str] = collections.Counter()
    in_flight = 0
    for agent, info in coord.agents.items():
        state = info.state if info.state in ("lost", "refused") else "connected"
        states[state] += 1
        if state == "connected" and agent in coord.agg.agents:
            in_flight += coord.agg.agents[agent].in_flight
    profile = coord.profile
    priced = profile.budget is not None or any(r.cost for r in profile.requests)
    totals = coord.agg.totals
    return FleetView(
        requests,
        scheduled=totals.scheduled,
        dropped=totals.dropped,
        in_flight=in_flight,
        agents=dict(states),
        cost=cost_of(profile, coord.agg) if priced else None,
        budget=profile.budget,
        thresholds=thresholds,
        events=dict(collections.Counter(e["type"] for e in coord.events)),
        finished=finished,
        flows=flows,
    )


@dataclass(frozen=True)
class Response:
    """One answer of the server; ``reader`` (``metrics``, ``page``) and ``final`` say who read it and
    whether it held the run's end."""

    status: int
    kind: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    reader: str | None = None
    final: bool = False


class _FrameAt(Collector):
    """The metric families of one frame (a scrape knows which frame it showed)."""

    def __init__(self, frame: Frame, buckets_s: tuple[float, ...]) -> None:
        self._frame, self._buckets_s = frame, buckets_s

    def collect(self) -> Iterator[Any]:
        yield from families(self._frame, self._buckets_s)


_NO_STORE = (
    ("Cache-Control", "no-store"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
)


class RunMetrics:
    """A coordinator's run at ``/metrics`` and on its live page ``/``. :meth:`start` binds and starts
    watching; the shell calls :meth:`end` with the finished results document and then :meth:`close`.
    ``clock`` is the coordinator's (the page shows the time elapsed since the aligned start)."""

    def __init__(
        self,
        coord: Coordinator,
        host: str = DEFAULT_HOST,
        port: int = 0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._coord = coord
        self._host, self._port = host, port
        self._clock = clock
        profile = coord.profile
        source = PurePath(profile.source).name if profile.source.endswith(".toml") else ""
        identity = Identity(profile.name, source, coord.run_id, profile.load.duration)
        self.board = Board(identity, [r.name for r in profile.requests])
        self._plan = Plan(
            profile.name,
            source,
            coord.run_id,
            profile.load.duration,
            profile.load.start_rate,
            profile.load.stages,
        )
        self.history = History()
        self.events = EventLog()
        self._start_at: float | None = None
        self._ended_after: float | None = None  # seconds from the start to the end, once ended
        self._doc: Mapping[str, Any] | None = None
        self._report: bytes | None = None
        self._report_failed = False
        self._thresholds: dict[str, bool] = {}
        self._seconds = 0
        self._failed = False
        self._lock = threading.Lock()
        self._watched: set[str] = set()
        self._read_end: set[str] = set()
        self._end_read = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.url = ""
        self.page_url = ""

    # --- the shell's side --------------------------------------------------------------------------------

    def start(self) -> str:
        """Bind, serve, and watch the coordinator's run; returns the URL of ``/metrics`` (the live page's is
        :attr:`page_url`). Raises :class:`~loadgen.errors.BindError`."""
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        try:
            server = _Server(
                (self._host, self._port), _Handler, family=family, app=self.respond, served=self._served
            )
        except OSError as exc:
            raise BindError(f"{self._host}:{self._port}", exc.strerror or str(exc)) from exc
        self._server = server
        host, port = str(server.server_address[0]), int(server.server_address[1])
        self.page_url = f"http://{f'[{host}]' if family == socket.AF_INET6 else host}:{port}/"
        self.url = self.page_url + "metrics"
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="loadgen-metrics", daemon=True
        )
        self._thread.start()
        self._start_at = self._coord.start_at  # a resumed run's, already known
        self.board.view(fleet_view(self._coord, {}))
        self._coord.watch(self)
        return self.url

    def end(self, doc: Mapping[str, Any]) -> None:
        """The run is over: its final figures, with the thresholds' verdicts from ``doc`` (whose report the
        live page shows from now on)."""
        verdicts = {v["expr"]: bool(v["passed"]) for v in doc.get("thresholds") or ()}

        def last() -> None:
            self._new_events()
            self._ended_after = self._elapsed()
            self._doc = doc
            self.board.view(fleet_view(self._coord, verdicts, finished=True))

        self._guarded(last)

    def close(self, linger: float = END_LINGER_S) -> None:
        """Stop serving, once the run's end has been read (:func:`end_seen`) or after ``linger`` seconds
        (0: now). Bounded in time; safe to call more than once."""
        server, self._server = self._server, None
        if server is None:
            return
        if linger > 0 and self.board.frame.view.finished:
            self._end_read.wait(linger)
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5.0)

    # --- the server's threads ----------------------------------------------------------------------------

    def respond(self, target: str) -> Response:
        """The answer to a GET of ``target`` (a path and query), from the latest published state."""
        url = urlsplit(target)
        frame = self.board.frame
        finished = frame.view.finished
        if url.path == "/metrics":
            registry = CollectorRegistry(auto_describe=False)
            registry.register(_FrameAt(frame, self.board.buckets_s))
            return Response(
                200, CONTENT_TYPE_LATEST, generate_latest(registry), reader="metrics", final=finished
            )
        if url.path == "/live.json":
            report = finished and self._doc is not None and not self._report_failed
            doc = feed(
                self._plan,
                frame,
                self.history.published,
                self.events.published,
                elapsed=self._elapsed(),
                query=Query.parse(parse_qs(url.query)),
                report=report,
            )
            body = json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()
            return Response(
                200, "application/json", body, _NO_STORE, reader="page", final=finished and not report
            )
        if url.path == "/":
            html = self._report_page() if finished else None
            if html is not None:
                headers = (("Content-Security-Policy", REPORT_POLICY), *_NO_STORE)
                return Response(200, "text/html; charset=utf-8", html, headers, reader="page", final=True)
            headers = (("Content-Security-Policy", PAGE_POLICY), *_NO_STORE)
            return Response(200, "text/html; charset=utf-8", _PAGE, headers)
        return Response(
            404, "text/plain; charset=utf-8", b"not found: the live page is at /, the metrics at /metrics\n"
        )

    def _report_page(self) -> bytes | None:
        """The run's HTML report, made once on first demand after the end; None when it cannot be made (the
        page then shows the final figures)."""
        with self._lock:
            if self._report is None and not self._report_failed and self._doc is not None:
                from loadgen.reports.files import report_html

                try:
                    self._report = report_html(self._coord.config.out_dir, self._doc).encode()
                except Exception:
                    self._report_failed = True
                    log.exception(
                        "the report could not be made for the live page (it shows the final figures)"
                    )
            return self._report

    def _served(self, response: Response) -> None:
        """A response has been written whole: note who read the run, and whether that was its end."""
        if response.reader is None:
            return
        with self._lock:
            if response.final:
                self._read_end.add(response.reader)
            else:
                self._watched.add(response.reader)
            if end_seen(frozenset(self._watched), frozenset(self._read_end)):
                self._end_read.set()

    def _elapsed(self) -> float:
        if self._ended_after is not None:
            return self._ended_after
        return 0.0 if self._start_at is None else max(0.0, self._clock() - self._start_at)

    # --- RunObserver: the coordinator's thread -----------------------------------------------------------

    def started(self, start_at: float) -> None:
        self._start_at = start_at
        self._guarded(lambda: self.board.view(fleet_view(self._coord, self._thresholds)))

    def second(self, closed: ClosedInterval) -> None:
        def fold() -> None:
            self._seconds += 1
            if self._coord.profile.thresholds and self._seconds % THRESHOLDS_EVERY == 1:
                self._judge()
            self.history.add(point_of(closed))
            self._new_events()
            self.board.second(closed, fleet_view(self._coord, self._thresholds))

        self._guarded(fold)

    def finishing(self) -> None:
        def last() -> None:
            if self._coord.profile.thresholds:
                self._judge()
            self._new_events()
            self.board.view(fleet_view(self._coord, self._thresholds))

        self._guarded(last)

    def _new_events(self) -> None:
        events = self._coord.events
        self.events.extend(events[self.events.total :])

    def _judge(self) -> None:
        from loadgen.thresholds import evaluate_all

        doc = self._coord.results_so_far()
        self._thresholds = {v.expr: v.passed for v in evaluate_all(self._coord.profile.thresholds, doc)}

    def _guarded(self, work: Callable[[], None]) -> None:
        try:
            work()
        except Exception:
            if not self._failed:
                self._failed = True
                log.exception("the metrics could not be updated (the run goes on)")


_PAGE = PAGE.encode()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        *,
        family: socket.AddressFamily,
        app: Callable[[str], Response],
        served: Callable[[Response], None],
    ) -> None:
        self.address_family = family
        self.app = app
        self.served = served
        super().__init__(address, handler)


class _Handler(BaseHTTPRequestHandler):
    """GET and HEAD (what :meth:`RunMetrics.respond` answers); every other method is refused with 405."""

    server: _Server
    server_version = "loadgen"
    sys_version = ""

    def do_GET(self) -> None:
        self._serve(body=True)

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def __getattr__(self, name: str) -> Callable[[], None]:
        if name.startswith("do_"):  # any other method, even one http.server does not know
            return self._refuse
        raise AttributeError(name)

    def _refuse(self) -> None:
        self.send_response(405)
        self.send_header("Allow", "GET, HEAD")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _serve(self, *, body: bool) -> None:
        try:
            response = self.server.app(self.path)
        except Exception:  # a bug here must not cost the run, nor leave the reader without an answer
            log.exception("%s could not be answered", self.path)
            response = Response(500, "text/plain; charset=utf-8", b"the figures could not be made\n")
        self.send_response(response.status)
        self.send_header("Content-Type", response.kind)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers:
            self.send_header(name, value)
        self.end_headers()
        if body:
            self.wfile.write(response.body)
        if response.status == 200:
            self.wfile.flush()
            self.server.served(response)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)
