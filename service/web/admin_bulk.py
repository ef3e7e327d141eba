"""Operators' bulk tools in the JSON API: subscriber CSV import and export, template previews
and test sends. The work is done by `service.readers.bulk` and `service.digests.preview`."""

from __future__ import annotations

import tempfile
from typing import IO, Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict
from starlette.datastructures import UploadFile

from service.config import Settings
from service.digests import preview
from service.readers import bulk
from service.readers.accounts import Notifier
from service.readers.bulk import ImportReport
from service.readers.schemas import Email
from service.tasks import enqueue, send_template_test
from service.web.deps import EditorDep, NotifierDep, OperatorDep, SessionDep, SettingsDep

router = APIRouter(tags=["admin"])

MAX_IMPORT_BYTES = 32 * 1024 * 1024  # ~400,000 rows of a typical file
_SPOOL_BYTES = 1024 * 1024  # more than this goes to a temporary file, not memory
CSV_TYPES = ("text/csv", "text/plain", "application/csv", "application/octet-stream")

ADMIN_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "No valid admin token"},
    403: {"description": "The token's role may not do this"},
}
IMPORT_ERRORS: dict[int | str, dict[str, Any]] = {
    **ADMIN_ERRORS,
    411: {"description": "A multipart upload without Content-Length"},
    413: {"description": f"The file is larger than {MAX_IMPORT_BYTES // 2**20} MiB"},
    415: {"description": "Neither CSV nor a multipart upload"},
    422: {"description": "The file's header line is wrong; nothing was imported"},
}


def _too_large() -> HTTPException:
    return HTTPException(
        413,
        detail=f"The file is larger than {MAX_IMPORT_BYTES // 2**20} MiB; split it and import "
        "the parts (importing a part twice changes nothing).",
    )


@router.post(
    "/api/admin/subscribers/import",
    responses=IMPORT_ERRORS,
    openapi_extra={
        "requestBody": {
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {"file": {"type": "string", "format": "binary"}},
                        "required": ["file"],
                    }
                },
            },
            "required": True,
        }
    },
)
async def import_subscribers(
    request: Request, settings: SettingsDep, notify: NotifierDep, _: OperatorDep
) -> ImportReport:
    """Import readers from CSV (`email,tags,cadence,timezone,send_hour,consented_at`): the body
    itself (`Content-Type: text/csv`) or a multipart upload in the field `file`.

    Rows with `consented_at` become active readers; the others pending, each with one
    confirmation mail. Known addresses are never re-subscribed or downgraded. The answer is
    the report: counts, and each rejected or skipped row with its line and why. Importing the
    same file again changes nothing and mails nobody.
    """
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_IMPORT_BYTES:
        raise _too_large()
    if content_type == "multipart/form-data":
        if length is None:
            raise HTTPException(411, detail="A multipart upload needs a Content-Length.")
        async with request.form(max_files=1, max_fields=5) as form:  # closes its files
            file = form.get("file")
            if not isinstance(file, UploadFile):
                raise HTTPException(422, detail="Send the CSV in the multipart field 'file'.")
            return await _import(request, file.file, file.filename or "upload", settings, notify)
    if content_type not in CSV_TYPES:
        raise HTTPException(
            415,
            detail="Send the CSV as the body (Content-Type: text/csv) or as a multipart upload.",
        )
    with await _spool(request) as body:
        return await _import(request, body, "api", settings, notify)


async def _import(
    request: Request, upload: IO[bytes], name: str, settings: Settings, notify: Notifier
) -> ImportReport:
    try:
        return await run_in_threadpool(
            bulk.import_csv,
            request.app.state.sessions,
            upload,
            source=f"import:{name}",
            settings=settings,
            notify=notify,
        )
    except bulk.ImportFileError as exc:
        raise HTTPException(422, detail=str(exc)) from exc


async def _spool(request: Request) -> tempfile.SpooledTemporaryFile[bytes]:
    """The body in a temporary file (memory up to 1 MiB), refused past the size cap even when
    the client sent no Content-Length."""
    spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES)  # noqa: SIM115 - caller closes
    size = 0
    async for piece in request.stream():
        size += len(piece)
        if size > MAX_IMPORT_BYTES:
            spool.close()
            raise _too_large()
        spool.write(piece)
    spool.seek(0)
    return spool


@router.get(
    "/api/admin/subscribers/export",
    responses={**ADMIN_ERRORS, 200: {"content": {"text/csv": {}}, "description": "The CSV"}},
    response_class=StreamingResponse,
)
def export_subscribers(request: Request, _: OperatorDep) -> StreamingResponse:
    """Active and pending readers as CSV, in the columns the import reads, streamed."""
    return StreamingResponse(
        bulk.export_csv(request.app.state.sessions),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="subscribers.csv"'},
    )


class TemplateOut(BaseModel):
    name: str
    kind: str  # digest | instant | breaking | confirm | manage | test


class PreviewOut(BaseModel):
    """The template rendered with invented sample data, as the sample reader would get it."""

    name: str
    kind: str
    subject: str
    text: str
    html: str


class SampleSendIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to: Email


class SampleSendOut(BaseModel):
    status: Literal["queued"] = "queued"
    template: str
    to: str


TemplateName = Annotated[str, Path(max_length=100, description="A folder of templates/email/")]


def _known(name: str) -> str:
    if name not in {n for n, _ in preview.templates()}:
        raise HTTPException(404, detail="No such template.")
    return name


@router.get("/api/admin/templates", responses=ADMIN_ERRORS)
def list_templates(_: EditorDep) -> list[TemplateOut]:
    """The email templates that can be previewed and test-sent (editor or operator)."""
    return [TemplateOut(name=n, kind=k) for n, k in preview.templates()]


@router.get(
    "/api/admin/templates/{name}/preview",
    responses={**ADMIN_ERRORS, 404: {"description": "No such template"}},
)
def preview_template(name: TemplateName, settings: SettingsDep, _: EditorDep) -> PreviewOut:
    """The template rendered with sample data (a fictional portal's posts, two tags, a reader
    in Europe/Kyiv) through the code real mail takes: subject, HTML and text. Its links carry
    placeholder tokens."""
    shown = preview.sample(settings, _known(name))
    return PreviewOut(
        name=shown.name, kind=shown.kind, subject=shown.subject, text=shown.text, html=shown.html
    )


@router.post(
    "/api/admin/templates/{name}/test-send",
    status_code=202,
    responses={**ADMIN_ERRORS, 404: {"description": "No such template"}},
)
def send_template_test_mail(
    name: TemplateName, body: SampleSendIn, session: SessionDep, _: OperatorDep
) -> SampleSendOut:
    """Send the sample of this template to `to` through the configured mail backend, by the
    worker; its subject starts with "[TEST]" and its links open nothing."""
    enqueue(session, send_template_test, _known(name), body.to)
    session.commit()
    return SampleSendOut(template=name, to=body.to)
