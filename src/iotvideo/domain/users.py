"""Console users: people who sign in to the web console; each belongs to one tenant.

Passwords are kept as ``scrypt$n$r$p$salt$hash`` (base64), scrypt being a slow, memory-hard KDF
(n=2**14, r=8, p=1, a random 16-byte salt); checking compares in constant time.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import re
from dataclasses import dataclass

from sqlalchemy import insert, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from iotvideo import ids
from iotvideo.domain.clock import now_ms
from iotvideo.errors import BusinessError
from iotvideo.store.schema import console_users, tenants
from iotvideo.store.units import Store

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
USERNAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
MIN_PASSWORD = 8
MAX_PASSWORD = 1024


def hash_password(password: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt)}${b64(digest)}"


def check_password(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        want = base64.b64decode(digest)
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(want))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


# Checked against when the user does not exist, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = hash_password(os.urandom(16).hex())


@dataclass(frozen=True)
class ConsoleUser:
    id: str
    tenant_id: str
    tenant_name: str
    username: str


class Users:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def create(self, tenant_id: str, username: str, password: str) -> ConsoleUser:
        if not USERNAME.match(username):
            raise BusinessError("460", "username must be 1..64 of letters, digits and _.@-")
        if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
            raise BusinessError("460", f"password must be at least {MIN_PASSWORD} characters.")
        pw_hash = await asyncio.to_thread(hash_password, password)
        uid = ids.object_id()

        def unit(c: Connection) -> str:
            name = c.execute(select(tenants.c.name).where(tenants.c.id == tenant_id)).scalar()
            if name is None:
                raise BusinessError("460", "no such tenant.")
            if c.execute(select(console_users.c.id).where(console_users.c.username == username)).first():
                raise BusinessError("460", "username already exists.")
            c.execute(insert(console_users).values(id=uid, tenant_id=tenant_id, username=username,
                                                   password_hash=pw_hash, created_ms=now_ms()))
            return str(name)

        try:
            tenant_name = await self._store.write(unit)
        except IntegrityError:  # created concurrently (the name is unique)
            raise BusinessError("460", "username already exists.") from None
        return ConsoleUser(uid, tenant_id, tenant_name, username)

    async def verify(self, username: str, password: str) -> ConsoleUser | None:
        """The user if the password is right, else None (as slow either way)."""
        q = (select(console_users, tenants.c.name.label("tenant_name")).join(tenants)
             .where(console_users.c.username == username))
        row = await self._store.read(lambda c: c.execute(q).first())
        if len(password) > MAX_PASSWORD:
            return None
        ok = await asyncio.to_thread(check_password, password, _DUMMY_HASH if row is None else row.password_hash)
        if row is None or not ok:
            return None
        return ConsoleUser(row.id, row.tenant_id, row.tenant_name, row.username)
