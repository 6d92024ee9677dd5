"""Logging: one JSON object per line, configured from configs/logging.toml.

`JsonFormatter` writes the record's time, level, logger and message, every field passed in
`extra=` (the access line's request_id, route, status, latency_ms, user_id, tenant), the id of
the request being served when there is one, and the traceback of an exception.
"""

from __future__ import annotations

import json
import logging
import logging.config
import tomllib
from datetime import UTC, datetime
from typing import Any

from app.kit.request_context import current_request_id
from app.kit.settings import Settings

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_ATTRIBUTES = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime"}
)


class JsonFormatter(logging.Formatter):
    """A log record as one line of JSON."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES and not key.startswith("_"):
                entry[key] = value
        if entry.get("request_id") is None:
            request_id = current_request_id()
            if request_id is not None:
                entry["request_id"] = request_id
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def logging_config(settings: Settings) -> dict[str, Any]:
    """The dictConfig of `settings.log_config`, with `log_level` on the root logger and
    `log_format` choosing the console handler's formatter."""
    with settings.resolved_log_config.open("rb") as handle:
        config: dict[str, Any] = tomllib.load(handle)
    config.setdefault("root", {})["level"] = settings.log_level.upper()
    console = config.get("handlers", {}).get("console")
    if console is not None and settings.log_format in config.get("formatters", {}):
        console["formatter"] = settings.log_format
    return config


def configure_logging(settings: Settings) -> dict[str, Any]:
    """Apply the logging configuration to this process; returns it (uvicorn takes it too)."""
    config = logging_config(settings)
    logging.config.dictConfig(config)
    return config
