"""``/metrics`` for Prometheus, served by the coordinator (``--metrics-bind``, ``metrics_bind=``).

:class:`RunMetrics` watches a :class:`~coordinator.coordinator.Coordinator` as one of its observers: once
per closed second, on the coordinator's thread, it reads the fleet (:func:`fleet_view`) and feeds the pure
:class:`~coordinator.live_metrics.Board`; a small HTTP server on a thread of its own serves the board's
latest frame from a registry of its own (no process or platform collectors). Read-only: GET and HEAD, any
other method gets 405. Loopback unless the caller names another address. After the run it stays up until
the final figures have been scraped once, or :data:`END_LINGER_S` seconds.

Nothing here may break a run: a failure while building the figures is logged once and the run goes on.
"""

from __future__ import annotations

import collections
import ipaddress
import logging
import socket
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import PurePath
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from coordinator.aggregate import ClosedInterval
from coordinator.costs import cost_of
from coordinator.live_metrics import Board, FleetView, Frame, FrameCollector, Identity
from loadgen.errors import BindError

if TYPE_CHECKING:
    from coordinator.coordinator import Coordinator

log = logging.getLogger("loadgen.metrics")

END_LINGER_S = 5.0
"""Seconds the endpoint stays up after the run when nobody scrapes its final figures."""
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


def fleet_view(coord: Coordinator, thresholds: Mapping[str, bool], *, finished: bool = False) -> FleetView:
    """What ``coord`` knows of its run now (on its own thread)."""
    requests: dict[str, dict[str, int]] = {}
    for name, by_name in coord.agg.names.items():
        c = by_name.counts
        requests[name] = {"ok": c.ok, **c.errors}
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
    )


class RunMetrics:
    """A coordinator's run at ``/metrics``. :meth:`start` binds and starts watching; the shell calls
    :meth:`end` with the finished results document and then :meth:`close`."""

    def __init__(self, coord: Coordinator, host: str = DEFAULT_HOST, port: int = 0) -> None:
        self._coord = coord
        self._host, self._port = host, port
        profile = coord.profile
        source = PurePath(profile.source).name if profile.source.endswith(".toml") else ""
        identity = Identity(profile.name, source, coord.run_id, profile.load.duration)
        self.board = Board(identity, [r.name for r in profile.requests])
        self._thresholds: dict[str, bool] = {}
        self._seconds = 0
        self._failed = False
        self._end_collected = False
        self._end_scraped = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # --- the shell's side --------------------------------------------------------------------------------

    def start(self) -> str:
        """Bind, serve, and watch the coordinator's run; returns the URL of ``/metrics``. Raises
        :class:`~loadgen.errors.BindError`."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(FrameCollector(self.board, self._collected))
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        try:
            server = _Server(
                (self._host, self._port), _Handler, family=family, registry=registry, served=self._served
            )
        except OSError as exc:
            raise BindError(f"{self._host}:{self._port}", exc.strerror or str(exc)) from exc
        self._server = server
        host, port = str(server.server_address[0]), int(server.server_address[1])
        self.url = f"http://{f'[{host}]' if family == socket.AF_INET6 else host}:{port}/metrics"
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="loadgen-metrics", daemon=True
        )
        self._thread.start()
        self.board.view(fleet_view(self._coord, {}))
        self._coord.watch(self)
        return self.url

    def end(self, doc: Mapping[str, Any]) -> None:
        """The run is over: its final figures, with the thresholds' verdicts from ``doc``."""
        verdicts = {v["expr"]: bool(v["passed"]) for v in doc.get("thresholds") or ()}
        self._guarded(lambda: self.board.view(fleet_view(self._coord, verdicts, finished=True)))

    def close(self, linger: float = END_LINGER_S) -> None:
        """Stop serving, once the final figures have been scraped or after ``linger`` seconds (0: now).
        Bounded in time; safe to call more than once."""
        server, self._server = self._server, None
        if server is None:
            return
        if linger > 0 and self.board.frame.view.finished:
            self._end_scraped.wait(linger)
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5.0)

    def _collected(self, frame: Frame) -> None:
        if frame.view.finished:
            self._end_collected = True

    def _served(self) -> None:
        """A response has been written whole: if it held the final figures, the end has been scraped."""
        if self._end_collected:
            self._end_scraped.set()

    # --- RunObserver: the coordinator's thread -----------------------------------------------------------

    def started(self, start_at: float) -> None:
        self._guarded(lambda: self.board.view(fleet_view(self._coord, self._thresholds)))

    def second(self, closed: ClosedInterval) -> None:
        def fold() -> None:
            self._seconds += 1
            if self._coord.profile.thresholds and self._seconds % THRESHOLDS_EVERY == 1:
                self._judge()
            self.board.second(closed, fleet_view(self._coord, self._thresholds))

        self._guarded(fold)

    def finishing(self) -> None:
        def last() -> None:
            if self._coord.profile.thresholds:
                self._judge()
            self.board.view(fleet_view(self._coord, self._thresholds))

        self._guarded(last)

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


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        *,
        family: socket.AddressFamily,
        registry: CollectorRegistry,
        served: Callable[[], None],
    ) -> None:
        self.address_family = family
        self.registry = registry
        self.served = served
        super().__init__(address, handler)


class _Handler(BaseHTTPRequestHandler):
    """GET and HEAD of /metrics; every other method is refused with 405, every other path is 404."""

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
        if urlsplit(self.path).path != "/metrics":
            data, status, kind = b"not found: the metrics are at /metrics\n", 404, "text/plain; charset=utf-8"
        else:
            data, status, kind = generate_latest(self.server.registry), 200, CONTENT_TYPE_LATEST
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)
        if status == 200:
            self.wfile.flush()
            self.server.served()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)
