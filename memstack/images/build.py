"""Local images: a Debian base made with debootstrap, then one image per service on top of it.

For machines that reach Debian's archive but no container registry. Every image carries a
label with the hash of what went into it (its Dockerfile, the files copied in, its parent's
id), so building again is a no-op until one of those changes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import ssl
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from memstack.errors import MemstackError
from memstack.load import results_home

IMAGES_ENV = "MEMSTACK_IMAGES"
SOURCES = ("official", "local")
PREFIX = "memstack-local"
INPUTS_LABEL = "dev.memstack.inputs"
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
DOCKERFILES = Path(__file__).resolve().parent / "dockerfiles"
REPO = Path(__file__).resolve().parents[2]
# What the repository's Dockerfile copies (its .dockerignore lets only these through).
SERVICE_INPUTS = (
    "Dockerfile",
    ".dockerignore",
    "pyproject.toml",
    "requirements.lock",
    "README.md",
    "memory_core",
    "memstack",
    "loadtests",
)
# Which local image runs each service of the stack (the exporters ship with Prometheus).
SERVICE_IMAGES = {
    "redis": "redis",
    "postgres": "postgres",
    "neo4j": "neo4j",
    "prometheus": "prometheus",
    "redis-exporter": "prometheus",
    "postgres-exporter": "prometheus",
}


def image_source(choice: str | None = None) -> str:
    """`local` or `official`: the choice given, else $MEMSTACK_IMAGES, else official."""
    source = choice or os.environ.get(IMAGES_ENV) or "official"
    if source not in SOURCES:
        raise MemstackError(
            f"unknown image source {source!r}: choose one of {', '.join(SOURCES)} (option --images or ${IMAGES_ENV})"
        )
    return source


def stack_image_source(home: Path) -> str:
    """The image source of the stack in `home`: $MEMSTACK_IMAGES when set, else the one the stack
    was made with (`memstack up --images`, recorded in its state), else official."""
    from memstack.local.state import load

    state = load(home)
    return image_source(os.environ.get(IMAGES_ENV) or (state.images if state else None))


def tag(name: str) -> str:
    return f"{PREFIX}/{name}:latest"


def docker_client(timeout: int = 3600):
    try:
        import docker
    except ImportError:
        raise MemstackError("building images needs the docker package: pip install 'memstack[containers]'") from None
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except Exception:
        where = os.environ.get("DOCKER_HOST", "the default Docker socket")
        raise MemstackError(f"no Docker engine answers at {where}; start dockerd (apt-get install docker.io)") from None
    return client


def _pgserver_files() -> dict[str, Path]:
    """The wheel's install tree and its bundled libraries, laid out as in site-packages: its
    binaries find the libraries through an RPATH relative to themselves."""
    from memstack.local.postgres_server import bin_dir

    install = bin_dir().parent
    libs = install.parents[1] / "pgserver.libs"
    return {"pgserver/pginstall": install, "pgserver.libs": libs}


def _neo4j_launcher() -> Path:
    from memstack.local.neo4j_server import launcher_dir

    target = launcher_dir() / "target"
    if not (target / "neo4j-local.jar").exists():
        raise MemstackError(f"the Neo4j launcher in {launcher_dir()} is not built; run `make neo4j-launcher`")
    return target


def _host_ca_bundle() -> Path:
    for candidate in (
        os.environ.get("PIP_CERT"),
        ssl.get_default_verify_paths().cafile,
        "/etc/ssl/certs/ca-certificates.crt",
    ):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise MemstackError("no CA bundle on this host (looked at $PIP_CERT and /etc/ssl/certs); install ca-certificates")


@dataclass(frozen=True)
class ImageDef:
    name: str
    parent: str | None  # the image passed as the build argument `parent_arg`
    parent_arg: str = "DEBIAN_IMAGE"
    # Entries of the build context beside the Dockerfile: name in the context -> where it comes from.
    context: Callable[[], dict[str, Path]] = lambda: {}
    files: tuple[str, ...] = ()  # more files from dockerfiles/

    @property
    def dockerfile(self) -> Path:
        return DOCKERFILES / f"{self.name}.Dockerfile"


LOCAL_IMAGES: dict[str, ImageDef] = {
    d.name: d
    for d in (
        ImageDef("python", "debian"),
        ImageDef(
            "python-build",
            "python",
            parent_arg="PYTHON_IMAGE",
            context=lambda: {"ca-certificates.crt": _host_ca_bundle()},
        ),
        ImageDef("redis", "debian"),
        ImageDef("postgres", "debian", context=_pgserver_files, files=("postgres-entrypoint.sh",)),
        ImageDef("neo4j", "debian", context=lambda: {"neo4j-local": _neo4j_launcher()}, files=("neo4j-entrypoint.sh",)),
        ImageDef("prometheus", "debian"),
    )
}
SERVICE_IMAGE = "service"
ALL_IMAGES = ("debian", *LOCAL_IMAGES, SERVICE_IMAGE)


def _walk(path: Path) -> Iterable[Path]:
    if path.is_file():
        yield path
        return
    for p in sorted(path.rglob("*")):
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc":
            yield p


def inputs_hash(entries: dict[str, Path], *extra: str) -> str:
    digest = hashlib.sha256()
    for value in extra:
        digest.update(value.encode() + b"\0")
    for name, source in sorted(entries.items()):
        for p in _walk(source):
            digest.update(f"{name}/{p.relative_to(source) if p != source else ''}\0".encode())
            digest.update(hashlib.sha256(p.read_bytes()).digest())
    return digest.hexdigest()[:32]


class ImageBuilder:
    """Builds what is missing or out of date, in dependency order, and reports each image."""

    def __init__(self, client=None, *, log_dir: Path | None = None, echo: Callable[[str], None] = print) -> None:
        self.client = client or docker_client()
        self.log_dir = log_dir or results_home("images")
        self.echo = echo

    def _current(self, name: str, key: str) -> str | None:
        import docker.errors

        try:
            image = self.client.images.get(tag(name))
        except docker.errors.ImageNotFound:
            return None
        return image.id if (image.labels or {}).get(INPUTS_LABEL) == key else None

    def image_id(self, name: str) -> str:
        return self.client.images.get(tag(name)).id

    # -- the base -------------------------------------------------------------------------

    def debian(self) -> bool:
        key = inputs_hash({}, SUITE, "minbase", MIRROR)
        if self._current("debian", key):
            return False
        if shutil.which("debootstrap") is None:
            raise MemstackError(
                "debootstrap not found; install it with `apt-get install debootstrap` (building the Debian base needs it)"
            )
        if os.geteuid() != 0:
            raise MemstackError(
                "building the Debian base runs debootstrap, which needs root; run `memstack images build` as root"
            )
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / "debian.log"
        with tempfile.TemporaryDirectory(prefix="memstack-rootfs-") as rootfs:
            with open(log, "w") as out:
                result = subprocess.run(
                    ["debootstrap", "--variant=minbase", SUITE, rootfs, MIRROR], stdout=out, stderr=subprocess.STDOUT
                )
            if result.returncode != 0:
                raise MemstackError(f"building image debian failed: {_last_line(log.read_text())} (log {log})")
            # `docker import` of the root filesystem, with the label that marks its inputs.
            tar = subprocess.Popen(["tar", "-C", rootfs, "--numeric-owner", "-c", "."], stdout=subprocess.PIPE)
            imported = subprocess.run(
                [
                    "docker",
                    "import",
                    "--change",
                    f"LABEL {INPUTS_LABEL}={key}",
                    "--change",
                    'CMD ["bash"]',
                    "-",
                    tag("debian"),
                ],
                stdin=tar.stdout,
                capture_output=True,
                text=True,
            )
            tar.wait()
            if imported.returncode != 0:
                raise MemstackError(f"building image debian failed: {_last_line(imported.stderr)}")
        return True

    # -- images built with a Dockerfile -------------------------------------------------------

    def _build(self, name: str, context: Path, dockerfile: str, key: str, buildargs: dict[str, str]) -> None:
        import docker.errors

        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"{name}.log"
        last = ""
        with open(log, "w") as out:
            try:
                for chunk in self.client.api.build(
                    path=str(context),
                    dockerfile=dockerfile,
                    tag=tag(name),
                    buildargs=buildargs,
                    labels={INPUTS_LABEL: key},
                    rm=True,
                    forcerm=True,
                    decode=True,
                ):
                    text = chunk.get("stream") or chunk.get("status") or ""
                    if text:
                        out.write(text)
                        last = text.strip() or last
                    if "error" in chunk:
                        out.write(chunk["error"] + "\n")
                        raise MemstackError(
                            f"building image {name} failed: {_last_line(chunk['error']) or last} (log {log})"
                        )
            except docker.errors.APIError as exc:
                raise MemstackError(f"building image {name} failed: {_last_line(str(exc))} (log {log})") from None

    def local(self, d: ImageDef) -> bool:
        assert d.parent is not None
        parent_id = self.image_id(d.parent)
        entries = {**d.context(), **{f: DOCKERFILES / f for f in d.files}, "Dockerfile": d.dockerfile}
        key = inputs_hash(entries, parent_id)
        if self._current(d.name, key):
            return False
        with tempfile.TemporaryDirectory(prefix=f"memstack-{d.name}-") as ctx:
            for entry, source in entries.items():
                dest = Path(ctx) / entry
                if source.is_dir():
                    shutil.copytree(source, dest, symlinks=False)
                else:
                    shutil.copy2(source, dest)
            self._build(d.name, Path(ctx), "Dockerfile", key, {d.parent_arg: tag(d.parent)})
        return True

    def service(self, source: str) -> bool:
        """The memory service from the repository's Dockerfile, on the local Python base or the official one."""
        buildargs = {} if source == "official" else {"BASE_IMAGE": tag("python"), "BUILD_IMAGE": tag("python-build")}
        parents = [self.image_id(n) for n in ("python", "python-build")] if source == "local" else []
        key = inputs_hash(
            {p: REPO / p for p in SERVICE_INPUTS}, source, *parents, *(f"{k}={v}" for k, v in sorted(buildargs.items()))
        )
        if self._current(SERVICE_IMAGE, key):
            return False
        self._build(SERVICE_IMAGE, REPO, "Dockerfile", key, buildargs)
        return True

    def build(self, source: str, names: Iterable[str] = ALL_IMAGES) -> dict[str, bool]:
        """Build `names` (with what they stand on); returns name -> whether it was (re)built."""
        wanted = set(names)
        for name in list(wanted):
            d = LOCAL_IMAGES.get(name)
            while d is not None and d.parent is not None:
                wanted.add(d.parent)
                d = LOCAL_IMAGES.get(d.parent)
        if SERVICE_IMAGE in wanted and source == "local":
            wanted |= {"debian", "python", "python-build"}
        if source == "official":
            if set(names) - {SERVICE_IMAGE}:
                raise MemstackError(
                    f"{', '.join(sorted(set(names) - {SERVICE_IMAGE}))}: built only with --images local "
                    "(official images come from a registry)"
                )
            wanted &= {SERVICE_IMAGE}
        built: dict[str, bool] = {}
        for name in ALL_IMAGES:
            if name not in wanted:
                continue
            if name == "debian":
                built[name] = self.debian()
            elif name == SERVICE_IMAGE:
                built[name] = self.service(source)
            else:
                built[name] = self.local(LOCAL_IMAGES[name])
            self.echo(f"{tag(name)}: {'built' if built[name] else 'up to date'}")
        return built


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""
