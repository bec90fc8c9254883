"""The OIDC test kit: RSA keys, their self-signed certificates, Google-style ID tokens, and a
small HTTP server that serves the certificates as Google's certs endpoint does."""

from __future__ import annotations

import datetime
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from google.auth import crypt, jwt

SERVICE_ACCOUNT = "pubsub-push@i3tasks-test.iam.gserviceaccount.com"
KEY_ID = "test-key-1"


def private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def self_signed_cert(key: rsa.RSAPrivateKey) -> str:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "i3tasks test signer")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


GOOD_KEY = private_key()
OTHER_KEY = private_key()
CERTS = {KEY_ID: self_signed_cert(GOOD_KEY)}


def make_token(audience: Any, *, key: rsa.RSAPrivateKey = GOOD_KEY, kid: str = KEY_ID,
               **claims: Any) -> str:
    """A Google-style ID token; ``claims`` override or (with None) remove standard claims."""
    now = int(time.time())
    payload = {
        "aud": audience, "iss": "https://accounts.google.com", "iat": now, "exp": now + 3600,
        "email": SERVICE_ACCOUNT, "email_verified": True, "sub": "1234567890",
        "azp": "1234567890",
    }
    payload.update(claims)
    payload = {name: value for name, value in payload.items() if value is not None}
    signer = crypt.RSASigner(key, key_id=kid)
    return jwt.encode(signer, payload).decode()


class CertServer:
    """Serves ``body`` at any path; counts requests. Tests change body/status/headers."""

    def __init__(self) -> None:
        self.reset()
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # http.server calls do_<METHOD>
                with server._lock:
                    server.hits += 1
                time.sleep(server.delay)
                self.send_response(server.status)
                self.send_header("Content-Type", "application/json")
                for name, value in server.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(server.body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/oauth2/v1/certs"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def reset(self) -> None:
        self.body: bytes = json.dumps(CERTS).encode()
        self.status = 200
        self.headers: dict[str, str] = {"Cache-Control": "public, max-age=3600"}
        self.delay = 0.0
        self.hits = 0

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
