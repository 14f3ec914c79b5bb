"""statistics

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "channel_daily_stats",
        sa.Column("channel_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("subscribers", sa.Integer(), nullable=False),
        sa.Column("views", sa.BigInteger(), nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(["channel_id"], ["channels.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("channel_id", "day"),
    )
    # ALTER TABLE, never a batch copy of `channels` or `posts` (on SQLite that would cascade-delete
    # their children).
    op.add_column(
        "channels", sa.Column("views_in_posts", sa.Boolean(), server_default=sa.false(), nullable=False)
    )
    op.add_column("posts", sa.Column("views_shown", sa.Integer(), nullable=True))
    op.add_column("posts", sa.Column("views_shown_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    for table, column in (
        ("posts", "views_shown_at"),
        ("posts", "views_shown"),
        ("channels", "views_in_posts"),
    ):
        op.execute(f"ALTER TABLE {table} DROP COLUMN {column}")  # no table copy
    op.drop_table("channel_daily_stats")
