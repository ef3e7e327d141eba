"""Serves the feeds `newsletter demo` wrote, so the service can poll a portal on a fresh machine."""

from __future__ import annotations

import re

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

from service.demo import feed_dir
from service.web.deps import SettingsDep

router = APIRouter(include_in_schema=False)
NAME = re.compile(r"^[a-z0-9-]{1,100}$")


@router.get("/demo/feeds/{slug}.xml")
def demo_feed(slug: str, settings: SettingsDep) -> FileResponse:
    path = feed_dir(settings) / f"{slug}.xml"
    if not NAME.match(slug) or not path.is_file():
        raise HTTPException(404, detail="No such demo feed; run `newsletter demo`.")
    # FileResponse sends ETag and Last-Modified and answers conditional GETs with 304.
    return FileResponse(path, media_type="application/rss+xml")
