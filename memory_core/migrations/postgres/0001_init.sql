-- memory_core schema v1. {{embedding_dim}} is substituted by the runner from the validated
-- integer setting, never from request data.

CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE conversations (
    tenant_id        text        NOT NULL,
    conversation_id  text        NOT NULL,
    user_id          text        NOT NULL,
    started_at       timestamptz NOT NULL DEFAULT now(),
    last_turn_at     timestamptz NOT NULL DEFAULT now(),
    next_turn_index  integer     NOT NULL DEFAULT 0,
    archived         boolean     NOT NULL DEFAULT false,
    PRIMARY KEY (tenant_id, conversation_id)
);
CREATE INDEX conversations_last_turn ON conversations USING brin (last_turn_at);

CREATE TABLE conversation_logs (
    id               bigserial   PRIMARY KEY,
    tenant_id        text        NOT NULL,
    user_id          text        NOT NULL,
    conversation_id  text        NOT NULL,
    turn_index       integer     NOT NULL CHECK (turn_index >= 0),
    turn_id          uuid        NOT NULL UNIQUE,
    "timestamp"      timestamptz NOT NULL DEFAULT now(),
    role             text        NOT NULL CHECK (role IN ('user', 'assistant', 'system', 'tool')),
    content          text        NOT NULL,
    content_hash     text        NOT NULL,
    token_count      integer,
    metadata         jsonb       NOT NULL DEFAULT '{}',
    embedding        vector({{embedding_dim}}) NOT NULL,
    expires_at       timestamptz,
    archived         boolean     NOT NULL DEFAULT false,
    UNIQUE (tenant_id, conversation_id, turn_index)
);
CREATE INDEX conversation_logs_timestamp ON conversation_logs USING brin ("timestamp");
CREATE INDEX conversation_logs_user_recent ON conversation_logs (tenant_id, user_id, "timestamp" DESC);
CREATE INDEX conversation_logs_embedding ON conversation_logs USING hnsw (embedding vector_cosine_ops);

-- Facts, entities, strategies, goals and reflections: one row each, searched by vector here;
-- the relationships between them live in the Neo4j projection.
CREATE TABLE memory_timeline (
    id               bigserial   PRIMARY KEY,
    tenant_id        text        NOT NULL,
    user_id          text        NOT NULL,
    item_id          uuid        NOT NULL UNIQUE,
    memory_type      text        NOT NULL CHECK (memory_type IN ('fact', 'entity', 'strategy', 'goal', 'reflection')),
    space            text,
    scope            text        GENERATED ALWAYS AS (coalesce('s:' || space, 'u:' || user_id)) STORED,
    natural_key      text,
    event_time       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    summary          text        NOT NULL,
    embedding        vector({{embedding_dim}}) NOT NULL,
    importance_score double precision NOT NULL DEFAULT 0.5 CHECK (importance_score BETWEEN 0 AND 1),
    priority         integer     NOT NULL DEFAULT 0,
    access_count     integer     NOT NULL DEFAULT 0,
    last_accessed    timestamptz,
    expires_at       timestamptz,
    archived         boolean     NOT NULL DEFAULT false,
    attributes       jsonb       NOT NULL DEFAULT '{}',
    UNIQUE (tenant_id, scope, memory_type, natural_key)
);
CREATE INDEX memory_timeline_time ON memory_timeline USING brin (event_time);
CREATE INDEX memory_timeline_scope ON memory_timeline (tenant_id, scope, memory_type);
CREATE INDEX memory_timeline_importance ON memory_timeline (importance_score DESC);
CREATE INDEX memory_timeline_embedding ON memory_timeline USING hnsw (embedding vector_cosine_ops);

CREATE TABLE tool_invocations (
    id               bigserial   PRIMARY KEY,
    tenant_id        text        NOT NULL,
    user_id          text        NOT NULL,
    conversation_id  text,
    turn_index       integer,
    "timestamp"      timestamptz NOT NULL DEFAULT now(),
    tool_name        text        NOT NULL,
    tool_input       jsonb       NOT NULL,
    tool_output      jsonb,
    success          boolean     NOT NULL,
    latency_ms       integer     NOT NULL CHECK (latency_ms >= 0),
    error_message    text
);
CREATE INDEX tool_invocations_conversation ON tool_invocations (tenant_id, conversation_id);
CREATE INDEX tool_invocations_name ON tool_invocations (tenant_id, tool_name);
CREATE INDEX tool_invocations_timestamp ON tool_invocations USING brin ("timestamp");

CREATE TABLE tool_stats (
    tenant_id        text        NOT NULL,
    tool_name        text        NOT NULL,
    usage_count      bigint      NOT NULL DEFAULT 0,
    success_count    bigint      NOT NULL DEFAULT 0,
    total_latency_ms bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, tool_name)
);

CREATE TABLE user_profiles (
    tenant_id            text        NOT NULL,
    user_id              text        NOT NULL,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    preferences          jsonb       NOT NULL DEFAULT '{}',
    expertise_areas      jsonb       NOT NULL DEFAULT '[]',
    communication_style  jsonb       NOT NULL DEFAULT '{}',
    metadata             jsonb       NOT NULL DEFAULT '{}',
    PRIMARY KEY (tenant_id, user_id)
);

-- Entity relationships and the entities each fact is ABOUT, as rows: Postgres is the source of
-- truth for them (Neo4j holds their projection), and retrieval expands the graph here, inside
-- the transaction that already searches the items, because a Bolt round trip to Neo4j alone
-- exceeded the `remember` latency budget. Plain uuid columns, not jsonb: under row-level
-- security Postgres uses an index only for leakproof operators, which uuid equality is and
-- jsonb `?|` is not.
CREATE TABLE entity_relations (
    tenant_id   text        NOT NULL,
    source_id   uuid        NOT NULL,
    target_id   uuid        NOT NULL,
    rel_type    text        NOT NULL,
    weight      double precision NOT NULL DEFAULT 1.0,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, source_id, target_id, rel_type)
);
CREATE INDEX entity_relations_target ON entity_relations (tenant_id, target_id);

CREATE TABLE fact_entities (
    tenant_id  text NOT NULL,
    entity_id  uuid NOT NULL,
    fact_id    uuid NOT NULL,
    PRIMARY KEY (tenant_id, entity_id, fact_id)
);
CREATE INDEX fact_entities_fact ON fact_entities (tenant_id, fact_id);

-- Shared memory between agents of one tenant (seed 002): explicit spaces with grants.
CREATE TABLE memory_spaces (
    tenant_id    text        NOT NULL,
    space        text        NOT NULL,
    owner_agent  text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, space)
);
CREATE TABLE space_grants (
    tenant_id  text    NOT NULL,
    space      text    NOT NULL,
    agent_id   text    NOT NULL,
    can_read   boolean NOT NULL,
    can_write  boolean NOT NULL,
    PRIMARY KEY (tenant_id, space, agent_id),
    FOREIGN KEY (tenant_id, space) REFERENCES memory_spaces (tenant_id, space) ON DELETE CASCADE
);
CREATE INDEX space_grants_agent ON space_grants (tenant_id, agent_id);

-- Graph projection events, written in the same transaction as the rows they project.
CREATE TABLE graph_outbox (
    id          bigserial   PRIMARY KEY,
    tenant_id   text        NOT NULL,
    event       text        NOT NULL,
    payload     jsonb       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    attempts    integer     NOT NULL DEFAULT 0,
    last_error  text
);

-- Row-level security, forced so that it binds the owning role the application connects as.
-- A transaction sees a tenant's rows only after `set_config('app.tenant_id', ...)`; the
-- worker's cross-tenant jobs say so explicitly with `app.maintenance = 'cross-tenant'`. It is
-- defence in depth behind the tenant filter every query carries, not a boundary against SQL
-- the application itself runs.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['conversations', 'conversation_logs', 'memory_timeline', 'tool_invocations',
                             'tool_stats', 'user_profiles', 'memory_spaces', 'space_grants', 'graph_outbox',
                             'entity_relations', 'fact_entities']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I'
            ' USING (tenant_id = current_setting(''app.tenant_id'', true)'
            '        OR current_setting(''app.maintenance'', true) = ''cross-tenant'')'
            ' WITH CHECK (tenant_id = current_setting(''app.tenant_id'', true)'
            '        OR current_setting(''app.maintenance'', true) = ''cross-tenant'')', t);
    END LOOP;
END $$;
