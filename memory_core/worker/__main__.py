"""`python -m memory_core.worker [--host H] [--port P]`: the same entry point as `memstack worker`."""

import argparse

from .probes import DEFAULT_PORT, run_worker

parser = argparse.ArgumentParser(prog="python -m memory_core.worker")
parser.add_argument("--host", default="0.0.0.0", help="address of the probe server")
parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port of /health, /ready and /metrics")
parser.add_argument("--log-level", default="info")
args = parser.parse_args()
run_worker(host=args.host, port=args.port, log_level=args.log_level)
