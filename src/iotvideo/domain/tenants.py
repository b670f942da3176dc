"""Tenants and their AccessKeys: who may call the API and whose objects they see."""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from iotvideo import ids
from iotvideo.domain.clock import now_ms
from iotvideo.errors import BusinessError
from iotvideo.secretbox import SecretBox
from iotvideo.store.schema import access_keys, tenants, time_templates
from iotvideo.store.units import Store

DEFAULT_TEMPLATE_NAME = "all day"

_TENANT_ID = select(tenants.c.id).where(tenants.c.name == bindparam("name"))
_KEY = (select(access_keys, tenants.c.name.label("tenant_name")).join(tenants)
        .where(access_keys.c.id == bindparam("key_id")))


def _tenant_exists() -> BusinessError:
    return BusinessError("460", "tenant already exists.")


@dataclass(frozen=True)
class AccessKey:
    id: str
    tenant_id: str
    tenant_name: str
    secret: str
    enabled: bool
    created_ms: int


class Tenants:
    """Creates tenants (each with its undeletable default all-day template) and keys."""

    # A looked-up key is trusted for this long before the store is asked again, so a
    # key disabled on another node stops working within this many seconds.
    KEY_CACHE_S = 5.0

    def __init__(self, store: Store, box: SecretBox) -> None:
        self._store = store
        self._box = box
        self._key_cache: dict[str, tuple[float, AccessKey | None]] = {}

    async def create_tenant(self, name: str) -> str:
        if not 1 <= len(name) <= 64:
            raise BusinessError("460", "tenant name must be 1..64 characters.")

        def unit(c: Connection) -> str:
            if c.execute(_TENANT_ID, {"name": name}).first():
                raise _tenant_exists()
            tid = ids.object_id()
            now = now_ms()
            c.execute(insert(tenants).values(id=tid, name=name, created_ms=now))
            c.execute(insert(time_templates).values(
                id=ids.object_id(), tenant_id=tid, name=DEFAULT_TEMPLATE_NAME, all_day=True,
                is_default=True, sections="[]", created_ms=now))
            return tid

        try:
            return await self._store.write(unit)
        except IntegrityError:  # created concurrently on PostgreSQL (the name is unique)
            raise _tenant_exists() from None

    async def tenant_id(self, name: str) -> str | None:
        return await self._store.read(lambda c: c.execute(_TENANT_ID, {"name": name}).scalar())

    async def ensure_tenant(self, name: str) -> str:
        """The tenant's id, creating the tenant if missing (safe when racing another creator)."""
        tid = await self.tenant_id(name)
        if tid:
            return tid
        try:
            return await self.create_tenant(name)
        except BusinessError:
            tid = await self.tenant_id(name)
            if tid is None:
                raise
            return tid

    async def list_tenants(self) -> list[tuple[str, str]]:
        def unit(c: Connection) -> list[tuple[str, str]]:
            rows = c.execute(select(tenants.c.id, tenants.c.name).order_by(tenants.c.created_ms))
            return [(r.id, r.name) for r in rows]

        return await self._store.read(unit)

    async def create_access_key(self, tenant_id: str) -> tuple[str, str]:
        key_id, secret = ids.access_key_id(), ids.access_key_secret()
        values = dict(id=key_id, tenant_id=tenant_id, secret_sealed=self._box.seal(secret), enabled=True,
                      created_ms=now_ms())
        await self._store.write(lambda c: c.execute(insert(access_keys).values(**values)))
        return key_id, secret

    async def list_access_keys(self, tenant_id: str | None = None) -> list[AccessKey]:
        """Keys with their secrets masked; for the admin CLI."""
        q = select(access_keys, tenants.c.name.label("tenant_name")).join(tenants)
        if tenant_id:
            q = q.where(access_keys.c.tenant_id == tenant_id)
        q = q.order_by(access_keys.c.created_ms)
        rows = await self._store.read(lambda c: c.execute(q).all())
        return [AccessKey(r.id, r.tenant_id, r.tenant_name, "***", r.enabled, r.created_ms) for r in rows]

    async def set_access_key_enabled(self, key_id: str, enabled: bool) -> bool:
        stmt = update(access_keys).where(access_keys.c.id == key_id).values(enabled=enabled)
        changed = await self._store.write(lambda c: c.execute(stmt).rowcount)
        self._key_cache.pop(key_id, None)
        return changed > 0

    async def lookup(self, key_id: str) -> AccessKey | None:
        """The key with its secret opened, or None; cached for KEY_CACHE_S seconds."""
        now = time.monotonic()
        hit = self._key_cache.get(key_id)
        if hit and hit[0] > now:
            return hit[1]
        row = await self._store.read(lambda c: c.execute(_KEY, {"key_id": key_id}).first())
        key = None
        if row is not None:
            key = AccessKey(row.id, row.tenant_id, row.tenant_name, self._box.open(row.secret_sealed), row.enabled,
                            row.created_ms)
        if len(self._key_cache) > 100_000:
            self._key_cache.clear()
        self._key_cache[key_id] = (now + self.KEY_CACHE_S, key)
        return key
