"""private channels and invite links

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    # Plain ALTER TABLE ... ADD COLUMN, never a batch (copy-and-drop) on `channels`.
    op.add_column("channels", sa.Column("private", sa.Boolean(), server_default=sa.false(), nullable=False))
    op.add_column(
        "channel_requests", sa.Column("private", sa.Boolean(), server_default=sa.false(), nullable=False)
    )
    op.create_table(
        "invite_links",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("channel_id", _ID, sa.ForeignKey("channels.id", ondelete="CASCADE"), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False, unique=True),
        sa.Column("created_by", sa.String(length=255), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("uses_allowed", sa.Integer(), nullable=True),
        sa.Column("uses", sa.Integer(), nullable=False),
        sa.Column("approval", sa.Boolean(), nullable=False),
        sa.Column("revoked", sa.Boolean(), nullable=False),
    )
    op.create_index("ix_invite_links_channel_id", "invite_links", ["channel_id"])
    op.create_table(
        "join_requests",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("channel_id", _ID, sa.ForeignKey("channels.id", ondelete="CASCADE"), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("link_id", _ID, sa.ForeignKey("invite_links.id", ondelete="SET NULL"), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("decided_by", sa.String(length=255), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
    )
    op.create_index("ix_join_requests_channel", "join_requests", ["channel_id", "status"])


def downgrade() -> None:
    op.drop_index("ix_join_requests_channel", table_name="join_requests")
    op.drop_table("join_requests")
    op.drop_index("ix_invite_links_channel_id", table_name="invite_links")
    op.drop_table("invite_links")
    op.execute("ALTER TABLE channel_requests DROP COLUMN private")
    op.execute("ALTER TABLE channels DROP COLUMN private")  # SQLite >= 3.35; no table copy
