"""schemathesis's hooks for the batch endpoint's NDJSON (SCHEMATHESIS_HOOKS names this)."""

from __future__ import annotations

import json
from typing import Any

import schemathesis


@schemathesis.serializer("application/x-ndjson")
def to_ndjson(_context: Any, value: Any) -> bytes:
    """A generated batch line, as a batch of one."""
    return (json.dumps(value) + "\n").encode()


@schemathesis.deserializer("application/x-ndjson")
def from_ndjson(_context: Any, response: Any) -> Any:
    """Each line must match the documented schema: the first is given for validation, and
    every line must at least be a JSON object."""
    lines = [json.loads(line) for line in response.content.split(b"\n") if line]
    if not lines or not all(isinstance(line, dict) for line in lines):
        raise ValueError("a batch's answer is one JSON object per line")
    return lines[0]
