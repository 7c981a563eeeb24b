"""How long ``loadgen.run()`` takes to send its first request, with local agents.

A plain HTTP server on loopback notes when its first request arrives; the script calls ``loadgen.run`` on a
two-second constant profile against it and reports the time from the call to that first request, over a
few trials. What it spends goes to starting two agent processes (a Python interpreter each, with uvloop,
ZeroMQ and the engine imported), their join, three rounds of clock probes, and the coordinator's lead before
the aligned start (0.5 s, so every agent has its Start message before the first arrival is due).

    python -m bench.api_start [--trials N]
"""

from __future__ import annotations

import argparse
import http.server
import statistics
import threading
import time

import loadgen


class _FirstRequest(http.server.BaseHTTPRequestHandler):
    first: float | None = None

    def do_GET(self) -> None:
        if _FirstRequest.first is None:
            _FirstRequest.first = time.monotonic()
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def trial(port: int) -> float:
    _FirstRequest.first = None
    profile = loadgen.Profile(
        name="first-request",
        target=f"http://127.0.0.1:{port}",
        load=loadgen.stages(("0s", 50), ("2s", 50), arrival="constant"),
        requests=[loadgen.Request("/")],
    )
    called = time.monotonic()
    loadgen.run(profile, agents=2, progress=lambda line: None)
    assert _FirstRequest.first is not None, "no request arrived"
    return _FirstRequest.first - called


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--trials", type=int, default=5)
    args = parser.parse_args()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FirstRequest)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        times = [trial(server.server_address[1]) for _ in range(args.trials)]
    finally:
        server.shutdown()
        server.server_close()
    print(
        f"loadgen.run() to the first request, {len(times)} trials: median {statistics.median(times):.3f} s, "
        f"min {min(times):.3f} s, max {max(times):.3f} s ({', '.join(f'{t:.3f}' for t in times)})"
    )


if __name__ == "__main__":
    main()
