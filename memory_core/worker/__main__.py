"""`python -m memory_core.worker [--host H] [--port P]`: the same entry point as `memstack worker`.
Bad arguments or settings are one line on stderr and exit 2."""

import argparse
import sys
from typing import NoReturn

from pydantic import ValidationError

from ..settings import Settings, settings_error
from .probes import run_worker


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # Without the usage block argparse adds: one line naming the problem (-h shows usage).
        self.exit(2, f"{self.prog}: {message}\n")


def port_number(text: str) -> int:
    # 0: any free port (tests on a shared machine).
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number 0-65535, not {text!r}")
    return int(text)


parser = OneLineParser(prog="python -m memory_core.worker")
parser.add_argument("--host", default="127.0.0.1", help="address of the probe server (a pod's: 0.0.0.0)")
parser.add_argument(
    "--port",
    type=port_number,
    default=None,
    help="port of /health, /ready and /metrics (default: MEMORY_WORKER_PROBE_PORT)",
)
parser.add_argument("--log-level", default="info")
args = parser.parse_args()
try:
    settings = Settings()
except ValidationError as exc:
    print(f"{parser.prog}: {settings_error(exc)}", file=sys.stderr)
    sys.exit(2)
run_worker(settings, host=args.host, port=args.port, log_level=args.log_level)
