"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}

Why: (one paragraph: what this revision adds and why it exists)
"""

from __future__ import annotations

from billingdb.migrate import apply_sql

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = ${repr(branch_labels)}
depends_on = ${repr(depends_on)}


def upgrade() -> None:
    apply_sql()


def downgrade() -> None:
    apply_sql()
