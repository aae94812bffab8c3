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


# The store drivers and memory_core (which brings them): a command that talks to a store imports
# them when it runs; `--help` and the refusals before any work do without (seconds on a cold cache).
STORE_MODULES = ("memory_core", "neo4j", "redis", "psycopg", "psycopg_pool", "numpy")

HELP = f"""
import sys
sys.argv = ["memstack", "--help"]
from memstack.cli import main
try:
    main()
except SystemExit as exc:
    assert not exc.code, exc.code
print(sorted({{m.split(".")[0] for m in sys.modules}} & set({STORE_MODULES!r})))
"""


def test_help_imports_no_store_driver_and_not_memory_core():
    result = subprocess.run([sys.executable, "-c", HELP], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


INTERRUPTED = """
import sys

class CtrlC:
    def find_spec(self, name, path=None, target=None):
        if name == "memstack.capacity.commands":
            raise KeyboardInterrupt

sys.meta_path.insert(0, CtrlC())
from memstack.cli import main
main()
"""


def test_ctrl_c_while_the_cli_loads_is_exit_130_without_a_traceback():
    result = subprocess.run([sys.executable, "-c", INTERRUPTED], capture_output=True, text=True, timeout=60)
    assert result.returncode == 130, result.stderr
    assert result.stderr == ""
