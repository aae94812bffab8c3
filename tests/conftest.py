"""Fixtures for every test package here come from the `memstack.testing` plugin, loaded by the
repository's root conftest.py: `stack`, `settings` and `tenant_id`, plus the options
--backend, --memstack-home and --keep-stack."""
