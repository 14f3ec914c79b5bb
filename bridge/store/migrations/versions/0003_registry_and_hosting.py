"""registry and hosting: channel requests, registration tokens, handle holds, transfers, registry log

Existing channels get verified=false and an empty title_key (filled in at the next start).

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "channel_requests",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("room_id", sa.String(length=255), nullable=False),
        sa.Column("handle", sa.String(length=64), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("decided_by", sa.String(length=255), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("channel_requests", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_channel_requests_user_id"), ["user_id"], unique=False)

    op.create_table(
        "registration_tokens",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("hint", sa.String(length=16), nullable=False),
        sa.Column("label", sa.Text(), nullable=False),
        sa.Column("uses_allowed", sa.Integer(), nullable=True),
        sa.Column("uses", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.String(length=255), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    op.create_table(
        "registry_log",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column(
            "at", sa.DateTime(timezone=True), server_default=sa.text("(CURRENT_TIMESTAMP)"), nullable=False
        ),
        sa.Column("actor", sa.String(length=255), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("subject", sa.String(length=255), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "reserved_handles",
        sa.Column("handle", sa.String(length=64), nullable=False),
        sa.Column("added_by", sa.String(length=255), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("handle"),
    )
    op.create_table(
        "handle_holds",
        sa.Column("handle", sa.String(length=64), nullable=False),
        sa.Column("skeleton", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("channel_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("until", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["channel_id"], ["channels.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("handle"),
    )
    with op.batch_alter_table("handle_holds", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_handle_holds_skeleton"), ["skeleton"], unique=False)

    op.create_table(
        "pending_transfers",
        sa.Column("channel_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("from_user", sa.String(length=255), nullable=False),
        sa.Column("to_user", sa.String(length=255), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["channel_id"], ["channels.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("channel_id"),
    )
    with op.batch_alter_table("pending_transfers", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_pending_transfers_to_user"), ["to_user"], unique=False)

    # Plain ALTER TABLE ... ADD COLUMN, never a batch (copy-and-drop) on `channels`: on SQLite,
    # dropping the old table would cascade to every room, member and post that refers to it.
    op.add_column("channels", sa.Column("verified", sa.Boolean(), server_default=sa.false(), nullable=False))
    op.add_column("channels", sa.Column("title_key", sa.Text(), server_default="", nullable=False))
    op.add_column("channels", sa.Column("handle_skeleton", sa.String(length=255), nullable=True))
    op.add_column("channels", sa.Column("retention_days", sa.Integer(), nullable=True))
    op.create_index("ix_channels_handle_skeleton", "channels", ["handle_skeleton"], unique=False)
    op.create_index("ix_channels_title_key", "channels", ["title_key"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_channels_title_key", table_name="channels")
    op.drop_index("ix_channels_handle_skeleton", table_name="channels")
    for column in ("retention_days", "handle_skeleton", "title_key", "verified"):
        op.execute(f"ALTER TABLE channels DROP COLUMN {column}")  # SQLite >= 3.35; no table copy
    op.drop_index("ix_pending_transfers_to_user", table_name="pending_transfers")
    op.drop_table("pending_transfers")
    op.drop_index("ix_handle_holds_skeleton", table_name="handle_holds")
    op.drop_table("handle_holds")
    op.drop_table("reserved_handles")
    op.drop_table("registry_log")
    op.drop_table("registration_tokens")
    op.drop_index("ix_channel_requests_user_id", table_name="channel_requests")
    op.drop_table("channel_requests")
