"""shards: a channel's public rooms after the first, each post's copy per room, notify, joined counts

Revision ID: 0014
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN: on SQLite a batch (table copy) of `channels` would cascade-delete its children.
    op.add_column("channels", sa.Column("shard_rooms", sa.JSON(), nullable=True))
    op.add_column("channels", sa.Column("shard_size", sa.Integer(), nullable=True))
    op.add_column("channels", sa.Column("notify", sa.Boolean(), server_default=sa.true(), nullable=False))
    op.add_column("rooms", sa.Column("joined", sa.Integer(), nullable=True))
    op.create_table(
        "post_copies",
        sa.Column("event_id", sa.String(length=255), nullable=False),
        sa.Column("post_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("room_id", sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(["post_id"], ["posts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("event_id"),
        sa.UniqueConstraint("post_id", "room_id", name="uq_post_copies_post_room"),
    )
    # Every channel so far is one room: its posts' copies are the relayed events already recorded.
    op.execute(
        "INSERT INTO post_copies (event_id, post_id, room_id) "
        "SELECT posts.relayed_event_id, posts.id, channels.broadcast_room_id FROM posts "
        "JOIN channels ON channels.id = posts.channel_id "
        "WHERE posts.relayed_event_id IS NOT NULL AND channels.broadcast_room_id IS NOT NULL"
    )


def downgrade() -> None:
    op.drop_table("post_copies")
    op.execute("ALTER TABLE rooms DROP COLUMN joined")  # SQLite >= 3.35; no table copy
    for column in ("notify", "shard_size", "shard_rooms"):
        op.execute(f"ALTER TABLE channels DROP COLUMN {column}")
