"""Render a message from its folder `templates/email/<name>/{subject.txt,body.txt,body.html}`.

Each folder extends `templates/email/_base/`. Autoescape is on for the HTML part only; the text
part is always rendered too, and the HTML part has its CSS inlined because many mail clients
drop <style> blocks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import css_inline
import jinja2

import service

__all__ = ["Rendered", "render", "template_names", "templates_dir"]

# Built once and reused: the options are the same for every message.
_INLINER = css_inline.CSSInliner(keep_style_tags=False, load_remote_stylesheets=False)


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str


def templates_dir() -> Path:
    """`service/templates` in a wheel install, else `templates/` at the repository root."""
    package = Path(service.__file__).parent
    bundled = package / "templates"
    return bundled if bundled.is_dir() else package.parent / "templates"


@lru_cache(maxsize=4)
def _environment(root: Path) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(root / "email"),
        undefined=jinja2.StrictUndefined,
        autoescape=jinja2.select_autoescape(["html"], default_for_string=False),
        trim_blocks=True,
        lstrip_blocks=True,
    )


def template_names(root: Path | None = None) -> list[str]:
    """Every message folder (those starting with `_` are layouts, not messages)."""
    email = (root or templates_dir()) / "email"
    return sorted(p.name for p in email.iterdir() if p.is_dir() and not p.name.startswith("_"))


def render(name: str, context: Mapping[str, Any], *, root: Path | None = None) -> Rendered:
    env = _environment(root or templates_dir())
    subject = env.get_template(f"{name}/subject.txt").render(context)
    text = env.get_template(f"{name}/body.txt").render(context)
    html = env.get_template(f"{name}/body.html").render(context)
    return Rendered(
        # A subject is one header line: a template's stray newlines must not reach it.
        subject=" ".join(subject.split()),
        text=text.strip() + "\n",
        html=_INLINER.inline(html),
    )
