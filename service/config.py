"""Settings, read from the environment (prefix ``NEWSLETTER_``) or a ``.env`` file.

Every default works on one machine with no server at all: SQLite and the broker's queue files
under ``VAR_DIR``, mail written as .eml files to ``VAR_DIR/outbox``. Point ``DATABASE_URL`` at
``postgresql+psycopg://…`` and ``BROKER_URL`` at ``redis://…`` or ``amqp://…`` for production;
no code changes. The README's configuration table is generated from the descriptions below.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

EMBEDDED_BROKER = "filesystem://"
# A bare address: local part and domain of plain characters, no display name or brackets.
_BOUNCE_ADDRESS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9.-]+")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="NEWSLETTER_", env_file=".env", extra="ignore", frozen=True
    )

    var_dir: Path = Field(
        Path("var"),
        description="Folder for the embedded defaults: SQLite file, broker queue, outbox, "
        "generated secret key.",
    )
    database_url: str = Field(
        "",
        description="SQLAlchemy URL. Empty: SQLite at `VAR_DIR/newsletter.db`. Production: "
        "`postgresql+psycopg://user:pass@host/db`.",
    )
    broker_url: str = Field(
        EMBEDDED_BROKER,
        description="Celery broker. `filesystem://` is the embedded broker (queue files under "
        "`VAR_DIR/broker`, shared by every process on this machine, no server); "
        "`redis://host:6379/0` or `amqp://user:pass@host//` in production.",
    )
    broker_visibility_timeout: int = Field(
        7200,
        description="Seconds before Redis hands an unacknowledged task to another worker. "
        "Must exceed every countdown and retry delay.",
        ge=60,
    )
    secret_key: SecretStr = Field(
        SecretStr(""),
        description="Signs reader tokens. Comma-separated for rotation: the first signs, all "
        "verify. Empty: a random key is generated once into `VAR_DIR/secret_key`.",
    )
    base_url: str = Field(
        "http://localhost:8000",
        description="Public URL of the API and pages; links in mail point here.",
    )
    site_name: str = Field(
        "", description="The publication's name in pages and mail. Empty: the host of `BASE_URL`."
    )
    mail_from: str = Field(
        "Newsletter <newsletter@localhost>", description="From header of every message."
    )
    bounce_address: str = Field(
        "",
        description="Envelope sender (Return-Path) of bulk mail, e.g. `bounces@news.example.org`: "
        "each message goes out from `bounces+<delivery id>-<signature>@…` (VERP), so a bounce "
        "names its delivery (`newsletter bounces process`). Empty: the address of `MAIL_FROM`. "
        "Used by the `smtp` backend; the HTTP APIs set their own.",
    )
    mail_backend: Literal["outbox", "smtp", "postmark", "ses", "sendgrid", "mailgun"] = Field(
        "outbox",
        description="`outbox`: .eml files under `VAR_DIR/outbox`; `smtp`: the server at "
        "`SMTP_URL`; `postmark`, `ses`, `sendgrid`, `mailgun`: that provider's HTTP API, "
        "configured by the settings named after it.",
    )
    smtp_url: str = Field(
        "smtp://localhost:1025",
        description="`smtp://[user:pass@]host:port` (STARTTLS when the server offers it, and "
        "required when credentials are set; `?starttls=require` always insists, "
        "`?starttls=off` never uses it) or `smtps://…` (TLS from the first byte).",
    )
    smtp_pool_size: int = Field(
        4, description="SMTP connections kept open and reused per worker process.", ge=1, le=64
    )
    smtp_timeout: float = Field(30.0, description="Seconds for any one SMTP step.", gt=0)
    postmark_server_token: SecretStr = Field(
        SecretStr(""), description="Postmark server API token (`MAIL_BACKEND=postmark`)."
    )
    postmark_message_stream: str = Field(
        "broadcast",
        description="Postmark message stream the mail goes to: its broadcast (bulk) stream, "
        "or the ID of another stream of the server.",
    )
    postmark_api_url: str = Field(
        "https://api.postmarkapp.com",
        description="Postmark API base URL; another only for a test double of the API (the "
        "fault drills point it at a local server).",
    )
    ses_region: str = Field(
        "",
        description="AWS region of the Amazon SES v2 API, e.g. `eu-west-1` (`MAIL_BACKEND=ses`).",
    )
    ses_access_key_id: str = Field("", description="AWS access key ID allowed `ses:SendEmail`.")
    ses_secret_access_key: SecretStr = Field(
        SecretStr(""), description="The secret of `SES_ACCESS_KEY_ID`."
    )
    ses_configuration_set: str = Field(
        "", description="SES configuration set for event publishing. Empty: none."
    )
    ses_topic_arn: str = Field(
        "",
        description="ARN of the SNS topic SES publishes bounces, complaints and deliveries to; "
        "`POST /webhooks/ses` takes messages of this topic only. Empty: it refuses every one.",
    )
    sendgrid_api_key: SecretStr = Field(
        SecretStr(""),
        description="SendGrid API key with Mail Send access (`MAIL_BACKEND=sendgrid`).",
    )
    mailgun_api_key: SecretStr = Field(
        SecretStr(""), description="Mailgun API key (`MAIL_BACKEND=mailgun`)."
    )
    mailgun_domain: str = Field("", description="Mailgun sending domain, e.g. `mg.example.org`.")
    mailgun_base_url: str = Field(
        "https://api.mailgun.net",
        description="Mailgun API base URL; `https://api.eu.mailgun.net` for a domain in the EU "
        "region.",
    )
    postmark_webhook_user: str = Field(
        "",
        description="User name of the Postmark webhook URL "
        "(`https://USER:PASSWORD@host/webhooks/postmark`). Empty: Postmark webhooks are refused.",
    )
    postmark_webhook_password: SecretStr = Field(
        SecretStr(""),
        description="Password of the Postmark webhook URL; a long random one. Empty: Postmark "
        "webhooks are refused.",
    )
    sendgrid_webhook_public_key: str = Field(
        "",
        description="The verification key SendGrid shows for its Signed Event Webhook (base64, "
        "or PEM). Empty: SendGrid webhooks are refused.",
    )
    mailgun_webhook_signing_key: SecretStr = Field(
        SecretStr(""),
        description="Mailgun's HTTP webhook signing key (not the API key). Empty: Mailgun "
        "webhooks are refused.",
    )
    dkim_selector: str = Field(
        "", description="DKIM selector; signing is on when this and `DKIM_KEY_FILE` are set."
    )
    dkim_key_file: Path | None = Field(None, description="PEM private key for DKIM signing.")
    dkim_domain: str = Field("", description="DKIM d= domain. Empty: the domain of `MAIL_FROM`.")
    blocked_email_domains: str = Field(
        "",
        description="Comma-separated domains whose addresses may not subscribe (e.g. "
        "disposable-mail services).",
    )
    rate_limit_subscribe_per_ip: str = Field(
        "10/minute",
        description="Subscribe requests one client address may make (`N/second|minute|hour|day`).",
    )
    rate_limit_sign_in_per_ip: str = Field(
        "10/minute",
        description="Console sign-in attempts one client address may make; slows token guessing.",
    )
    rate_limit_subscribe_per_address: str = Field(
        "3/hour",
        description="Subscribe requests for one email address, from anywhere; bounds the mail "
        "anyone can make us send to a stranger.",
    )
    rate_limit: float | None = Field(
        None,
        description="Messages a second each mail backend may send. Shared by every worker "
        "through Redis when Redis is the broker, else per process. Empty or `0`: no limit.",
    )
    tick_seconds: float = Field(
        60.0,
        description="Seconds between beat's ticks (what is due: polls, digests, the sweep). "
        "Shorter only for tests and drills; every beat of a deployment should agree.",
        ge=1,
    )
    log_level: str = Field("INFO", description="Python log level name.")
    log_format: Literal["json", "text"] = Field(
        "json", description="`json`: one JSON object per line; `text`: for a terminal."
    )

    @model_validator(mode="after")
    def _mail_backend_is_configured(self) -> Settings:
        needed = {
            "postmark": {"postmark_server_token", "postmark_message_stream", "postmark_api_url"},
            "ses": {"ses_region", "ses_access_key_id", "ses_secret_access_key"},
            "sendgrid": {"sendgrid_api_key"},
            "mailgun": {"mailgun_api_key", "mailgun_domain", "mailgun_base_url"},
        }.get(self.mail_backend, set())
        missing = sorted(name for name in needed if not _text(getattr(self, name)).strip())
        if missing:
            names = ", ".join(f"NEWSLETTER_{name.upper()}" for name in missing)
            raise ValueError(f"MAIL_BACKEND={self.mail_backend} needs {names}")
        return self

    @field_validator("sendgrid_webhook_public_key")
    @classmethod
    def _sendgrid_key(cls, value: str) -> str:
        if value.strip():
            from service.bounces.providers.sendgrid import public_key

            public_key(value)  # ValueError: not a P-256 public key
        return value.strip()

    @field_validator("bounce_address")
    @classmethod
    def _bare_address(cls, value: str) -> str:
        value = value.strip()
        if value and not _BOUNCE_ADDRESS.fullmatch(value):
            raise ValueError("must be a bare address like bounces@news.example.org")
        return value

    @field_validator("base_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator("rate_limit", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # `NEWSLETTER_RATE_LIMIT=` (set but empty) means no limit, like leaving it out.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("rate_limit")
    @classmethod
    def _positive_rate(cls, value: float | None) -> float | None:
        if value is None or value == 0:
            return None
        if not (math.isfinite(value) and value > 0):
            raise ValueError("must be a positive number of messages a second (or 0 for none)")
        return value

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.var_dir / 'newsletter.db').resolve()}"

    def blocked_domains(self) -> frozenset[str]:
        return frozenset(
            d.strip().lower() for d in self.blocked_email_domains.split(",") if d.strip()
        )

    @property
    def rate_limit_storage_url(self) -> str:
        """Limits are shared through Redis when Redis is the broker, else kept per process."""
        return (
            self.broker_url
            if self.broker_url.startswith(("redis://", "rediss://"))
            else ("memory://")
        )

    @property
    def is_embedded_broker(self) -> bool:
        return self.broker_url.startswith(EMBEDDED_BROKER)

    @property
    def outbox_dir(self) -> Path:
        return self.var_dir / "outbox"

    @property
    def user_agent(self) -> str:
        """How the poller introduces itself to the sites it reads."""
        return f"newsletter/0.1 (+{self.base_url})"

    @property
    def display_name(self) -> str:
        return self.site_name or self.public_host

    @property
    def public_host(self) -> str:
        return urlsplit(self.base_url).hostname or "localhost"

    def secret_keys(self) -> list[str]:
        """The signing keys, newest first; generates and keeps one when none is configured."""
        configured = [k.strip() for k in self.secret_key.get_secret_value().split(",") if k.strip()]
        if configured:
            return configured
        path = self.var_dir / "secret_key"
        if not path.exists():
            _write_new_key(path)
        key = path.read_text(encoding="ascii").strip()
        if len(key) < 32:
            raise RuntimeError(f"{path} holds no usable key; delete it or set SECRET_KEY")
        return [key]


def _text(value: object) -> str:
    return value.get_secret_value() if isinstance(value, SecretStr) else str(value)


def _write_new_key(path: Path) -> None:
    """Create ``path`` with a random key, readable by this user only, complete or not at all.

    The key is written to a private temporary file first and then linked into place, so two
    processes starting together never read a half-written (or empty) key.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(secrets.token_urlsafe(48))
        with contextlib.suppress(FileExistsError):  # another process won the race: use its key
            os.link(tmp, path)
    finally:
        tmp.unlink()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
