"""The governance pages: the audit log and a deletion receipt, in words, server-rendered.

Both read through the same services as the API (the audit listing with its reader-dependent
actor names, the tenant's receipts) and show what they hold in the page's language: actions,
actors, targets, details, removed counts and verification checks. Nothing is shown as raw
JSON; the receipt's JSON is one download away (the API's own URL, with the session cookie).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query
from fastapi.responses import Response

from app.audit.schemas import AuditEntryRead, AuditQueryParams
from app.audit.service import AuditQuery, ShownActor, audit_service
from app.kit.authz import CurrentEnforcer
from app.kit.db import ReadSession
from app.kit.public_ids import IdKind, public_ids
from app.receipts.schemas import ReceiptRead
from app.receipts.service import receipt_service
from app.web.i18n import Translator
from app.web.routes import PageError, SignedIn, _in_tenant

router = APIRouter(include_in_schema=False)

AUDIT_PER_PAGE = 50
# Targets whose page a row links to: the document, the deletion receipt.
_TARGET_PAGES = {"document": "documents", "deletion_receipt": "receipts"}
# Detail values that are public ids of something with a page.
_DETAIL_PAGES = {"receipt_id": "receipts", "document_id": "documents"}


@dataclass(frozen=True)
class Line:
    """One `label: value` line; `href` when the value has a page."""

    label: str
    value: str
    href: str | None = None


@dataclass(frozen=True)
class AuditRow:
    seq: int
    time: str
    actor: str
    actor_kind: str
    action: str
    action_words: str
    outcome: str
    outcome_words: str
    target: Line | None
    details: list[Line]


def _words(t: Translator, key: str, fallback: str) -> str:
    """The catalogue's words for `key`, else the fallback (a name the catalogue lacks)."""
    text = t(key)
    return fallback if text == key else text


def actor_words(t: Translator, actor: ShownActor) -> str:
    """Who acted, in words: a username, a named system actor, or a neutral label."""
    if actor.kind == "user" and actor.name:
        return actor.name
    if actor.kind == "system" and actor.name:
        name = _words(t, f"actor.system.{actor.name}", actor.name.replace("_", " "))
        return t("actor.system", name=name)
    return t(f"actor.{actor.kind}")


def _value_words(t: Translator, key: str, value: Any) -> str:
    if isinstance(value, bool):
        return t("audit.yes") if value else t("audit.no")
    if value is None or value == []:
        return "—"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    if key in ("role", "previous_role"):
        return _words(t, f"role.{value}", str(value))
    return _words(t, f"audit.value.{value}", str(value))


def detail_lines(t: Translator, base: str, details: dict[str, Any]) -> list[Line]:
    """An entry's details as `label: value` lines in words, in a stable order."""
    lines = []
    for key in sorted(details):
        value = details[key]
        page = _DETAIL_PAGES.get(key)
        href = f"{base}/{page}/{value}" if page and isinstance(value, str) else None
        label = _words(t, f"audit.detail.{key}", key.replace("_", " "))
        lines.append(Line(label, _value_words(t, key, value), href))
    return lines


def audit_row(t: Translator, base: str, entry: AuditEntryRead) -> AuditRow:
    target = None
    if entry.target_type:
        page = _TARGET_PAGES.get(entry.target_type)
        target = Line(
            _words(t, f"audit.target.{entry.target_type}", entry.target_type.replace("_", " ")),
            entry.target_id or "",
            f"{base}/{page}/{entry.target_id}" if page and entry.target_id else None,
        )
    return AuditRow(
        seq=entry.seq,
        time=_time(entry.created_at),
        actor=actor_words(t, ShownActor(entry.actor_kind, entry.actor)),
        actor_kind=entry.actor_kind,
        action=entry.action,
        action_words=_words(t, f"js.action.{entry.action}", entry.action),
        outcome=entry.outcome,
        outcome_words=_words(t, f"audit.outcome.{entry.outcome}", entry.outcome),
        target=target,
        details=detail_lines(t, base, entry.details),
    )


def _query_params(query: AuditQuery) -> dict[str, str]:
    """The filters as URL parameters (for the pager and the export links)."""
    values = {
        "action": query.action,
        "actor": query.actor,
        "target_type": query.target_type,
        "target_id": query.target_id,
        "since": query.since.strftime("%Y-%m-%dT%H:%M") if query.since else None,
        "until": query.until.strftime("%Y-%m-%dT%H:%M") if query.until else None,
    }
    return {k: v for k, v in values.items() if v}


@router.get("/t/{tenant}/audit")
async def audit_page(
    tenant: str,
    page: SignedIn,
    session: ReadSession,
    enforcer: CurrentEnforcer,
    query: AuditQueryParams,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> Response:
    """The tenant's audit log in words, newest first, with its filters, pager and export."""
    await _in_tenant(page, session, enforcer, tenant, "audit", "read")
    assert page.access is not None
    entries, total = await audit_service.list_for_tenant(
        session, page.access, query, limit=AUDIT_PER_PAGE, offset=offset
    )
    base = f"/t/{page.tenant_slug}"
    params = _query_params(query)

    def at(new_offset: int) -> str:
        return f"{base}/audit?" + urlencode({**params, "offset": new_offset})

    export = f"/api/v1/tenants/{page.tenant_slug}/audit/export?"
    return page.render(
        "audit.html",
        section="audit",
        rows=[audit_row(page.t, base, AuditEntryRead.of(e)) for e in entries],
        filters=params,
        total=total,
        page_number=offset // AUDIT_PER_PAGE + 1,
        pages=max(1, -(-total // AUDIT_PER_PAGE)),
        prev_href=at(max(0, offset - AUDIT_PER_PAGE)) if offset > 0 else None,
        next_href=at(offset + AUDIT_PER_PAGE) if offset + AUDIT_PER_PAGE < total else None,
        export_csv=export + urlencode({**params, "format": "csv"}),
        export_jsonl=export + urlencode({**params, "format": "jsonl"}),
    )


@dataclass(frozen=True)
class Check:
    passed: bool
    title: str
    detail: str


def check_words(t: Translator, check: dict[str, Any]) -> Check:
    """One verification check as a sentence (and the server's own detail beneath it)."""
    name = str(check.get("name", ""))
    kind, _, table = name.partition(":")
    if kind == "rows" and table:
        where = _words(t, f"receipt.table.{table}", table.replace("_", " "))
        title = t("receipt.check.rows", table=where)
    else:
        title = _words(t, f"receipt.check.{name}", name.replace("_", " "))
    return Check(bool(check.get("passed")), title, str(check.get("detail") or ""))


@router.get("/t/{tenant}/receipts/{receipt_id}")
async def receipt_page(
    tenant: str,
    receipt_id: str,
    page: SignedIn,
    session: ReadSession,
    enforcer: CurrentEnforcer,
) -> Response:
    """A deletion receipt in words: what was removed, each check, the hash; JSON and print."""
    await _in_tenant(page, session, enforcer, tenant, "receipts", "read")
    assert page.access is not None
    key = public_ids().decode(IdKind.RECEIPT, receipt_id)
    receipt = await receipt_service.get(session, page.access.tenant_id, key) if key else None
    if receipt is None:
        raise PageError(404)
    read = ReceiptRead.of(receipt)
    shown = read.model_dump(mode="json")  # public ids
    requester = await audit_service.purge_requester(session, page.access, receipt.subject_id)
    t = page.t
    return page.render(
        "receipt.html",
        section="audit",
        receipt=shown,
        requested_at=_time(read.requested_at),
        completed_at=_time(read.completed_at),
        status_words=t(f"receipt.status.{read.status}"),
        requester=actor_words(t, requester),
        removed=[
            Line(_words(t, f"receipt.removed.{name}", name.replace("_", " ")), str(count))
            for name, count in read.removed.items()
        ],
        checks=[check_words(t, c) for c in read.verification.checks] if read.verification else [],
        json_href=f"/api/v1/tenants/{page.tenant_slug}/deletion-receipts/{shown['id']}",
        json_name=f"deletion-receipt-{shown['id']}.json",
    )


def _time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "—"
