"""Structured logs: one JSON object per line (or plain text for a terminal).

Extra fields passed as ``logger.info("sent", extra={"delivery_id": 7})`` become JSON keys, so
logs can be searched by edition and delivery id. Every line goes through `Redact` first: a
reader's address (in an SMTP server's "550 <ann@example.org> unknown", say) and the signed
token of a reader link are masked, whichever logger wrote them (Celery's failure lines carry
task arguments).
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

from pythonjsonlogger.json import JsonFormatter

from service.config import Settings

HANDLER_NAME = "newsletter"
TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"

ADDRESS = re.compile(r"[\w.+%-]+@[\w-]+(?:\.[\w-]+)+")  # the local parts people use
LINK_TOKEN = re.compile(r"(/(?:confirm|preferences|unsubscribe)/)[\w.-]+")
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message"}


def redact(text: str) -> str:
    """``text`` with email addresses and reader-link tokens masked."""
    return LINK_TOKEN.sub(r"\1[token]", ADDRESS.sub("[address]", text))


def _redacted(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, bytes):  # an SMTP library's log of the bytes it read ("rcpt TO:<…>")
        return redact(value.decode("utf-8", "replace"))
    if isinstance(value, dict):
        return {k: _redacted(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redacted(v) for v in value]
    return value


class Redact(logging.Filter):
    """Masks addresses and tokens in a record's message, arguments and extra fields."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = _redacted(record.msg) if isinstance(record.msg, str) else record.msg
        if record.args:
            args = record.args
            record.args = (
                _redacted(args) if isinstance(args, dict) else tuple(_redacted(list(args)))
            )
        for key, value in list(vars(record).items()):
            if key not in _STANDARD and isinstance(value, str | bytes | dict | list | tuple):
                setattr(record, key, _redacted(value))
        return True


class _Text(logging.Formatter):
    def formatException(self, ei: Any) -> str:
        return redact(super().formatException(ei))


class _Json(JsonFormatter):
    def formatException(self, ei: Any) -> str:
        text: Any = super().formatException(ei)  # a list of lines with exc_info_as_array
        return redact(text if isinstance(text, str) else "\n".join(text))


def configure_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(
            _Json(
                "%(asctime)s %(levelname)s %(name)s %(message)s %(process)d",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                timestamp=False,
            )
        )
    else:
        handler.setFormatter(_Text(TEXT_FORMAT))
    handler.addFilter(Redact())
    handler.set_name(HANDLER_NAME)
    root = logging.getLogger()
    # Replace only our own handler: configuring twice must not log twice, and handlers that
    # others installed (pytest's capture, a platform's agent) stay.
    root.handlers[:] = [h for h in root.handlers if h.get_name() != HANDLER_NAME] + [handler]
    root.setLevel(settings.log_level.upper())
    # httpx logs every request URL at INFO; URLs can carry reader tokens.
    logging.getLogger("httpx").setLevel(logging.WARNING)
