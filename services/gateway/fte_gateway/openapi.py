"""The OpenAPI 3.1 description of the gateway's HTTP API, served at /openapi.json."""

from __future__ import annotations

from typing import Any

from fte_gateway.forms import CATEGORIES, MESSAGE_MAX, MESSAGE_MIN, PRIORITIES

_ERROR: dict[str, Any] = {"type": "object", "properties": {"error": {"type": "string"}, "message": {"type": "string"}}}
_TWIML = {"text/xml": {"schema": {"type": "string"}}}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _resp(description: str, content: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description, **extra}
    if content:
        out["content"] = content
    return out


_COMMON = {
    "413": _resp("Request body too large.", _json(_ERROR)),
    "503": _resp("Kafka (or Gmail) unavailable: nothing was accepted, retry later.", _json(_ERROR)),
}

_FORM = {
    "type": "object",
    "required": ["name", "email", "subject", "message"],
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 200},
        "email": {"type": "string", "format": "email", "maxLength": 254},
        "phone": {"type": "string", "maxLength": 24, "description": "Optional, with country code."},
        "subject": {"type": "string", "minLength": 1, "maxLength": 200},
        "category": {"type": "string", "enum": list(CATEGORIES), "default": "general"},
        "priority": {"type": "string", "enum": list(PRIORITIES), "default": "medium"},
        "message": {"type": "string", "minLength": MESSAGE_MIN, "maxLength": MESSAGE_MAX},
        "request_id": {
            "type": "string",
            "pattern": "^[A-Za-z0-9-]{8,64}$",
            "description": "Idempotency key chosen by the client; a resubmission gets the same reference.",
        },
        "website": {"type": "string", "description": "Honeypot: leave empty."},
    },
}

_TWILIO_INBOUND = {
    "type": "object",
    "required": ["MessageSid", "From"],
    "properties": {
        "MessageSid": {"type": "string"},
        "From": {"type": "string", "example": "whatsapp:+14155550100"},
        "To": {"type": "string"},
        "Body": {"type": "string"},
        "WaId": {"type": "string"},
        "ProfileName": {"type": "string"},
        "NumMedia": {"type": "string"},
    },
}
_TWILIO_STATUS = {
    "type": "object",
    "required": ["MessageSid", "MessageStatus"],
    "properties": {
        "MessageSid": {"type": "string"},
        "MessageStatus": {"type": "string"},
        "ErrorCode": {"type": "string"},
        "ErrorMessage": {"type": "string"},
    },
}
_SIGNATURE = {
    "name": "X-Twilio-Signature",
    "in": "header",
    "required": True,
    "schema": {"type": "string"},
    "description": "Twilio's HMAC-SHA1 signature of the public URL and the form parameters.",
}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "fte gateway",
        "version": "1.0.0",
        "description": "Webhooks of Gmail (Pub/Sub push), Twilio WhatsApp and the web support form. Accepted "
        "messages are published to Kafka before the request is answered.",
    },
    "components": {
        "securitySchemes": {
            "pubsubOidc": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
        }
    },
    "paths": {
        "/healthz": {"get": {"summary": "Liveness", "responses": {"200": _resp("Alive.", _json(_ERROR))}}},
        "/readyz": {
            "get": {
                "summary": "Readiness: connected to Kafka",
                "responses": {"200": _resp("Ready."), "503": _resp("Kafka unavailable.")},
            }
        },
        "/webhooks/gmail": {
            "post": {
                "summary": "Gmail push notification (Pub/Sub push with an OIDC token)",
                "security": [{"pubsubOidc": []}],
                "requestBody": {
                    "required": True,
                    "content": _json(
                        {
                            "type": "object",
                            "required": ["message"],
                            "properties": {
                                "message": {
                                    "type": "object",
                                    "required": ["data"],
                                    "properties": {
                                        "data": {"type": "string", "description": "base64 JSON"},
                                        "messageId": {"type": "string"},
                                        "publishTime": {"type": "string"},
                                    },
                                },
                                "subscription": {"type": "string"},
                            },
                        }
                    ),
                },
                "responses": {
                    "204": _resp("New messages published (or none)."),
                    "400": _resp("Not a Pub/Sub push body.", _json(_ERROR)),
                    "401": _resp("Missing or invalid token.", _json(_ERROR)),
                    "403": _resp("Token of another caller.", _json(_ERROR)),
                    "404": _resp("Gmail is not enabled.", _json(_ERROR)),
                    **_COMMON,
                },
            }
        },
        "/webhooks/whatsapp": {
            "post": {
                "summary": "Twilio WhatsApp inbound message",
                "parameters": [_SIGNATURE],
                "requestBody": {
                    "required": True,
                    "content": {"application/x-www-form-urlencoded": {"schema": _TWILIO_INBOUND}},
                },
                "responses": {
                    "200": _resp("Published; empty TwiML.", _TWIML),
                    "400": _resp("Signed but malformed.", _json(_ERROR)),
                    "403": _resp("Invalid signature.", _json(_ERROR)),
                    "415": _resp("Not form-encoded.", _json(_ERROR)),
                    **_COMMON,
                },
            }
        },
        "/webhooks/whatsapp/status": {
            "post": {
                "summary": "Twilio message status callback",
                "parameters": [_SIGNATURE],
                "requestBody": {
                    "required": True,
                    "content": {"application/x-www-form-urlencoded": {"schema": _TWILIO_STATUS}},
                },
                "responses": {
                    "200": _resp("Published (or ignored); empty TwiML.", _TWIML),
                    "400": _resp("Signed but malformed.", _json(_ERROR)),
                    "403": _resp("Invalid signature.", _json(_ERROR)),
                    "415": _resp("Not form-encoded.", _json(_ERROR)),
                    **_COMMON,
                },
            }
        },
        "/support": {
            "get": {
                "summary": "The support form page (embeddable)",
                "responses": {"200": _resp("HTML page.", {"text/html": {"schema": {"type": "string"}}})},
            }
        },
        "/support/submit": {
            "post": {
                "summary": "Submit the support form",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": _FORM},
                        "application/x-www-form-urlencoded": {"schema": _FORM},
                    },
                },
                "responses": {
                    "202": _resp(
                        "Accepted and published.",
                        _json(
                            {
                                "type": "object",
                                "properties": {"reference": {"type": "string"}, "status_url": {"type": "string"}},
                            }
                        ),
                    ),
                    "422": _resp(
                        "Field errors.",
                        _json({**_ERROR, "properties": {**_ERROR["properties"], "fields": {"type": "object"}}}),
                    ),
                    "429": _resp("Too many submissions from this client.", _json(_ERROR)),
                    **_COMMON,
                },
            }
        },
        "/support/ticket/{reference}": {
            "get": {
                "summary": "Ticket status page (HTML, or JSON with Accept: application/json)",
                "parameters": [{"name": "reference", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {
                    "200": _resp("Status and conversation.", {"text/html": {"schema": {"type": "string"}}}),
                    "404": _resp("No such reference."),
                    "503": _resp("Ticket service unavailable."),
                },
            }
        },
        "/support/ticket/{reference}/reply": {
            "post": {
                "summary": "A reply typed on the status page (e.g. the one-time code sent back), added to the ticket",
                "parameters": [{"name": "reference", "in": "path", "required": True, "schema": {"type": "string"}}],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["message"],
                                "properties": {"message": {"type": "string", "minLength": 1, "maxLength": 5000}},
                            }
                        }
                    },
                },
                "responses": {
                    "202": _resp("Accepted for the agent."),
                    "404": _resp("No such reference."),
                    "422": _resp("Invalid reply."),
                    "429": _resp("Rate limited."),
                    "503": _resp("Unavailable."),
                },
            }
        },
    },
}
