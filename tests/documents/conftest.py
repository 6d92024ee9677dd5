"""The chat world (two tenants, real ingested documents, the echo generator) for the purge
tests, which follow a document through search and chat before erasing it."""

from tests.chat.conftest import world  # noqa: F401
