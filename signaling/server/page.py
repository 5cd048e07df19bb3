"""The browser call page: a person joins a call from a browser and interoperates with the bots.

``mount_call_page(app, config)`` adds

* ``GET /`` and ``GET /call/{type}/{id}``: the page (plain HTML/JS/CSS from ``static/``, nothing
  fetched from outside the server). The page speaks the same REST, event WebSocket and media
  signaling as the Python client; the public API key is written into the page;
* ``GET /static/...``: its scripts and styles;
* ``POST /dev/token`` ``{user_id}`` → ``{user_id, token, api_key}``: the page's dev login, only when
  the coordinator generated development keys (``config.dev_keys``); 404 otherwise.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from signaling.errors import NotFound
from signaling.models import CALL_ID_PATTERN, CALL_TYPE_PATTERN, Strict, UserId
from signaling.server.config import ServerConfig
from signaling.tokens import TokenIssuer

STATIC_DIR = Path(__file__).with_name("static")
DEV_TOKEN_TTL_S = 24 * 3600
"""Lifetime of a token minted by the dev login."""

_SECURITY_HEADERS = {
    # everything the page needs comes from this server; media streams are not subject to media-src
    "Content-Security-Policy": ("default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "
                                "media-src 'self' blob: mediastream:; object-src 'none'; base-uri 'none'; "
                                "frame-ancestors 'none'; form-action 'self'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


class DevTokenRequest(Strict):
    user_id: UserId


class DevTokenResponse(Strict):
    user_id: str
    token: str
    api_key: str
    expires_in: int


def render_page(config: ServerConfig) -> str:
    """``static/index.html`` with the public API key and the dev-login flag written in."""
    template = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    return (template.replace("{{API_KEY}}", html.escape(config.api_key, quote=True))
            .replace("{{DEV_LOGIN}}", "1" if config.dev_keys else "0"))


def mount_call_page(app: FastAPI, config: ServerConfig) -> None:
    """Add the call page, its static files and (with dev keys) the dev login to ``app``."""
    tokens = TokenIssuer(config.api_key, config.api_secret)
    page = render_page(config)

    def serve_page() -> HTMLResponse:
        return HTMLResponse(page, headers=_SECURITY_HEADERS)

    @app.get("/", include_in_schema=False)
    async def call_page_index() -> HTMLResponse:
        return serve_page()

    @app.get("/call/{call_type}/{call_id}", include_in_schema=False)
    async def call_page(call_type: Annotated[str, PathParam(pattern=CALL_TYPE_PATTERN)],
                        call_id: Annotated[str, PathParam(pattern=CALL_ID_PATTERN)]) -> HTMLResponse:
        return serve_page()  # the page reads the call from its own URL

    @app.post("/dev/token", response_model=DevTokenResponse,
              description="Development login of the call page: a user token, only with development keys.")
    async def dev_token(body: DevTokenRequest) -> Any:
        if not config.dev_keys:
            raise NotFound("the dev login exists only when the coordinator runs with generated development keys")
        token = tokens.create_user_token(body.user_id, DEV_TOKEN_TTL_S)
        return DevTokenResponse(user_id=body.user_id, token=token, api_key=config.api_key,
                                expires_in=DEV_TOKEN_TTL_S)

    app.mount("/static", StaticFiles(directory=STATIC_DIR, html=False), name="callrt-static")


__all__ = ["STATIC_DIR", "mount_call_page", "render_page"]
