"""roles

Revision ID: 0008
Revises: 0007
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # "admin" (could publish) becomes "editor"; "moderator" is new.
    op.execute("UPDATE channel_members SET role = 'editor' WHERE role = 'admin'")


def downgrade() -> None:
    op.execute("UPDATE channel_members SET role = 'admin' WHERE role IN ('editor', 'moderator')")
