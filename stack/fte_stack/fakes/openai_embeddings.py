"""A local OpenAI-compatible embeddings server (`POST /v1/embeddings`), so the real `openai` client
runs in tests and in the local stack without a model or the internet.

Vectors are deterministic feature hashes of the input's words (and word pairs), L2-normalised:
the same text always gets the same vector, and texts sharing words get similar vectors, so a
search over them behaves sensibly. `dimensions` in the request sets the size (else the model's
default: 1536, or 3072 for names containing "large"). Both `encoding_format` values are served.

Every request body is kept (`requests`, GET /_admin/requests); `fail_next(n, status)` makes the
next n calls fail with that HTTP status and `delay_next(n, seconds)` delays the next n answers.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import itertools
import re
from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from fte_stack.fakes._http import serve_until_interrupted
from fte_stack.fakes._openai import FakeOpenAIEndpoint

_WORD = re.compile(r"[^\W_]+")


def fake_embedding(text: str, dimension: int) -> list[float]:
    """The deterministic vector of `text`."""
    vector = np.zeros(dimension, dtype=np.float64)
    words = _WORD.findall(text.lower())
    features = words + [f"{a} {b}" for a, b in itertools.pairwise(words)]
    for feature in features or [text]:
        digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
        value = int.from_bytes(digest, "little")
        sign = 1.0 if value & 1 else -1.0
        vector[(value >> 1) % dimension] += sign
    norm = float(np.linalg.norm(vector))
    if norm == 0.0:
        vector[0] = 1.0
        norm = 1.0
    return [float(x) for x in vector / norm]


def _default_dimension(model: str) -> int:
    return 3072 if "large" in model else 1536


class FakeOpenAIEmbeddings(FakeOpenAIEndpoint):
    def __init__(self, port: int = 0) -> None:
        super().__init__([Route("/v1/embeddings", self._embeddings, methods=["POST"])], port=port)
        self._delays: list[float] = []

    def delay_next(self, count: int, seconds: float) -> None:
        self._delays.extend([seconds] * count)

    async def _embeddings(self, request: Request) -> Response:
        if self._delays:
            await asyncio.sleep(self._delays.pop(0))
        body, failure = await self._take(request)
        if failure is not None:
            return failure
        model = str(body.get("model") or "")
        raw = body.get("input")
        inputs = [raw] if isinstance(raw, str) else raw
        if not model or not isinstance(inputs, list) or not inputs or not all(isinstance(t, str) for t in inputs):
            return JSONResponse(
                {"error": {"message": "model and input (a string or a list of strings) are required"}},
                status_code=400,
            )
        dimension = int(body.get("dimensions") or _default_dimension(model))
        if not 1 <= dimension <= 16000:
            return JSONResponse({"error": {"message": "dimensions out of range"}}, status_code=400)
        encoding = body.get("encoding_format") or "float"
        data = []
        for index, text in enumerate(inputs):
            vector = fake_embedding(text, dimension)
            embedding: Any = vector
            if encoding == "base64":
                embedding = base64.b64encode(np.asarray(vector, dtype=np.float32).tobytes()).decode()
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        tokens = sum(len(_WORD.findall(t)) for t in inputs)
        return JSONResponse(
            {"object": "list", "model": model, "data": data, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
        )


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve a local OpenAI-compatible embeddings endpoint.")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()

    serve_until_interrupted(lambda: FakeOpenAIEmbeddings(args.port), "embeddings")


if __name__ == "__main__":
    main()
