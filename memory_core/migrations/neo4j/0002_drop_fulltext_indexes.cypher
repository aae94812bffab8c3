// The fulltext indexes of 0001 are dropped: text search runs in Postgres (the source of truth)
// and no query reads them, while Lucene updated and reopened them at every commit that wrote a
// Fact or an Entity, which doubled the Neo4j CPU of projecting a fact.
DROP INDEX entity_search IF EXISTS;
DROP INDEX fact_search IF EXISTS;
