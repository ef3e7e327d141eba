"""Operators' JSON API over the suppression list: search, add, lift, and what was lifted."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from service import suppressions
from service.suppressions import LiftInfo, SuppressionError, SuppressionInfo, SuppressionPage
from service.web.admin_errors import ADMIN_ERRORS, CONFLICT, INVALID, NOT_FOUND, answered
from service.web.deps import Offset, OperatorDep, RowId, SessionDep

router = APIRouter(
    prefix="/api/admin/suppressions", tags=["admin: suppressions"], responses=ADMIN_ERRORS
)


class SuppressionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: Annotated[str, StringConstraints(min_length=1, max_length=320)]
    reason: Annotated[str, Field(max_length=32, examples=["manual", "abuse"])] = "manual"
    note: Annotated[str, StringConstraints(max_length=suppressions.MAX_NOTE)] | None = None


@router.get("", responses=INVALID)
def search_suppressions(
    session: SessionDep,
    _: OperatorDep,
    q: Annotated[
        str | None, Query(max_length=320, description="Part of an address, any case")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=suppressions.MAX_PAGE)] = 50,
    offset: Offset = 0,
) -> SuppressionPage:
    """Suppressed addresses, newest first; `q` searches by address (a whole address also
    finds an erased reader's entry, kept only as a hash)."""
    with answered(SuppressionError):
        return suppressions.search_suppressions(session, q, limit=limit, offset=offset)


@router.post("", status_code=201, responses=CONFLICT | INVALID)
def add_suppression(body: SuppressionIn, session: SessionDep, _: OperatorDep) -> SuppressionInfo:
    """Never mail this address again (checked at send time); 409 if it is listed already."""
    with answered(SuppressionError):
        info = suppressions.add_suppression(session, body.email, reason=body.reason, note=body.note)
    session.commit()
    return info


@router.get("/lifts", responses=INVALID)
def lift_history(
    session: SessionDep,
    _: OperatorDep,
    q: Annotated[
        str | None, Query(max_length=320, description="Part of an address, any case")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=suppressions.MAX_PAGE)] = 50,
) -> list[LiftInfo]:
    """Lifted suppressions, newest first: what each was (reason, evidence) and who lifted it,
    when and why."""
    with answered(SuppressionError):
        return suppressions.lift_history(session, q, limit=limit)


@router.delete("/{suppression_id}", status_code=204, responses=NOT_FOUND | INVALID)
def lift_suppression(
    suppression_id: RowId,
    session: SessionDep,
    token: OperatorDep,
    note: Annotated[
        str | None,
        Query(max_length=suppressions.MAX_NOTE, description="Why it is lifted, kept with the lift"),
    ] = None,
) -> Response:
    """Lift the entry: the address may be mailed again. The lift is recorded with the token's
    name, the time and the note (see `GET /api/admin/suppressions/lifts`). A reader the
    bounce policy marked `bounced` becomes active again; one who unsubscribed or complained
    still gets nothing until they subscribe again."""
    with answered(SuppressionError):
        suppressions.lift_suppression(session, suppression_id, by=token.name, note=note)
    session.commit()
    return Response(status_code=204)
