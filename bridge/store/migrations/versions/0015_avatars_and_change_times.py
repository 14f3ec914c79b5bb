"""channel photos, and when channels and posts last changed (the web pages' Last-Modified)

Revision ID: 0015
Revises: 0014
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN: on SQLite a batch (table copy) of `channels` would cascade-delete its children.
    op.add_column("channels", sa.Column("avatar_url", sa.String(length=255), nullable=True))
    op.add_column("channels", sa.Column("changed_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("posts", sa.Column("changed_at", sa.DateTime(timezone=True), nullable=True))
    # The best earlier times known: a channel's creation, a post's last edit or its creation.
    op.execute("UPDATE channels SET changed_at = created_at")
    op.execute("UPDATE posts SET changed_at = COALESCE(edited_at, created_at)")


def downgrade() -> None:
    op.execute("ALTER TABLE posts DROP COLUMN changed_at")  # SQLite >= 3.35; no table copy
    for column in ("changed_at", "avatar_url"):
        op.execute(f"ALTER TABLE channels DROP COLUMN {column}")
