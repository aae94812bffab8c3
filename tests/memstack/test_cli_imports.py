"""The service image installs memstack without the operator extras, and its entry point is the CLI."""

import subprocess
import sys

# In the optional extras (capacity, load, dashboards, containers), not in the image's dependencies.
OPERATOR_ONLY = ("scipy", "matplotlib", "locust", "ruamel", "docker", "testcontainers", "grafana_foundation_sdk")

PROBE = f"""
import sys

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {OPERATOR_ONLY!r}:
            raise ImportError(f"{{name}} is not installed in the service image")

sys.meta_path.insert(0, Refuse())
from memstack.cli import app
from typer.main import get_command
print(sorted(get_command(app).commands))
"""


def test_the_cli_starts_without_the_operator_extras():
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "serve" in result.stdout and "capacity" in result.stdout
