"""The web admin's pages. Server-rendered shells (Jinja2, autoescaped) that the page's script
fills from the JSON API with the session cookie (app/web/session.py), plus the few things the
API has no route for: sign-in and sign-out, the language switch, a document's chunks and job
history, and the tenant admin's "view as role" search.

Pages call services in-process and enforce access exactly as the API does: not signed in →
the sign-in page; a tenant you hold no role in → 404; a role without the permission → 403.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.service import auth_service
from app.container import container_of
from app.documents.curation import chunk_read
from app.documents.service import document_service
from app.kit.auth import AppSettings, CredentialResolver
from app.kit.authz import (
    PLATFORM_DOMAIN,
    SENSITIVITY_LEVELS,
    CurrentEnforcer,
    Enforcer,
    TenantAccess,
    read_policy_file,
    tenant_access,
)
from app.kit.db import ReadSession, Session
from app.kit.errors import CairnError, NotAuthenticated, NotPermitted, ResourceNotFound
from app.kit.principal import Principal
from app.kit.public_ids import IdKind, encode_id, public_ids
from app.kit.ratelimit import CallerQuotas, ClientAddress, SignInThrottle
from app.kit.settings import Settings
from app.knowledge_base.service import knowledge_base_service
from app.models import Document
from app.search.schemas import SearchMode, SearchResponse
from app.search.service import search_service
from app.search.visibility import Visibility
from app.tenants.repository import tenant_repository
from app.tenants.service import tenant_service
from app.users.repository import user_repository
from app.web.i18n import LANGUAGES, Translator, language_of
from app.web.session import (
    CSRF_FIELD,
    CSRF_HEADER,
    LANG_COOKIE,
    PRESESSION_COOKIE,
    SESSION_COOKIE,
    clear_cookie,
    csrf_token,
    csrf_valid,
    new_presession,
    set_cookie,
)

TEMPLATES = Jinja2Templates(directory=Path(__file__).parent / "templates")
# Autoescaping is on for .html (Jinja2Templates' default); asserted so nobody turns it off.
assert TEMPLATES.env.autoescape is not False

router = APIRouter(include_in_schema=False)

# Roles an admin may preview retrieval as: the ones that see less than the admin does.
PREVIEW_ROLES = ("viewer", "restricted_viewer", "guest")


class SignInRequired(Exception):
    """No valid session: the page answers with a redirect to the sign-in form."""


class PageError(Exception):
    """A 403 or 404 answered as an HTML page."""

    def __init__(self, status: int) -> None:
        self.status = status
        super().__init__(status)


@dataclass
class Page:
    """Everything a page's template needs besides its own data."""

    request: Request
    t: Translator
    principal: Principal | None = None
    csrf: str = ""
    tenants: list[dict[str, str]] = field(default_factory=list)
    access: TenantAccess | None = None

    @property
    def tenant_slug(self) -> str:
        return self.access.tenant.slug if self.access else ""

    def can(self, obj: str, act: str) -> bool:
        """Whether the caller may `act` on `obj` in the current tenant (for showing controls)."""
        return self.access is not None and self.access.can(obj, act)

    def render(self, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        return TEMPLATES.TemplateResponse(
            self.request,
            template,
            {
                "p": self,
                "t": self.t,
                "lang": self.t.language,
                "languages": LANGUAGES,
                # Inside <script type="application/json">: no "<" may end the element early.
                "js_messages": json.dumps(self.t.script_messages(), ensure_ascii=False).replace(
                    "<", "\\u003c"
                ),
                **context,
            },
            status_code=status,
            # Pages carry a CSRF token and tenant data: no cache may keep them.
            headers={"Cache-Control": "no-store"},
        )


def _settings(request: Request) -> Settings:
    return container_of(request).settings


async def _principal_of(request: Request, session: AsyncSession) -> Principal | None:
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    resolver: CredentialResolver = container_of(request).credentials
    try:
        principal = await resolver.principal(session, _settings(request), token)
    except NotAuthenticated:
        return None
    # A session is a signed-in person; an API key in the cookie would not be one.
    return principal if principal.api_key_id is None else None


async def _signed_in(request: Request, session: ReadSession) -> Page:
    principal = await _principal_of(request, session)
    if principal is None:
        raise SignInRequired()
    rows, _ = await tenant_repository.list_readable(session, principal, limit=200, offset=0)
    return Page(
        request=request,
        t=Translator(language_of(request)),
        principal=principal,
        csrf=csrf_token(_settings(request), request.cookies[SESSION_COOKIE]),
        tenants=[{"slug": t.slug, "name": t.name, "role": role} for t, role in rows],
    )


SignedIn = Annotated[Page, Depends(_signed_in)]


async def _in_tenant(
    page: Page, session: AsyncSession, enforcer: Enforcer, slug: str, obj: str, act: str
) -> Page:
    assert page.principal is not None
    try:
        page.access = await tenant_access(
            session, page.principal, enforcer, slug=slug, obj=obj, act=act
        )
    except ResourceNotFound as exc:
        raise PageError(404) from exc
    except NotPermitted as exc:
        # The tenant is visible (the check above passed), so naming it on the 403 page is
        # safe; the switcher and the menu still work from there.
        raise PageError(403) from exc
    return page


def _check_csrf(request: Request, token: str | None, cookie_name: str = SESSION_COOKIE) -> None:
    if not csrf_valid(_settings(request), request.cookies.get(cookie_name), token):
        raise NotPermitted("Missing or invalid CSRF token; reload the page", code="csrf_failed")


def _safe_next(target: str | None) -> str:
    # Only a path on this site: never an open redirect to another origin.
    if target and target.startswith("/") and not target.startswith(("//", "/\\")):
        return target
    return "/"


def _home_of(page: Page) -> str:
    if page.tenants:
        first = page.tenants[0]
        section = {"auditor": "audit", "guest": "search"}.get(first["role"], "documents")
        return f"/t/{quote(first['slug'])}/{section}"
    if page.principal is not None and page.principal.is_platform_admin:
        return "/admin/tenants"
    return "/welcome"


# --- signing in and out -------------------------------------------------------------------


@router.get("/signin")
async def signin_form(request: Request, next: str | None = None) -> Response:
    presession = request.cookies.get(PRESESSION_COOKIE) or new_presession()
    page = Page(
        request=request,
        t=Translator(language_of(request)),
        csrf=csrf_token(_settings(request), presession),
    )
    response = page.render("signin.html", next=_safe_next(next), error=None)
    set_cookie(response, request, PRESESSION_COOKIE, presession)
    return response


@router.post("/signin")
async def signin(
    request: Request,
    session: Session,
    settings: AppSettings,
    throttle: SignInThrottle,
    address: ClientAddress,
    username: Annotated[str, Form(max_length=256)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    csrf_token_field: Annotated[str, Form(alias=CSRF_FIELD, max_length=128)] = "",
    next: Annotated[str, Form(max_length=2000)] = "/",
) -> Response:
    _check_csrf(request, csrf_token_field, PRESESSION_COOKIE)
    t = Translator(language_of(request))
    try:
        # The API's own sign-in: the same throttle, the same audit of failures.
        token = await auth_service.login(
            session,
            settings,
            throttle,
            username=username,
            password=password,
            address=address,
            kind="web",
        )
    except CairnError as exc:
        if exc.status_code not in (401, 429):
            raise
        await session.rollback()
        presession = request.cookies.get(PRESESSION_COOKIE) or new_presession()
        page = Page(request=request, t=t, csrf=csrf_token(settings, presession))
        message = t("signin.throttled") if exc.status_code == 429 else t("signin.failed")
        refused = page.render(
            "signin.html", status=exc.status_code, next=_safe_next(next), error=message
        )
        if exc.headers:
            for name, value in exc.headers.items():
                if name.lower() == "retry-after":
                    refused.headers[name] = value
        return refused
    signed_in = RedirectResponse(_safe_next(next), status_code=303)
    set_cookie(signed_in, request, SESSION_COOKIE, token, max_age=settings.jwt_ttl_minutes * 60)
    clear_cookie(signed_in, request, PRESESSION_COOKIE)
    return signed_in


@router.post("/signout")
async def signout(
    request: Request,
    session: Session,
    csrf_token_field: Annotated[str, Form(alias=CSRF_FIELD)] = "",
) -> Response:
    _check_csrf(request, csrf_token_field)
    # End the session on the server, not only in this browser: a copied cookie replayed
    # afterwards gets 401 like any other stale credential.
    principal = await _principal_of(request, session)
    if principal is not None:
        await auth_service.signout(session, principal)
    response = RedirectResponse("/signin", status_code=303)
    clear_cookie(response, request, SESSION_COOKIE)
    return response


@router.post("/language")
async def switch_language(
    request: Request,
    language: Annotated[str, Form(max_length=16)],
    csrf_token_field: Annotated[str, Form(alias=CSRF_FIELD)] = "",
    next: Annotated[str, Form(max_length=2000)] = "/",
) -> Response:
    cookie = SESSION_COOKIE if request.cookies.get(SESSION_COOKIE) else PRESESSION_COOKIE
    _check_csrf(request, csrf_token_field, cookie)
    response = RedirectResponse(_safe_next(next), status_code=303)
    if language in LANGUAGES:
        set_cookie(response, request, LANG_COOKIE, language, max_age=365 * 24 * 3600)
    return response


# --- navigation -----------------------------------------------------------------------------


@router.get("/")
async def home(request: Request, session: ReadSession) -> Response:
    try:
        page = await _signed_in(request, session)
    except SignInRequired:
        return RedirectResponse("/signin", status_code=303)
    return RedirectResponse(_home_of(page), status_code=303)


@router.get("/welcome")
async def welcome(page: SignedIn) -> Response:
    return page.render("welcome.html")


@router.get("/go")
async def go(page: SignedIn, tenant: Annotated[str, Query(max_length=64)] = "") -> Response:
    """The tenant switcher without script: to the chosen tenant's first page."""
    for row in page.tenants:
        if row["slug"] == tenant:
            page.tenants = [row]
            return RedirectResponse(_home_of(page), status_code=303)
    raise PageError(404)


# --- tenant pages ---------------------------------------------------------------------------


@router.get("/t/{tenant}/documents")
async def documents_page(
    tenant: str, page: SignedIn, session: ReadSession, enforcer: CurrentEnforcer
) -> Response:
    await _in_tenant(page, session, enforcer, tenant, "documents", "read")
    return page.render("documents.html", section="documents")


async def document_in_page(
    page: Page, session: AsyncSession, enforcer: Enforcer, tenant: str, document_id: str
) -> Document:
    """The tenant's document a page shows, read as the signed-in person may (404 page when the
    id is malformed, another tenant's, or not visible to them)."""
    await _in_tenant(page, session, enforcer, tenant, "documents", "read")
    assert page.access is not None
    key = public_ids().decode(IdKind.DOCUMENT, document_id)
    document = await document_service.get(session, page.access, key) if key else None
    if document is None:
        raise PageError(404)
    return document


@router.get("/t/{tenant}/documents/{document_id}")
async def document_page(
    tenant: str,
    document_id: str,
    request: Request,
    page: SignedIn,
    session: ReadSession,
    enforcer: CurrentEnforcer,
    chunk: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    document = await document_in_page(page, session, enforcer, tenant, document_id)
    assert page.access is not None
    shown = (await document_service.read_models(session, [document]))[0]
    rows = await document_service.chunks(session, page.access, document.id)
    # Opened with the tenant's key (sealed at rest when encryption is on); a re-parse's staged
    # chunks are not the document's yet.
    data_key = await container_of(request).store.read_key(page.access.tenant_id)
    chunks = [chunk_read(c, data_key) for c in rows if not c.staged]
    jobs = await document_service.jobs(session, page.access, document.id)
    return page.render(
        "document.html",
        section="documents",
        doc=shown,
        doc_id=encode_id(IdKind.DOCUMENT, document.id),
        # The API's download: the link carries the session cookie (app/web/session.py).
        file_url=f"/api/v1/tenants/{quote(page.tenant_slug)}/documents/"
        f"{encode_id(IdKind.DOCUMENT, document.id)}/file",
        chunks=[
            {
                "id": encode_id(IdKind.CHUNK, c.id),
                "position": c.position,
                "heading": " › ".join(c.headings),
                "text": c.text,
                "enabled": c.enabled,
            }
            for c in chunks
        ],
        highlight=chunk,
        jobs=jobs,
    )


@router.get("/t/{tenant}/search")
async def search_page(
    tenant: str,
    request: Request,
    page: SignedIn,
    session: ReadSession,
    enforcer: CurrentEnforcer,
) -> Response:
    await _in_tenant(page, session, enforcer, tenant, "search", "query")
    assert page.access is not None
    preview = page.can("members", "write")
    retrieval = await knowledge_base_service.retrieval(
        session, page.access.tenant_id, _settings(request)
    )
    return page.render(
        "search.html",
        section="search",
        preview_roles=PREVIEW_ROLES if preview else (),
        retrieval=retrieval,
    )


class PreviewSearch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, max_length=2000)
    top_k: int | None = Field(default=None, ge=1, le=50)
    mode: SearchMode | None = None
    role: Literal["viewer", "restricted_viewer", "guest"]


def _role_levels(role: str) -> tuple[str, ...]:
    granted = {act for r, _, obj, act in read_policy_file() if r == role and obj == "sensitivity"}
    return tuple(level for level in SENSITIVITY_LEVELS if level in granted)


@router.post("/t/{tenant}/search/preview", response_model=SearchResponse)
async def preview_search(
    tenant: str,
    data: PreviewSearch,
    request: Request,
    session: Session,
    enforcer: CurrentEnforcer,
    quotas: CallerQuotas,
) -> SearchResponse:
    """A tenant admin's search as a lower role would run it (only ever narrower than the
    admin's own view: the admin sees every level). Audited like any search."""
    principal = await _principal_of(request, session)
    if principal is None:
        raise NotAuthenticated()
    _check_csrf(request, request.headers.get(CSRF_HEADER))
    access = await tenant_access(
        session, principal, enforcer, slug=tenant, obj="members", act="write"
    )
    await quotas.charge(access, "search")
    levels = tuple(lvl for lvl in _role_levels(data.role) if lvl in access.sensitivity)
    visibility = Visibility.for_tenant(access.tenant_id, levels)
    # The knowledge base's retrieval settings, as its members' searches get them.
    defaults = await knowledge_base_service.retrieval(session, access.tenant_id, _settings(request))
    return await search_service.search_audited(
        session,
        actor=principal,
        visibility=visibility,
        query=data.query,
        top_k=data.top_k or min(defaults.top_k, 50),
        mode=data.mode or defaults.mode,
        retriever=container_of(request).retriever,
        defaults=defaults,
    )


@router.get("/t/{tenant}/chat")
async def chat_page(
    tenant: str, page: SignedIn, session: ReadSession, enforcer: CurrentEnforcer
) -> Response:
    await _in_tenant(page, session, enforcer, tenant, "chat", "ask")
    return page.render("chat.html", section="chat")


@router.get("/t/{tenant}/members")
async def members_page(
    tenant: str, page: SignedIn, session: ReadSession, enforcer: CurrentEnforcer
) -> Response:
    await _in_tenant(page, session, enforcer, tenant, "members", "read")
    return page.render(
        "members.html", section="members", user_choices=await _user_choices(session, page)
    )


# --- personal and platform pages ------------------------------------------------------------


@router.get("/keys")
async def keys_page(page: SignedIn) -> Response:
    return page.render("keys.html", section="keys")


def _platform(page: Page, enforcer: Enforcer, obj: str, act: str) -> Page:
    assert page.principal is not None
    if not enforcer.allowed(page.principal.user_id, PLATFORM_DOMAIN, obj, act):
        raise PageError(403)
    return page


# Usernames offered in a role form's list; past this many the field is free text only.
USER_CHOICES = 1000
TENANTS_PER_PAGE = 100


async def _user_choices(session: AsyncSession, page: Page) -> list[str]:
    """Active usernames for a role form's list: only for a platform admin, who may list users
    anyway; a tenant admin may not learn who else has an account, and types the name."""
    if page.principal is None or not page.principal.is_platform_admin:
        return []
    users = await user_repository.list(session, limit=USER_CHOICES, offset=0)
    return sorted(u.username for u in users if u.is_active)


@router.get("/admin/tenants")
async def tenants_page(
    page: SignedIn,
    session: ReadSession,
    enforcer: CurrentEnforcer,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> Response:
    """Every tenant's metadata (name, counts, created) with a link to its members page; no
    content. The API's own listing, rendered here so the page works before its script runs."""
    _platform(page, enforcer, "tenants", "create")
    assert page.principal is not None
    rows, total = await tenant_service.list_visible(
        session, page.principal, limit=TENANTS_PER_PAGE, offset=offset
    )
    return page.render(
        "tenants.html",
        section="tenants",
        rows=[row.read() for row in rows],
        total=total,
        offset=offset,
        limit=TENANTS_PER_PAGE,
        user_choices=await _user_choices(session, page),
    )


@router.get("/admin/users")
async def users_page(page: SignedIn, enforcer: CurrentEnforcer) -> Response:
    return _platform(page, enforcer, "users", "read").render("users.html", section="users")


# --- error pages ----------------------------------------------------------------------------


async def sign_in_required(request: Request, _: Exception) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/signin?next={quote(target, safe='')}", status_code=303)


async def page_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, PageError)
    session_maker = container_of(request).database.read_sessionmaker
    async with session_maker() as session:
        principal = await _principal_of(request, session)
        tenants: list[dict[str, str]] = []
        if principal is not None:
            rows, _ = await tenant_repository.list_readable(session, principal, limit=200, offset=0)
            tenants = [{"slug": t.slug, "name": t.name, "role": role} for t, role in rows]
    cookie = request.cookies.get(SESSION_COOKIE)
    page = Page(
        request=request,
        t=Translator(language_of(request)),
        principal=principal,
        csrf=csrf_token(_settings(request), cookie) if cookie and principal else "",
        tenants=tenants,
    )
    return page.render("error.html", status=exc.status, status_code=exc.status)
