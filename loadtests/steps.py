"""Stepped load for capacity measurement: a LoadTestShape that raises the concurrency (Locust
users sending back to back) or the offered rate (open-model Poisson pacing of locustfile.py) in
steps, and stops a few steps after the first one that misses the SLO (the knee).

Run it after locustfile.py, which it extends (`-f locustfile.py,steps.py`). Per step: the first
--step-warmup-s seconds are load without statistics, then the statistics restart and the step's
steady state is measured: requests per route group, percentiles, send lag, and the CPU seconds
that each process named in --cpu-pids used per request, read from /proc. After each step the
list of steps so far is rewritten to --steps-file (JSON), which is also the progress report.

With worker processes (--processes), the shape runs on the master; stats and send lag reach it
with the workers' reports (every few seconds), so step boundaries are that much less sharp.

Options:
  --step-by users|rate     what the steps raise
  --steps 1,2,4,8          users per step, or total req/s per step
  --step-s S               length of a step, warm-up included
  --step-warmup-s S        unmeasured start of each step
  --steps-file FILE        where the steps are written
  --cpu-pids a=1,b=2       processes whose CPU to read (`postgres`: the postmaster and its backends)
  --steps-past-knee K      steps to run after the first one that misses the SLO: the throughput
                           curve past its peak is what pins down the USL coherency term
"""

from __future__ import annotations

import json
import os
import sys
import time

from locust import LoadTestShape, events
from locust.runners import MasterRunner, WorkerRunner

# Next to this file; Locust does not put it on the path. `locustfile` is the module Locust loaded
# first (`-f locustfile.py,steps.py`): its counters and statistics, not a second copy.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import locustfile
import slo

from memstack.capacity import procstat

RATE_MESSAGE = "memstack_rate"


@events.init_command_line_parser.add_listener
def _options(parser):
    parser.add_argument("--step-by", choices=("users", "rate"), default="users")
    parser.add_argument("--steps", default="1,2,4,8")
    parser.add_argument("--step-s", type=float, default=20.0)
    parser.add_argument("--step-warmup-s", type=float, default=5.0)
    parser.add_argument("--steps-file", default="")
    parser.add_argument("--cpu-pids", default="")
    parser.add_argument("--steps-past-knee", type=int, default=2)


@events.init.add_listener
def _receive_rate(environment, **_):
    if isinstance(environment.runner, WorkerRunner):
        environment.runner.register_message(
            RATE_MESSAGE, lambda message, **__: setattr(environment.parsed_options, "rate", message.data)
        )


def _pids(text: str) -> dict[str, int]:
    return {name: int(pid) for name, _, pid in (item.partition("=") for item in text.split(",") if item)}


class StepLoad(LoadTestShape):
    def __init__(self) -> None:
        super().__init__()
        self._index = -1
        self._measure_start: float | None = None
        self._cpu_before: dict = {}
        self.results: list[dict] = []

    @property
    def _options(self):
        return self.runner.environment.parsed_options

    def _values(self) -> list[float]:
        return [float(v) for v in self._options.steps.split(",") if v.strip()]

    def tick(self):
        options = self._options
        values = self._values()
        run_time = self.get_run_time()
        index = int(run_time // options.step_s)
        if index != self._index:
            if self._index >= 0 and not self._finish_step():
                return None
            if index >= len(values):
                return None
            self._start_step(index, values[index])
        elif self._measure_start is None and run_time - index * options.step_s >= options.step_warmup_s:
            self._begin_measuring()
        return self._load(values[index])

    def _load(self, value: float) -> tuple[int, float]:
        users = int(value) if self._options.step_by == "users" else self._options.num_users
        return users, users

    def _start_step(self, index: int, value: float) -> None:
        self._index = index
        self._measure_start = None
        if self._options.step_by == "rate":
            self._options.rate = value
            if isinstance(self.runner, MasterRunner):
                self.runner.send_message(RATE_MESSAGE, value)
        else:
            self._options.rate = 0.0

    def _begin_measuring(self) -> None:
        locustfile._reset_statistics(self.runner.stats)
        self._cpu_before = procstat.sample(_pids(self._options.cpu_pids))
        self._measure_start = time.monotonic()

    def _finish_step(self) -> bool:
        """Summarise the step that just ended; False when the run has gone far enough past the knee."""
        if self._measure_start is None:  # a step shorter than its warm-up: nothing measured
            return True
        options = self._options
        duration = time.monotonic() - self._measure_start
        stats = self.runner.stats
        entries = locustfile._entries(stats)
        offered = options.rate if options.step_by == "rate" else 0.0
        summary = slo.summarize(
            entries,
            duration,
            options.wm_p99_ms,
            options.max_failure_ratio,
            send_lag=locustfile._SEND_LAG,
            offered_rps=offered,
        )
        served = [e for e in stats.entries.values() if slo.group_of(e.name) != slo.DROPPED]
        requests = sum(e.num_requests for e in served)
        cpu_after = procstat.sample(_pids(options.cpu_pids))
        users = self.runner.user_count
        service_pid = _pids(options.cpu_pids).get("service")
        self.results.append(
            {
                "step": self._index + 1,
                "users": users,
                "offered_rps": offered or None,
                "achieved_rps": summary["generator"]["achieved_rps"],
                # Little's law: the mean number of requests in flight is the summed response time
                # over the window's length.
                "in_flight": sum(e.total_response_time for e in served) / 1000 / duration if duration else 0.0,
                "duration_s": duration,
                "requests": requests,
                "working": summary["working"],
                "total": summary["total"],
                "groups": summary["groups"],
                "send_lag_p99_ms": summary["generator"]["send_lag_p99_ms"],
                "cpu_seconds": {
                    name: (
                        None if after is None or self._cpu_before.get(name) is None else after - self._cpu_before[name]
                    )
                    for name, after in cpu_after.items()
                },
                "cpu_s_per_request": procstat.per_request(self._cpu_before, cpu_after, requests),
                # Other work on the machine shows here: a shared host's numbers are only as good as this.
                "load_average_1m": os.getloadavg()[0],
                "service_rss_bytes": procstat.rss_bytes(service_pid) if service_pid else None,
                "violations": summary["violations"],
                "passed": summary["passed"],
            }
        )
        if options.steps_file:
            tmp = f"{options.steps_file}.tmp"
            with open(tmp, "w") as handle:
                json.dump(self.results, handle, indent=2)
            os.replace(tmp, options.steps_file)
        failed = [r for r in self.results if not r["passed"]]
        return not failed or len(self.results) - self.results.index(failed[0]) <= options.steps_past_knee
