"""Neo4j 5.26 community, embedded in the small Java launcher under tools/neo4j-local."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import neo4j
from neo4j.exceptions import AuthError, Neo4jError, ServiceUnavailable

from memstack.errors import MemstackError
from memstack.local.processes import Launch
from memstack.local.service import ContainerSpec, LocalService

LAUNCHER_ENV = "MEMSTACK_NEO4J_LAUNCHER"
USER = "neo4j"
# Heap for the embedded DBMS; its page cache is set inside the launcher.
# C1 only (TieredStopAtLevel=1): at the projection's few dozen statements a second, C2's
# compilations do not pay off within a run of minutes. On two cores a fresh JVM spent more
# CPU in C2 compiler threads than in Bolt workers: 36.6 ms of CPU per projected row in its
# first 40 s, 21 ms in the next 40 s; C1 only: 12.7 and 6.0 ms. Warm, a projection
# transaction costs about 3 ms and a row 0.25 ms (benchmarks/test_bench_projection.py); a
# fresh JVM still spends about 2x that in its first minute of load (interpreter, planning).
# Serial GC: one thread, no concurrent ones; GC was under 1% of Neo4j's CPU either way.
# -UsePerfData: no /tmp/hsperfdata file left behind by a SIGKILL drill.
JVM_OPTIONS = (
    "-Xms256m",
    "-Xmx1g",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-XX:+ExitOnOutOfMemoryError",
    "-XX:-UsePerfData",
)


def probe(uri: str, user: str, password: str) -> bool:
    try:
        # A plain session run, not execute_query: that one retries for a minute before failing.
        with neo4j.GraphDatabase.driver(uri, auth=(user, password), connection_timeout=2) as driver:
            with driver.session() as session:
                session.run("RETURN 1").consume()
        return True
    except (ServiceUnavailable, AuthError, Neo4jError, OSError):
        return False


def launcher_dir() -> Path:
    configured = os.environ.get(LAUNCHER_ENV)
    return Path(configured) if configured else Path(__file__).resolve().parents[2] / "tools" / "neo4j-local"


class Neo4jServer(LocalService):
    name = "neo4j"
    ready_timeout = 180.0

    @property
    def target(self) -> Path:
        return launcher_dir() / "target"

    def _built(self) -> bool:
        """Built, and not older than its sources: a checkout that changes the launcher rebuilds it."""
        jar = self.target / "neo4j-local.jar"
        if not jar.exists() or not (self.target / "lib").is_dir():
            return False
        sources = [launcher_dir() / "pom.xml", *(launcher_dir() / "src").rglob("*.java")]
        return all(source.stat().st_mtime <= jar.stat().st_mtime for source in sources if source.exists())

    def check_prerequisites(self) -> None:
        if shutil.which("java") is None:
            raise MemstackError(
                "java not found on PATH; the local Neo4j needs a JDK 17 or 21 (apt-get install openjdk-17-jdk-headless)"
            )
        if self._built():
            return
        if shutil.which("mvn") is None:
            raise MemstackError(
                f"the Neo4j launcher in {launcher_dir()} is not built and mvn is not on PATH; install Maven or run `make setup`"
            )
        pom = launcher_dir() / "pom.xml"
        if not pom.exists():
            raise MemstackError(f"no Neo4j launcher at {launcher_dir()} (expected pom.xml); set {LAUNCHER_ENV}")
        print(
            f"building the Neo4j launcher in {launcher_dir()} (first run downloads Neo4j from Maven Central)",
            flush=True,
        )
        # As the Makefile builds it: batch mode, no download progress, and no colour resets from
        # Maven 3.8's Jansi (which batch mode alone does not stop), in what an error shows.
        result = subprocess.run(
            ["mvn", "-q", "-B", "-ntp", "-f", str(pom), "-DskipTests", "package"],
            capture_output=True,
            text=True,
            env={**os.environ, "MAVEN_OPTS": f"{os.environ.get('MAVEN_OPTS', '')} -Djansi.noreset=true".strip()},
        )
        if result.returncode != 0 or not self._built():
            last = (result.stdout + result.stderr).strip().splitlines()[-1:]
            raise MemstackError(f"building the Neo4j launcher failed: {' '.join(last)}")

    def launch(self, port: int) -> Launch:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "NEO4J_PASSWORD": self.credentials.neo4j_password}
        return Launch(
            argv=[
                # -jar: the manifest carries the classpath and the --add-opens Netty needs.
                "java",
                *JVM_OPTIONS,
                "-jar",
                str(self.target / "neo4j-local.jar"),
                "--home",
                str(self.data_dir),
                "--bolt-port",
                str(port),
                "--log",
                str(self.data_dir / "neo4j-debug.log"),
            ],
            log=self.log,
            env=env,
            cwd=self.data_dir,
        )

    def probe(self, port: int) -> bool:
        return probe(self.url(port), USER, self.credentials.neo4j_password)

    def container_spec(self) -> ContainerSpec:
        return ContainerSpec(
            image="neo4j:5.26-community",
            port=7687,
            data_path="/data",
            env={
                "NEO4J_AUTH": f"{USER}/{self.credentials.neo4j_password}",
                "NEO4J_server_memory_pagecache_size": "256m",
                "NEO4J_server_memory_heap_max__size": "1g",
                # As the launcher sets it (see MIN_REPLAN_INTERVAL in Neo4jLocal.java).
                "NEO4J_dbms_cypher_min__replan__interval": "2m",
                # The local image's entrypoint starts the launcher with these (the official
                # image reads the two settings above instead).
                "NEO4J_JVM_OPTIONS": " ".join(JVM_OPTIONS),
            },
        )

    def url(self, port: int) -> str:
        return f"bolt://127.0.0.1:{port}"
