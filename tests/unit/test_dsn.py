"""Reading bounces (flufl.bounce and the status codes) and the signed addresses that name a
delivery. The fixtures: tests/fixtures/dsn/README.md."""

from __future__ import annotations

import pytest

from service.bounces import dsn
from service.bounces.events import EventKind
from service.config import Settings
from service.mail.verp import DeliveryIds
from tests.dsn_fixtures import bounce

VERP = "bounces+7-0a1b2c3d4e5f@courier.example"
READER = "ana@reader-mail.example"
OUR_ID = "<d.3.7.0123456789ab@courier.example>"


def read(name: str) -> dsn.Report:
    return dsn.read(bounce(name, verp=VERP, reader=READER, message_id=OUR_ID))


@pytest.fixture
def settings() -> Settings:
    return Settings(
        secret_key="unit-secret-key-0123456789abcdefgh",
        base_url="https://courier.example",
        bounce_address="bounces@courier.example",
    )


def test_a_hard_bounce_is_a_failed_5xx_with_where_it_was_sent_and_our_id() -> None:
    report = read("hard_5.1.1.eml")
    (failure,) = report.failures
    assert (failure.address, failure.kind, failure.status) == (
        READER,
        EventKind.HARD_BOUNCE,
        "5.1.1",
    )
    assert "User unknown" in failure.detail
    assert report.sent_to == [VERP]
    assert report.original_ids == [OUR_ID]  # from the returned headers
    assert report.event_id(failure) == (
        f"<20260328223107.4Qx1Rt0Zk2z9vD@mx.harbour-mail.example>/{READER}"
    )


def test_a_mailbox_full_given_up_is_soft_though_flufl_calls_it_permanent() -> None:
    report = read("soft_4.2.2.eml")
    (failure,) = report.failures
    assert (failure.kind, failure.status) == (EventKind.SOFT_BOUNCE, "4.2.2")
    assert report.original_ids == [OUR_ID]  # from the returned message/rfc822


def test_a_multi_recipient_report_gives_each_failed_recipient_and_skips_the_delayed() -> None:
    report = read("multi_recipient.eml")
    kinds = {f.address: f.kind for f in report.failures}
    # The alias's first member is reported under its Original-Recipient, the address we mailed.
    assert kinds == {
        READER: EventKind.HARD_BOUNCE,
        "captain@boathouse.example": EventKind.SOFT_BOUNCE,
    }
    assert report.delayed == ["cox@boathouse.example"]
    assert len({report.event_id(f) for f in report.failures}) == 2


def test_a_delay_warning_is_a_bounce_with_no_failure() -> None:
    report = read("delayed_only.eml")
    assert (report.failures, report.delayed, report.is_bounce) == ([], [READER], True)


def test_an_out_of_office_reply_is_no_bounce() -> None:
    report = read("out_of_office.eml")
    assert (report.failures, report.delayed, report.is_bounce) == ([], [], False)


def test_the_verp_address_names_its_delivery_only_with_our_signature(settings: Settings) -> None:
    address = DeliveryIds(settings).bounce_address(42)
    assert address is not None
    assert address.startswith("bounces+42-")
    assert address.endswith("@courier.example")
    assert DeliveryIds(settings).from_address(address) == 42
    assert DeliveryIds(settings).from_address(address.upper()) == 42  # servers may change case
    assert DeliveryIds(settings).from_address("bounces+42@courier.example") is None
    forged = address.replace("bounces+42-", "bounces+43-")
    assert DeliveryIds(settings).from_address(forged) is None
    other = Settings(secret_key="another-key-0123456789abcdefghijkl")
    assert DeliveryIds(other).from_address(address) is None
    # Key rotation: the old key, second in the list, still verifies.
    rotated = Settings(
        secret_key="newer-key-0123456789abcdefghijklmn,unit-secret-key-0123456789abcdefgh"
    )
    assert DeliveryIds(rotated).from_address(address) == 42
    assert DeliveryIds(Settings(secret_key="k" * 32)).bounce_address(42) is None  # off by default


def test_the_message_id_names_its_delivery_only_with_our_signature(settings: Settings) -> None:
    message_id = DeliveryIds(settings).message_id(3, 42)
    assert message_id.startswith("<d.3.42.")
    assert message_id.endswith("@courier.example>")
    assert DeliveryIds(settings).message_id(3, 42) == message_id  # stable across retries
    assert DeliveryIds(settings).from_message_id(message_id) == (3, 42)
    assert DeliveryIds(settings).from_message_id("<d.3.42@courier.example>") is None
    assert DeliveryIds(settings).from_message_id(message_id.replace("<d.3.", "<d.4.")) is None


def test_bounce_address_must_be_a_bare_address() -> None:
    with pytest.raises(ValueError, match="bare address"):
        Settings(bounce_address="Bounces <bounces@courier.example>")
