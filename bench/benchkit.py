"""Helpers the benchmarks share: logging to stderr, free ports, versions, signed requests."""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
import sys
import platform
import time
from importlib import metadata
from pathlib import Path

API_VERSION = "2018-01-20"


def say(*a: object) -> None:
    print(*a, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def version_of(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "-"


def _utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def v1_request(host: str, key_id: str, secret: str, action: str, api_params: dict[str, str]) -> bytes:
    """What aliyun-python-sdk-core sends: ``POST /?<everything, signed V1>``, empty body."""
    from iotvideo.openapi import signing

    params = {
        **api_params, "Action": action, "Version": API_VERSION, "Format": "JSON", "RegionId": "cn-shanghai",
        "Timestamp": _utc_now(), "SignatureMethod": "HMAC-SHA1", "SignatureType": "",
        "SignatureVersion": "1.0", "SignatureNonce": secrets.token_hex(16), "AccessKeyId": key_id,
    }
    params["Signature"] = signing.v1_signature(secret, "POST", params)
    qs = "&".join(f"{signing.percent_encode(k)}={signing.percent_encode(v)}" for k, v in params.items())
    return (f"POST /?{qs} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: AlibabaCloud (bench) Python/3\r\n"
            f"Accept-Encoding: identity\r\nx-acs-action: {action}\r\nx-acs-version: {API_VERSION}\r\n"
            "Content-Length: 0\r\n\r\n").encode()


def ensure_py_spy() -> str | None:
    exe = Path(sys.executable).with_name("py-spy")
    if not exe.exists():
        say("installing py-spy into the venv (pip install py-spy)")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "py-spy"], timeout=600)
    return str(exe) if exe.exists() else shutil.which("py-spy")


def cpu_and_memory() -> tuple[str, float | None]:
    """The CPU model name and the memory in GiB, from /proc (fallbacks when unreadable)."""
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return cpu, mem_gib


def wait_healthy(proc: subprocess.Popen[bytes], http_port: int, log: Path, timeout: float = 60.0,
                 path: str = "/healthz") -> None:
    """Until the server answers ``path`` with 200 (no proxy); RuntimeError with its log's tail if it exits or times out."""
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited ({proc.returncode}): {log.read_text(errors='replace')[-3000:]}")
        try:
            with opener.open(f"http://127.0.0.1:{http_port}{path}", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"server not ready in {timeout} s: {log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.1)
