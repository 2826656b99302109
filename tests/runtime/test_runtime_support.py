"""Redaction, page tokens, resource names."""

from __future__ import annotations

import json
import logging

import pytest
from fte_runtime.errors import InvalidArgument
from fte_runtime.logs import JsonFormatter, redact
from fte_runtime.names import parse_name
from fte_runtime.pagination import decode_token, encode_token, page_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("from Jane.Doe+x@Example.co.uk today", "from [email] today"),
        ("call +1 (415) 555-0100 now", "call [phone] now"),
        ("whatsapp:+447700900123", "whatsapp:[phone]"),
        ("ticket T-1234 took 250 ms", "ticket T-1234 took 250 ms"),
        ("connect to 127.0.0.1:5432 failed", "connect to 127.0.0.1:5432 failed"),
        ("peer 10.244.1.17 reset", "peer 10.244.1.17 reset"),
        ("at 2026-12-02T07:45:21.123 and 2026-12-02 07:45", "at 2026-12-02T07:45:21.123 and 2026-12-02 07:45"),
        ("call 555.123.4567 or +49.170.123.456", "call [phone] or [phone]"),
        ("number 2026-12-02 5550100", "number [phone]"),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_json_log_lines_are_redacted() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "sent to %s", ("ann@example.com",), None)
    record.recipient = "+14155550100"
    line = json.loads(JsonFormatter("svc").format(record))
    assert line["message"] == "sent to [email]"
    assert line["recipient"] == "[phone]"
    assert line["service"] == "svc"


def test_page_tokens_round_trip_and_bind_to_filters() -> None:
    token = encode_token({"after": "abc"}, {"category": "billing"})
    assert decode_token(token, {"category": "billing"}) == {"after": "abc"}
    assert decode_token("", {"category": "billing"}) is None
    with pytest.raises(InvalidArgument, match="different filters"):
        decode_token(token, {"category": "api"})
    with pytest.raises(InvalidArgument, match="not valid"):
        decode_token("%%%garbage", None)


def test_page_size_defaults_and_clamps() -> None:
    assert page_size(0) == 20
    assert page_size(1000) == 100
    with pytest.raises(InvalidArgument):
        page_size(-1)


def test_parse_name() -> None:
    assert parse_name("articles/reset-password", "articles") == "reset-password"
    for bad in ("reset-password", "articles/", "articles/a/b", "customers/x"):
        with pytest.raises(InvalidArgument):
            parse_name(bad, "articles")
