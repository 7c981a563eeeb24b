"""bench/nginx.py: the configuration it writes around the caller's ``http {}`` content, and a real nginx
started, found listening, stopped, and its start-up failure reported with what it said."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from bench.nginx import NginxError, config, find_nginx, running_nginx
from tests.loopback import free_port


def test_the_callers_content_goes_inside_http_after_the_boilerplate(tmp_path: Path) -> None:
    text = config(tmp_path, "  server { listen 127.0.0.1:8080; }\n", worker_connections=64, root=False)
    lines = text.splitlines()
    assert lines[:5] == [
        "worker_processes 1;",
        "daemon off;",
        f"pid {tmp_path}/nginx.pid;",
        f"error_log {tmp_path}/error.log warn;",
        "events { worker_connections 64; }",
    ]
    assert lines[5] == "http {"
    assert f"  client_body_temp_path {tmp_path}/body;" in lines
    assert lines[-2:] == ["  server { listen 127.0.0.1:8080; }", "}"]


def test_root_runs_the_worker_as_root_and_main_directives_come_first(tmp_path: Path) -> None:
    text = config(tmp_path, "", main="worker_rlimit_nofile 65536;", root=True)
    assert text.splitlines()[:3] == ["user root;", "worker_processes 1;", "worker_rlimit_nofile 65536;"]
    assert ("user root;" in config(tmp_path, "")) == (os.geteuid() == 0)


needs_nginx = pytest.mark.skipif(find_nginx() is None, reason="needs nginx (the system package)")


@pytest.mark.integration
@needs_nginx
def test_nginx_listens_inside_the_block_and_is_gone_after(tmp_path: Path) -> None:
    port = free_port()
    http = f'  access_log off;\n  server {{ listen 127.0.0.1:{port}; location / {{ return 200 "ok"; }} }}\n'
    with running_nginx(tmp_path, http, [port]) as pid:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            assert s.recv(100).startswith(b"HTTP/1.1 200")
        assert Path(f"/proc/{pid}").exists()
    assert not Path(f"/proc/{pid}").exists()  # stopped and reaped
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.integration
@needs_nginx
def test_a_configuration_nginx_refuses_is_reported_with_what_it_said(tmp_path: Path) -> None:
    with pytest.raises(NginxError, match="unknown directive"), running_nginx(tmp_path, "  bogus on;\n", [1]):
        pytest.fail("nginx started")
