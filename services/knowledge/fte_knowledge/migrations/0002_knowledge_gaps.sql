-- Knowledge gaps: customer questions answered with low confidence or not at all, grouped by
-- similar questions. A group keeps the embedding of its first question; a new gap joins the group
-- whose first question is the most similar (cosine, same model) if it is similar enough, or opens
-- a new group. No customer identity is stored (the service does not follow customer erasures).
CREATE TABLE gap_groups (
    id bigserial PRIMARY KEY,
    model text NOT NULL,
    embedding public.vector NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX gap_groups_model_idx ON gap_groups (model);

CREATE TABLE gaps (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    group_id bigint NOT NULL REFERENCES gap_groups (id) ON DELETE CASCADE,
    question text NOT NULL,
    language text NOT NULL DEFAULT '',
    channel integer NOT NULL DEFAULT 0,
    outcome smallint NOT NULL CHECK (outcome > 0),
    -- [{"article": "articles/...", "score": 0.41}, ...], best first.
    candidates jsonb NOT NULL DEFAULT '[]',
    model text NOT NULL,
    embedding public.vector NOT NULL,
    request_id text UNIQUE,
    create_time timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX gaps_group_idx ON gaps (group_id, create_time DESC, id DESC);
CREATE INDEX gaps_create_time_idx ON gaps (create_time);
