# The fixtures that put every suite (tests/, benchmarks/) on a real data tier.
pytest_plugins = ["memstack.testing"]
