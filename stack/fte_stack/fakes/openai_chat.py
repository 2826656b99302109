"""A local OpenAI-compatible chat-completions server that answers with tool calls, so the real
`openai` client and the agent's tool loop run without a model or the internet.

Two ways to answer:
- scripted: responses queued with `script([...])` (or POST /_admin/script) are returned in order,
  each `{"tool_calls": [{"name": ..., "arguments": {...}}]}` or `{"content": "..."}`;
- otherwise a small deterministic stand-in for a model: it searches the knowledge base with the
  customer's message, answers from the first result it gets back (title, a sentence, the link),
  escalates when the search found nothing, and stops once a reply or an escalation is made.

Every request body is kept (`requests`, GET /_admin/requests) for assertions; `fail_next(n, status)`
makes the next n calls fail with that HTTP status.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from fte_stack.fakes._http import serve_until_interrupted
from fte_stack.fakes._openai import FakeOpenAIEndpoint

_ids = itertools.count(1)


def _tool_call(name: str, arguments: dict[str, Any] | str) -> dict[str, Any]:
    args = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {"id": f"call_{next(_ids)}", "type": "function", "function": {"name": name, "arguments": args}}


def _customer_text(messages: list[dict[str, Any]]) -> str:
    for message in messages:
        if message.get("role") == "user":
            content = str(message.get("content") or "")
            match = re.search(r"<customer_message>(.*?)</customer_message>", content, re.S)
            return (match.group(1) if match else content).strip()
    return ""


def auto_reply(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The deterministic stand-in: search, then answer from the first hit or escalate."""
    called = [
        call["function"]["name"] for m in messages if m.get("role") == "assistant" for call in m.get("tool_calls") or []
    ]
    if "send_response" in called or "escalate_to_human" in called:
        return {"content": "Done."}
    if "search_knowledge_base" not in called:
        return {"tool_calls": [{"name": "search_knowledge_base", "arguments": {"query": _customer_text(messages)}}]}
    last_tool = next((m for m in reversed(messages) if m.get("role") == "tool"), None)
    results: list[dict[str, Any]] = []
    if last_tool is not None:
        try:
            results = json.loads(last_tool.get("content") or "{}").get("results", [])
        except (ValueError, AttributeError):
            results = []
    if not results:
        return {
            "tool_calls": [
                {"name": "escalate_to_human", "arguments": {"reason": "no_answer_found", "detail": "no results"}}
            ]
        }
    top = results[0]
    sentence = re.split(r"(?<=[.!?])\s+", " ".join(str(top.get("text", "")).split()))[0]
    text = f"{top.get('title', '')}: {sentence}\nMore: {top.get('url', '')}"
    return {"tool_calls": [{"name": "send_response", "arguments": {"text": text}}]}


class FakeOpenAIChat(FakeOpenAIEndpoint):
    def __init__(self, port: int = 0, model: str = "fake-model") -> None:
        super().__init__(
            [
                Route("/v1/chat/completions", self._completions, methods=["POST"]),
                Route("/_admin/script", self._admin_script, methods=["POST"]),
            ],
            port=port,
        )
        self.model = model
        self._script: list[dict[str, Any]] = []

    def script(self, responses: list[dict[str, Any]]) -> None:
        self._script.extend(responses)

    def _completion(self, step: dict[str, Any]) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": step.get("content")}
        finish = "stop"
        if step.get("tool_calls"):
            message["tool_calls"] = [_tool_call(c["name"], c.get("arguments", {})) for c in step["tool_calls"]]
            finish = "tool_calls"
        return {
            "id": f"chatcmpl-{next(_ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }

    async def _completions(self, request: Request) -> Response:
        body, failure = await self._take(request)
        if failure is not None:
            return failure
        step = self._script.pop(0) if self._script else auto_reply(body.get("messages", []))
        return JSONResponse(self._completion(step))

    async def _admin_script(self, request: Request) -> Response:
        self.script(list(await request.json()))
        return JSONResponse({"queued": len(self._script)})


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve a local OpenAI-compatible chat-completions endpoint.")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()

    serve_until_interrupted(lambda: FakeOpenAIChat(args.port), "chat completions")


if __name__ == "__main__":
    main()
