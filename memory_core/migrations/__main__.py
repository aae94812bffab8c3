"""`python -m memory_core.migrations`: apply pending migrations to Postgres and Neo4j."""

import asyncio
import json
import logging

from ..settings import Settings
from . import migrate

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    print(json.dumps(asyncio.run(migrate(Settings()))))
