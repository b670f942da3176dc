"""MQTT over TLS on a second port when a certificate is configured."""

from __future__ import annotations

import asyncio
import datetime
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conftest import free_port, start_server, stop_server
from iotvideo.devicelink.auth import expected_password
from iotvideo.devicelink.mqtt.client import MqttClient, MqttConnectError


def self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_device_connects_over_tls(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    tls_port = free_port()
    srv = start_server("sqlite", tmp_path / "data", extra_env={
        "IOTVIDEO_TLS_CERT": str(cert), "IOTVIDEO_TLS_KEY": str(key), "IOTVIDEO_MQTT_TLS_PORT": str(tls_port)})
    try:

        async def seed(sv):  # type: ignore[no-untyped-def]
            tid = await sv.tenants.ensure_tenant("tls")
            p = await sv.registry.create_product(tid, "cam")
            return await sv.registry.register_device(tid, p.product_key, "tls-cam-1")

        dev = srv.run(seed)
        ctx = ssl.create_default_context(cafile=str(cert))
        cid = f"{dev.product_key}&{dev.device_name}"

        async def connect(password: str) -> int:
            c = MqttClient()
            try:
                ack = await c.connect("localhost", tls_port, client_id=f"{cid}|securemode=2,signmethod=hmacsha1|",
                                      username=f"{dev.device_name}&{dev.product_key}", password=password,
                                      ssl=ctx, timeout=10)
                await c.disconnect()
                return ack.return_code
            except MqttConnectError as e:
                return e.return_code

        good = expected_password(dev.secret, cid, dev.product_key, dev.device_name, None, "hmacsha1")
        assert asyncio.run(connect(good)) == 0
        assert asyncio.run(connect("0" * 40)) == 4
        # the plain port still serves
        assert srv.mqtt_port != tls_port
    finally:
        stop_server(srv)
