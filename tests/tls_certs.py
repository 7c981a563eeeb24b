"""Certificates for the TLS tests, made by the openssl command in a folder of the test's: a test CA, a server
certificate it signed (for ``localhost``, ``api.loadgen.test``, 127.0.0.1 and ::1), a self-signed one, and a
client certificate the CA signed. Every key is an unencrypted P-256 key; everything is valid for two days."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

SERVER_NAMES = "DNS:localhost,DNS:api.loadgen.test,IP:127.0.0.1,IP:::1"


@dataclass(frozen=True)
class Certs:
    folder: Path
    ca: Path  # the test CA's certificate
    server: tuple[Path, Path]  # (certificate, key), signed by the CA
    self_signed: tuple[Path, Path]
    client: tuple[Path, Path]  # signed by the CA


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=30)


def _key(path: Path) -> None:
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(path))


def _signed(folder: Path, name: str, subject: str, extensions: str) -> tuple[Path, Path]:
    key, csr, cert, ext = (folder / f"{name}.{s}" for s in ("key", "csr", "pem", "ext"))
    _key(key)
    _openssl("req", "-new", "-key", str(key), "-out", str(csr), "-subj", subject)
    ext.write_text(extensions)
    _openssl(
        *("x509", "-req", "-in", str(csr), "-CA", str(folder / "ca.pem"), "-CAkey", str(folder / "ca.key")),
        *("-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext)),
    )
    return cert, key


def make_certs(folder: Path) -> Certs:
    """Make every certificate in ``folder``; skips the test if there is no openssl command."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    _key(folder / "ca.key")
    _openssl(
        *("req", "-x509", "-new", "-key", str(folder / "ca.key"), "-out", str(folder / "ca.pem")),
        *("-days", "2", "-subj", "/CN=loadgen test CA", "-addext", "basicConstraints=critical,CA:TRUE"),
        *("-addext", "keyUsage=critical,keyCertSign,cRLSign"),
    )
    server = _signed(folder, "server", "/CN=localhost", f"subjectAltName={SERVER_NAMES}\n")
    client = _signed(folder, "client", "/CN=loadgen test client", "extendedKeyUsage=clientAuth\n")
    self_key, self_cert = folder / "self.key", folder / "self.pem"
    _key(self_key)
    _openssl(
        *("req", "-x509", "-new", "-key", str(self_key), "-out", str(self_cert), "-days", "2"),
        *("-subj", "/CN=localhost", "-addext", f"subjectAltName={SERVER_NAMES}"),
    )
    return Certs(folder, folder / "ca.pem", server, (self_cert, self_key), client)
