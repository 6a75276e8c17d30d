"""The one exception the bench reports as an error (exit status 1)."""


class BenchError(Exception):
    """Something prevented a measurement: the run stops and exits non-zero."""
