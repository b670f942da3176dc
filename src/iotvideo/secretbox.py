"""Encryption of secrets at rest (AccessKey, product and device secrets) under a master key."""

from __future__ import annotations

import base64
import os
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_PREFIX = "v1:"


class SecretBox:
    """AES-256-GCM with a random 96-bit nonce per value; text in, text out."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("master key must be 32 bytes")
        self._aead = AESGCM(key)

    def seal(self, plaintext: str) -> str:
        nonce = os.urandom(12)
        ct = self._aead.encrypt(nonce, plaintext.encode(), None)
        return _PREFIX + base64.b64encode(nonce + ct).decode()

    def open(self, sealed: str) -> str:
        if not sealed.startswith(_PREFIX):
            raise ValueError("not a sealed secret")
        raw = base64.b64decode(sealed[len(_PREFIX):])
        return self._aead.decrypt(raw[:12], raw[12:], None).decode()


def load_master_key(data_dir: Path, given: str | None) -> bytes:
    """The key from IOTVIDEO_MASTER_KEY (base64) or data_dir/master.key, created 0600 if absent."""
    if given:
        key = base64.b64decode(given)
        if len(key) != 32:
            raise ValueError("IOTVIDEO_MASTER_KEY must be 32 bytes, base64-encoded")
        return key
    path = data_dir / "master.key"
    if path.exists():
        return base64.b64decode(path.read_text().strip())
    data_dir.mkdir(parents=True, exist_ok=True)
    key = os.urandom(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(base64.b64encode(key).decode() + "\n")
    return key
