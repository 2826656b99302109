"""The learned reading of a message: its intent (an escalation reason or what else a support inbox
gets) and its tone, from a classifier trained on the labeled corpus in data/intent_corpus.jsonl.

Features: the sentence embedding of the shipped MiniLM model (meaning, paraphrases) next to
character n-grams (typos, shorthand, words of every supported language). Two logistic regressions
(scikit-learn) read them: one for the intent, one for the tone. Training takes a few seconds at
start-up and is cached per process; the corpus in the repository is the only source.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from fte_runtime.embeddings import LocalMiniLM, Vector
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from fte_agent import reasons

# What a support inbox gets besides escalations; `question` goes to the knowledge base.
INTENTS = ("question", "thanks", "greeting", "follow_up", "unclear", "empty")
TONES = {"very_negative": -1.0, "negative": -0.5, "neutral": 0.0, "positive": 0.6}
# Weight of the embedding block against the (unit-length) n-gram block.
EMBEDDING_WEIGHT = 1.0
REGULARISATION = 32.0


def labels() -> tuple[str, ...]:
    return (*reasons.learned(), *INTENTS)


@dataclass(frozen=True, slots=True)
class Example:
    text: str
    label: str
    language: str
    tone: str


@dataclass(frozen=True, slots=True)
class Reading:
    intent: str
    score: float
    # The next best labels with their probabilities, for staff and debugging.
    ranked: tuple[tuple[str, float], ...]
    sentiment: float
    tone: str


def corpus_text() -> str:
    return (importlib.resources.files("fte_agent") / "data" / "intent_corpus.jsonl").read_text("utf-8")


def parse_corpus(text: str) -> list[Example]:
    known = set(labels())
    out: list[Example] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        if row["label"] not in known or row.get("sentiment", "neutral") not in TONES:
            raise ValueError(f"intent corpus line {n}: unknown label or sentiment")
        body = f"{row.get('subject', '')}\n{row['text']}".strip()
        out.append(Example(body, row["label"], row.get("language", "en"), row.get("sentiment", "neutral")))
    return out


class Model:
    """The fitted vectoriser and the two classifiers."""

    def __init__(self, texts: Sequence[str], vectors: Sequence[Vector], intents: Sequence[str], tones: Sequence[str]):
        self.ngrams = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=2, sublinear_tf=True)
        self.ngrams.fit(texts)
        x = self.features(texts, vectors)
        self.intent = LogisticRegression(C=REGULARISATION, max_iter=3000, class_weight="balanced")
        self.intent.fit(x, list(intents))
        self.tone = LogisticRegression(C=REGULARISATION / 2, max_iter=3000, class_weight="balanced")
        self.tone.fit(x, list(tones))
        self._tone_values = np.array([TONES[str(c)] for c in self.tone.classes_], dtype=np.float64)

    def features(self, texts: Sequence[str], vectors: Sequence[Vector]) -> Any:
        dense = sparse.csr_matrix(np.vstack(vectors).astype(np.float64) * EMBEDDING_WEIGHT)
        return sparse.hstack([self.ngrams.transform(texts), dense], format="csr")

    def read(self, text: str, vector: Vector) -> Reading:
        x = self.features([text], [vector])
        probabilities: npt.NDArray[np.float64] = self.intent.predict_proba(x)[0]
        order = np.argsort(-probabilities)
        ranked = tuple((str(self.intent.classes_[i]), float(probabilities[i])) for i in order[:3])
        tone_p: npt.NDArray[np.float64] = self.tone.predict_proba(x)[0]
        sentiment = float(np.clip(tone_p @ self._tone_values, -1.0, 1.0))
        tone = str(self.tone.classes_[int(np.argmax(tone_p))])
        return Reading(ranked[0][0], ranked[0][1], ranked, sentiment, tone)


def fit(embedder: LocalMiniLM, examples: Sequence[Example]) -> Model:
    vectors = embedder.embed_sync([e.text for e in examples])
    return Model([e.text for e in examples], vectors, [e.label for e in examples], [e.tone for e in examples])


_lock = threading.Lock()
_fitted: dict[str, Model] = {}
_embedders: list[LocalMiniLM] = []


def shared_embedder() -> LocalMiniLM:
    """One MiniLM per process (about 290 MB), shared by every reader."""
    with _lock:
        if not _embedders:
            _embedders.append(LocalMiniLM(threads=1))
        return _embedders[0]


def trained(embedder: LocalMiniLM, corpus: str | None = None) -> Model:
    """The model trained on `corpus` (the packaged one by default), once per process."""
    corpus = corpus_text() if corpus is None else corpus
    key = hashlib.sha256(corpus.encode()).hexdigest()
    with _lock:
        model = _fitted.get(key)
        if model is None:
            model = fit(embedder, parse_corpus(corpus))
            _fitted[key] = model
        return model
