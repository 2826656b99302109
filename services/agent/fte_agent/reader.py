"""The learned reading of a message: its intent (an escalation reason or what else a support inbox
gets) and its tone, from classifiers trained on the labeled corpus in data/intent_corpus.jsonl.

Two stages over the same character n-grams (typos, shorthand, words of every language):
- fast: with the MiniLM sentence embedding (about 2 ms). English messages it reads with
  confidence end here;
- deep: with the multilingual e5 embedding (about 30 ms), which places a Spanish or German
  sentence next to its English meaning. Every other message is read by it.
Each stage has two logistic regressions (scikit-learn): intent and tone. The corpus vectors and
the fitted stages are computed once and kept in a cache folder when one is given (`python -m
fte_agent train` fills it, e.g. at image build time), keyed by the corpus, this module's code and
the scikit-learn version.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.resources
import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import joblib
import numpy as np
import numpy.typing as npt
import sklearn
from fte_runtime.embeddings import LocalMiniLM, MultilingualE5, Vector
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from fte_agent import reasons

# What a support inbox gets besides escalations; `question` goes to the knowledge base.
INTENTS = ("question", "thanks", "greeting", "follow_up", "unclear", "empty")
TONES = {"very_negative": -1.0, "negative": -0.5, "neutral": 0.0, "positive": 0.6}
REGULARISATION = 32.0
# Weight of each embedding block against the (unit-length) n-gram block, per stage.
FAST_WEIGHT = 1.0
DEEP_WEIGHT = 3.0
# Below this probability the fast stage hands an English message to the deep one (cross-
# validated on the corpus: the deep stage's accuracy with about a fifth of English messages).
FAST_CONFIDENCE = 0.7


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
    # The best labels with their probabilities, for staff and debugging.
    ranked: tuple[tuple[str, float], ...]
    sentiment: float
    tone: str
    stage: str
    # The embeddings of the text computed on the way, by model name: the search reuses them.
    vectors: dict[str, Vector] = field(default_factory=dict)


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
    """One stage: the fitted n-gram vectoriser and the intent and tone classifiers."""

    def __init__(
        self,
        texts: Sequence[str],
        vectors: Sequence[Vector],
        intents: Sequence[str],
        tones: Sequence[str],
        *,
        weight: float = FAST_WEIGHT,
        stage: str = "fast",
    ) -> None:
        self.weight = weight
        self.stage = stage
        self.ngrams = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=2, sublinear_tf=True)
        self.ngrams.fit(texts)
        x = self.features(texts, vectors)
        self.intent = LogisticRegression(C=REGULARISATION, max_iter=3000)
        self.intent.fit(x, list(intents))
        self.tone = LogisticRegression(C=REGULARISATION / 2, max_iter=3000, class_weight="balanced")
        self.tone.fit(x, list(tones))
        self._tone_values = np.array([TONES[str(c)] for c in self.tone.classes_], dtype=np.float64)
        # Reading one message through predict_proba is mostly input validation (about 0.7 ms a
        # call); the two multinomial models are one linear map, split into n-gram and embedding
        # columns, followed by a softmax per model (test_agent_reader checks it is the same).
        if len(self.intent.classes_) < 3 or len(self.tone.classes_) < 3:
            raise ValueError("the reader needs at least three intents and three tones")
        n = len(self.ngrams.vocabulary_)
        weights = np.vstack([self.intent.coef_, self.tone.coef_])
        self._ngram_weights = sparse.csr_matrix(weights[:, :n].T)
        self._vector_weights = np.ascontiguousarray(weights[:, n:].T * self.weight)
        self._bias = np.concatenate([self.intent.intercept_, self.tone.intercept_])
        self._split = len(self.intent.classes_)

    def features(self, texts: Sequence[str], vectors: Sequence[Vector]) -> Any:
        dense = sparse.csr_matrix(np.vstack(vectors).astype(np.float64) * self.weight)
        return sparse.hstack([self.ngrams.transform(texts), dense], format="csr")

    def probabilities(self, text: str, vector: Vector) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """The intent and tone probabilities, in the order of the models' `classes_`."""
        logits = (self.ngrams.transform([text]) @ self._ngram_weights).toarray()[0]
        logits += vector.astype(np.float64) @ self._vector_weights + self._bias
        return _softmax(logits[: self._split]), _softmax(logits[self._split :])

    def read(self, text: str, vector: Vector) -> Reading:
        probabilities, tone_p = self.probabilities(text, vector)
        order = np.argsort(-probabilities)
        ranked = tuple((str(self.intent.classes_[i]), float(probabilities[i])) for i in order[:3])
        sentiment = float(np.clip(tone_p @ self._tone_values, -1.0, 1.0))
        tone = str(self.tone.classes_[int(np.argmax(tone_p))])
        return Reading(ranked[0][0], ranked[0][1], ranked, sentiment, tone, self.stage)


def _softmax(logits: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    e = np.exp(logits - logits.max())
    out: npt.NDArray[np.float64] = e / e.sum()
    return out


class Reader:
    """Both stages and the two embedding models they read with."""

    def __init__(self, fast_embedder: LocalMiniLM, deep_embedder: MultilingualE5, fast: Model, deep: Model) -> None:
        self.fast_embedder = fast_embedder
        self.deep_embedder = deep_embedder
        self.fast = fast
        self.deep = deep

    async def read(self, text: str, language: str) -> Reading:
        vectors: dict[str, Vector] = {}
        if language == "en":
            (vectors[self.fast_embedder.model],) = await self.fast_embedder.embed([text])
            reading = self.fast.read(text, vectors[self.fast_embedder.model])
            if reading.score >= FAST_CONFIDENCE:
                return replace(reading, vectors=vectors)
        (vectors[self.deep_embedder.model],) = await self.deep_embedder.query([text])
        return replace(self.deep.read(text, vectors[self.deep_embedder.model]), vectors=vectors)


T = TypeVar("T")


def _cached(
    path: Path, compute: Callable[[], T], load: Callable[[Path], T | None], save: Callable[[T, Path], None]
) -> T:
    """`compute()`, kept in `path`: read from there when it holds it. A baked, read-only cache (an
    image's) is only read; processes starting together compute once, the others wait for the file."""
    found = load(path) if path.exists() else None
    if found is not None:
        return found
    path.parent.mkdir(parents=True, exist_ok=True)
    with (path.parent / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = load(path) if path.exists() else None
        if found is not None:
            return found
        value = compute()
        partial = path.with_name(f".{path.name}.partial")
        save(value, partial)
        partial.replace(path)
        return value


def cached_vectors(
    cache_dir: Path | None, name: str, texts: Sequence[str], embed: Callable[[Sequence[str]], list[Vector]]
) -> list[Vector]:
    """The vectors of `texts` by one model, from the cache folder when it holds them."""
    if cache_dir is None:
        return embed(texts)
    digest = hashlib.sha256("\x1e".join(texts).encode()).hexdigest()[:24]

    def load(path: Path) -> list[Vector] | None:
        matrix = np.load(path)
        return list(matrix.astype(np.float32)) if matrix.shape[0] == len(texts) else None

    def save(vectors: list[Vector], path: Path) -> None:
        with path.open("wb") as out:
            np.save(out, np.vstack(vectors).astype(np.float32))

    return _cached(cache_dir / f"{name}-{digest}.npy", lambda: embed(texts), load, save)


def cached_model(cache_dir: Path | None, stage: str, fit: Callable[[], Model], *inputs: Sequence[str]) -> Model:
    """A fitted stage, from the cache folder when it holds one fitted on the same corpus with the
    same code and scikit-learn: fitting both stages costs about 40 s of CPU at every start."""
    if cache_dir is None:
        return fit()
    recipe = hashlib.sha256(Path(__file__).read_bytes() + sklearn.__version__.encode())
    for column in inputs:
        recipe.update("\x1e".join(column).encode() + b"\x1d")
    path = cache_dir / f"reader-{stage}-{recipe.hexdigest()[:24]}.joblib"

    def load(path: Path) -> Model | None:
        model = joblib.load(path)
        return model if isinstance(model, Model) else None

    def save(model: Model, path: Path) -> None:
        joblib.dump(model, path)

    return _cached(path, fit, load, save)


_lock = threading.Lock()
_trained: dict[tuple[str, str], Reader] = {}
_models: dict[str, Any] = {}


def shared_minilm() -> LocalMiniLM:
    """One MiniLM per process (about 290 MB), shared by every reader."""
    with _lock:
        if "minilm" not in _models:
            _models["minilm"] = LocalMiniLM(threads=1)
        model: LocalMiniLM = _models["minilm"]
        return model


def shared_e5() -> MultilingualE5:
    with _lock:
        if "e5" not in _models:
            _models["e5"] = MultilingualE5()
        model: MultilingualE5 = _models["e5"]
        return model


def fit(examples: Sequence[Example], cache_dir: Path | None = None) -> Reader:
    fast_embedder, deep_embedder = shared_minilm(), shared_e5()
    texts = [e.text for e in examples]
    intents = [e.label for e in examples]
    tones = [e.tone for e in examples]
    fast_vectors = cached_vectors(cache_dir, fast_embedder.model, texts, fast_embedder.embed_sync)
    deep_vectors = cached_vectors(cache_dir, deep_embedder.model, texts, deep_embedder.query_sync)
    inputs = (texts, intents, tones)
    return Reader(
        fast_embedder,
        deep_embedder,
        cached_model(
            cache_dir,
            fast_embedder.model,
            lambda: Model(texts, fast_vectors, intents, tones, weight=FAST_WEIGHT, stage="fast"),
            *inputs,
        ),
        cached_model(
            cache_dir,
            deep_embedder.model,
            lambda: Model(texts, deep_vectors, intents, tones, weight=DEEP_WEIGHT, stage="deep"),
            *inputs,
        ),
    )


def trained(cache_dir: Path | None = None, corpus: str | None = None) -> Reader:
    """The reader trained on `corpus` (the packaged one by default), once per process."""
    corpus = corpus_text() if corpus is None else corpus
    key = (hashlib.sha256(corpus.encode()).hexdigest(), str(cache_dir))
    reader = _trained.get(key)
    if reader is None:
        reader = fit(parse_corpus(corpus), cache_dir)
        with _lock:
            _trained[key] = reader
    return reader
