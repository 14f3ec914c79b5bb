"""scheduled posts and reaction policy

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "scheduled_posts",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("channel_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("source_event_id", sa.String(length=255), nullable=False),
        sa.Column("author", sa.String(length=255), nullable=False),
        sa.Column("event", sa.JSON(), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(["channel_id"], ["channels.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("source_event_id"),
    )
    with op.batch_alter_table("scheduled_posts", schema=None) as batch_op:
        batch_op.create_index("ix_scheduled_due", ["status", "due_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_scheduled_posts_channel_id"), ["channel_id"], unique=False)

    # ALTER TABLE, never a batch copy of `channels` (on SQLite that would cascade-delete its children).
    op.add_column(
        "channels", sa.Column("timezone", sa.String(length=64), server_default="UTC", nullable=False)
    )
    op.add_column("channels", sa.Column("reaction_allow", sa.JSON(), nullable=True))


def downgrade() -> None:
    for column in ("reaction_allow", "timezone"):
        op.execute(f"ALTER TABLE channels DROP COLUMN {column}")  # no table copy

    with op.batch_alter_table("scheduled_posts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_scheduled_posts_channel_id"))
        batch_op.drop_index("ix_scheduled_due")

    op.drop_table("scheduled_posts")
