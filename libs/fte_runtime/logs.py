"""Structured JSON logging with the correlation id (and, with tracing on, the trace id) on every
line and personal data redacted.

Message bodies are never passed to the logger; emails and phone numbers that reach a log line
anyway (in an exception text, say) are masked by the redacting filter.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import traceback
from datetime import UTC, datetime
from typing import Any

from fte_runtime.context import correlation_id_var
from fte_runtime.tracing import current_ids

_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}")
# Seven or more digits with optional +, spaces, dots, dashes or parentheses: phone numbers,
# WhatsApp ids. IPv4 addresses (with a port) and ISO dates and times look the same to that
# pattern, so they are matched first and kept: an operator needs them, and they name nobody.
_PHONE = re.compile(
    r"(?P<keep>(?<![+\w.])\d{1,3}(?:\.\d{1,3}){3}(?::\d{1,5})?(?![\w.])"
    r"|(?<![+\w])\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?)?(?![\w])(?!\s*\d))"
    r"|(?<![\w])\+?\d[\d\s().\-]{5,}\d(?![\w])"
)

_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime", "taskName"}
)


def redact(text: str) -> str:
    """Mask email addresses and phone numbers."""
    return _PHONE.sub(_mask_phone, _EMAIL.sub("[email]", text))


def _mask_phone(match: re.Match[str]) -> str:
    return match.group() if match.group("keep") else "[phone]"


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        cid = correlation_id_var.get()
        if cid:
            entry["correlation_id"] = cid
        ids = current_ids()
        if ids is not None:
            entry["trace_id"], entry["span_id"] = ids
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = redact(value) if isinstance(value, str) else value
        if record.exc_info:
            entry["exception"] = redact("".join(traceback.format_exception(*record.exc_info)))
        return json.dumps(entry, default=str)


class PlainFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        cid = correlation_id_var.get()
        prefix = f"{record.levelname:<7} {record.name}"
        if cid:
            prefix += f" [{cid[:8]}]"
        ids = current_ids()
        if ids is not None:
            prefix += f" trace={ids[0]}"
        text = f"{prefix}: {redact(record.getMessage())}"
        if record.exc_info:
            text += "\n" + redact("".join(traceback.format_exception(*record.exc_info)))
        return text


def configure_logging(service: str, level: str = "INFO", json_lines: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service) if json_lines else PlainFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Third-party libraries are chatty at INFO.
    for noisy in ("aiokafka", "kafka", "asyncio", "grpc"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
