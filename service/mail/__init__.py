"""Mail core: render a message from templates, build it with the bulk-mail headers, send it.

rendered = render("test", {...})
message = build_message(rendered, to=..., mail_from=..., message_id=make_message_id(...))
sender_from_settings(settings).send(message)

For many readers of one body (a digest), `prepare` once and `personalize` per reader: the
templates print `slot(...)` placeholders where per-reader links go.
"""

from service.mail.errors import (
    BackendRejected,
    HeaderInjection,
    MailError,
    MessageRejected,
    PermanentError,
    RateLimited,
    RecipientRejected,
    TemporaryError,
)
from service.mail.message import (
    DkimSigner,
    ListInfo,
    MessageParts,
    OutgoingMessage,
    PreparedMessage,
    build_message,
    dkim_signer_from_settings,
    make_message_id,
    prepare,
    slot,
)
from service.mail.render import Rendered, render, template_names
from service.mail.senders import Sender, SendResult, send_each, sender_from_settings

__all__ = [
    "BackendRejected",
    "DkimSigner",
    "HeaderInjection",
    "ListInfo",
    "MailError",
    "MessageParts",
    "MessageRejected",
    "OutgoingMessage",
    "PermanentError",
    "PreparedMessage",
    "RateLimited",
    "RecipientRejected",
    "Rendered",
    "SendResult",
    "Sender",
    "TemporaryError",
    "build_message",
    "dkim_signer_from_settings",
    "make_message_id",
    "prepare",
    "render",
    "send_each",
    "sender_from_settings",
    "slot",
    "template_names",
]
