"""The device registry: products and devices of a tenant, and device addressing."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from sqlalchemy import bindparam, delete, func, insert, select, update
from sqlalchemy.engine import Connection, Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql import ColumnElement

from iotvideo import ids
from iotvideo.bus import Bus, DeviceDeleted, DeviceDisabled
from iotvideo.domain.clock import now_ms
from iotvideo.domain.paging import Page, PageRequest
from iotvideo.errors import BusinessError, tenant_auth_error
from iotvideo.secretbox import SecretBox
from iotvideo.store.schema import device_properties, devices, plan_devices, plan_tables, products
from iotvideo.store.units import Query, Store

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


# --- statements built once (bind parameters are filled in per call) ---

# (iot_id, tenant_id, product_key, device_name) of a device, by IotId or by name
_ADDRESS_COLS = (devices.c.iot_id, devices.c.tenant_id, devices.c.product_key, devices.c.device_name)
_BY_IOT_ID = Query(select(*_ADDRESS_COLS).where(devices.c.iot_id == bindparam("iot_id")))
_BY_NAME = Query(select(*_ADDRESS_COLS).where(devices.c.product_key == bindparam("pk"),
                                              devices.c.device_name == bindparam("dn")))
_PRODUCT = select(products).where(products.c.product_key == bindparam("pk"))
_DEVICE_FULL = (select(devices, products.c.name.label("product_name"), products.c.node_type)
                .join(products, products.c.product_key == devices.c.product_key))
_DEVICE = _DEVICE_FULL.where(devices.c.iot_id == bindparam("iot_id"))
_DEVICES_COUNT = select(func.count()).select_from(devices).where(devices.c.product_key == bindparam("pk"))
_DEVICES_PAGE = (_DEVICE_FULL.where(devices.c.product_key == bindparam("pk"))
                 .order_by(devices.c.created_ms.desc(), devices.c.iot_id.desc())  # newest first
                 .offset(bindparam("offset")).limit(bindparam("limit")))
_NAME_TAKEN = select(devices.c.iot_id).where(devices.c.product_key == bindparam("pk"),
                                            devices.c.device_name == bindparam("dn"))
_PRODUCTS_COUNT = select(func.count()).select_from(products).where(products.c.tenant_id == bindparam("t"))
_PRODUCTS_PAGE = (
    select(products, select(func.count()).select_from(devices)
           .where(devices.c.product_key == products.c.product_key).scalar_subquery().label("device_count"))
    .where(products.c.tenant_id == bindparam("t"))
    .order_by(products.c.created_ms.desc(), products.c.product_key.desc())  # newest first, as the IoT platform
    .offset(bindparam("offset")).limit(bindparam("limit")))
_ENABLED = select(devices.c.active_ms, devices.c.enabled).where(devices.c.iot_id == bindparam("iot_id"))


def _address(c: Connection, tenant_id: str, ref: DeviceRef) -> tuple[str, str, str]:
    """(IotId, ProductKey, DeviceName) of the caller's device, or 403."""
    if ref.iot_id:
        row = _BY_IOT_ID.first(c, {"iot_id": ref.iot_id})
    else:
        row = _BY_NAME.first(c, {"pk": ref.product_key, "dn": ref.device_name})
    if row is None or row[1] != tenant_id:
        raise tenant_auth_error()
    return row[0], row[2], row[3]


def resolve_iot_id(c: Connection, tenant_id: str, ref: DeviceRef) -> str:
    """The IotId of the caller's device, or 403 ``tenant auth error`` (exists or not)."""
    return str(_address(c, tenant_id, ref)[0])


def lock_plans(c: Connection, plans: set[tuple[str, str]]) -> None:
    """Row locks (PostgreSQL ``FOR NO KEY UPDATE``) on the plans (kind, plan_id) whose
    device count is about to change, in one global order. Everything that changes a
    plan's streams locks the plan row first and its ``plan_devices`` rows after (as
    deleting the plan does), so these transactions wait for each other instead of
    deadlocking. Nothing on SQLite (one writer)."""
    for kind, plan_id in sorted(plans):
        t = plan_tables[kind]
        c.execute(select(t.c.id).where(t.c.id == plan_id).with_for_update(key_share=True))


def release_streams(c: Connection, *where: ColumnElement[bool]) -> int:
    """Deletes the ``plan_devices`` rows that match and lowers their plans' device
    counts to match (and moves their ``devices_version`` on); the number of rows
    deleted. The caller has locked the plans."""
    gone = c.execute(delete(plan_devices).where(*where)
                     .returning(plan_devices.c.kind, plan_devices.c.plan_id)).all()
    for (kind, plan_id), n in Counter((r.kind, r.plan_id) for r in gone).items():
        t = plan_tables[kind]
        c.execute(update(t).where(t.c.id == plan_id).values(device_count=t.c.device_count - n,
                                                             devices_version=t.c.devices_version + 1))
    return len(gone)


def _name_ok(name: str, what: str, max_len: int = 64) -> None:
    if not 1 <= len(name) <= max_len:
        raise BusinessError("460", f"{what} must be 1..{max_len} characters.")


class Registry:
    """Creates and reads products and devices; every call is scoped to one tenant."""

    def __init__(self, store: Store, box: SecretBox, bus: Bus | None = None) -> None:
        self._store = store
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
        stmt = insert(products).values(
            product_key=product.product_key, tenant_id=tenant_id, name=name,
            secret_sealed=self._box.seal(product.secret), node_type=node_type,
            data_format=data_format, description=description, auth_type=auth_type,
            created_ms=product.created_ms)
        await self._store.write(lambda c: c.execute(stmt))
        return product

    async def list_products(self, tenant_id: str, page: PageRequest) -> Page[Product]:
        def unit(c: Connection) -> tuple[int, list[Row]]:  # type: ignore[type-arg]
            total = c.execute(_PRODUCTS_COUNT, {"t": tenant_id}).scalar_one()
            rows = c.execute(_PRODUCTS_PAGE, {"t": tenant_id, "offset": page.offset, "limit": page.size}).all()
            return total, rows

        total, rows = await self._store.read(unit)
        return Page([self._product(r) for r in rows], total, page)

    def _product(self, r: Row) -> Product:  # type: ignore[type-arg]
        return Product(r.product_key, r.name, self._box.open(r.secret_sealed), r.node_type, r.data_format,
                       r.description, r.auth_type, r.created_ms, getattr(r, "device_count", 0))

    @staticmethod
    def _product_of_tenant(c: Connection, tenant_id: str, product_key: str) -> Row:  # type: ignore[type-arg]
        row = c.execute(_PRODUCT, {"pk": product_key}).first()
        if row is None or row.tenant_id != tenant_id:
            raise tenant_auth_error()
        return row

    # --- devices ---
    async def register_device(self, tenant_id: str, product_key: str, device_name: str | None,
                              nickname: str = "") -> Device:
        if device_name is not None:
            _valid_device_name(device_name)
        name = device_name or ids.device_name()
        iot_id, secret, now = ids.iot_id(), ids.device_secret(), now_ms()
        sealed = self._box.seal(secret)

        def unit(c: Connection) -> Row:  # type: ignore[type-arg]
            prod = self._product_of_tenant(c, tenant_id, product_key)
            if c.execute(_NAME_TAKEN, {"pk": product_key, "dn": name}).first():
                raise _duplicate_name()
            c.execute(insert(devices).values(
                iot_id=iot_id, tenant_id=tenant_id, product_key=product_key, device_name=name,
                secret_sealed=sealed, nickname=nickname, status="UNACTIVE",
                enabled=True, ip_address="", firmware_version="", time_zone="UTC", created_ms=now))
            return prod

        try:
            prod = await self._store.write(unit)
        except IntegrityError:
            # A concurrent RegisterDevice of the same name won the unique constraint (PostgreSQL).
            raise _duplicate_name() from None
        return Device(iot_id, product_key, prod.name, name, secret, nickname, "UNACTIVE", "", "",
                      prod.node_type, "UTC", now, None, None, None, None)

    async def device(self, tenant_id: str, ref: DeviceRef) -> Device:
        def unit(c: Connection) -> Row:  # type: ignore[type-arg]
            iot_id = resolve_iot_id(c, tenant_id, ref)
            return c.execute(_DEVICE, {"iot_id": iot_id}).one()

        return self._device(await self._store.read(unit))

    async def address(self, tenant_id: str, ref: DeviceRef) -> tuple[str, str, str]:
        """(IotId, ProductKey, DeviceName) of the caller's device, or 403."""
        return await self._store.read(lambda c: _address(c, tenant_id, ref))

    async def check_product(self, tenant_id: str, product_key: str) -> None:
        """403 ``tenant auth error`` unless the product is the caller's."""
        await self._store.read(lambda c: self._product_of_tenant(c, tenant_id, product_key))

    def _device(self, r: Row) -> Device:  # type: ignore[type-arg]
        return Device(r.iot_id, r.product_key, r.product_name, r.device_name, self._box.open(r.secret_sealed),
                      r.nickname, r.status, r.ip_address, r.firmware_version, r.node_type, r.time_zone,
                      r.created_ms, r.active_ms, r.online_ms, r.record_life_days, r.picture_life_days)

    async def list_devices(self, tenant_id: str, product_key: str, page: PageRequest) -> Page[Device]:
        def unit(c: Connection) -> tuple[int, list[Row]]:  # type: ignore[type-arg]
            self._product_of_tenant(c, tenant_id, product_key)
            total = c.execute(_DEVICES_COUNT, {"pk": product_key}).scalar_one()
            rows = c.execute(_DEVICES_PAGE, {"pk": product_key, "offset": page.offset, "limit": page.size}).all()
            return total, rows

        total, rows = await self._store.read(unit)
        return Page([self._device(r) for r in rows], total, page)

    async def delete_device(self, tenant_id: str, ref: DeviceRef) -> None:
        """Removes the device and releases it from every plan."""

        def unit(c: Connection) -> str:
            iot_id = resolve_iot_id(c, tenant_id, ref)
            bound = c.execute(select(plan_devices.c.kind, plan_devices.c.plan_id)
                              .where(plan_devices.c.iot_id == iot_id)).all()
            lock_plans(c, {(r.kind, r.plan_id) for r in bound})
            release_streams(c, plan_devices.c.iot_id == iot_id)
            c.execute(delete(device_properties).where(device_properties.c.iot_id == iot_id))
            c.execute(delete(devices).where(devices.c.iot_id == iot_id))
            return iot_id

        iot_id = await self._store.write(unit)
        self._bus.publish(DeviceDeleted(iot_id))

    async def set_enabled(self, tenant_id: str, ref: DeviceRef, enabled: bool) -> None:
        """DisableThing / EnableThing. A re-enabled device is OFFLINE until it connects
        again (UNACTIVE if it never did)."""

        def unit(c: Connection) -> str | None:
            """The IotId if this call changed the device, else None."""
            iot_id = resolve_iot_id(c, tenant_id, ref)
            row = c.execute(_ENABLED, {"iot_id": iot_id}).one()
            if bool(row.enabled) == enabled:
                return None  # already so: an enabled device keeps its ONLINE/OFFLINE status
            status = ("OFFLINE" if row.active_ms else "UNACTIVE") if enabled else "DISABLE"
            c.execute(update(devices).where(devices.c.iot_id == iot_id).values(enabled=enabled, status=status))
            return iot_id

        changed = await self._store.write(unit)
        if changed is not None and not enabled:
            self._bus.publish(DeviceDisabled(changed))


def _duplicate_name() -> BusinessError:
    return BusinessError("460", "device name already exists in this product.")


def _valid_device_name(name: str) -> None:
    """The IoT platform's rule: 4..32 characters of letters, digits and -_@.:"""
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_@.:")
    if not 4 <= len(name) <= 32 or not set(name) <= allowed:
        raise BusinessError("460", "DeviceName must be 4..32 characters of letters, digits and -_@.:")


__all__ = ["Device", "DeviceRef", "Product", "Registry", "resolve_iot_id", "STATUSES"]
