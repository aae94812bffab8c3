"""A Locust plugin (loaded beside loadtests/locustfile.py): every request as one CSV row, so a
fault's window can be cut out of the run afterwards. Columns: start (epoch s), name, status,
response time (ms), failed (0/1), the start of a failed response's body."""

import csv
import os
import time

from locust import events

_path = os.environ.get("MEMSTACK_CHAOS_REQUESTS")
_file = open(_path, "a", newline="") if _path else None  # noqa: SIM115 - open for the whole run
_writer = csv.writer(_file) if _file else None


@events.request.add_listener
def _record(request_type, name, response_time, response_length, response=None, exception=None, start_time=None, **_):
    # Locust still reports requests that end while it is quitting, after _close below ran.
    if _writer is None or _file.closed:
        return
    status = getattr(response, "status_code", 0) or 0
    body = ""
    if exception is not None and response is not None:
        body = (getattr(response, "text", "") or "")[:160].replace("\n", " ")
    _writer.writerow(
        [
            f"{start_time or time.time() - response_time / 1000:.4f}",
            name,
            status,
            f"{response_time:.3f}",
            int(exception is not None),
            body,
        ]
    )


@events.quitting.add_listener
def _close(**_):
    if _file:
        _file.flush()
        _file.close()
