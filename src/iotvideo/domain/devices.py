"""The device registry: products and devices of a tenant, and device addressing."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from iotvideo import ids
from iotvideo.bus import Bus, DeviceDeleted, DeviceDisabled
from iotvideo.domain.clock import now_ms
from iotvideo.domain.paging import Page, PageRequest
from iotvideo.errors import BusinessError, not_found, tenant_auth_error
from iotvideo.secretbox import SecretBox
from iotvideo.store.schema import device_properties, devices, plan_devices, products

STATUSES = ("UNACTIVE", "ONLINE", "OFFLINE", "DISABLE")


@dataclass(frozen=True)
class DeviceRef:
    """How a request names a device: IotId, or ProductKey + DeviceName (IotId wins)."""

    iot_id: str | None = None
    product_key: str | None = None
    device_name: str | None = None


@dataclass(frozen=True)
class Product:
    product_key: str
    name: str
    secret: str
    node_type: int
    data_format: int
    description: str
    auth_type: str
    created_ms: int
    device_count: int = 0


@dataclass(frozen=True)
class Device:
    iot_id: str
    product_key: str
    product_name: str
    device_name: str
    secret: str
    nickname: str
    status: str
    ip_address: str
    firmware_version: str
    node_type: int
    time_zone: str
    created_ms: int
    active_ms: int | None
    online_ms: int | None
    record_life_days: int | None
    picture_life_days: int | None


async def resolve_iot_id(conn: AsyncConnection, tenant_id: str, ref: DeviceRef) -> str:
    """The IotId of the caller's device, or 403 ``tenant auth error`` (exists or not)."""
    q = select(devices.c.iot_id, devices.c.tenant_id)
    if ref.iot_id:
        q = q.where(devices.c.iot_id == ref.iot_id)
    else:
        q = q.where(devices.c.product_key == ref.product_key, devices.c.device_name == ref.device_name)
    row = (await conn.execute(q)).first()
    if row is None or row.tenant_id != tenant_id:
        raise tenant_auth_error()
    return str(row.iot_id)


def _name_ok(name: str, what: str, max_len: int = 64) -> None:
    if not 1 <= len(name) <= max_len:
        raise BusinessError("460", f"{what} must be 1..{max_len} characters.")


class Registry:
    """Creates and reads products and devices; every call is scoped to one tenant."""

    def __init__(self, db: AsyncEngine, box: SecretBox, bus: Bus | None = None) -> None:
        self._db = db
        self._box = box
        self._bus = bus or Bus()

    # --- products ---
    async def create_product(
        self, tenant_id: str, name: str, node_type: int = 0, data_format: int = 1,
        description: str = "", auth_type: str = "secret",
    ) -> Product:
        _name_ok(name, "ProductName")
        product = Product(ids.product_key(), name, ids.product_secret(), node_type, data_format,
                          description, auth_type, now_ms())
        async with self._db.begin() as conn:
            await conn.execute(insert(products).values(
                product_key=product.product_key, tenant_id=tenant_id, name=name,
                secret_sealed=self._box.seal(product.secret), node_type=node_type,
                data_format=data_format, description=description, auth_type=auth_type,
                created_ms=product.created_ms))
        return product

    async def list_products(self, tenant_id: str, page: PageRequest) -> Page[Product]:
        count = select(func.count()).select_from(products).where(products.c.tenant_id == tenant_id)
        dev_count = (select(func.count()).select_from(devices)
                     .where(devices.c.product_key == products.c.product_key).scalar_subquery())
        q = (select(products, dev_count.label("device_count")).where(products.c.tenant_id == tenant_id)
             .order_by(products.c.created_ms.desc(), products.c.product_key.desc())  # newest first, as the IoT platform
             .offset(page.offset).limit(page.size))
        async with self._db.connect() as conn:
            total = (await conn.execute(count)).scalar_one()
            rows = (await conn.execute(q)).all()
        return Page([self._product(r) for r in rows], total, page)

    def _product(self, r: Row) -> Product:  # type: ignore[type-arg]
        return Product(r.product_key, r.name, self._box.open(r.secret_sealed), r.node_type, r.data_format,
                       r.description, r.auth_type, r.created_ms, getattr(r, "device_count", 0))

    async def _product_of_tenant(self, conn: AsyncConnection, tenant_id: str, product_key: str) -> Row:  # type: ignore[type-arg]
        row = (await conn.execute(select(products).where(products.c.product_key == product_key))).first()
        if row is None or row.tenant_id != tenant_id:
            raise tenant_auth_error()
        return row

    # --- devices ---
    async def register_device(self, tenant_id: str, product_key: str, device_name: str | None,
                              nickname: str = "") -> Device:
        if device_name is not None:
            _valid_device_name(device_name)
        try:
            async with self._db.begin() as conn:
                prod = await self._product_of_tenant(conn, tenant_id, product_key)
                name = device_name or ids.device_name()
                exists = await conn.execute(select(devices.c.iot_id).where(
                    devices.c.product_key == product_key, devices.c.device_name == name))
                if exists.first():
                    raise _duplicate_name()
                iot_id, secret, now = ids.iot_id(), ids.device_secret(), now_ms()
                await conn.execute(insert(devices).values(
                    iot_id=iot_id, tenant_id=tenant_id, product_key=product_key, device_name=name,
                    secret_sealed=self._box.seal(secret), nickname=nickname, status="UNACTIVE",
                    enabled=True, ip_address="", firmware_version="", time_zone="UTC", created_ms=now))
        except IntegrityError:
            # A concurrent RegisterDevice of the same name won the unique constraint.
            raise _duplicate_name() from None
        return Device(iot_id, product_key, prod.name, name, secret, nickname, "UNACTIVE", "", "",
                      prod.node_type, "UTC", now, None, None, None, None)

    async def device(self, tenant_id: str, ref: DeviceRef) -> Device:
        async with self._db.connect() as conn:
            iot_id = await resolve_iot_id(conn, tenant_id, ref)
            row = (await conn.execute(
                select(devices, products.c.name.label("product_name"), products.c.node_type)
                .join(products, products.c.product_key == devices.c.product_key)
                .where(devices.c.iot_id == iot_id))).one()
        return self._device(row)

    async def address(self, tenant_id: str, ref: DeviceRef) -> tuple[str, str, str]:
        """(IotId, ProductKey, DeviceName) of the caller's device, or 403."""
        q = select(devices.c.iot_id, devices.c.tenant_id, devices.c.product_key, devices.c.device_name)
        if ref.iot_id:
            q = q.where(devices.c.iot_id == ref.iot_id)
        else:
            q = q.where(devices.c.product_key == ref.product_key, devices.c.device_name == ref.device_name)
        async with self._db.connect() as conn:
            row = (await conn.execute(q)).first()
        if row is None or row.tenant_id != tenant_id:
            raise tenant_auth_error()
        return row.iot_id, row.product_key, row.device_name

    async def check_product(self, tenant_id: str, product_key: str) -> None:
        """403 ``tenant auth error`` unless the product is the caller's."""
        async with self._db.connect() as conn:
            await self._product_of_tenant(conn, tenant_id, product_key)

    def _device(self, r: Row) -> Device:  # type: ignore[type-arg]
        return Device(r.iot_id, r.product_key, r.product_name, r.device_name, self._box.open(r.secret_sealed),
                      r.nickname, r.status, r.ip_address, r.firmware_version, r.node_type, r.time_zone,
                      r.created_ms, r.active_ms, r.online_ms, r.record_life_days, r.picture_life_days)

    async def list_devices(self, tenant_id: str, product_key: str, page: PageRequest) -> Page[Device]:
        async with self._db.connect() as conn:
            await self._product_of_tenant(conn, tenant_id, product_key)
            where = (devices.c.product_key == product_key,)
            total = (await conn.execute(select(func.count()).select_from(devices).where(*where))).scalar_one()
            rows = (await conn.execute(
                select(devices, products.c.name.label("product_name"), products.c.node_type)
                .join(products, products.c.product_key == devices.c.product_key)
                .where(*where).order_by(devices.c.created_ms.desc(), devices.c.iot_id.desc())  # newest first
                .offset(page.offset).limit(page.size))).all()
        return Page([self._device(r) for r in rows], total, page)

    async def delete_device(self, tenant_id: str, ref: DeviceRef) -> None:
        """Removes the device and releases it from every plan."""
        async with self._db.begin() as conn:
            iot_id = await resolve_iot_id(conn, tenant_id, ref)
            await conn.execute(delete(plan_devices).where(plan_devices.c.iot_id == iot_id))
            await conn.execute(delete(device_properties).where(device_properties.c.iot_id == iot_id))
            await conn.execute(delete(devices).where(devices.c.iot_id == iot_id))
        self._bus.publish(DeviceDeleted(iot_id))

    async def set_enabled(self, tenant_id: str, ref: DeviceRef, enabled: bool) -> None:
        """DisableThing / EnableThing. A re-enabled device is OFFLINE until it connects
        again (UNACTIVE if it never did)."""
        async with self._db.begin() as conn:
            iot_id = await resolve_iot_id(conn, tenant_id, ref)
            row = (await conn.execute(select(devices.c.active_ms, devices.c.enabled)
                                      .where(devices.c.iot_id == iot_id))).one()
            if bool(row.enabled) == enabled:
                return  # already so: an enabled device keeps its ONLINE/OFFLINE status
            if enabled:
                status = "OFFLINE" if row.active_ms else "UNACTIVE"
            else:
                status = "DISABLE"
            await conn.execute(update(devices).where(devices.c.iot_id == iot_id).values(enabled=enabled, status=status))
        if not enabled:
            self._bus.publish(DeviceDisabled(iot_id))


def _duplicate_name() -> BusinessError:
    return BusinessError("460", "device name already exists in this product.")


def _valid_device_name(name: str) -> None:
    """The IoT platform's rule: 4..32 characters of letters, digits and -_@.:"""
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_@.:")
    if not 4 <= len(name) <= 32 or not set(name) <= allowed:
        raise BusinessError("460", "DeviceName must be 4..32 characters of letters, digits and -_@.:")


__all__ = ["Device", "DeviceRef", "Product", "Registry", "resolve_iot_id", "not_found", "STATUSES"]
