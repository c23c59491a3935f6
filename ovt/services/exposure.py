"""What an unauthenticated local client can do to a running stack: one write and one delete attempt per open port.

    from ovt.services.exposure import probe_storage
    for a in probe_storage(settings, existing_key="t/hello.txt"):
        print(a.port_name, a.port, a.action, "refused" if a.refused else "ACCEPTED", a.detail)

Storage ports (the S3 gateway and SeaweedFS's master, volume, filer and admin servers, HTTP and gRPC) must refuse
every attempt. HTTP ports get a real write and a real delete request without credentials. gRPC ports get a
plaintext HTTP/2 connection and a TLS connection without a client certificate: no RPC (write, delete or anything
else) can be sent when neither gets past the connection preface. MLflow and Prefect have no authentication of their
own; they are local-only (127.0.0.1, checked by `listening_ports`) and, in production, behind the auth proxy.
"""

from __future__ import annotations

import socket
import ssl
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass

import psutil

from ovt.services.config import GRPC_OFFSET, ServiceSettings

_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # + empty SETTINGS
_PROBE_KEY = "ovt-exposure-probe.txt"


@dataclass(frozen=True)
class Attempt:
    port_name: str
    port: int
    action: str  # what was tried, e.g. "PUT /buckets/dvc/x (write)"
    refused: bool
    detail: str  # status code / error as seen by the client

    def as_dict(self) -> dict:
        return asdict(self)


def _http(method: str, url: str, data: bytes | None = None) -> tuple[bool, str]:
    """(refused, detail): any 2xx/3xx answer counts as accepted."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    req = urllib.request.Request(url, data=data, method=method)
    try:
        with opener.open(req, timeout=5) as resp:
            return False, f"HTTP {resp.status}"
    except urllib.error.HTTPError as e:
        return e.code < 200 or e.code >= 300, f"HTTP {e.code}"
    except OSError as e:
        return True, f"{type(e).__name__}: {e}"


def _h2c(host: str, port: int) -> tuple[bool, str]:
    """Plaintext gRPC: an open server answers the HTTP/2 preface with a SETTINGS frame (type 0x4)."""
    try:
        with socket.create_connection((host, port), timeout=3) as s:
            s.sendall(_H2_PREFACE)
            head = s.recv(9)
    except OSError as e:
        return True, f"{type(e).__name__}: {e}"
    if len(head) == 9 and head[3] == 0x4:
        return False, "HTTP/2 SETTINGS answered in plaintext"
    return True, f"no HTTP/2 answer (got {head[:9]!r})"


def _tls_without_cert(host: str, port: int) -> tuple[bool, str]:
    """gRPC over TLS without a client certificate: refused when the server demands one (mutual TLS)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # we are the attacker: trust whatever the server presents
    ctx.set_alpn_protocols(["h2"])
    try:
        with socket.create_connection((host, port), timeout=3) as raw, ctx.wrap_socket(raw) as s:
            s.sendall(_H2_PREFACE)  # TLS 1.3 reports a missing client certificate on the first read
            head = s.recv(9)
    except (OSError, ssl.SSLError) as e:
        return True, f"{type(e).__name__}: {str(e)[:160]}"
    if len(head) == 9 and head[3] == 0x4:
        return False, "HTTP/2 SETTINGS answered over TLS without a client certificate"
    return True, f"no HTTP/2 answer (got {head[:9]!r})"


def probe_storage(s: ServiceSettings, existing_key: str) -> list[Attempt]:
    """Unauthenticated write + delete on every storage port. `existing_key` is an object in the dvc bucket that
    the delete attempts target (the caller checks afterwards, through S3, that it survived)."""
    h, b = s.host, s.dvc_bucket
    out: list[Attempt] = []

    def http(name: str, port: int, method: str, path: str, what: str, data: bytes | None = None) -> None:
        refused, detail = _http(method, f"http://{h}:{port}{path}", data)
        out.append(Attempt(name, port, f"{method} {path} ({what})", refused, detail))

    http("s3", s.s3_port, "PUT", f"/{b}/{_PROBE_KEY}", "write", b"x")
    http("s3", s.s3_port, "DELETE", f"/{b}/{existing_key}", "delete")
    http("filer", s.s3_filer_port, "PUT", f"/buckets/{b}/{_PROBE_KEY}", "write", b"x")
    http("filer", s.s3_filer_port, "POST", f"/buckets/{b}/{_PROBE_KEY}", "write", b"x")
    http("filer", s.s3_filer_port, "DELETE", f"/buckets/{b}/{existing_key}?recursive=true", "delete")
    http("master", s.s3_master_port, "POST", "/dir/assign", "write token")
    http("master", s.s3_master_port, "POST", f"/submit?collection={b}", "write", b"x")
    http("master", s.s3_master_port, "GET", f"/col/delete?collection={b}", "delete")
    http("volume", s.s3_volume_port, "POST", "/1,01637037d6", "write", b"x")
    http("volume", s.s3_volume_port, "DELETE", "/1,01637037d6", "delete")
    http("admin", s.s3_admin_port, "POST", f"/api/s3/buckets?name={_PROBE_KEY[:-4]}", "write")
    http("admin", s.s3_admin_port, "DELETE", f"/api/s3/buckets/{b}", "delete")
    for name, port in (
        ("s3", s.s3_port),
        ("master", s.s3_master_port),
        ("volume", s.s3_volume_port),
        ("filer", s.s3_filer_port),
        ("admin", s.s3_admin_port),
    ):
        grpc = port + GRPC_OFFSET
        refused, detail = _h2c(h, grpc)
        out.append(Attempt(f"{name}.grpc", grpc, "plaintext gRPC connection (any RPC: write, delete)", refused, detail))
        refused, detail = _tls_without_cert(h, grpc)
        out.append(Attempt(f"{name}.grpc", grpc, "TLS gRPC connection without client certificate", refused, detail))
    return out


def probe_unauthenticated_servers(s: ServiceSettings) -> list[Attempt]:
    """MLflow and Prefect have no authentication: a write and a delete from a local client succeed. Recorded (not
    refused) so the report shows it; what keeps others out is the 127.0.0.1 bind (`listening_ports`)."""
    import json

    out: list[Attempt] = []

    def post(name: str, port: int, url: str, body: dict | None, what: str, method: str = "POST") -> dict:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        req = urllib.request.Request(
            url,
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={"Content-Type": "application/json"},
        )
        action = f"{method} {url.split(str(port), 1)[1]} ({what})"
        try:
            with opener.open(req, timeout=10) as resp:
                out.append(Attempt(name, port, action, False, f"HTTP {resp.status}"))
                raw = resp.read()
                return json.loads(raw) if raw.strip() else {}
        except urllib.error.HTTPError as e:
            out.append(Attempt(name, port, action, True, f"HTTP {e.code}"))
        except OSError as e:
            out.append(Attempt(name, port, action, True, repr(e)))
        return {}

    api = f"{s.mlflow_url}/api/2.0/mlflow"
    made = post("mlflow", s.mlflow_port, f"{api}/experiments/create", {"name": "ovt-exposure-probe"}, "write")
    post(
        "mlflow",
        s.mlflow_port,
        f"{api}/experiments/delete",
        {"experiment_id": made.get("experiment_id", "0")},
        "delete",
    )
    made = post("prefect", s.prefect_port, f"{s.prefect_api_url}/flows/", {"name": "ovt-exposure-probe"}, "write")
    post(
        "prefect",
        s.prefect_port,
        f"{s.prefect_api_url}/flows/{made.get('id', 'missing')}",
        None,
        "delete",
        method="DELETE",
    )
    return out


def listening_ports(pid: int) -> dict[int, str]:
    """Every TCP port the process tree `pid` listens on -> the address it is bound to."""
    root = psutil.Process(pid)
    ports: dict[int, str] = {}
    for p in [root, *root.children(recursive=True)]:
        try:
            conns = p.net_connections(kind="tcp")
        except psutil.Error:
            continue
        for c in conns:
            if c.status == psutil.CONN_LISTEN:
                ports[c.laddr.port] = c.laddr.ip
    return ports
