"""The browser view of the local workspace: a page at ``/`` that acts through the control API.

Plain HTML, one script and one style sheet from ``static/``: no build step, nothing fetched from
outside the machine. The script renders message text as text nodes, never as HTML, and the page
is served with a Content-Security-Policy that allows only its own script, styles and requests.
"""
from __future__ import annotations

from pathlib import Path

from aiohttp import web

STATIC = Path(__file__).parent / "static"
CSP = "; ".join(("default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'",
                 "img-src 'self'", "base-uri 'none'", "form-action 'none'", "frame-ancestors 'none'"))


def add_routes(app: web.Application) -> None:
    """``/``: the page; ``/static/``: its script and styles."""
    app.router.add_get("/", page)
    app.router.add_static("/static/", STATIC)


async def page(request: web.Request) -> web.FileResponse:
    """The page itself; everything it shows comes from the control API."""
    return web.FileResponse(STATIC / "index.html", headers={
        "Content-Security-Policy": CSP, "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})
