"""Test support, for billingdb's own tests and for a service that uses billingdb in its tests.

- :mod:`billingdb.testing.plugin`: the pytest plugin (one PostgreSQL per session, a template
  migrated once, a clone per test), registered through the ``pytest11`` entry point: installing
  ``billingdb[test]`` gives another project's tests the fixtures ``database_url``, ``conn``,
  ``connect``, ``empty_database_url`` and ``localstripe_url``;
- :mod:`billingdb.testing.stripe`: Stripe webhook events built from Stripe's own fixture objects,
  in both API shapes (also used by ``make demo`` and ``make bench``);
- :mod:`billingdb.testing.child`: ``billingdb serve`` in a child process;
- :mod:`billingdb.testing.localstripe`: localstripe, a Stripe emulator, in a child process (fixture
  ``localstripe_url``).

This package imports neither pytest nor the test tools: only the plugin module does.
"""
