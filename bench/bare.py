"""The bare-service floor: aiohttp and pydantic with one PostgreSQL commit per request, and
nothing of the ledger. It is what P1's spend requests are a ratio to.

    python -m bench.bare --port P --dsn postgresql://… [--loop uvloop|asyncio]

Each POST /items validates a body the size of a spend request with pydantic, inserts one
event-sized row in a transaction of its own (fsync on, as the ledger's server has it), and
answers 202 with JSON after the commit. Its pool gives connections back without a reset
round trip, as the ledger's do. It runs on the ledger's event loop (uvloop) unless
told otherwise: asyncio's own shows what the loop costs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import asyncpg
import uvloop
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

_TABLE = """
CREATE TABLE IF NOT EXISTS bare_items (
    id uuid PRIMARY KEY, family_id text NOT NULL, envelope jsonb NOT NULL
)"""
_INSERT = "INSERT INTO bare_items VALUES ($1, $2, $3)"
_POOL: web.AppKey[asyncpg.Pool[asyncpg.Record]] = web.AppKey("pool")


class Item(BaseModel):
    """A spend request's shape."""

    model_config = ConfigDict(extra="forbid", strict=True)

    family_id: str = Field(min_length=1, max_length=64)
    amount_pence: int = Field(gt=0)
    category: str
    purpose: str = Field(max_length=2000)
    requested_by: str
    family_involved: bool


async def post_item(request: web.Request) -> web.Response:
    item = Item.model_validate_json(await request.read())
    item_id = uuid.uuid4()
    async with request.app[_POOL].acquire() as conn, conn.transaction():
        await conn.execute(_INSERT, item_id, item.family_id, item.model_dump_json())
    return web.json_response({"id": str(item_id), "status": "accepted"}, status=202)


async def _keep(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    """Nothing to undo on a connection given back: no round trip for it."""


def create_app(dsn: str) -> web.Application:
    app = web.Application()
    app.router.add_post("/items", post_item)

    async def pool(app: web.Application) -> AsyncIterator[None]:
        # Connections given back as the ledger's pools give them (shared.core.db.keep_session).
        async with asyncpg.create_pool(dsn, min_size=4, max_size=10, reset=_keep) as opened:
            async with opened.acquire() as conn:
                await conn.execute(_TABLE)
            app[_POOL] = opened
            yield

    app.cleanup_ctx.append(pool)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    args = parser.parse_args()
    loop = uvloop.new_event_loop() if args.loop == "uvloop" else asyncio.new_event_loop()
    web.run_app(create_app(args.dsn), host="127.0.0.1", port=args.port, print=None, loop=loop)


BODY = json.dumps(
    {
        "family_id": "fam-1",
        "amount_pence": 1500,
        "category": "practical",
        "purpose": "school uniform and shoes",
        "requested_by": "sw-1",
        "family_involved": True,
    }
)

if __name__ == "__main__":
    main()
