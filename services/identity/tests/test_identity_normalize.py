"""Normalisation of each identifier kind, without a server."""

from __future__ import annotations

import pytest
from fte_identity.normalize import InvalidIdentifier, Kind, normalize

EMAIL, PHONE, WHATSAPP, BSUID = (
    Kind.IDENTIFIER_KIND_EMAIL,
    Kind.IDENTIFIER_KIND_PHONE,
    Kind.IDENTIFIER_KIND_WHATSAPP,
    Kind.IDENTIFIER_KIND_WHATSAPP_BSUID,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Alice.Smith@Example.COM", "alice.smith@example.com"),
        ("  alice.smith@example.com\t", "alice.smith@example.com"),
        ("mailto:Bob@Example.org", "bob@example.org"),
        ("Priya+Support@Mail.io", "priya+support@mail.io"),
        ("STRASSE@BEISPIEL.DE", "strasse@beispiel.de"),
    ],
)
def test_email_is_trimmed_and_case_folded_and_raw_kept(raw: str, expected: str) -> None:
    result = normalize(EMAIL, raw, "US")
    assert result.value == expected
    assert result.raw_value == raw


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("+1 (415) 555-0142", "US", "+14155550142"),
        ("(415) 555-0142", "US", "+14155550142"),
        ("415.555.0142", "US", "+14155550142"),
        ("1-415-555-0142", "US", "+14155550142"),
        ("07400 123456", "GB", "+447400123456"),
        ("0044 7400 123456", "US", "+447400123456"),
        ("+44 (0) 7400 123456", "US", "+447400123456"),
        ("030 901820", "DE", "+4930901820"),
    ],
)
def test_phone_becomes_e164_with_the_default_region(raw: str, region: str, expected: str) -> None:
    assert normalize(PHONE, raw, region).value == expected


@pytest.mark.parametrize(
    "raw",
    ["whatsapp:+14155550142", "WhatsApp: +1 415 555 0142", "whatsapp:(415) 555-0142", "+1 415-555-0142"],
)
def test_whatsapp_sender_is_prefixed_e164(raw: str) -> None:
    assert normalize(WHATSAPP, raw, "US").value == "whatsapp:+14155550142"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("US.13491208655302741918", "US.13491208655302741918"),
        ("whatsapp:US.13491208655302741918", "US.13491208655302741918"),
        (" us.13491208655302741918 ", "US.13491208655302741918"),
        ("IT.9f3kA0b7Zq1x", "IT.9f3kA0b7Zq1x"),
    ],
)
def test_bsuid_keeps_its_id_and_upper_cases_the_country(raw: str, expected: str) -> None:
    assert normalize(BSUID, raw, "US").value == expected


@pytest.mark.parametrize(
    ("kind", "raw", "reason"),
    [
        (EMAIL, "not-an-email", "INVALID_EMAIL"),
        (EMAIL, "a@b", "INVALID_EMAIL"),
        (EMAIL, "two@@example.com", "INVALID_EMAIL"),
        (EMAIL, "spa ce@example.com", "INVALID_EMAIL"),
        (EMAIL, "   ", "IDENTIFIER_REQUIRED"),
        (EMAIL, "a" * 310 + "@example.com", "IDENTIFIER_TOO_LONG"),
        (PHONE, "12", "INVALID_PHONE"),
        (PHONE, "call me maybe", "INVALID_PHONE"),
        (PHONE, "+1 415 555 01", "INVALID_PHONE"),
        (WHATSAPP, "whatsapp:hello", "INVALID_PHONE"),
        (BSUID, "13491208655302741918", "INVALID_BSUID"),
        (BSUID, "USA.123", "INVALID_BSUID"),
        (0, "x@example.com", "UNKNOWN_IDENTIFIER_KIND"),
        (99, "x@example.com", "UNKNOWN_IDENTIFIER_KIND"),
    ],
)
def test_malformed_values_are_rejected_with_a_reason(kind: int, raw: str, reason: str) -> None:
    with pytest.raises(InvalidIdentifier) as info:
        normalize(kind, raw, "US")
    assert info.value.reason == reason
    # The message never echoes the value (it may end up in a log line or an error shown to staff).
    if raw.strip():
        assert raw.strip() not in info.value.message
