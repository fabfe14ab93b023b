"""Batches: many of a service's commands in one request, for case-system sync and migrations.

``POST /pilots/{pilot_id}/batches`` takes NDJSON, one command per line, each as its own
request would be sent (method, path, Idempotency-Key, body), and answers NDJSON, one result
per line in the same order: the status and the body the command's own request would have
answered. Each line is authorised, validated and run exactly as that request (the same
:class:`~shared.web.http.Command`, the same idempotency scope), whole or not at all, and
a line never depends on another's failure.
Lines run in order: a family enrolled on one line can be funded on the next.

Lines are applied :data:`CHUNK` at a time in one transaction
(:meth:`~shared.core.commands.CommandRunner.together`): one commit for many lines. A chunk
is first run without savepoints, two round trips less a line, as a clean sync's chunks are;
a line refused or failed once it has begun spoils that run, which is undone whole, and the
chunk, then the rest of the batch, runs with a savepoint for each line, so that a refused
line leaves the others be. A line's answer is given only once its chunk has committed; if
the commit fails, every line of the chunk that ran answers that failure (503 when the
database went away) and none of them happened, so the batch can be sent again as it was.
A chunk whose transaction PostgreSQL rolls back for another's sake (two batches appending
to the same families in opposite orders deadlock, and one loses) runs again whole: that
is no failure of its lines.

Every line carries an idempotency key, so a batch sent again after a dropped connection
applies nothing twice: each line already applied answers what it answered the first time.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from shared.core.commands import (
    CommandRunner,
    IdempotencyRequest,
    LostTogetherError,
    SpoiledTogetherError,
)
from shared.web.auth import require_pilot, require_role
from shared.web.http import (
    Command,
    CommandCall,
    HttpProblemError,
    Route,
    parse_json,
    principal_of,
    problem_of,
    read_body,
    validate_body,
)

__all__ = ["MAX_LINES", "NDJSON", "BatchLine", "BatchLineResult", "batch_route"]

NDJSON = "application/x-ndjson"
MAX_LINES = 1_000  # and the body, like every body, at most 1 MiB
# Lines per transaction: enough to spread a commit's fsync thin, few enough that what the
# lines lock is not held for long (about a tenth of a second at the rates measured).
CHUNK = 100
# Runs of a chunk that keeps losing to other transactions before its lines answer 503:
# each loss is a deadlock PostgreSQL took deadlock_timeout (1 s) to see.
LOST_ATTEMPTS = 5
PATH = "/pilots/{pilot_id}/batches"


class BatchLine(BaseModel):
    """One line of a batch: a command as its own request would send it."""

    model_config = ConfigDict(extra="forbid", strict=True)

    method: Literal["POST", "PUT"]
    path: str = Field(
        min_length=1,
        max_length=512,
        description="The command's path, as its own request's, in the batch's pilot",
        examples=["/pilots/wigan/families"],
    )
    idempotency_key: str = Field(
        min_length=1,
        max_length=128,
        description="Required: a batch sent again applies nothing twice",
    )
    body: dict[str, Any] = Field(default_factory=dict, description="The command's JSON body")


class BatchLineResult(BaseModel):
    """What one line's own request would have answered."""

    line: int = Field(description="1 for the batch's first line")
    status: int = Field(description="The HTTP status its own request would have answered")
    body: dict[str, Any] = Field(description="That answer's body: a result, or a problem")
    replayed: bool = Field(description="The answer of an earlier call with the same key")


class _Target:
    """A command a line may name, with a pattern for its concrete paths."""

    def __init__(self, route: Route, command: Command) -> None:
        self.route, self.command = route, command
        names = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(route.path))
        self.pattern = re.compile(f"^{names}$")


def batch_route(
    routes: Sequence[Route],
    runner_of: Callable[[web.Application], CommandRunner],
    operation_id: str,
) -> Route | None:
    """The batch endpoint of a service whose routes include commands (None without any);
    ``runner_of`` gives the service's command runner."""
    targets = [_Target(r, r.command) for r in routes if r.command is not None]
    if not targets:
        return None
    roles = frozenset().union(*(target.route.roles or () for target in targets))

    async def handler(request: web.Request) -> web.StreamResponse:
        raw = await read_body(request, NDJSON)
        lines = raw.splitlines()
        while lines and not lines[-1].strip():
            lines.pop()
        if not lines:
            raise HttpProblemError(
                422, "empty_batch", "Empty batch", "a batch holds at least one line"
            )
        if len(lines) > MAX_LINES:
            raise HttpProblemError(
                413,
                "batch_too_large",
                "Batch too large",
                f"a batch holds at most {MAX_LINES} lines; this one has {len(lines)}",
            )
        answers: list[BatchLineResult] = []
        read = [_read_line(request, targets, n, line) for n, line in enumerate(lines, start=1)]
        runner, savepoints = runner_of(request.app), False
        for first in range(0, len(read), CHUNK):
            chunk = read[first : first + CHUNK]
            try:
                answers += await _run_chunk(runner, request, chunk, savepoints)
            except SpoiledTogetherError:  # a line was refused: from here on, carefully
                savepoints = True
                answers += await _run_chunk(runner, request, chunk, savepoints)
        # ASCII JSON: an echoed U+0085 or U+2028 left raw is a line break to many readers.
        text = "".join(json.dumps(answer.model_dump(mode="json")) + "\n" for answer in answers)
        return web.Response(text=text, content_type=NDJSON)

    commands = ", ".join(f"{t.route.method} {t.route.path}" for t in targets)
    return Route(
        "POST",
        PATH,
        handler,
        "Many commands in one request (NDJSON in, NDJSON out)",
        roles,
        operation_id=operation_id,
        body=BatchLine,
        response=BatchLineResult,
        content_type=NDJSON,
        body_content_type=NDJSON,
        description=f"One command per line, each with its own idempotency key; at least one "
        f"line, at most {MAX_LINES} and 1 MiB. Each line is authorised, validated and applied "
        "exactly as its own request would be, whole or not at all, in order; the answer has one "
        "result per line, in the same order, with the status and body that request would "
        "have answered (a problem for a line refused: nothing is recorded for it). Sending "
        "a batch again applies nothing twice. The whole batch is refused (nothing applied) "
        f"only when it cannot be read. Commands a line may name: {commands}.",
        tags=("batches",),
    )


@dataclass(frozen=True)
class _Line:
    """A line read, routed and authorised: its command's call."""

    number: int
    target: _Target
    call: CommandCall
    idempotency: IdempotencyRequest | None  # None too where the key is bad: execute says so


async def _run_chunk(
    runner: CommandRunner,
    request: web.Request,
    chunk: Sequence[_Line | BatchLineResult],
    savepoints: bool,
) -> list[BatchLineResult]:
    """The chunk's lines in one transaction; their answers once it has committed."""
    lines = [line for line in chunk if isinstance(line, _Line)]
    keys = [] if savepoints else [line.idempotency for line in lines if line.idempotency]
    for attempt in range(1, LOST_ATTEMPTS + 1):
        try:
            async with runner.together(savepoints=savepoints, keys=keys):
                results = [await _answer(request, line) for line in chunk]
        except SpoiledTogetherError:
            raise
        except LostTogetherError as lost:
            if attempt == LOST_ATTEMPTS:
                return _failed(request, chunk, lost.__cause__ or lost)
            # Jitter keeps two chunks that deadlocked once from meeting again in lockstep.
            await asyncio.sleep(random.uniform(0, 0.05 * attempt))  # noqa: S311
        except Exception as error:  # noqa: BLE001 - the chunk did not commit: say so per line
            return _failed(request, chunk, error)
        else:
            return results  # once committed
    raise AssertionError("unreachable")  # pragma: no cover


def _failed(
    request: web.Request, chunk: Sequence[_Line | BatchLineResult], error: BaseException
) -> list[BatchLineResult]:
    """The answers of a chunk that did not commit: each line that ran answers its failure."""
    failed = problem_of(error, request.path, request.method)
    return [
        line if isinstance(line, BatchLineResult) else _refused(line.number, failed)
        for line in chunk
    ]


def _read_line(
    request: web.Request, targets: Sequence[_Target], number: int, raw: bytes
) -> _Line | BatchLineResult:
    """The line's call, or its answer if it is refused before its command runs."""
    path, method = request.path, request.method
    try:
        line = validate_body(BatchLine, parse_json(raw))
        path, method = line.path, line.method
        target, params = _target(targets, line)
        principal = principal_of(request)
        require_role(principal, target.route.roles or frozenset())
        require_pilot(principal, params["pilot_id"])
        call = replace(
            CommandCall.of(request, line.body),  # the batch's caller, correlation, causation
            path=line.path,
            params=params,
            idempotency_key=line.idempotency_key,
        )
    except Exception as error:  # noqa: BLE001 - each line answers for itself, as its request would
        return _refused(number, problem_of(error, path, method))
    try:
        idempotency = target.command.idempotency(call)
    except HttpProblemError:
        idempotency = None
    return _Line(number, target, call, idempotency)


async def _answer(request: web.Request, line: _Line | BatchLineResult) -> BatchLineResult:
    if isinstance(line, BatchLineResult):
        return line  # refused before its command ran
    try:
        result = await line.target.command.execute(request.app, line.call)
    except (SpoiledTogetherError, LostTogetherError):
        raise  # not this line's answer: the chunk runs again
    except Exception as error:  # noqa: BLE001 - each line answers for itself, as its request would
        return _refused(line.number, problem_of(error, line.call.path, line.target.route.method))
    return BatchLineResult(
        line=line.number, status=result.status, body=dict(result.body), replayed=result.replayed
    )


def _refused(number: int, problem: web.Response) -> BatchLineResult:
    assert problem.text is not None
    return BatchLineResult(
        line=number, status=problem.status, body=json.loads(problem.text), replayed=False
    )


def _target(targets: Sequence[_Target], line: BatchLine) -> tuple[_Target, dict[str, str]]:
    for target in targets:
        match = target.pattern.match(line.path)
        if match and target.route.method == line.method:
            return target, match.groupdict()
    raise HttpProblemError(
        404, "not_found", "Not found", f"no command of this service is {line.method} {line.path}"
    )
