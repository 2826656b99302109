"""The hot-path Twilio signature check agrees with the SDK."""

from __future__ import annotations

import urllib.parse

from fte_gateway.signing import FormParams, parse_urlencoded, signed
from twilio.request_validator import RequestValidator

TOKEN = "signing-test-token"
URL = "https://hooks.example.com/webhooks/whatsapp"


def test_signature_is_the_sdks() -> None:
    validator = RequestValidator(TOKEN)
    params = {"MessageSid": "SM1", "From": "whatsapp:+14155550100", "Body": "Hi & bye = 100%", "NumMedia": "0"}
    body = urllib.parse.urlencode(params)
    parsed = parse_urlencoded(body)
    assert isinstance(parsed, FormParams)
    assert validator.compute_signature(URL, parsed) == validator.compute_signature(URL, params)
    good = validator.compute_signature(URL, params)
    assert signed(validator, URL, parsed, good)
    # The SDK's port variants are still accepted: signed with an explicit :443, called without.
    assert signed(validator, URL, parsed, validator.compute_signature(URL.replace(".com/", ".com:443/"), params))
    assert not signed(validator, URL, parsed, good[:-2] + "xx")
    assert not signed(validator, URL, parse_urlencoded(body + "&Extra=1"), good)
    assert not signed(validator, URL, parsed, "é" * len(good))
