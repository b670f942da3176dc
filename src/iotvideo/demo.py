"""The demo a newcomer gets from README's first command: a tenant, key, product, device and console user."""

from __future__ import annotations

import json
import os
import secrets
import socket
from pathlib import Path

from iotvideo.domain.users import Users
from iotvideo.services import Services

DEMO_TENANT = "demo"
DEMO_USER = "demo"


async def prepare_demo(sv: Services, data_dir: Path) -> dict[str, str]:
    """Creates the demo objects once; later runs read them back from demo.json."""
    path = data_dir / "demo.json"
    if path.exists():
        info = dict(json.loads(path.read_text()))
        if "ConsolePassword" not in info:  # a demo.json from before the console
            info.update(await _console_user(sv))
            _save(path, info)
        return info
    tenant_id = await sv.tenants.ensure_tenant(DEMO_TENANT)
    key_id, secret = await sv.tenants.create_access_key(tenant_id)
    product = await sv.registry.create_product(tenant_id, "Demo camera")
    device = await sv.registry.register_device(tenant_id, product.product_key, "demo-camera-1", "Demo camera 1")
    info = {"Tenant": DEMO_TENANT, "AccessKeyId": key_id, "AccessKeySecret": secret,
            "ProductKey": product.product_key, "DeviceName": device.device_name,
            "DeviceSecret": device.secret, "IotId": device.iot_id, **await _console_user(sv)}
    _save(path, info)
    return info


async def _console_user(sv: Services) -> dict[str, str]:
    """The demo's web console user, with a new random password."""
    password = secrets.token_urlsafe(12)
    await Users(sv.store).create(await sv.tenants.ensure_tenant(DEMO_TENANT), DEMO_USER, password)
    return {"ConsoleUser": DEMO_USER, "ConsolePassword": password}


def _save(path: Path, info: dict[str, str]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(info, f, indent=2)


def first_free_port(host: str, start: int, tries: int = 50) -> int:
    """``start`` if nothing listens there, else the next port that is free."""
    for port in range(start, start + tries):
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {start}..{start + tries - 1}")
