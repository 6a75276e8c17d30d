"""``python -m billingdb`` is the ``billingdb`` command."""

from billingdb.cli import main

main()
