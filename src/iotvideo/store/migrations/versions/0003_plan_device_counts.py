"""plan device counts and versions; plan_devices index led by kind

* ``record_plans.device_count`` / ``event_record_plans.device_count``: the number of the
  plan's device streams, kept by the code that adds and removes them (filled here from
  ``plan_devices``), so a page of a plan's devices does not count them all;
* ``devices_version``: changes whenever the plan's streams change, so a node may keep
  where its pages start (domain/plans.py) as long as the version it read is the same;
* ``ix_plan_devices_plan`` (plan_id, created_ms, iot_id, stream_type) is replaced by
  ``ix_plan_devices_kind_plan`` (kind, plan_id, created_ms, iot_id, stream_type): every
  query on a plan's devices says ``kind = … AND plan_id = …`` and orders by the rest, so
  a page (and any OFFSET walk) is read from the index alone.

Revision ID: 0003
Revises: 0002
"""
from alembic import op
import sqlalchemy as sa

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

PLANS = (("record_plans", "record"), ("event_record_plans", "event"))


def upgrade() -> None:
    for table, kind in PLANS:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("device_count", sa.Integer(), nullable=False, server_default="0"))
            batch_op.add_column(sa.Column("devices_version", sa.BigInteger(), nullable=False, server_default="0"))
        op.execute(
            f"UPDATE {table} SET device_count = (SELECT count(*) FROM plan_devices "
            f"WHERE plan_devices.kind = '{kind}' AND plan_devices.plan_id = {table}.id)"
        )
    with op.batch_alter_table("plan_devices", schema=None) as batch_op:
        batch_op.drop_index("ix_plan_devices_plan")
        batch_op.create_index("ix_plan_devices_kind_plan", ["kind", "plan_id", "created_ms", "iot_id", "stream_type"],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table("plan_devices", schema=None) as batch_op:
        batch_op.drop_index("ix_plan_devices_kind_plan")
        batch_op.create_index("ix_plan_devices_plan", ["plan_id", "created_ms", "iot_id", "stream_type"], unique=False)
    for table, _kind in PLANS:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("devices_version")
            batch_op.drop_column("device_count")
