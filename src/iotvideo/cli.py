"""Command line: ``iotvideo serve`` runs the server, ``iotvideo admin …`` manages tenants and keys."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Optional, TypeVar

import typer

from iotvideo.agent.cli import camera as camera_command
from iotvideo.config import Settings
from iotvideo.media.decrypt import decrypt_command

T = TypeVar("T")

app = typer.Typer(help="iotvideo: a self-hostable video cloud for IoT cameras.", no_args_is_help=True)
admin = typer.Typer(help="Manage tenants and AccessKeys (works on the data directory directly).", no_args_is_help=True)
app.add_typer(admin, name="admin")
app.command("camera")(camera_command)
app.command("decrypt")(decrypt_command)

DataDir = typer.Option(None, "--data-dir", help="Data directory [env IOTVIDEO_DATA_DIR, default ./data].")
DbUrl = typer.Option(None, "--database-url", help="PostgreSQL URL [env IOTVIDEO_DATABASE_URL, default SQLite in the data dir].")


def settings(data_dir: Optional[Path], database_url: Optional[str], **more: object) -> Settings:
    given = {k: v for k, v in {"data_dir": data_dir, "database_url": database_url, **more}.items() if v is not None}
    return Settings(**given)  # type: ignore[arg-type]


@app.command()
def serve(
    data_dir: Optional[Path] = DataDir,
    database_url: Optional[str] = DbUrl,
    host: Optional[str] = typer.Option(None, "--host", help="Address to listen on [default 127.0.0.1]."),
    http_port: Optional[int] = typer.Option(None, "--http-port", help="HTTP port of the API and console [default 8080]."),
    mqtt_port: Optional[int] = typer.Option(None, "--mqtt-port", help="Device MQTT port [default 1883]."),
    mqtt_tls_port: Optional[int] = typer.Option(None, "--mqtt-tls-port", help="Device MQTT over TLS port, used when --tls-cert is given [default 8883]."),
    tls_cert: Optional[Path] = typer.Option(None, "--tls-cert", help="PEM certificate chain for MQTT over TLS."),
    tls_key: Optional[Path] = typer.Option(None, "--tls-key", help="PEM private key for --tls-cert."),
    mqtt_mode: Optional[str] = typer.Option(None, "--mqtt-mode", help="embedded (default) or external."),
    mqtt_broker_url: Optional[str] = typer.Option(None, "--mqtt-broker-url", help="External broker, mqtt://[user:pass@]host:port."),
    rtmp_port: Optional[int] = typer.Option(None, "--rtmp-port", help="RTMP port for publishing and playing live streams [default 1935]."),
) -> None:
    """Run the server until SIGTERM/SIGINT."""
    from iotvideo import http_protocol
    from iotvideo.app import create_app
    from iotvideo.logs import setup_logging

    s = settings(data_dir, database_url, host=host, http_port=http_port, mqtt_port=mqtt_port,
                 mqtt_tls_port=mqtt_tls_port, tls_cert=tls_cert, tls_key=tls_key, mqtt_mode=mqtt_mode,
                 mqtt_broker_url=mqtt_broker_url, rtmp_port=rtmp_port)
    setup_logging(s.log_level)
    # uvicorn shuts down gracefully on SIGTERM and then re-raises the signal with the
    # handler it found installed; make that handler a clean exit (status 0), which also
    # covers a SIGTERM that arrives before uvicorn has taken over the signals.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    server = create_app(s)
    http_protocol.run(server, s.host, s.http_port, route=server.route)


def _exit_cleanly(_signum: int, _frame: object) -> None:
    raise SystemExit(0)


def _with_services(s: Settings, fn: Callable[..., Awaitable[T]]) -> T:
    from iotvideo.errors import BusinessError
    from iotvideo.services import Services

    async def run() -> T:
        services = await Services.open(s)
        try:
            return await fn(services)
        finally:
            await services.close()

    try:
        return asyncio.run(run())
    except BusinessError as e:  # a refused request: one line on stderr, no traceback
        typer.echo(f"error: {e.message}", err=True)
        raise typer.Exit(1) from None


@admin.command("create-tenant")
def create_tenant(name: str, data_dir: Optional[Path] = DataDir, database_url: Optional[str] = DbUrl) -> None:
    """Create a tenant (with its default all-day template)."""

    async def go(sv):  # type: ignore[no-untyped-def]
        return await sv.tenants.create_tenant(name)

    tid = _with_services(settings(data_dir, database_url), go)
    typer.echo(json.dumps({"TenantId": tid, "Tenant": name}))


@admin.command("create-access-key")
def create_access_key(
    data_dir: Optional[Path] = DataDir, database_url: Optional[str] = DbUrl,
    tenant: str = typer.Option("default", "--tenant", help="Tenant name; created if missing."),
) -> None:
    """Create an AccessKey; prints {"AccessKeyId", "AccessKeySecret", "Tenant"} once."""

    async def go(sv):  # type: ignore[no-untyped-def]
        return await sv.tenants.create_access_key(await sv.tenants.ensure_tenant(tenant))

    key_id, secret = _with_services(settings(data_dir, database_url), go)
    typer.echo(json.dumps({"AccessKeyId": key_id, "AccessKeySecret": secret, "Tenant": tenant}))


@admin.command("list-access-keys")
def list_access_keys(data_dir: Optional[Path] = DataDir, database_url: Optional[str] = DbUrl,
                     tenant: Optional[str] = typer.Option(None, "--tenant")) -> None:
    """List AccessKeys (secrets are never shown again), one JSON object per line."""

    async def go(sv):  # type: ignore[no-untyped-def]
        tid = await sv.tenants.tenant_id(tenant) if tenant else None
        if tenant and tid is None:
            raise typer.BadParameter(f"no tenant {tenant!r}")
        return await sv.tenants.list_access_keys(tid)

    for k in _with_services(settings(data_dir, database_url), go):
        typer.echo(json.dumps({"AccessKeyId": k.id, "Tenant": k.tenant_name, "Enabled": k.enabled,
                               "CreatedMs": k.created_ms}))


def _set_enabled(key_id: str, enabled: bool, data_dir: Optional[Path], database_url: Optional[str]) -> None:
    async def go(sv):  # type: ignore[no-untyped-def]
        return await sv.tenants.set_access_key_enabled(key_id, enabled)

    if not _with_services(settings(data_dir, database_url), go):
        typer.echo(f"no access key {key_id}", err=True)
        raise typer.Exit(1)
    typer.echo(json.dumps({"AccessKeyId": key_id, "Enabled": enabled}))


@admin.command("disable-access-key")
def disable_access_key(key_id: str, data_dir: Optional[Path] = DataDir, database_url: Optional[str] = DbUrl) -> None:
    """Disable an AccessKey (calls with it fail within seconds on every node)."""
    _set_enabled(key_id, False, data_dir, database_url)


@admin.command("enable-access-key")
def enable_access_key(key_id: str, data_dir: Optional[Path] = DataDir, database_url: Optional[str] = DbUrl) -> None:
    """Enable a disabled AccessKey again."""
    _set_enabled(key_id, True, data_dir, database_url)


@admin.command("create-user")
def create_user(
    username: str, data_dir: Optional[Path] = DataDir, database_url: Optional[str] = DbUrl,
    tenant: str = typer.Option(..., "--tenant", help="Tenant name; created if missing."),
    password: Optional[str] = typer.Option(None, "--password", envvar="IOTVIDEO_PASSWORD",
                                           help="[env IOTVIDEO_PASSWORD; asked for when not given]"),
) -> None:
    """Create a web console user of a tenant (password hashed with scrypt)."""
    from iotvideo.domain.users import Users

    if password is None:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)

    async def go(sv):  # type: ignore[no-untyped-def]
        return await Users(sv.store).create(await sv.tenants.ensure_tenant(tenant), username, password)

    user = _with_services(settings(data_dir, database_url), go)
    typer.echo(json.dumps({"UserId": user.id, "Username": user.username, "Tenant": user.tenant_name}))


@admin.command("list-tenants")
def list_tenants(data_dir: Optional[Path] = DataDir, database_url: Optional[str] = DbUrl) -> None:
    """List tenants, one JSON object per line."""

    async def go(sv):  # type: ignore[no-untyped-def]
        return await sv.tenants.list_tenants()

    for tid, name in _with_services(settings(data_dir, database_url), go):
        typer.echo(json.dumps({"TenantId": tid, "Tenant": name}))


@app.command()
def demo(
    data_dir: Optional[Path] = DataDir,
    host: Optional[str] = typer.Option(None, "--host"),
    http_port: Optional[int] = typer.Option(None, "--http-port"),
    mqtt_port: Optional[int] = typer.Option(None, "--mqtt-port", help="[default 1883, or the next free port]"),
) -> None:
    """Create a demo tenant, AccessKey, product and device (once), start the server and a
    virtual camera (the device agent) connected to it, and print how to reach them."""
    import os
    import subprocess
    import sys

    from iotvideo.demo import first_free_port, prepare_demo

    s = settings(data_dir, None, host=host, http_port=http_port)
    s.mqtt_port = mqtt_port or first_free_port(s.host, 1883)
    info = _with_services(s, lambda sv: prepare_demo(sv, s.data_dir))
    endpoint = f"{s.host}:{s.http_port}"
    typer.echo("iotvideo demo is starting:")
    typer.echo(f"  Web console     http://{endpoint}/console/   (user {info['ConsoleUser']}, password {info['ConsolePassword']})")
    typer.echo(f"  API endpoint    http://{endpoint}/   (Alibaba Cloud SDKs: endpoint='{endpoint}', protocol='http')")
    typer.echo(f"  AccessKeyId     {info['AccessKeyId']}")
    typer.echo(f"  AccessKeySecret {info['AccessKeySecret']}")
    typer.echo(f"  Device MQTT     {s.host}:{s.mqtt_port}")
    typer.echo(f"  Camera          ProductKey={info['ProductKey']} DeviceName={info['DeviceName']} IotId={info['IotId']}"
               " (a virtual camera is connecting now)")
    typer.echo(f"  (saved in {s.data_dir / 'demo.json'}; stop with Ctrl-C)")
    camera = subprocess.Popen(
        [sys.executable, "-m", "iotvideo.cli", "camera", "--server", s.host, "--mqtt-port", str(s.mqtt_port),
         "--product-key", info["ProductKey"], "--device-name", info["DeviceName"], "--source", "virtual",
         "--simulate-motion-every", "60"],
        env={**os.environ, "IOTVIDEO_DEVICE_SECRET": info["DeviceSecret"]})
    try:
        serve(data_dir=s.data_dir, database_url=None, host=s.host, http_port=s.http_port, mqtt_port=s.mqtt_port,
              mqtt_tls_port=None, tls_cert=None, tls_key=None, mqtt_mode=None, mqtt_broker_url=None,
              rtmp_port=first_free_port(s.host, 1935))
    finally:
        camera.terminate()
        try:
            camera.wait(timeout=10)
        except subprocess.TimeoutExpired:
            camera.kill()


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    app()


if __name__ == "__main__":
    main()
