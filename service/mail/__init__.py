"""Mail core: render a message from templates, build it with the bulk-mail headers, send it.

rendered = render("test", {...})
message = build_message(rendered, to=..., mail_from=..., message_id=make_message_id(...))
sender_from_settings(settings).send(message)
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
    OutgoingMessage,
    build_message,
    dkim_signer_from_settings,
    make_message_id,
)
from service.mail.render import Rendered, render, template_names
from service.mail.senders import Sender, sender_from_settings

__all__ = [
    "BackendRejected",
    "DkimSigner",
    "HeaderInjection",
    "ListInfo",
    "MailError",
    "MessageRejected",
    "OutgoingMessage",
    "PermanentError",
    "RateLimited",
    "RecipientRejected",
    "Rendered",
    "Sender",
    "TemporaryError",
    "build_message",
    "dkim_signer_from_settings",
    "make_message_id",
    "render",
    "sender_from_settings",
    "template_names",
]
