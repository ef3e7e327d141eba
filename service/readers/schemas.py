"""What readers send and get back, validated so every bad field gets a 422 that names it."""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from typing import Annotated, Any
from zoneinfo import available_timezones

from email_validator import EmailNotValidError, validate_email
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)

from service.models import Cadence


def no_line_breaks(value: str) -> str:
    # Header injection starts here: nothing a reader sends may carry a line break.
    if any(ch in value for ch in "\r\n\x00"):
        raise ValueError("must not contain line breaks")
    return value


def normalize_email(value: str) -> str:
    no_line_breaks(value)
    try:
        # Syntax and normalization only, no DNS in the request path. ASCII only: an address
        # that needs SMTPUTF8 cannot be put in a To header most relays accept, and an
        # internationalized domain is kept in its punycode form, as mail servers see it.
        valid = validate_email(value, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from None
    assert valid.ascii_email is not None  # guaranteed by allow_smtputf8=False
    return valid.ascii_email


# Files in the zone database that are not places: no reader lives in "localtime".
NOT_ZONES = frozenset({"localtime", "posixrules", "Factory"})


@lru_cache(maxsize=1)
def timezones() -> frozenset[str]:
    return frozenset(available_timezones()) - NOT_ZONES


def known_timezone(value: str) -> str:
    no_line_breaks(value)
    if value not in timezones():
        raise ValueError("unknown time zone; use an IANA name such as Europe/Kyiv")
    return value


Email = Annotated[
    str,
    StringConstraints(max_length=320),
    AfterValidator(normalize_email),
    WithJsonSchema({"type": "string", "format": "email", "maxLength": 320}),
]
Slug = Annotated[
    str,
    AfterValidator(no_line_breaks),
    StringConstraints(min_length=1, max_length=100, pattern=r"^[a-z0-9][a-z0-9-]*$"),
]
TimeZone = Annotated[str, StringConstraints(max_length=64), AfterValidator(known_timezone)]
Hour = Annotated[int, Field(ge=0, le=23, description="Local hour, 0-23")]


class SubscribeIn(BaseModel):
    """`cadence`: one for every tag, or one per tag (then `tags` may be left out)."""

    model_config = ConfigDict(extra="forbid")

    email: Email
    tags: list[Slug] = Field(default_factory=list, max_length=100)
    cadence: Cadence | dict[Slug, Cadence] = Cadence.DAILY
    timezone: TimeZone = "UTC"
    send_hour: Hour | None = None

    @model_validator(mode="after")
    def _one_cadence_per_tag(self) -> SubscribeIn:
        if isinstance(self.cadence, dict):
            missing = [t for t in self.tags if t not in self.cadence]
            if missing:
                raise ValueError(f"cadence: no cadence given for {', '.join(missing)}")
            self.tags = list(dict.fromkeys([*self.tags, *self.cadence]))
        if not self.tags:
            raise ValueError("tags: choose at least one tag")
        return self

    def cadences(self) -> dict[str, Cadence]:
        if isinstance(self.cadence, dict):
            return {tag: self.cadence[tag] for tag in self.tags}
        return dict.fromkeys(self.tags, self.cadence)


class Accepted(BaseModel):
    """The same answer whether the address is new, pending, active or unknown to us."""

    status: str = "accepted"
    detail: str = "If this address can receive mail, a message is on its way to it."


class PreferencesIn(BaseModel):
    """A partial update: only the fields sent change. A tag mapped to null is dropped."""

    model_config = ConfigDict(extra="forbid")

    tags: dict[Slug, Cadence | None] | None = None
    timezone: TimeZone | None = None
    send_hour: Hour | None = None
    breaking_alerts: bool | None = None
    paused: bool | None = None


class MeOut(BaseModel):
    email: str
    status: str
    timezone: str
    send_hour: int | None
    breaking_alerts: bool
    paused: bool
    subscriptions: dict[str, Cadence]
    consented_at: datetime | None
    consent_source: str | None


class DeliveryOut(BaseModel):
    edition_id: int
    kind: str
    status: str
    sent_at: datetime | None


class ExportOut(BaseModel):
    profile: MeOut
    created_at: datetime
    deliveries: list[DeliveryOut]
    delivered_posts: list[dict[str, Any]]


class TagOut(BaseModel):
    slug: str
    name: str
    posts: int
