"""Rendering a console page: the layout's navigation, a CSRF token, the console's policy."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse

from service.web.console.auth import Editor
from service.web.pages import render

# Live figures are fetched from the console itself; previews load in sandboxed frames from it.
POLICY = "; connect-src 'self'; frame-src 'self'"


def page(
    request: Request,
    editor: Editor | None,
    template: str,
    context: Mapping[str, Any],
    *,
    section: str = "",
    status: int = 200,
    notice: str | None = None,
) -> HTMLResponse:
    return render(
        request,
        f"admin/{template}",
        {"editor": editor, "section": section, "notice": notice, **context},
        status=status,
        with_form=True,
        allow=POLICY,
    )


def sandboxed(html: str) -> HTMLResponse:
    """Mail HTML shown in a console frame: scripts, forms and navigation off (CSP sandbox),
    the mail's own inline styles and remote images allowed, as a mail client shows them."""
    return HTMLResponse(
        html,
        headers={
            "Content-Security-Policy": (
                "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src https: data:; "
                "frame-ancestors 'self'"
            ),
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-store",
            "Referrer-Policy": "no-referrer",
        },
    )
