"""Registries that ask for credentials, as companies run them: htpasswd (basic auth) and the
token protocol (a token service that checks a password and signs a JWT the registry trusts).

The token service here plays the part of the company's auth server; the registry itself is
the real `docker-registry`, configured with `auth.token` and the service's certificate."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import secrets
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import bcrypt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from tests.dockerworld import free_port, registry


def htpasswd_section(directory: Path, user: str, password: str) -> str:
    path = directory / "htpasswd"
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    path.write_text(f"{user}:{hashed}\n", encoding="utf-8")
    return f"  htpasswd:\n    realm: nelson-tests\n    path: {path}\n"


@contextlib.contextmanager
def basic_auth_registry(user: str, password: str) -> Iterator[str]:
    directory = Path(tempfile.mkdtemp(prefix="nelson-htpasswd-"))
    with registry(auth=htpasswd_section(directory, user, password)) as address:
        yield address


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenService:
    """Issues registry tokens (RS256, x5c) to one user, for the scopes asked for."""

    def __init__(self, user: str, password: str) -> None:
        self.user, self.password = user, password
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nelson-test-tokens")])
        now = dt.datetime.now(dt.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.issued = 0
        self.refused = 0

    def token(self, service: str, scopes: list[str]) -> str:
        header = {
            "typ": "JWT",
            "alg": "RS256",
            "x5c": [base64.b64encode(self.cert.public_bytes(serialization.Encoding.DER)).decode()],
        }
        access = []
        for scope in scopes:
            kind, name, actions = scope.split(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        claims = {
            "iss": "nelson-test-issuer",
            "sub": self.user,
            "aud": service,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        signature = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        self.issued += 1
        return f"{signing_input}.{_b64(signature)}"


@contextlib.contextmanager
def token_auth_registry(user: str, password: str) -> Iterator[tuple[str, TokenService]]:
    service = TokenService(user, password)
    directory = Path(tempfile.mkdtemp(prefix="nelson-tokens-"))
    bundle = directory / "tokens.pem"
    bundle.write_bytes(service.cert.public_bytes(serialization.Encoding.PEM))
    expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            query = parse_qs(urlparse(self.path).query)
            if self.headers.get("Authorization") != expected:
                service.refused += 1
                self.send_response(401)
                self.end_headers()
                return
            body = json.dumps(
                {"token": service.token(query["service"][0], query.get("scope", []))}
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_address[1]
    section = (
        "  token:\n"
        f"    realm: http://127.0.0.1:{port}/token\n"
        "    service: nelson-test-registry\n"
        "    issuer: nelson-test-issuer\n"
        f"    rootcertbundle: {bundle}\n"
    )
    try:
        with registry(auth=section) as address:
            yield address, service
    finally:
        server.shutdown()
