"""Readiness of the stack's HTTP services (Prometheus, the exporters, Jaeger)."""

from __future__ import annotations

import urllib.error
import urllib.request


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """True when `url` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False
