"""What the log handler writes: JSON lines with no reader address and no reader-link token,
whoever logged them and however (message, arguments, extra fields, a traceback)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from service.config import Settings
from service.logs import HANDLER_NAME, configure_logging

ADDRESS = "ann.reader@harbour.example"
TOKEN = "eyJzIjo0Mn0.Z0abcd.Sig-nat_ure"


@pytest.fixture
def written() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure_logging(Settings(log_format="json"))
    (ours,) = [h for h in root.handlers if h.get_name() == HANDLER_NAME]
    assert isinstance(ours, logging.StreamHandler)
    stream = io.StringIO()
    ours.setStream(stream)
    yield stream
    root.handlers[:], root.level = handlers, level


def test_addresses_and_tokens_are_masked_everywhere_in_a_line(written: io.StringIO) -> None:
    log = logging.getLogger("celery.app.trace")
    context = {"name": "service.tasks.process_subscription", "args": f"[{{'email': '{ADDRESS}'}}]"}
    try:
        raise ValueError(f"550 5.1.1 <{ADDRESS}>: no such user")
    except ValueError:
        log.error(
            "Task %(name)s raised: %(args)s",
            context,
            exc_info=True,
            extra={"data": context, "url": f"https://courier.example/unsubscribe/{TOKEN}"},
        )
    logging.getLogger("mail.log").info("%r >> %r", "peer", f"rcpt TO:<{ADDRESS}>".encode())
    text = written.getvalue()
    lines = [json.loads(line) for line in text.splitlines()]
    assert len(lines) == 2
    assert ADDRESS not in text
    assert TOKEN not in text
    first = lines[0]
    assert (
        first["message"]
        == "Task service.tasks.process_subscription raised: [{'email': '[address]'}]"
    )
    assert first["data"]["args"] == "[{'email': '[address]'}]"
    assert first["url"] == "https://courier.example/unsubscribe/[token]"
    assert "550 5.1.1 <[address]>: no such user" in first["exc_info"]
    assert "[address]" in lines[1]["message"]


def test_ids_and_numbers_pass_through(written: io.StringIO) -> None:
    logging.getLogger("service.digests.sending").info(
        "send batch", extra={"edition_id": 7, "delivery_ids": [41, 42], "result": "sent 2"}
    )
    (line,) = [json.loads(x) for x in written.getvalue().splitlines()]
    assert (line["edition_id"], line["delivery_ids"], line["result"]) == (7, [41, 42], "sent 2")
