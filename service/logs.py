"""Structured logs: one JSON object per line (or plain text for a terminal).

Extra fields passed as ``logger.info("sent", extra={"delivery_id": 7})`` become JSON keys, so
logs can be searched by edition and delivery id.
"""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

from service.config import Settings

HANDLER_NAME = "newsletter"
TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def configure_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s %(process)d",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                timestamp=False,
            )
        )
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    handler.set_name(HANDLER_NAME)
    root = logging.getLogger()
    # Replace only our own handler: configuring twice must not log twice, and handlers that
    # others installed (pytest's capture, a platform's agent) stay.
    root.handlers[:] = [h for h in root.handlers if h.get_name() != HANDLER_NAME] + [handler]
    root.setLevel(settings.log_level.upper())
    # httpx logs every request URL at INFO; URLs can carry reader tokens.
    logging.getLogger("httpx").setLevel(logging.WARNING)
