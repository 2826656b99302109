"""The article as the service sees it: validation of incoming fields, content hash, etag, proto."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, replace
from datetime import datetime

from fte.knowledge.v1 import knowledge_pb2
from fte_runtime.errors import Violations
from fte_runtime.names import make_name
from google.protobuf.timestamp_pb2 import Timestamp

COLLECTION = "articles"
MAX_BODY_BYTES = 1024 * 1024
MAX_TITLE_CHARS = 300
MAX_SLUG_CHARS = 120
MAX_TAGS = 30
MAX_TAG_CHARS = 50
MAX_CATEGORY_CHARS = 60
MAX_URL_CHARS = 2000
SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
TAG = re.compile(r"^[a-z0-9][a-z0-9_.+-]*$")
LANGUAGE = re.compile(r"^[a-z]{2,3}(?:-[A-Za-z0-9]{2,8})*$")
URL = re.compile(r"^https?://\S+$")
# Fields a client may change; `slug` is immutable.
UPDATABLE = ("title", "body", "category", "tags", "language", "url")


@dataclass(frozen=True, slots=True)
class ArticleFields:
    slug: str
    title: str
    body: str
    category: str = ""
    tags: tuple[str, ...] = ()
    language: str = "en"
    url: str = ""

    def content_hash(self) -> str:
        payload = [self.title, self.body, self.category, sorted(self.tags), self.language, self.url]
        return hashlib.sha256(json.dumps(payload, ensure_ascii=False).encode()).hexdigest()

    def same_text(self, other: ArticleFields) -> bool:
        """Whether the chunks (and so the embeddings) stay the same."""
        return (self.title, self.body, self.language) == (other.title, other.body, other.language)


@dataclass(frozen=True, slots=True)
class StoredArticle:
    fields: ArticleFields
    version: int
    content_hash: str
    create_time: datetime
    update_time: datetime

    @property
    def etag(self) -> str:
        return f"{self.version}-{self.content_hash[:12]}"

    @property
    def name(self) -> str:
        return make_name(COLLECTION, self.fields.slug)


def normalise_tags(tags: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for tag in tags:
        seen.setdefault(tag.strip().lower(), None)
    return tuple(t for t in seen if t)


def check_fields(fields: ArticleFields, v: Violations, prefix: str = "article") -> None:
    """Adds a violation for every field that is out of bounds."""
    if not fields.slug:
        v.add(f"{prefix}.slug", "is required")
    else:
        v.check(
            len(fields.slug) <= MAX_SLUG_CHARS and bool(SLUG.match(fields.slug)),
            f"{prefix}.slug",
            f"must be lower-case letters, digits and single hyphens, at most {MAX_SLUG_CHARS} characters",
        )
    v.check(bool(fields.title.strip()), f"{prefix}.title", "is required")
    v.check(len(fields.title) <= MAX_TITLE_CHARS, f"{prefix}.title", f"must be at most {MAX_TITLE_CHARS} characters")
    v.check(bool(fields.body.strip()), f"{prefix}.body", "is required")
    v.check(
        len(fields.body.encode()) <= MAX_BODY_BYTES, f"{prefix}.body", f"must be at most {MAX_BODY_BYTES} bytes (1 MiB)"
    )
    v.check(
        len(fields.category) <= MAX_CATEGORY_CHARS and (not fields.category or bool(SLUG.match(fields.category))),
        f"{prefix}.category",
        "must be lower-case letters, digits and hyphens",
    )
    v.check(len(fields.tags) <= MAX_TAGS, f"{prefix}.tags", f"at most {MAX_TAGS} tags")
    for tag in fields.tags:
        if len(tag) > MAX_TAG_CHARS or not TAG.match(tag):
            v.add(f"{prefix}.tags", f"tag {tag[:MAX_TAG_CHARS]!r} must be lower-case, without spaces")
            break
    v.check(
        bool(LANGUAGE.match(fields.language)), f"{prefix}.language", "must be a BCP 47 code such as 'en' or 'pt-BR'"
    )
    v.check(
        not fields.url or (len(fields.url) <= MAX_URL_CHARS and bool(URL.match(fields.url))),
        f"{prefix}.url",
        "must be an http(s) URL",
    )


def from_proto(msg: knowledge_pb2.Article) -> ArticleFields:
    return ArticleFields(
        slug=msg.slug.strip(),
        title=msg.title.strip(),
        body=msg.body,
        category=msg.category.strip().lower(),
        tags=normalise_tags(list(msg.tags)),
        language=msg.language.strip() or "en",
        url=msg.url.strip(),
    )


def merge(current: ArticleFields, msg: knowledge_pb2.Article, paths: list[str]) -> ArticleFields:
    """`current` with the fields named in `paths` taken from `msg` (already normalised)."""
    incoming = from_proto(msg)
    changes = {p: getattr(incoming, p) for p in paths}
    return replace(current, **changes)


def _timestamp(value: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def to_proto(article: StoredArticle) -> knowledge_pb2.Article:
    f = article.fields
    return knowledge_pb2.Article(
        name=article.name,
        slug=f.slug,
        title=f.title,
        body=f.body,
        category=f.category,
        tags=list(f.tags),
        language=f.language,
        url=f.url,
        version=article.version,
        etag=article.etag,
        content_hash=article.content_hash,
        create_time=_timestamp(article.create_time),
        update_time=_timestamp(article.update_time),
    )
