"""Serving a service's application: aiohttp's runner, with the limits a public service needs.

- A connection that has not sent a whole request within ``header_timeout`` of opening (or
  of its previous answer) is closed: aiohttp's keep-alive timer, which runs from the moment
  a connection opens and is not put back by bytes that trickle in, bounds the time to read
  a request's headers. The body has its own bound (``LEDGER_HTTP_BODY_TIMEOUT_SECONDS``).
- A request aiohttp cannot parse is answered with a problem document that quotes none of
  it. aiohttp's own answer quotes the first 100 bytes of the offending line, and an
  over-long ``Authorization`` header is a token.
"""

from __future__ import annotations

import asyncio
import signal
from http import HTTPStatus

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from shared.core import eventloop
from shared.web.http import SAFE_HEADERS, problem_response

__all__ = ["serve"]


def serve(
    app: web.Application, *, host: str, port: int, shutdown_timeout: float, header_timeout: float
) -> None:
    """Serve until SIGTERM or SIGINT, then drain: in-flight requests get ``shutdown_timeout``."""
    eventloop.run(_serve(app, host, port, shutdown_timeout, header_timeout))


async def _serve(
    app: web.Application, host: str, port: int, shutdown_timeout: float, header_timeout: float
) -> None:
    runner = _Runner(
        app, access_log=None, keepalive_timeout=header_timeout, shutdown_timeout=shutdown_timeout
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for number in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(number, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()


class _Connection(RequestHandler):
    """aiohttp's connection, answering what it cannot parse without quoting it."""

    __slots__ = ()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> StreamResponse:
        # aiohttp's own handling logs the error (the ledger's log filter withholds the
        # request's bytes) and refuses when an answer has already begun.
        super().handle_error(request, status, exc, message)
        phrase = HTTPStatus(status).phrase
        if status >= 500:
            response = problem_response(
                status, "internal_error", phrase, "The request could not be handled."
            )
        else:
            detail = (
                "The request is not HTTP the service can read: a request line or a header "
                "may be longer than 8,190 bytes, or malformed."
            )
            response = problem_response(status, "malformed_request", phrase, detail)
        response.headers.update(SAFE_HEADERS)
        response.force_close()
        return response


class _Server(web.Server):
    def __call__(self) -> RequestHandler:
        connection = super().__call__()
        # Same slots, one method more: the class can be swapped on the instance aiohttp made.
        connection.__class__ = _Connection
        return connection


class _Runner(web.AppRunner):
    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _Server  # the app's own server, making _Connections
        return server
