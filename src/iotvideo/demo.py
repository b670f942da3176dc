"""The demo a newcomer gets from README's first command: a tenant, key, product and device."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from iotvideo.services import Services

DEMO_TENANT = "demo"


async def prepare_demo(sv: Services, data_dir: Path) -> dict[str, str]:
    """Creates the demo objects once; later runs read them back from demo.json."""
    path = data_dir / "demo.json"
    if path.exists():
        return dict(json.loads(path.read_text()))
    tenant_id = await sv.tenants.ensure_tenant(DEMO_TENANT)
    key_id, secret = await sv.tenants.create_access_key(tenant_id)
    product = await sv.registry.create_product(tenant_id, "Demo camera")
    device = await sv.registry.register_device(tenant_id, product.product_key, "demo-camera-1", "Demo camera 1")
    info = {"Tenant": DEMO_TENANT, "AccessKeyId": key_id, "AccessKeySecret": secret,
            "ProductKey": product.product_key, "DeviceName": device.device_name,
            "DeviceSecret": device.secret, "IotId": device.iot_id}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(info, f, indent=2)
    return info


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
