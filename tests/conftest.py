"""Test fixtures: a real server process per database backend, and official SDK clients.

The ``server`` fixture is parametrised over the backends: SQLite (the embedded default)
and PostgreSQL (the production path; a fresh database on this machine's loopback server,
skipped only when none is reachable). Tests talk to the server over HTTP exactly as
applications do, through the official Alibaba Cloud SDKs.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

for _v in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
    os.environ.pop(_v, None)

PG_ADMIN_URL = os.environ.get("IOTVIDEO_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _pg_admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN_URL, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def pg_available() -> bool:
    try:
        asyncio.run(_pg_admin("SELECT 1"))
        return True
    except Exception:
        return False


@dataclass
class Key:
    access_key_id: str
    secret: str
    tenant: str


@dataclass
class ServerInfo:
    backend: str
    port: int
    data_dir: Path
    database_url: str | None
    proc: subprocess.Popen[bytes]
    log_path: Path
    mqtt_port: int = 0
    rtmp_port: int = 0

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def _settings(self):  # type: ignore[no-untyped-def]
        from iotvideo.config import Settings

        return Settings(data_dir=self.data_dir, database_url=self.database_url)

    def run(self, fn):  # type: ignore[no-untyped-def]
        """Run ``await fn(services)`` against the server's store, in this process."""
        from iotvideo.services import Services

        async def go():  # type: ignore[no-untyped-def]
            sv = await Services.open(self._settings())
            try:
                return await fn(sv)
            finally:
                await sv.close()

        return asyncio.run(go())

    def new_key(self, tenant: str | None = None) -> Key:
        """A new AccessKey, in a new tenant unless one is named."""
        tenant = tenant or "t-" + secrets.token_hex(4)

        async def go(sv):  # type: ignore[no-untyped-def]
            return await sv.tenants.create_access_key(await sv.tenants.ensure_tenant(tenant))

        kid, secret = self.run(go)
        return Key(kid, secret, tenant)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_server(backend: str, tmp: Path, extra_env: dict[str, str] | None = None) -> ServerInfo:
    db_url = None
    if backend == "postgres":
        name = "iotvideo_test_" + secrets.token_hex(4)
        asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
        db_url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    tmp.mkdir(parents=True, exist_ok=True)
    port, mqtt_port, rtmp_port = free_port(), free_port(), free_port()
    log_path = tmp / "server.log"
    env = {**os.environ, "IOTVIDEO_LOG_LEVEL": "info", **(extra_env or {})}
    cmd = [sys.executable, "-m", "iotvideo.cli", "serve", "--data-dir", str(tmp), "--http-port", str(port),
           "--mqtt-port", str(mqtt_port), "--rtmp-port", str(rtmp_port)]
    if db_url:
        cmd += ["--database-url", db_url]
    proc = subprocess.Popen(cmd, stdout=open(log_path, "wb"), stderr=subprocess.STDOUT, env=env)
    info = ServerInfo(backend, port, tmp, db_url, proc, log_path, mqtt_port, rtmp_port)
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {info.log()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return info
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"server did not become ready: {info.log()}")


def stop_server(info: ServerInfo) -> None:
    info.proc.terminate()
    try:
        info.proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        info.proc.kill()
    if info.database_url:
        name = info.database_url.rsplit("/", 1)[1]
        try:
            asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        except Exception:
            pass


BACKENDS = ["sqlite", "postgres"]


@pytest.fixture(scope="session", params=BACKENDS)
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerInfo]:
    if request.param == "postgres" and not pg_available():
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not reachable on the loopback; CI must test the production path")
        pytest.skip("PostgreSQL not reachable")
    info = start_server(request.param, tmp_path_factory.mktemp(request.param))
    yield info
    stop_server(info)


@pytest.fixture()
def key(server: ServerInfo) -> Key:
    """A fresh tenant with one AccessKey, so tests never see each other's objects."""
    return server.new_key()


# --- official SDK clients -------------------------------------------------------------

class OldSdk:
    """aliyun-python-sdk-core (+ -linkvisual): signature V1, query parameters."""

    def __init__(self, server: ServerInfo, key: Key) -> None:
        from aliyunsdkcore.client import AcsClient

        self.server = server
        self.client = AcsClient(key.access_key_id, key.secret, "cn-shanghai", port=server.port,
                                auto_retry=False, max_retry_time=0)

    def prepare(self, request):  # type: ignore[no-untyped-def]
        request.set_endpoint("127.0.0.1")
        request.set_protocol_type("http")
        return request

    def call(self, request):  # type: ignore[no-untyped-def]
        """The parsed JSON body of a successful HTTP call (raises ServerException on 4xx/5xx)."""
        import json

        return json.loads(self.client.do_action_with_exception(self.prepare(request)))

    def common(self, action: str, product: str = "Iot", **params: object):  # type: ignore[no-untyped-def]
        """A CommonRequest (how the old SDK calls the Iot actions)."""
        from aliyunsdkcore.request import CommonRequest

        r = CommonRequest(domain="127.0.0.1", version="2018-01-20", action_name=action, product=product)
        r.set_protocol_type("http")
        r.set_method("POST")
        for k, v in params.items():
            r.add_query_param(k, v)
        return self.call(r)


def new_config(server: ServerInfo, key: Key, algorithm: str | None):  # type: ignore[no-untyped-def]
    from alibabacloud_tea_openapi.models import Config

    cfg = Config(access_key_id=key.access_key_id, access_key_secret=key.secret, endpoint=server.endpoint,
                 protocol="http", region_id="cn-shanghai", read_timeout=10000, connect_timeout=5000)
    if algorithm:
        cfg.signature_algorithm = algorithm
    return cfg


@pytest.fixture()
def old_sdk(server: ServerInfo, key: Key) -> OldSdk:
    return OldSdk(server, key)


@pytest.fixture(params=["v3", "v2"])
def new_lv(request: pytest.FixtureRequest, server: ServerInfo, key: Key):  # type: ignore[no-untyped-def]
    """alibabacloud-linkvisual20180120 client, default V3 signing and 'v2' (V1) signing."""
    from alibabacloud_linkvisual20180120.client import Client

    return Client(new_config(server, key, None if request.param == "v3" else "v2"))


@pytest.fixture(params=["v3", "v2"])
def new_iot(request: pytest.FixtureRequest, server: ServerInfo, key: Key):  # type: ignore[no-untyped-def]
    """alibabacloud-iot20180120 client, default V3 signing and 'v2' (V1) signing."""
    from alibabacloud_iot20180120.client import Client

    return Client(new_config(server, key, None if request.param == "v3" else "v2"))
