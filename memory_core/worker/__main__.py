from .consumer import run_worker

run_worker()
