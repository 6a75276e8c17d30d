"""Test suite configuration: billingdb's pytest plugin provides the database fixtures."""

pytest_plugins = ["billingdb.testing"]
