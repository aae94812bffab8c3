"""Backup sets, restores, point-in-time recovery and the disaster-recovery drill of the local stack.

The story, the same as on Kubernetes: Postgres is the source of truth, recoverable to any
moment from a base backup plus its archived WAL; Neo4j is a projection, rebuilt from Postgres
after a restore rather than backed up; Redis is working memory, back from its snapshot or from
its append-only file, which lives beside the WAL archive.
"""
