// memory_core graph schema v1. One statement per `;`-terminated block. {{embedding_dim}} is
// substituted by the runner from the validated integer setting.
CREATE CONSTRAINT conversation_key IF NOT EXISTS FOR (c:Conversation) REQUIRE (c.tenant_id, c.id) IS UNIQUE;
CREATE CONSTRAINT turn_id IF NOT EXISTS FOR (t:Turn) REQUIRE t.id IS UNIQUE;
CREATE CONSTRAINT entity_id IF NOT EXISTS FOR (e:Entity) REQUIRE e.id IS UNIQUE;
CREATE CONSTRAINT fact_id IF NOT EXISTS FOR (f:Fact) REQUIRE f.id IS UNIQUE;
CREATE CONSTRAINT goal_id IF NOT EXISTS FOR (g:Goal) REQUIRE g.id IS UNIQUE;
CREATE CONSTRAINT strategy_id IF NOT EXISTS FOR (s:Strategy) REQUIRE s.id IS UNIQUE;
CREATE CONSTRAINT reflection_id IF NOT EXISTS FOR (r:Reflection) REQUIRE r.id IS UNIQUE;
CREATE CONSTRAINT user_key IF NOT EXISTS FOR (u:User) REQUIRE (u.tenant_id, u.id) IS UNIQUE;
CREATE CONSTRAINT tool_key IF NOT EXISTS FOR (t:Tool) REQUIRE (t.tenant_id, t.name) IS UNIQUE;
CREATE INDEX turn_position IF NOT EXISTS FOR (t:Turn) ON (t.tenant_id, t.conversation_id, t.index);
CREATE INDEX turn_timestamp IF NOT EXISTS FOR (t:Turn) ON (t.timestamp);
CREATE INDEX entity_tenant IF NOT EXISTS FOR (e:Entity) ON (e.tenant_id, e.name);
CREATE INDEX entity_salience IF NOT EXISTS FOR (e:Entity) ON (e.salience);
CREATE INDEX fact_confidence IF NOT EXISTS FOR (f:Fact) ON (f.confidence);
CREATE INDEX goal_status IF NOT EXISTS FOR (g:Goal) ON (g.tenant_id, g.status);
CREATE FULLTEXT INDEX entity_search IF NOT EXISTS FOR (e:Entity) ON EACH [e.name, e.aliases_text, e.description];
CREATE FULLTEXT INDEX fact_search IF NOT EXISTS FOR (f:Fact) ON EACH [f.claim];
CREATE VECTOR INDEX entity_embeddings IF NOT EXISTS FOR (e:Entity) ON (e.embedding)
  OPTIONS {indexConfig: {`vector.dimensions`: {{embedding_dim}}, `vector.similarity_function`: 'cosine'}};
CREATE VECTOR INDEX strategy_embeddings IF NOT EXISTS FOR (s:Strategy) ON (s.embedding)
  OPTIONS {indexConfig: {`vector.dimensions`: {{embedding_dim}}, `vector.similarity_function`: 'cosine'}};
