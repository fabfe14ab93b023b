"""Opening the pages (dashboard, statement) in a browser on the local stack, without
hand-made headers: ``ledger open`` writes a page that posts a token the local stack's
secret signed to ``POST /sign-in``, which keeps it in an HttpOnly, SameSite=Strict cookie
for the pilot's pages and goes on to the page. Only pages take the cookie (no API call
does), and only where tokens are the local stack's kind: with the council's provider,
people sign in through the council's own front end, and there is no sign-in here (404).
"""

from __future__ import annotations

import html
import re
from urllib.parse import parse_qsl

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from shared.core.errors import NotFoundError
from shared.web.auth import decode_token, require_pilot
from shared.web.http import PAGE_COOKIE, TOKEN_RULES, read_body
from shared.web.signing_keys import SharedSecret

__all__ = ["FORM", "SIGN_IN_PATH", "SignInForm", "post_sign_in", "sign_in_page"]

SIGN_IN_PATH = "/sign-in"
FORM = "application/x-www-form-urlencoded"
# The pages a sign-in may go on to: the pilot's dashboard or a family's statement.
NEXT_PAGE = (
    r"^/pilots/([a-z0-9][a-z0-9._-]{0,63})/"
    r"(dashboard|families/[a-z0-9][a-z0-9._-]{0,63}/statement)(\?[A-Za-z0-9_=&.-]{0,200})?$"
)
_PAGE_HEADERS = {
    # A page that only goes on: nothing loads or runs; not framed, not cached.
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Cache-Control": "no-store",
}


class SignInForm(BaseModel):
    """What ``ledger open``'s page posts."""

    model_config = ConfigDict(extra="forbid")

    token: str = Field(min_length=1, max_length=8192, description="A bearer token.")
    next: str = Field(pattern=NEXT_PAGE, description="The page to go on to.")


async def post_sign_in(request: web.Request) -> web.StreamResponse:
    """Keep the token for the pilot's pages, and go on to the page."""
    rules = request.app[TOKEN_RULES]
    if not isinstance(rules.keys, SharedSecret):
        raise NotFoundError("no sign-in here: people sign in through the council's provider")
    raw = (await read_body(request, FORM)).decode(errors="replace")
    form = SignInForm.model_validate(dict(parse_qsl(raw, max_num_fields=10)))
    principal = await decode_token(f"Bearer {form.token}", rules)
    matched = re.match(NEXT_PAGE, form.next)
    assert matched is not None  # the form's pattern
    pilot = matched.group(1)
    require_pilot(principal, pilot)
    target = html.escape(form.next, quote=True)
    page = (
        '<!doctype html><html lang="en"><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="0;url={target}"><title>Signed in</title>'
        f'<p>Signed in as {html.escape(principal.sub)}: <a href="{target}">open the page</a>.'
    )
    response = web.Response(text=page, content_type="text/html", headers=_PAGE_HEADERS)
    response.set_cookie(
        PAGE_COOKIE,
        form.token,
        path=f"/pilots/{pilot}/",
        httponly=True,
        samesite="Strict",
        secure=request.secure,
    )
    return response


def sign_in_page(base_url: str, token: str, next_page: str) -> str:
    """The page ``ledger open`` writes: a form that posts ``token`` to the sign-in, sent at
    once by its one line of script (or by its button, where scripts are off)."""
    action = html.escape(f"{base_url.rstrip('/')}{SIGN_IN_PATH}", quote=True)
    return (
        '<!doctype html><html lang="en"><meta charset="utf-8"><title>Opening the ledger</title>'
        f'<form id="open" method="post" action="{action}">'
        f'<input type="hidden" name="token" value="{html.escape(token, quote=True)}">'
        f'<input type="hidden" name="next" value="{html.escape(next_page, quote=True)}">'
        '<button type="submit">Open</button></form>'
        "<script>document.getElementById('open').submit()</script>"
    )
