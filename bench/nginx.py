"""nginx (the system package) as a child process with a generated configuration: one way to start it for the
benchmarks (:mod:`bench.lib`, :mod:`bench.tls`) and for the tests that need a real server
(``tests/test_tls_nginx.py``, ``tests/test_h2_nginx.py``).

The caller writes what its server does (the inside of ``http {}``: its ``server`` blocks, certificates, log
formats) and picks its ports; :func:`running_nginx` adds the rest of the configuration (one worker, in the
foreground, its pid file, error log and temporary files in the caller's folder), starts nginx, waits until
every port listens and stops it gracefully on leaving. It imports nothing from the rest of the suite, so the
tests use it without the benchmarks' machinery.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path


class NginxError(RuntimeError):
    """nginx is not installed, exited while starting (the message carries what it wrote to stderr), or did
    not listen on every port in time."""


def find_nginx() -> str | None:
    """The nginx binary: on PATH, else Debian's /usr/sbin/nginx (not on a non-root user's PATH); None when
    it is not installed."""
    return shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


def config(
    folder: Path, http: str, *, worker_connections: int = 1024, main: str = "", root: bool | None = None
) -> str:
    """The whole configuration: ``http`` (directives and ``server`` blocks) inside ``http {}``, ``main``
    (more directives of the main context, each with its ``;``) before it. ``root`` (by default: whether this
    process runs as root) adds ``user root;`` so that the worker may read and write the caller's files, which
    a root caller's folder keeps from nginx's default user."""
    if root is None:
        root = os.geteuid() == 0
    return (
        ("user root;\n" if root else "")
        + "worker_processes 1;\n"
        + (main.rstrip("\n") + "\n" if main else "")
        + "daemon off;\n"
        + f"pid {folder}/nginx.pid;\n"
        + f"error_log {folder}/error.log warn;\n"
        + f"events {{ worker_connections {worker_connections}; }}\n"
        + "http {\n"
        + "".join(f"  {kind}_temp_path {folder}/{name};\n" for kind, name in _TEMP_PATHS)
        + http.rstrip("\n")
        + "\n}\n"
    )


_TEMP_PATHS = (
    ("client_body", "body"),
    ("proxy", "proxy"),
    ("fastcgi", "fastcgi"),
    ("uwsgi", "uwsgi"),
    ("scgi", "scgi"),
)


@contextlib.contextmanager
def running_nginx(
    folder: Path,
    http: str,
    ports: Iterable[int],
    *,
    prefix: Sequence[str] = (),
    binary: str | None = None,
    within: float = 10.0,
    worker_connections: int = 1024,
    main: str = "",
) -> Iterator[int]:
    """nginx running :func:`config` (written to ``folder/nginx.conf``) until the block ends; yields the pid
    of its master process. ``prefix`` runs it under other commands (the benchmarks pin it to a core:
    ``nice``, ``taskset``); ``binary`` is :func:`find_nginx`'s by default.

    Raises :class:`NginxError` if nginx is not installed, exits before every port of ``ports`` (on
    127.0.0.1) accepts connections, or does not listen within ``within`` seconds. On leaving it is stopped
    with SIGQUIT (its graceful stop, the worker goes with it), killed if it has not ended 10 s later."""
    binary = binary or find_nginx()
    if binary is None:
        raise NginxError("nginx is not installed")
    conf = folder / "nginx.conf"
    conf.write_text(config(folder, http, worker_connections=worker_connections, main=main))
    waiting = list(ports)
    with open(folder / "nginx.stderr", "wb") as stderr:
        proc = subprocess.Popen(
            [*prefix, binary, "-c", str(conf), "-p", str(folder)], stdout=subprocess.DEVNULL, stderr=stderr
        )
        try:
            deadline = time.monotonic() + within
            while not all(_listening(port) for port in waiting):
                if proc.poll() is not None:
                    said = (folder / "nginx.stderr").read_text(errors="replace").strip()
                    raise NginxError(f"nginx exited ({proc.returncode}) while starting: {said}")
                if time.monotonic() > deadline:
                    raise NginxError(f"nginx did not listen on 127.0.0.1 ports {waiting} within {within:g} s")
                time.sleep(0.05)
            yield proc.pid
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGQUIT)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex(("127.0.0.1", port)) == 0
