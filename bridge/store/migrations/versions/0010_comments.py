"""comments

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

BigID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    # ALTER TABLE, never a batch copy of `channels` (on SQLite that would cascade-delete its children).
    op.add_column("channels", sa.Column("comments", sa.Boolean(), server_default=sa.false(), nullable=False))
    op.add_column("channels", sa.Column("comments_room_id", sa.String(length=255), nullable=True))

    op.create_table(
        "comment_threads",
        sa.Column("post_id", BigID, nullable=False),
        sa.Column("channel_id", BigID, nullable=False),
        sa.Column("room_id", sa.String(length=255), nullable=True),
        sa.Column("root_event_id", sa.String(length=255), nullable=True),
        sa.Column("link_queued", sa.Boolean(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(["channel_id"], ["channels.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["post_id"], ["posts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("post_id"),
    )
    with op.batch_alter_table("comment_threads", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_comment_threads_channel_id"), ["channel_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_comment_threads_root_event_id"), ["root_event_id"], unique=False)

    op.create_table(
        "moderated_comments",
        sa.Column("event_id", sa.String(length=255), nullable=False),
        sa.Column("channel_id", BigID, nullable=False),
        sa.Column("room_id", sa.String(length=255), nullable=False),
        sa.Column("author", sa.String(length=255), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("decision_id", BigID, nullable=True),
        sa.Column("event", sa.JSON(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(["channel_id"], ["channels.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("event_id"),
    )
    with op.batch_alter_table("moderated_comments", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_moderated_comments_author"), ["author"], unique=False)
        batch_op.create_index(batch_op.f("ix_moderated_comments_channel_id"), ["channel_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_moderated_comments_decision_id"), ["decision_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("moderated_comments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_moderated_comments_decision_id"))
        batch_op.drop_index(batch_op.f("ix_moderated_comments_channel_id"))
        batch_op.drop_index(batch_op.f("ix_moderated_comments_author"))
    op.drop_table("moderated_comments")

    with op.batch_alter_table("comment_threads", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_comment_threads_root_event_id"))
        batch_op.drop_index(batch_op.f("ix_comment_threads_channel_id"))
    op.drop_table("comment_threads")

    for column in ("comments_room_id", "comments"):
        op.execute(f"ALTER TABLE channels DROP COLUMN {column}")  # no table copy
