"""The web admin: server-rendered pages at `/`, static assets at `/static`."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from app.kit.settings import Settings
from app.web.curation_pages import router as curation_router
from app.web.feedback_pages import router as feedback_router
from app.web.governance import router as governance_router
from app.web.routes import PageError, SignInRequired, page_error, router, sign_in_required
from app.web.session import SessionBridge

STATIC_DIR = Path(__file__).parent / "static"


def install_web(app: FastAPI, settings: Settings) -> None:
    """Mount the pages and assets, and let the page's script use the API with its cookie.

    Call before the security-headers middleware is added, so its answers (a refused CSRF
    token included) carry those headers too."""
    app.add_middleware(SessionBridge, settings=settings)
    app.add_exception_handler(SignInRequired, sign_in_required)
    app.add_exception_handler(PageError, page_error)
    app.include_router(router)
    app.include_router(governance_router)
    app.include_router(curation_router)
    app.include_router(feedback_router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
