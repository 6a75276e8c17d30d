"""JSON request bodies, parsed once and refused with a reason (a 400) when PostgreSQL could not take them.

Webhook events and API requests both arrive as JSON bytes. Besides malformed JSON,
three things would otherwise fail later, deeper, and as a 500: a NUL character
(``\\u0000``: PostgreSQL's text and jsonb cannot hold it), ``NaN`` / ``Infinity``
(not JSON for PostgreSQL), and nesting deeper than the parser's recursion limit.
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["BodyRefused", "parse_json"]

#: A JSON escape of NUL: \u0000 preceded by an even number of backslashes (an odd
#: number would make it the literal text "\u0000").
_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


class BodyRefused(ValueError):
    """The body is not JSON that PostgreSQL can store; the message says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON for PostgreSQL")


def parse_json(body: bytes | str) -> Any:
    """The parsed body; :class:`BodyRefused` (``malformed_json``, ``nul_character`` or ``too_deep``)."""
    raw = body.encode("utf-8") if isinstance(body, str) else body
    # The regular expression only where the plain escape occurs at all: a substring search is a
    # fraction of its cost (the webhook's profile: the search was most of the JSON time).
    if b"\x00" in raw or (b"\\u0000" in raw and _NUL_ESCAPE.search(raw)):
        raise BodyRefused("nul_character", "the body contains a NUL character (\\u0000), which PostgreSQL cannot store")
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except RecursionError:
        raise BodyRefused("too_deep", "the body is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BodyRefused("malformed_json", f"the body is not valid JSON: {exc}") from None
