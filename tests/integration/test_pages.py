"""The readers' HTML pages, through the app as a browser without JavaScript would drive them.

Requests share the test's database connection, so their commits only release savepoints and
everything is rolled back after each test (see the `db` fixture).
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx2 as httpx  # what starlette's TestClient runs on
import itsdangerous.timed
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from service.config import Settings
from service.models import Cadence, Post, Subscriber, SubscriberStatus, Subscription, Tag
from service.readers import accounts
from service.readers.tokens import ALL_LISTS, Purpose, TokenData, Tokens
from service.web import csrf
from tests.fakes import app_in_transaction

TRACEBACK_MARKERS = ("Traceback (most recent call last)", 'File "/', "RuntimeError")


def _no_traceback(response: httpx.Response) -> None:
    response.read()
    for marker in TRACEBACK_MARKERS:
        assert marker not in response.text, f"{marker!r} in {response.request.url.path}"


def page_client(app: FastAPI) -> TestClient:
    """A TestClient that fails the test if any answer shows a Python traceback."""
    client = TestClient(app, raise_server_exceptions=False)
    client.event_hooks["response"].append(_no_traceback)
    return client


@dataclass
class RecordingNotifier:
    """The readers' Notifier, noting which mails would go out instead of enqueueing them."""

    mails: list[tuple[str, int]] = field(default_factory=list)

    def confirmation(self, session: Session, subscriber_id: int) -> None:
        self.mails.append(("confirm", subscriber_id))

    def manage_link(self, session: Session, subscriber_id: int) -> None:
        self.mails.append(("manage", subscriber_id))


@dataclass
class Site:
    app: FastAPI
    client: TestClient
    notifier: RecordingNotifier
    tokens: Tokens
    world: Tag
    economy: Tag

    def fresh_client(self) -> TestClient:
        """Another browser (or a mail client): no cookies."""
        return page_client(self.app)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    (tmp_path / "broker" / "queue").mkdir(parents=True)
    return Settings(var_dir=tmp_path, log_format="text")


def add_tag(db: Session, name: str, posts: int) -> Tag:
    suffix = uuid.uuid4().hex[:6]  # unique even if another test committed tags for good
    tag = Tag(slug=f"{name.lower()}-{suffix}", name=name)
    db.add(tag)
    for n in range(posts):
        url = f"https://news.example.org/{tag.slug}/{n}"
        db.add(Post(url=url, guid=url, title=f"{name} {n}", content_hash=f"{n:064d}", tags=[tag]))
    db.flush()
    return tag


@pytest.fixture
def site(settings: Settings, engine: Engine, db: Session) -> Iterator[Site]:
    app = app_in_transaction(settings, db)
    notifier = RecordingNotifier()
    app.state.notifier = notifier
    world, economy = add_tag(db, "World", posts=2), add_tag(db, "Economy", posts=1)
    db.commit()
    with page_client(app) as client:
        yield Site(app, client, notifier, app.state.tokens, world, economy)


def add_reader(
    db: Session,
    cadences: dict[Tag, Cadence],
    status: SubscriberStatus = SubscriberStatus.ACTIVE,
    email: str = "reader@example.com",
) -> Subscriber:
    reader = Subscriber(email=email, status=status, timezone="UTC", consent_source="test")
    reader.confirm_nonce = "nonce-1" if status == SubscriberStatus.PENDING else None
    reader.subscriptions = [Subscription(tag_id=t.id, cadence=c) for t, c in cadences.items()]
    db.add(reader)
    db.commit()
    return reader


def reload(db: Session, reader: Subscriber) -> Subscriber:
    db.expire_all()  # the app changed the rows through its own session
    fresh = db.get(Subscriber, reader.id)
    assert fresh is not None
    return fresh


def cadences_of(subscriber: Subscriber) -> dict[str, Cadence]:
    return {s.tag.slug: s.cadence for s in subscriber.subscriptions}


def csrf_token(page: httpx.Response) -> str:
    found = re.search(rf'name="{csrf.FIELD}" value="([^"]+)"', page.text)
    assert found, "no CSRF field on the page"
    return found.group(1)


def path_of(url: str) -> str:
    return httpx.URL(url).path


class FormAudit(HTMLParser):
    """Collects what an accessibility check needs: field ids, label targets, legends."""

    def __init__(self) -> None:
        super().__init__()
        self.fields: list[str] = []
        self.labelled: set[str] = set()
        self.fieldsets = self.legends = 0
        self.html_lang: str | None = None
        self.viewport = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag in ("input", "select", "textarea") and a.get("type") not in ("hidden", "submit"):
            self.fields.append(a.get("id") or "<no id>")
        elif tag == "label" and a.get("for"):
            self.labelled.add(a["for"] or "")
        elif tag == "html":
            self.html_lang = a.get("lang")
        elif tag == "meta" and a.get("name") == "viewport":
            self.viewport = True
        self.fieldsets += tag == "fieldset"
        self.legends += tag == "legend"


def audit(html: str) -> FormAudit:
    parser = FormAudit()
    parser.feed(html)
    assert parser.html_lang == "en"
    assert parser.viewport
    assert parser.fields, "no form fields"
    unlabelled = [f for f in parser.fields if f not in parser.labelled]
    assert not unlabelled, f"fields without a <label for>: {unlabelled}"
    assert parser.fieldsets == parser.legends
    return parser


# -- subscribe ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/subscribe"])
def test_subscribe_form_lists_tags_with_counts_zones_and_hours(site: Site, path: str) -> None:
    page = site.client.get(path)
    assert page.status_code == 200
    assert 'World <span class="count">(2 posts)' in page.text
    assert 'Economy <span class="count">(1 post)' in page.text
    slug = site.world.slug
    assert f'<input type="checkbox" id="tag-{slug}" name="tags" value="{slug}">' in page.text
    assert f'<select id="cadence-{slug}" name="cadence-{slug}">' in page.text
    assert '<option value="UTC" selected>UTC</option>' in page.text  # without JavaScript
    assert '<option value="Europe/Kyiv">' in page.text
    assert "Intl.DateTimeFormat().resolvedOptions().timeZone" in page.text
    assert '<option value="23">23:00</option>' in page.text
    assert "The schedule's default" in page.text
    assert audit(page.text).fieldsets == 2
    # The CSRF cookie holds what the form carries, out of reach of scripts and other sites.
    cookie = page.headers["set-cookie"]
    assert f"{csrf.COOKIE}={csrf_token(page)};" in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    assert "Secure" not in cookie  # BASE_URL is http here
    assert page.headers["referrer-policy"] == "no-referrer"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]


def test_csrf_cookie_is_secure_when_the_site_is_https(
    settings: Settings, engine: Engine, db: Session
) -> None:
    app = app_in_transaction(
        settings.model_copy(update={"base_url": "https://news.example.org"}), db
    )
    page = page_client(app).get("/subscribe")
    assert page.status_code == 200
    assert "Secure" in page.headers["set-cookie"]


def subscribe_form(site: Site, page: httpx.Response, **fields: Any) -> dict[str, Any]:
    form: dict[str, Any] = {
        csrf.FIELD: csrf_token(page),
        "email": "new.reader@example.com",
        "tags": [site.world.slug, site.economy.slug],
        f"cadence-{site.world.slug}": "weekly",
        f"cadence-{site.economy.slug}": "instant",
        "timezone": "Europe/Kyiv",
        "send_hour": "7",
    }
    return form | fields


def test_subscribing_through_the_form_starts_double_opt_in(site: Site, db: Session) -> None:
    page = site.client.get("/subscribe")
    answer = site.client.post("/subscribe", data=subscribe_form(site, page))
    assert answer.status_code == 200
    assert "<h1>Check your inbox</h1>" in answer.text
    assert "set-cookie" not in answer.headers
    reader = db.scalars(
        select(Subscriber).where(Subscriber.email == "new.reader@example.com")
    ).one()
    assert reader.status == SubscriberStatus.PENDING
    assert cadences_of(reader) == {site.world.slug: Cadence.WEEKLY, site.economy.slug: "instant"}
    assert (reader.timezone, reader.send_hour) == ("Europe/Kyiv", 7)
    assert reader.consent_source == "web form"
    assert site.notifier.mails == [("confirm", reader.id)]


def test_the_check_inbox_page_is_the_same_for_a_new_and_an_active_address(
    site: Site, db: Session
) -> None:
    active = add_reader(db, {site.world: Cadence.DAILY}, email="active@example.com")
    page = site.client.get("/subscribe")
    new = site.client.post("/subscribe", data=subscribe_form(site, page))
    known = site.client.post("/subscribe", data=subscribe_form(site, page, email=active.email))

    def without_nonces(response: httpx.Response) -> str:
        return re.sub(r"nonce-?[=\"']*[\w-]+", "nonce", response.text)

    assert (new.status_code, without_nonces(new)) == (known.status_code, without_nonces(known))
    assert site.notifier.mails[1] == ("manage", active.id)  # the active reader gets their link


@pytest.mark.parametrize(
    ("changes", "field_id", "message"),
    [
        ({"email": "not-an-address"}, "email", "must have an @-sign"),
        ({"email": "reader@example.com\r\nBcc: victim@example.com"}, "email", "line breaks"),
        ({"tags": ["no-such-tag"], "cadence-no-such-tag": "daily"}, "tags", "unknown tags"),
        ({"tags": []}, "tags", "choose at least one tag"),
        ({"send_hour": "24"}, "send_hour", "less than or equal to 23"),
        ({"send_hour": "noon"}, "send_hour", "valid integer"),
        ({"timezone": "Mars/Olympus_Mons"}, "timezone", "unknown time zone"),
        ({"timezone": "UTC\r\nX: y"}, "timezone", "line breaks"),
    ],
)
def test_bad_input_shows_the_form_again_naming_the_field(
    site: Site, db: Session, changes: dict[str, Any], field_id: str, message: str
) -> None:
    page = site.client.get("/subscribe")
    form = subscribe_form(site, page, email="kept@example.com") | changes
    answer = site.client.post("/subscribe", data=form)
    assert answer.status_code == 422
    assert 'role="alert"' in answer.text
    assert f'<a href="#{field_id}">' in answer.text  # the summary links to the field
    error = re.search(rf'<p class="field-error" id="{field_id}-error">([^<]*)</p>', answer.text)
    assert error, answer.text
    assert message in error.group(1)
    assert re.search(rf'aria-describedby="[^"]*{field_id}-error"', answer.text)
    assert f'value="{form["email"]}"' in answer.text  # what the reader typed is kept
    if "tags" not in changes:  # their ticks and choices too
        assert f'value="{site.world.slug}" checked' in answer.text
        assert '<option value="weekly" selected>' in answer.text
    assert not db.scalars(select(Subscriber).where(Subscriber.email.like("kept@%"))).all()
    assert site.notifier.mails == []


def test_a_blocked_domain_is_refused_on_the_email_field(
    settings: Settings, engine: Engine, db: Session
) -> None:
    app = app_in_transaction(
        settings.model_copy(update={"blocked_email_domains": "spam.example"}), db
    )
    tag = add_tag(db, "Sports", posts=0)
    db.commit()
    client = page_client(app)
    page = client.get("/subscribe")
    form = {csrf.FIELD: csrf_token(page), "email": "x@spam.example", "tags": [tag.slug]}
    answer = client.post("/subscribe", data=form | {f"cadence-{tag.slug}": "daily"})
    assert answer.status_code == 422
    assert 'id="email-error">addresses at this domain are not accepted' in answer.text


@pytest.mark.parametrize("token", ["missing", "wrong", "no cookie"])
def test_a_form_without_the_matching_csrf_token_is_refused(
    site: Site, db: Session, token: str
) -> None:
    page = site.client.get("/subscribe")
    form = subscribe_form(site, page)
    client = site.client
    if token == "missing":
        del form[csrf.FIELD]
    elif token == "wrong":
        form[csrf.FIELD] = "x" + form[csrf.FIELD]
    else:
        client = site.fresh_client()
    answer = client.post("/subscribe", data=form)
    assert answer.status_code == 403
    assert "Your session expired, please reload the page and try again" in answer.text
    assert not db.scalars(select(Subscriber).where(Subscriber.email == form["email"])).all()


def test_every_page_form_needs_the_csrf_token(site: Site, db: Session) -> None:
    pending = add_reader(db, {site.world: Cadence.DAILY}, SubscriberStatus.PENDING)
    active = add_reader(db, {site.world: Cadence.DAILY}, email="active@example.com")
    confirm = site.tokens.make(Purpose.CONFIRM, TokenData(pending.id, nonce="nonce-1"))
    manage = site.tokens.make(Purpose.MANAGE, TokenData(active.id))
    unsubscribe = site.tokens.make(Purpose.UNSUBSCRIBE, TokenData(active.id))
    posts = [
        (f"/confirm/{confirm}", {}),
        (f"/preferences/{manage}", {"paused": "on"}),
        (f"/preferences/{manage}/erase", {"confirm": "yes"}),
        (f"/unsubscribe/{unsubscribe}", {"scope": "all"}),
    ]
    for path, form in posts:
        assert site.client.post(path, data=form).status_code == 403, path
    assert reload(db, pending).status == SubscriberStatus.PENDING
    active = reload(db, active)
    assert (active.status, active.paused) == (SubscriberStatus.ACTIVE, False)


def test_the_subscribe_form_has_the_api_rate_limits(
    settings: Settings, engine: Engine, db: Session
) -> None:
    app = app_in_transaction(
        settings.model_copy(update={"rate_limit_subscribe_per_ip": "1/minute"}), db
    )
    app.state.notifier = RecordingNotifier()
    tag = add_tag(db, "Sports", posts=0)
    db.commit()
    client = page_client(app)
    page = client.get("/subscribe")
    form = {csrf.FIELD: csrf_token(page), "tags": [tag.slug], f"cadence-{tag.slug}": "daily"}
    assert client.post("/subscribe", data=form | {"email": "a@example.com"}).status_code == 200
    limited = client.post("/subscribe", data=form | {"email": "b@example.com"})
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1
    assert "<h1>Too many requests</h1>" in limited.text


# -- confirm --------------------------------------------------------------------------------


def test_confirming_takes_a_post_and_works_once(site: Site, db: Session) -> None:
    reader = add_reader(db, {site.world: Cadence.DAILY}, SubscriberStatus.PENDING)
    path = f"/confirm/{site.tokens.make(Purpose.CONFIRM, TokenData(reader.id, nonce='nonce-1'))}"

    page = site.client.get(path)
    assert page.status_code == 200
    assert f'<form method="post" action="{path}">' in page.text
    assert '<button type="submit">Confirm</button>' in page.text
    assert "<strong>World</strong> (daily)" in page.text  # what is being confirmed
    assert reload(db, reader).status == SubscriberStatus.PENDING  # a link scanner's GET

    done = site.client.post(path, data={csrf.FIELD: csrf_token(page)})
    assert done.status_code == 200
    assert "<h1>You're subscribed</h1>" in done.text
    reader = reload(db, reader)
    assert reader.status == SubscriberStatus.ACTIVE
    assert reader.consented_at is not None
    assert reader.consent_source == "test; confirmed via web"
    preferences = re.search(r'href="(http[^"]+/preferences/[^"]+)"', done.text)
    assert preferences
    assert site.client.get(path_of(preferences.group(1))).status_code == 200

    again = site.client.post(path, data={csrf.FIELD: csrf_token(page)})
    assert again.status_code == 200
    assert "<h1>Already confirmed</h1>" in again.text
    # A used link (scanner logs, a forwarded mail) must not hand out a preferences link.
    assert "/preferences/" not in again.text


def expired_token(tokens: Tokens, purpose: Purpose, data: TokenData) -> str:
    """A token signed eight days ago (confirm links last seven)."""
    eight_days_ago = time.time() - 8 * 86400
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(itsdangerous.timed, "time", SimpleNamespace(time=lambda: eight_days_ago))
        return tokens.make(purpose, data)


def test_an_expired_confirmation_link_says_so_and_offers_to_subscribe_again(
    site: Site, db: Session
) -> None:
    reader = add_reader(db, {site.world: Cadence.DAILY}, SubscriberStatus.PENDING)
    token = expired_token(site.tokens, Purpose.CONFIRM, TokenData(reader.id, nonce="nonce-1"))
    page = site.client.get(f"/confirm/{token}")
    assert page.status_code == 410
    assert "This link has expired" in page.text
    assert '<a href="/subscribe">' in page.text
    fresh = site.client.get("/subscribe")
    answer = site.client.post(f"/confirm/{token}", data={csrf.FIELD: csrf_token(fresh)})
    assert answer.status_code == 410
    assert reload(db, reader).status == SubscriberStatus.PENDING


@pytest.mark.parametrize("path", ["/confirm/", "/preferences/", "/unsubscribe/"])
@pytest.mark.parametrize("token", ["garbage", "eyJzIjoxfQ.forged.signature"])
def test_a_damaged_link_is_a_400_page(site: Site, path: str, token: str) -> None:
    page = site.client.get(path + token)
    assert page.status_code == 400
    assert "<h1>This link is not valid</h1>" in page.text
    assert page.headers["content-type"].startswith("text/html")


def test_a_token_for_another_purpose_is_not_valid(site: Site, db: Session) -> None:
    reader = add_reader(db, {site.world: Cadence.DAILY})
    unsubscribe = site.tokens.make(Purpose.UNSUBSCRIBE, TokenData(reader.id))
    assert site.client.get(f"/preferences/{unsubscribe}").status_code == 400


# -- preferences ----------------------------------------------------------------------------


def test_preferences_change_cadence_hour_zone_alerts_and_pause(site: Site, db: Session) -> None:
    reader = add_reader(db, {site.world: Cadence.WEEKLY})
    path = f"/preferences/{site.tokens.make(Purpose.MANAGE, TokenData(reader.id))}"
    page = site.client.get(path)
    assert page.status_code == 200
    assert audit(page.text).fieldsets == 4
    assert "reader@example.com" in page.text
    world, economy = site.world.slug, site.economy.slug
    assert re.search(rf'id="cadence-{world}".*?<option value="weekly" selected>', page.text, re.S)
    assert f'<a class="button secondary" href="{path}/export" download>' in page.text
    assert "/unsubscribe/" in page.text

    form = {
        csrf.FIELD: csrf_token(page),
        f"cadence-{world}": "",  # not subscribed any more
        f"cadence-{economy}": "daily",
        "timezone": "America/New_York",
        "send_hour": "6",
        "paused": "on",  # breaking_alerts unticked
    }
    saved = site.client.post(path, data=form)
    assert saved.status_code == 200
    assert 'role="status">Saved.' in saved.text
    assert '<option value="America/New_York" selected>' in saved.text
    reader = reload(db, reader)
    assert cadences_of(reader) == {economy: Cadence.DAILY}
    assert (reader.timezone, reader.send_hour) == ("America/New_York", 6)
    assert (reader.paused, reader.breaking_alerts) == (True, False)

    del form["paused"]
    site.client.post(path, data=form | {"send_hour": "", "breaking_alerts": "on"})
    reader = reload(db, reader)
    assert (reader.send_hour, reader.paused, reader.breaking_alerts) == (None, False, True)


def test_bad_preferences_are_refused_and_change_nothing(site: Site, db: Session) -> None:
    reader = add_reader(db, {site.world: Cadence.WEEKLY})
    path = f"/preferences/{site.tokens.make(Purpose.MANAGE, TokenData(reader.id))}"
    token = csrf_token(site.client.get(path))
    for form, field_id in [
        ({"send_hour": "24", f"cadence-{site.world.slug}": "daily"}, "send_hour"),
        ({f"cadence-{site.world.slug}": "hourly"}, f"cadence-{site.world.slug}"),
        ({"cadence-no-such-tag": "daily"}, "tags"),
        ({"timezone": "Nowhere/City"}, "timezone"),
    ]:
        answer = site.client.post(path, data={csrf.FIELD: token, **form})
        assert answer.status_code == 422, form
        assert f'id="{field_id}-error"' in answer.text, form
    reader = reload(db, reader)
    assert cadences_of(reader) == {site.world.slug: Cadence.WEEKLY}
    assert (reader.send_hour, reader.timezone) == (None, "UTC")


def test_export_downloads_what_the_api_exports(site: Site, db: Session) -> None:
    reader = add_reader(db, {site.world: Cadence.WEEKLY})
    token = site.tokens.make(Purpose.MANAGE, TokenData(reader.id))
    download = site.client.get(f"/preferences/{token}/export")
    assert download.status_code == 200
    assert download.headers["content-type"] == "application/json"
    assert download.headers["content-disposition"].startswith("attachment;")
    expected = accounts.export(db, reload(db, reader)).model_dump(mode="json")
    assert download.json() == expected
    assert download.json()["profile"]["subscriptions"] == {site.world.slug: "weekly"}


def test_erasing_needs_the_confirmation_box(site: Site, db: Session) -> None:
    reader = add_reader(db, {site.world: Cadence.WEEKLY})
    path = f"/preferences/{site.tokens.make(Purpose.MANAGE, TokenData(reader.id))}"
    token = csrf_token(site.client.get(path))

    unticked = site.client.post(f"{path}/erase", data={csrf.FIELD: token})
    assert unticked.status_code == 422
    assert 'id="erase-confirm-error"' in unticked.text
    assert reload(db, reader).status == SubscriberStatus.ACTIVE

    erased = site.client.post(f"{path}/erase", data={csrf.FIELD: token, "confirm": "yes"})
    assert erased.status_code == 200
    assert "<h1>Your data is erased</h1>" in erased.text
    reader = reload(db, reader)
    assert reader.status == SubscriberStatus.ERASED
    assert reader.email != "reader@example.com"
    assert site.client.get(path).status_code == 400  # the old links are dead


# -- unsubscribe ----------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["urlencoded", "multipart"])
def test_one_click_unsubscribes_at_once_without_cookie_or_redirect(
    site: Site, db: Session, encoding: str
) -> None:
    reader = add_reader(db, {site.world: Cadence.DAILY, site.economy: Cadence.WEEKLY})
    token = site.tokens.make(Purpose.UNSUBSCRIBE, TokenData(reader.id, scope=site.world.slug))
    mail_client = site.fresh_client()  # as a mailbox provider posts: no cookie, no CSRF field
    body: dict[str, Any] = (
        {"data": {"List-Unsubscribe": "One-Click"}}
        if encoding == "urlencoded"
        else {"files": {"List-Unsubscribe": (None, "One-Click")}}
    )
    answer = mail_client.post(f"/unsubscribe/{token}", **body)
    assert answer.status_code == 200
    assert "location" not in answer.headers
    assert "set-cookie" not in answer.headers
    if encoding == "multipart":
        assert answer.request.headers["content-type"].startswith("multipart/form-data")
    reader = reload(db, reader)
    assert cadences_of(reader) == {site.economy.slug: Cadence.WEEKLY}  # only the token's list
    assert reader.status == SubscriberStatus.ACTIVE

    everything = site.tokens.make(Purpose.UNSUBSCRIBE, TokenData(reader.id))
    assert mail_client.post(f"/unsubscribe/{everything}", **body).status_code == 200
    assert reload(db, reader).status == SubscriberStatus.UNSUBSCRIBED


def test_one_click_with_a_bad_token_is_a_400(site: Site) -> None:
    answer = site.fresh_client().post("/unsubscribe/forged", data={"List-Unsubscribe": "One-Click"})
    assert answer.status_code == 400
    assert "set-cookie" not in answer.headers


def test_the_unsubscribe_page_only_unsubscribes_on_its_buttons(site: Site, db: Session) -> None:
    reader = add_reader(db, {site.world: Cadence.DAILY, site.economy: Cadence.WEEKLY})
    token = site.tokens.make(Purpose.UNSUBSCRIBE, TokenData(reader.id, scope=site.world.slug))
    page = site.client.get(f"/unsubscribe/{token}")
    assert page.status_code == 200
    assert '<button type="submit" name="scope" value="token">Unsubscribe from World' in page.text
    assert "Unsubscribe from everything</button>" in page.text
    assert len(cadences_of(reload(db, reader))) == 2  # the GET changed nothing

    one = site.client.post(
        f"/unsubscribe/{token}", data={csrf.FIELD: csrf_token(page), "scope": "token"}
    )
    assert one.status_code == 200
    assert "no more news about <strong>World</strong>" in one.text
    assert cadences_of(reload(db, reader)) == {site.economy.slug: Cadence.WEEKLY}

    bad = site.client.post(
        f"/unsubscribe/{token}", data={csrf.FIELD: csrf_token(page), "scope": "x"}
    )
    assert bad.status_code == 422

    every = site.client.post(
        f"/unsubscribe/{token}", data={csrf.FIELD: csrf_token(page), "scope": "all"}
    )
    assert every.status_code == 200
    assert "<h1>You are unsubscribed</h1>" in every.text
    # A never-expiring, forwardable unsubscribe link must not open preferences or erasure.
    assert "/preferences/" not in every.text
    assert '<a href="/subscribe">' in every.text
    reader = reload(db, reader)
    assert (reader.status, reader.subscriptions) == (SubscriberStatus.UNSUBSCRIBED, [])


def test_an_everything_token_offers_only_everything(site: Site, db: Session) -> None:
    reader = add_reader(db, {site.world: Cadence.DAILY})
    token = site.tokens.make(Purpose.UNSUBSCRIBE, TokenData(reader.id, scope=ALL_LISTS))
    page = site.client.get(f"/unsubscribe/{token}")
    assert 'value="token"' not in page.text
    assert "Unsubscribe from everything" in page.text


# -- errors ---------------------------------------------------------------------------------


def test_an_unexpected_error_is_an_html_500_page_without_internals(
    site: Site, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(session: Session) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(accounts, "tags_with_counts", broken)
    page = site.client.get("/subscribe")
    assert page.status_code == 500
    assert page.headers["content-type"].startswith("text/html")
    assert "<h1>Something went wrong</h1>" in page.text
    assert "secret internals" not in page.text
    assert any(r.exc_info for r in caplog.records if r.name == "service.web.pages")


def test_the_json_api_keeps_json_errors(site: Site) -> None:
    answer = site.client.get("/api/me", headers={"X-Subscriber-Token": "forged"})
    assert answer.status_code == 401
    assert answer.json() == {"detail": "Invalid or expired token."}


def test_pages_are_not_in_the_api_description(site: Site) -> None:
    paths = site.client.get("/openapi.json").json()["paths"]
    assert "/api/subscriptions" in paths
    assert not {"/", "/subscribe", "/unsubscribe/{token}"} & set(paths)
