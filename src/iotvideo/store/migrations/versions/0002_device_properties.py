"""device properties (latest value per identifier)

Revision ID: 0002
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "device_properties",
        sa.Column("iot_id", sa.String(length=64), nullable=False),
        sa.Column("identifier", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("time_ms", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["iot_id"], ["devices.iot_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("iot_id", "identifier", name="pk_device_properties"),
    )


def downgrade() -> None:
    op.drop_table("device_properties")
