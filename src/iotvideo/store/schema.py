"""The metadata schema as SQLAlchemy Core tables (documented in docs/schema.md).

Times are integer milliseconds since the Unix epoch (UTC). Secrets are stored sealed
(see ``iotvideo.secretbox``). Every tenant-owned row carries ``tenant_id`` so each
query can be scoped to the caller's tenant.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

tenants = Table(
    "tenants",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("created_ms", BigInteger, nullable=False),
)

access_keys = Table(
    "access_keys",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("tenant_id", String(32), ForeignKey("tenants.id"), nullable=False, index=True),
    Column("secret_sealed", Text, nullable=False),
    Column("enabled", Boolean, nullable=False, default=True),
    Column("created_ms", BigInteger, nullable=False),
)

products = Table(
    "products",
    metadata,
    Column("product_key", String(32), primary_key=True),
    Column("tenant_id", String(32), ForeignKey("tenants.id"), nullable=False, index=True),
    Column("name", String(64), nullable=False),
    Column("secret_sealed", Text, nullable=False),
    Column("node_type", Integer, nullable=False, default=0),
    Column("data_format", Integer, nullable=False, default=1),
    Column("description", String(100), nullable=False, default=""),
    Column("auth_type", String(16), nullable=False, default="secret"),
    Column("created_ms", BigInteger, nullable=False),
)

devices = Table(
    "devices",
    metadata,
    Column("iot_id", String(64), primary_key=True),
    Column("tenant_id", String(32), ForeignKey("tenants.id"), nullable=False),
    Column("product_key", String(32), ForeignKey("products.product_key"), nullable=False),
    Column("device_name", String(64), nullable=False),
    Column("secret_sealed", Text, nullable=False),
    Column("nickname", String(64), nullable=False, default=""),
    Column("status", String(16), nullable=False, default="UNACTIVE"),
    Column("enabled", Boolean, nullable=False, default=True),
    Column("ip_address", String(64), nullable=False, default=""),
    Column("firmware_version", String(64), nullable=False, default=""),
    Column("time_zone", String(64), nullable=False, default="UTC"),
    Column("created_ms", BigInteger, nullable=False),
    Column("active_ms", BigInteger, nullable=True),
    Column("online_ms", BigInteger, nullable=True),
    Column("record_life_days", Integer, nullable=True),
    Column("picture_life_days", Integer, nullable=True),
    UniqueConstraint("product_key", "device_name", name="uq_devices_pk_dn"),
    Index("ix_devices_tenant_product", "tenant_id", "product_key", "created_ms"),
)

time_templates = Table(
    "time_templates",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("tenant_id", String(32), ForeignKey("tenants.id"), nullable=False),
    Column("name", String(256), nullable=False),
    Column("all_day", Boolean, nullable=False),
    Column("is_default", Boolean, nullable=False, default=False),
    # JSON array of [day_of_week, begin, end], normalized (merged, sorted).
    Column("sections", Text, nullable=False, default="[]"),
    Column("created_ms", BigInteger, nullable=False),
    Index("ix_time_templates_tenant", "tenant_id", "created_ms"),
)

record_plans = Table(
    "record_plans",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("tenant_id", String(32), ForeignKey("tenants.id"), nullable=False),
    Column("name", String(256), nullable=False),
    Column("template_id", String(32), ForeignKey("time_templates.id"), nullable=False, index=True),
    Column("created_ms", BigInteger, nullable=False),
    # How many device streams are in the plan (rows of plan_devices), and a number that
    # changes with every change of them; both kept in the transaction that changes them.
    Column("device_count", Integer, nullable=False, default=0, server_default="0"),
    Column("devices_version", BigInteger, nullable=False, default=0, server_default="0"),
    Index("ix_record_plans_tenant", "tenant_id", "created_ms"),
)

event_record_plans = Table(
    "event_record_plans",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("tenant_id", String(32), ForeignKey("tenants.id"), nullable=False),
    Column("name", String(256), nullable=False),
    Column("template_id", String(32), ForeignKey("time_templates.id"), nullable=False, index=True),
    Column("event_types", String(16), nullable=False, default="1"),
    Column("pre_record_s", Integer, nullable=False, default=0),
    Column("record_s", Integer, nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("device_count", Integer, nullable=False, default=0, server_default="0"),
    Column("devices_version", BigInteger, nullable=False, default=0, server_default="0"),
    Index("ix_event_record_plans_tenant", "tenant_id", "created_ms"),
)

# Which device stream is in which plan. kind is 'record' or 'event'; a stream is in
# at most one plan of each kind (the primary key says so).
plan_devices = Table(
    "plan_devices",
    metadata,
    Column("kind", String(8), nullable=False),
    Column("iot_id", String(64), ForeignKey("devices.iot_id"), nullable=False),
    Column("stream_type", Integer, nullable=False),
    Column("plan_id", String(32), nullable=False),
    Column("tenant_id", String(32), ForeignKey("tenants.id"), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    PrimaryKeyConstraint("kind", "iot_id", "stream_type", name="pk_plan_devices"),
    # A plan's page of devices: kind, plan_id, then the listing order (index-only reads).
    Index("ix_plan_devices_kind_plan", "kind", "plan_id", "created_ms", "iot_id", "stream_type"),
)

# The plan tables by kind (the 'kind' of plan_devices).
plan_tables = {"record": record_plans, "event": event_record_plans}

# The latest value of each property a device posted (QueryDevicePropertyStatus).
device_properties = Table(
    "device_properties",
    metadata,
    Column("iot_id", String(64), ForeignKey("devices.iot_id", ondelete="CASCADE"), nullable=False),
    Column("identifier", String(64), nullable=False),
    Column("value", Text, nullable=False),  # JSON
    Column("time_ms", BigInteger, nullable=False),
    PrimaryKeyConstraint("iot_id", "identifier", name="pk_device_properties"),
)

console_users = Table(
    "console_users",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("tenant_id", String(32), ForeignKey("tenants.id"), nullable=False, index=True),
    Column("username", String(64), nullable=False, unique=True),
    Column("password_hash", Text, nullable=False),
    Column("created_ms", BigInteger, nullable=False),
)
