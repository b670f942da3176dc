"""The command line: ``iotvideo admin …`` on a data directory, and ``iotvideo serve``."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import Key, OldSdk, start_server, stop_server


def iotvideo(*args: str | Path, ok: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the installed ``iotvideo`` command (the console script next to this Python)."""
    exe = Path(sys.executable).with_name("iotvideo")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "iotvideo.cli"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOTVIDEO_")}
    r = subprocess.run([*cmd, *map(str, args)], capture_output=True, text=True, timeout=60, env=env)
    if ok:
        assert r.returncode == 0, r.stderr
    return r


def one_json(stdout: str) -> dict[str, Any]:
    """stdout is exactly one JSON object (one line)."""
    lines = stdout.splitlines()
    assert len(lines) == 1, stdout
    obj = json.loads(lines[0])
    assert isinstance(obj, dict)
    return obj


def json_lines(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines()]


def test_create_tenant(tmp_path: Path) -> None:
    out = one_json(iotvideo("admin", "create-tenant", "acme", "--data-dir", tmp_path).stdout)
    assert out["Tenant"] == "acme" and out["TenantId"]
    again = iotvideo("admin", "create-tenant", "acme", "--data-dir", tmp_path, ok=False)
    assert again.returncode == 1 and "already exists" in again.stderr and "Traceback" not in again.stderr
    assert again.stdout == ""
    tenants = json_lines(iotvideo("admin", "list-tenants", "--data-dir", tmp_path).stdout)
    assert [t["Tenant"] for t in tenants] == ["acme"] and tenants[0]["TenantId"] == out["TenantId"]


def test_master_key_file_is_private(tmp_path: Path) -> None:
    data = tmp_path / "fresh"
    iotvideo("admin", "create-tenant", "acme", "--data-dir", data)
    assert stat.S_IMODE((data / "master.key").stat().st_mode) == 0o600


def test_access_keys(tmp_path: Path) -> None:
    created = one_json(iotvideo("admin", "create-access-key", "--data-dir", tmp_path, "--tenant", "newco").stdout)
    assert set(created) == {"AccessKeyId", "AccessKeySecret", "Tenant"}
    assert created["Tenant"] == "newco" and created["AccessKeyId"].startswith("LTAI")
    assert len(created["AccessKeySecret"]) >= 24
    # The tenant was created on the way; a second key joins it.
    assert [t["Tenant"] for t in json_lines(iotvideo("admin", "list-tenants", "--data-dir", tmp_path).stdout)] == ["newco"]
    second = one_json(iotvideo("admin", "create-access-key", "--data-dir", tmp_path, "--tenant", "newco").stdout)
    default = one_json(iotvideo("admin", "create-access-key", "--data-dir", tmp_path).stdout)
    assert default["Tenant"] == "default"
    secrets = [k["AccessKeySecret"] for k in (created, second, default)]
    assert len(set(secrets)) == 3

    listing = iotvideo("admin", "list-access-keys", "--data-dir", tmp_path).stdout
    assert not any(s in listing for s in secrets)
    keys = {k["AccessKeyId"]: k for k in json_lines(listing)}
    assert set(keys) == {created["AccessKeyId"], second["AccessKeyId"], default["AccessKeyId"]}
    assert all(k["Enabled"] is True and "AccessKeySecret" not in k for k in keys.values())
    assert keys[second["AccessKeyId"]]["Tenant"] == "newco"
    only = json_lines(iotvideo("admin", "list-access-keys", "--data-dir", tmp_path, "--tenant", "default").stdout)
    assert [k["AccessKeyId"] for k in only] == [default["AccessKeyId"]]
    assert iotvideo("admin", "list-access-keys", "--data-dir", tmp_path, "--tenant", "nobody", ok=False).returncode != 0

    out = one_json(iotvideo("admin", "disable-access-key", created["AccessKeyId"], "--data-dir", tmp_path).stdout)
    assert out == {"AccessKeyId": created["AccessKeyId"], "Enabled": False}
    keys = {k["AccessKeyId"]: k for k in json_lines(iotvideo("admin", "list-access-keys", "--data-dir", tmp_path).stdout)}
    assert keys[created["AccessKeyId"]]["Enabled"] is False and keys[second["AccessKeyId"]]["Enabled"] is True
    one_json(iotvideo("admin", "enable-access-key", created["AccessKeyId"], "--data-dir", tmp_path).stdout)
    keys = {k["AccessKeyId"]: k for k in json_lines(iotvideo("admin", "list-access-keys", "--data-dir", tmp_path).stdout)}
    assert keys[created["AccessKeyId"]]["Enabled"] is True
    missing = iotvideo("admin", "disable-access-key", "LTAInope", "--data-dir", tmp_path, ok=False)
    assert missing.returncode == 1 and "LTAInope" in missing.stderr


def test_keys_work_secrets_sealed_and_serve_stops_cleanly(tmp_path: Path) -> None:
    """A key made by the CLI calls the API of ``iotvideo serve`` on the same data directory;
    a disabled one does not; no secret is in the database files in clear; SIGTERM exits 0."""
    made = one_json(iotvideo("admin", "create-access-key", "--data-dir", tmp_path, "--tenant", "acme").stdout)
    spare = one_json(iotvideo("admin", "create-access-key", "--data-dir", tmp_path, "--tenant", "acme").stdout)
    iotvideo("admin", "disable-access-key", spare["AccessKeyId"], "--data-dir", tmp_path)
    srv = start_server("sqlite", tmp_path)
    try:
        sdk = OldSdk(srv, Key(made["AccessKeyId"], made["AccessKeySecret"], "acme"))
        pk = sdk.common("CreateProduct", ProductName="cli")["Data"]
        dev = sdk.common("RegisterDevice", ProductKey=pk["ProductKey"], DeviceName="cam-cli")["Data"]
        from aliyunsdkcore.acs_exception.exceptions import ServerException

        with pytest.raises(ServerException) as e:
            OldSdk(srv, Key(spare["AccessKeyId"], spare["AccessKeySecret"], "acme")).common("QueryProductList")
        assert e.value.get_error_code() == "InvalidAccessKeyId.Inactive"
    finally:
        srv.proc.send_signal(signal.SIGTERM)
        try:
            code = srv.proc.wait(timeout=15)
        finally:
            stop_server(srv)
    assert code == 0, srv.log()
    assert "Application shutdown complete" in srv.log()

    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir()
                      if p.is_file() and p.name.startswith("iotvideo.db"))
    assert b"CREATE TABLE" in stored  # we are looking at the database
    for secret in (made["AccessKeySecret"], spare["AccessKeySecret"], pk["ProductSecret"], dev["DeviceSecret"]):
        assert secret.encode() not in stored
    assert made["AccessKeyId"].encode() in stored  # ids are stored as they are
