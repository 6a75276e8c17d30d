"""event payload inline: a Stripe event's row keeps its payload up to a page

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01

Why: issue 4's throughput target (process_stripe_event >= 0.5x pgbench
tpcb-like at 4 clients). Since 0006 the payload is stored uncompressed, but
with the default toast_tuple_target (about 2 kB) every event still went out
of line: 3 to 10 kB of JSON cut into 2 kB chunks, each a row of the TOAST
table and an entry of its index. toast_tuple_target = 8160 keeps a row of up
to 8160 bytes in the heap (larger ones still go out of line). Costs space: a
4 to 8 kB row fills a page of its own (the benchmark's 4.4 kB events: 8.4 kB
per event with indexes instead of 6.3 kB). No function changes.
"""

from __future__ import annotations

from billingdb.migrate import apply_sql

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    apply_sql("revisions/0007_event_payload_inline/upgrade.sql")


def downgrade() -> None:
    apply_sql("revisions/0007_event_payload_inline/downgrade.sql")
