-- Articles, their chunks, and one embedding per chunk and model. HNSW indexes are per model
-- (a partial index on a cast to the model's dimension) and are created by the service at start-up,
-- since the model is configuration, not schema.
CREATE EXTENSION IF NOT EXISTS vector WITH SCHEMA public;

CREATE TABLE articles (
    slug text PRIMARY KEY,
    title text NOT NULL,
    body text NOT NULL,
    category text NOT NULL DEFAULT '',
    tags text[] NOT NULL DEFAULT '{}',
    language text NOT NULL DEFAULT 'en',
    url text NOT NULL DEFAULT '',
    version bigint NOT NULL DEFAULT 1,
    content_hash text NOT NULL,
    request_id uuid UNIQUE,
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX articles_category_idx ON articles (category, slug);
CREATE INDEX articles_language_idx ON articles (language, slug);
CREATE INDEX articles_tags_idx ON articles USING gin (tags);

CREATE TABLE chunks (
    id bigserial PRIMARY KEY,
    article_slug text NOT NULL REFERENCES articles (slug) ON DELETE CASCADE,
    chunk_index integer NOT NULL,
    heading text NOT NULL,
    text text NOT NULL,
    -- Full-text vector, built by the service with the text-search configuration of the article's language.
    tsv tsvector NOT NULL,
    UNIQUE (article_slug, chunk_index)
);
CREATE INDEX chunks_tsv_idx ON chunks USING gin (tsv);

CREATE TABLE chunk_embeddings (
    chunk_id bigint NOT NULL REFERENCES chunks (id) ON DELETE CASCADE,
    model text NOT NULL,
    dimension integer NOT NULL CHECK (dimension > 0),
    embedding public.vector NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (chunk_id, model)
);
CREATE INDEX chunk_embeddings_model_idx ON chunk_embeddings (model);
