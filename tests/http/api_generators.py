"""Generators for the API tests, named "api_generators:NAME" in the configuration."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from billingdb.service.generation import GenerationRequest

CALLS: list[GenerationRequest] = []


def recording(request: GenerationRequest) -> dict[str, Any]:
    CALLS.append(request)
    return {"story": request.prompt.upper(), "hold_id": request.hold_id}


def boom(request: GenerationRequest) -> Any:
    raise RuntimeError("the model is overloaded")


async def async_echo(request: GenerationRequest) -> dict[str, Any]:
    await asyncio.sleep(0)
    return {"story": request.prompt, "async": True}


def not_json(request: GenerationRequest) -> Any:
    return {"story": object()}


def slow(request: GenerationRequest) -> dict[str, Any]:
    time.sleep(float(os.environ.get("API_TEST_SLOW_SECONDS", "0.5")))
    return {"story": request.prompt}


def crash(request: GenerationRequest) -> Any:
    """The process dies between reserve and commit (a deploy, an OOM kill)."""
    os._exit(3)


def nul_output(request: GenerationRequest) -> dict[str, Any]:
    """Output PostgreSQL cannot store (a NUL character)."""
    return {"story": "half\x00story"}


def too_deep_output(request: GenerationRequest) -> dict[str, Any]:
    """Output nested beyond what a hold's result may be."""
    doc: dict[str, Any] = {"story": request.prompt}
    for _ in range(20):
        doc = {"chapter": doc}
    return doc
