"""What the process backend needs to know about one service."""

from __future__ import annotations

import signal
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from memstack.local.processes import Launch
from memstack.local.state import Credentials


@dataclass(frozen=True)
class ContainerSpec:
    """How the `containers` backend runs the same service."""

    image: str
    port: int
    data_path: str
    env: dict[str, str] = field(default_factory=dict)
    command: list[str] | None = None
    # Host files the container reads, mounted read-only: host path -> container path.
    files: dict[str, str] = field(default_factory=dict)
    # Host directories the container writes, kept outside its data volume (a WAL archive, an
    # append-only file): host path -> container path. Handed over to the image's user.
    writable: dict[str, str] = field(default_factory=dict)


class LocalService(ABC):
    """One database or tool run as a local OS process on its own data directory."""

    name: ClassVar[str]
    ready_timeout: ClassVar[float]
    stop_signal: ClassVar[int] = signal.SIGTERM
    stop_timeout: ClassVar[float] = 30.0

    def __init__(self, home: Path, credentials: Credentials, *, appendfsync: str = "everysec") -> None:
        self.home = home
        self.credentials = credentials
        self.appendfsync = appendfsync

    @property
    def data_dir(self) -> Path:
        return self.home / self.name

    @property
    def log(self) -> Path:
        return self.home / "logs" / f"{self.name}.log"

    def check_prerequisites(self) -> None:
        """Raise MemstackError naming what is missing (a binary, Java, a build)."""

    def prepare(self, port: int) -> None:
        """Create or update the data directory and configuration; safe to run on every start."""

    @abstractmethod
    def launch(self, port: int) -> Launch: ...

    @abstractmethod
    def probe(self, port: int) -> bool:
        """True once the service answers real requests."""

    def after_ready(self, port: int) -> None:
        """One-time setup that needs the running service (databases, extensions)."""

    @abstractmethod
    def url(self, port: int) -> str: ...

    @abstractmethod
    def container_spec(self) -> ContainerSpec: ...
