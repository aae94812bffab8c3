"""`python -m memory_core.migrations`: apply pending migrations to Postgres and Neo4j, with the
stores named by the environment (REDIS_URL, POSTGRES_URL, NEO4J_*); prints what was applied."""

import argparse
import asyncio
import json
import logging

from ..settings import Settings
from . import migrate

if __name__ == "__main__":
    # No options: the parser only answers --help and refuses anything else before a store is touched.
    argparse.ArgumentParser(prog="python -m memory_core.migrations", description=__doc__).parse_args()
    logging.basicConfig(level=logging.INFO)
    print(json.dumps(asyncio.run(migrate(Settings()))))
