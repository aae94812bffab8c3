/*
 * neo4j-local: runs Neo4j 5.26 LTS community edition as an embedded DBMS with
 * the Bolt connector on 127.0.0.1, so that the Python `neo4j` driver can talk
 * to it as to a real server, without Docker or a Neo4j installation.
 *
 * Build:  mvn -q -B -f tools/neo4j-local/pom.xml package
 * Run (see README.md):
 *
 *   NEO4J_PASSWORD=... java -Xms256m -Xmx1g -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -XX:+ExitOnOutOfMemoryError \
 *       -XX:-UsePerfData \
 *       --add-opens=java.base/java.nio=ALL-UNNAMED \
 *       --add-opens=java.base/sun.nio.ch=ALL-UNNAMED \
 *       --add-opens=java.base/java.io=ALL-UNNAMED \
 *       -Dio.netty.tryReflectionSetAccessible=true \
 *       -cp 'tools/neo4j-local/target/neo4j-local.jar:tools/neo4j-local/target/lib/*' \
 *       dev.memstack.Neo4jLocal --home DIR --bolt-port PORT [--log FILE] [--exit-on-stdin-eof]
 *
 * Memory: the page cache is fixed at 256 MiB off-heap (PAGE_CACHE below, filled
 * lazily); the JVM heap is chosen by the caller on the java command line. For a
 * 2-core / 24 GB machine shared with Postgres, Redis and test runs, -Xms256m
 * -Xmx1g is plenty for development and test data: about 0.4-0.5 GiB resident
 * after startup, at most roughly heap + page cache + ~200 MiB.
 * The --add-opens flags let Neo4j use its native I/O paths (fadvise, log file
 * preallocation, direct page-cache buffers); without them it runs but logs
 * warnings and uses slower fallbacks.
 *
 * Protocol with the caller:
 *   stdout  exactly one line "READY bolt://127.0.0.1:PORT" once the DBMS is up,
 *           the password is set and Bolt accepts connections; nothing else.
 *   stderr  one line per fatal problem, prefixed "neo4j-local: ".
 *   exit 0  after SIGTERM / SIGINT (clean DBMS shutdown), or stdin EOF when
 *           --exit-on-stdin-eof is given. A second signal during shutdown
 *           halts at once (exit 128 + signal number).
 *   exit 2  refused to start: bad arguments, NEO4J_PASSWORD missing or shorter
 *           than 8 characters, invalid or already used port, --home in use by
 *           another process.
 *   exit 1  any other startup failure (details in the --log file).
 */
package dev.memstack;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.io.PrintStream;
import java.net.BindException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.channels.FileChannel;
import java.nio.channels.FileLock;
import java.nio.channels.OverlappingFileLockException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.time.Duration;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicBoolean;

import org.neo4j.cli.ExecutionContext;
import org.neo4j.commandline.admin.security.SetInitialPasswordCommand;
import org.neo4j.configuration.GraphDatabaseInternalSettings;
import org.neo4j.configuration.GraphDatabaseSettings;
import org.neo4j.configuration.connectors.BoltConnector;
import org.neo4j.configuration.connectors.HttpConnector;
import org.neo4j.configuration.connectors.HttpsConnector;
import org.neo4j.configuration.helpers.SocketAddress;
import org.neo4j.dbms.api.DatabaseManagementService;
import org.neo4j.dbms.api.DatabaseManagementServiceBuilder;
import org.neo4j.graphdb.GraphDatabaseService;
import org.neo4j.internal.kernel.api.connectioninfo.ClientConnectionInfo;
import org.neo4j.internal.kernel.api.security.AuthenticationResult;
import org.neo4j.io.ByteUnit;
import org.neo4j.io.fs.DefaultFileSystemAbstraction;
import org.neo4j.kernel.api.security.AuthManager;
import org.neo4j.kernel.api.security.AuthToken;
import org.neo4j.kernel.internal.GraphDatabaseAPI;

import picocli.CommandLine;

public final class Neo4jLocal {

    static final String PASSWORD_ENV = "NEO4J_PASSWORD";
    static final int MIN_PASSWORD_LENGTH = 8;
    static final String BIND_HOST = "127.0.0.1";
    static final long PAGE_CACHE = ByteUnit.mebiBytes(256);
    static final Duration MIN_REPLAN_INTERVAL = Duration.ofMinutes(2);

    static final int EXIT_FAILURE = 1;
    static final int EXIT_REFUSED = 2;

    /** Thrown for every "refuse to start" condition; message is the one stderr line. */
    static final class Refusal extends Exception {
        private static final long serialVersionUID = 1L;

        Refusal(String message) {
            super(message);
        }
    }

    static final class Options {
        Path home;
        int boltPort;
        Path log;
        boolean exitOnStdinEof;
    }

    private Neo4jLocal() {
    }

    public static void main(String[] args) {
        // Everything on stdout except the READY line would confuse the caller;
        // keep the real stdout for us and send stray library output to stderr.
        PrintStream out = System.out;
        System.setOut(System.err);

        Options opts;
        String password;
        try {
            opts = parseArgs(args);
            if (opts == null) { // --help
                out.println(usage());
                out.flush();
                System.exit(0);
                return;
            }
            password = readPassword();
            checkPortFree(opts.boltPort);
            checkHomeNotLocked(opts.home);
            Files.createDirectories(opts.home);
            keepNativeTempFilesUnderHome(opts.home);
            if (opts.log.getParent() != null) {
                Files.createDirectories(opts.log.getParent());
            }
        } catch (Refusal r) {
            die(EXIT_REFUSED, r.getMessage());
            return;
        } catch (IOException e) {
            die(EXIT_REFUSED, "cannot create directories: " + e);
            return;
        }

        // SIGTERM / SIGINT: clean shutdown, exit status 0 (the JVM default would
        // be 143 / 130). Installed before startup; a signal that arrives while
        // Neo4j is starting takes effect as soon as startup has finished.
        CountDownLatch stopRequested = new CountDownLatch(1);
        installSignalHandler("TERM", stopRequested);
        installSignalHandler("INT", stopRequested);

        DatabaseManagementService dbms;
        try {
            dbms = start(opts, password);
        } catch (Throwable t) {
            Refusal refusal = classifyStartFailure(t, opts);
            if (refusal != null) {
                die(EXIT_REFUSED, refusal.getMessage());
            } else {
                die(EXIT_FAILURE, "failed to start Neo4j: " + rootMessage(t) + " (see " + opts.log + ")");
            }
            return;
        }

        // Clean shutdown on every JVM exit path (System.exit, SIGHUP, ...).
        AtomicBoolean stopped = new AtomicBoolean(false);
        Runnable stop = () -> {
            if (stopped.compareAndSet(false, true)) {
                try {
                    dbms.shutdown();
                } catch (Throwable t) {
                    System.err.println("neo4j-local: error during shutdown: " + rootMessage(t));
                }
            }
        };
        Runtime.getRuntime().addShutdownHook(new Thread(stop, "neo4j-local-shutdown"));

        try {
            setPassword(dbms, password);
            // The initial-password file has been consumed (or was not needed);
            // don't leave a password hash lying around.
            Files.deleteIfExists(opts.home.resolve("data").resolve("dbms").resolve("auth.ini"));
            awaitBolt(opts.boltPort, Duration.ofSeconds(30));
        } catch (Throwable t) {
            stop.run();
            die(EXIT_FAILURE, "failed to initialise Neo4j: " + rootMessage(t) + " (see " + opts.log + ")");
            return;
        }

        if (opts.exitOnStdinEof) {
            Thread watcher = new Thread(() -> {
                try {
                    InputStream in = System.in;
                    byte[] buf = new byte[256];
                    while (in.read(buf) >= 0) {
                        // discard
                    }
                } catch (IOException ignored) {
                    // treat like EOF
                }
                stopRequested.countDown();
            }, "neo4j-local-stdin");
            watcher.setDaemon(true);
            watcher.start();
        }

        if (stopRequested.getCount() > 0) {
            out.println("READY bolt://" + BIND_HOST + ":" + opts.boltPort);
            out.flush();
        }

        try {
            stopRequested.await();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        stop.run();
        System.exit(0);
    }

    // ------------------------------------------------------------------ startup

    static DatabaseManagementService start(Options opts, String password) throws IOException {
        Path home = opts.home;
        Path logFile = opts.log;
        Path conf = home.resolve("conf");
        Files.createDirectories(conf);
        Path serverLogs = conf.resolve("neo4j-local-server-logs.xml");
        Files.writeString(serverLogs, serverLogsXml(logFile), StandardCharsets.UTF_8);

        Map<org.neo4j.graphdb.config.Setting<?>, Object> settings = Map.ofEntries(
                Map.entry(GraphDatabaseSettings.auth_enabled, true),
                Map.entry(GraphDatabaseSettings.pagecache_memory, PAGE_CACHE),
                Map.entry(GraphDatabaseSettings.server_logging_config_path, serverLogs),
                Map.entry(GraphDatabaseSettings.logs_directory, home.resolve("logs")),
                Map.entry(GraphDatabaseSettings.udc_enabled, false),
                // Transaction log files are preallocated (when native access works):
                // 32 MiB instead of the 256 MiB default per database, and keep
                // less history: this is a dev / test DBMS.
                Map.entry(GraphDatabaseSettings.logical_log_rotation_threshold, ByteUnit.mebiBytes(32)),
                Map.entry(GraphDatabaseSettings.keep_logical_logs, "128M size"),
                // A plan is checked against the graph's statistics at most this often (default
                // 10 s). A fresh graph that grows under load diverged from every plan's
                // statistics at each check, and planning one projection statement costs 50-130
                // ms of CPU (up to 700 ms before the JIT warms): replanning every 10 s took more
                // CPU than running the statements. The plans of memory_core seek unique
                // constraints and indexes whatever the counts.
                Map.entry(GraphDatabaseSettings.cypher_min_replan_interval, MIN_REPLAN_INTERVAL),
                Map.entry(BoltConnector.enabled, true),
                Map.entry(BoltConnector.listen_address, new SocketAddress(BIND_HOST, opts.boltPort)),
                Map.entry(BoltConnector.advertised_address, new SocketAddress(BIND_HOST, opts.boltPort)),
                Map.entry(BoltConnector.server_bolt_telemetry_enabled, false),
                Map.entry(HttpConnector.enabled, false),
                Map.entry(HttpsConnector.enabled, false),
                // Netty's graceful shutdown waits a 5 s quiet period per event loop
                // group (two of them), i.e. ~10 s per SIGTERM; connections are
                // already closed by then, so skip it.
                Map.entry(GraphDatabaseInternalSettings.netty_server_shutdown_quiet_period, 0),
                Map.entry(GraphDatabaseInternalSettings.netty_server_shutdown_timeout, Duration.ofSeconds(5)));

        if (!Files.exists(home.resolve("data").resolve("databases").resolve(GraphDatabaseSettings.SYSTEM_DATABASE_NAME))) {
            // First start on this home: let the system database be created with
            // our password instead of the built-in neo4j/neo4j (no window in
            // which Bolt accepts the default password).
            writeInitialPassword(home, password);
        }

        return new DatabaseManagementServiceBuilder(home)
                .setConfig(settings)
                // No user log provider: Neo4j copies every user-log message
                // ("Started.", "Bolt enabled on ...") into the debug log anyway.
                .build();
    }

    /**
     * Makes user "neo4j" have exactly the given password, with no forced change,
     * on first start (replacing the built-in initial password) and on every
     * restart (the password may have changed between runs).
     */
    static void setPassword(DatabaseManagementService dbms, String password) throws Exception {
        var system = dbms.database(GraphDatabaseSettings.SYSTEM_DATABASE_NAME);
        // Fast path (restart with an unchanged password): ask the auth manager
        // Bolt itself uses. This avoids the first Cypher query, which costs
        // ~3 s of planner warm-up on a cold JVM.
        if (passwordIsCurrent(system, password)) {
            return;
        }
        Map<String, Object> params = Map.of("pw", password);
        system.executeTransactionally(
                "CREATE USER neo4j IF NOT EXISTS SET PASSWORD $pw CHANGE NOT REQUIRED", params);
        try {
            system.executeTransactionally(
                    "ALTER USER neo4j SET PASSWORD $pw CHANGE NOT REQUIRED", params);
        } catch (RuntimeException e) {
            // Neo4j refuses to "change" a password to the current one; then only
            // make sure no change is required.
            if (!String.valueOf(rootMessage(e)).contains("cannot be the same")) {
                throw e;
            }
            system.executeTransactionally(
                    "ALTER USER neo4j SET PASSWORD CHANGE NOT REQUIRED");
        }
        // Bolt is open while this runs, and the caller's readiness probe logs in with the new
        // password before it is set: three failures lock the user for auth_lock_time (5 s by
        // default) and the login below answers TOO_MANY_ATTEMPTS. Wait the lock out.
        long deadline = System.nanoTime() + Duration.ofSeconds(30).toNanos();
        AuthenticationResult result;
        while ((result = loginResult(system, password)) == AuthenticationResult.TOO_MANY_ATTEMPTS
                && System.nanoTime() < deadline) {
            Thread.sleep(250);
        }
        if (result != AuthenticationResult.SUCCESS) {
            throw new IllegalStateException("password of user neo4j could not be set (login answers " + result + ")");
        }
    }

    /**
     * What `neo4j-admin dbms set-initial-password` does: writes data/dbms/auth.ini,
     * which the system database consumes when it is created. Best effort: when it
     * fails, setPassword() falls back to ALTER USER.
     */
    static void writeInitialPassword(Path home, String password) {
        try (PrintStream sink = new PrintStream(OutputStream.nullOutputStream(), true, StandardCharsets.UTF_8)) {
            var ctx = new ExecutionContext(home, home.resolve("conf"), sink, sink, new DefaultFileSystemAbstraction());
            // "--": a password that starts with "-" is not an option (token_urlsafe makes one in 64).
            new CommandLine(new SetInitialPasswordCommand(ctx)).setOut(new java.io.PrintWriter(sink))
                    .setErr(new java.io.PrintWriter(sink)).execute("--", password);
        } catch (RuntimeException | LinkageError e) {
            // fall back to ALTER USER in setPassword()
        }
    }

    /** True when "neo4j" can log in with the password and no change is required. */
    static boolean passwordIsCurrent(GraphDatabaseService system, String password) throws Exception {
        return loginResult(system, password) == AuthenticationResult.SUCCESS;
    }

    static AuthenticationResult loginResult(GraphDatabaseService system, String password) throws Exception {
        AuthManager auth = ((GraphDatabaseAPI) system).getDependencyResolver().resolveDependency(AuthManager.class);
        var login = auth.login(
                AuthToken.newBasicAuthToken("neo4j", password.getBytes(StandardCharsets.UTF_8)),
                ClientConnectionInfo.EMBEDDED_CONNECTION);
        return login.subject().getAuthenticationResult();
    }

    static void awaitBolt(int port, Duration timeout) throws IOException, InterruptedException {
        long deadline = System.nanoTime() + timeout.toNanos();
        while (true) {
            try (Socket s = new Socket()) {
                s.connect(new InetSocketAddress(InetAddress.getByName(BIND_HOST), port), 1000);
                return;
            } catch (IOException e) {
                if (System.nanoTime() > deadline) {
                    throw new IOException("Bolt is not accepting connections on port " + port, e);
                }
                Thread.sleep(100);
            }
        }
    }

    /**
     * Netty (epoll transport) and JNA (used by Neo4j for fadvise etc.) unpack
     * native libraries into java.io.tmpdir and ~/.cache/JNA; they delete them
     * right after loading, but keep even that inside --home (and working when
     * HOME is read-only). Must run before any Neo4j / Netty class is loaded.
     * An explicit -D on the command line wins.
     */
    static void keepNativeTempFilesUnderHome(Path home) throws IOException {
        Path tmp = home.resolve("tmp");
        Files.createDirectories(tmp);
        if (System.getProperty("io.netty.native.workdir") == null) {
            System.setProperty("io.netty.native.workdir", tmp.toString());
        }
        if (System.getProperty("jna.tmpdir") == null) {
            System.setProperty("jna.tmpdir", tmp.toString());
        }
    }

    /**
     * Fail fast (exit 2) when another process holds the DBMS store lock of this
     * home (Neo4j itself would only notice after ~5 s of startup work).
     */
    static void checkHomeNotLocked(Path home) throws Refusal {
        Path lockFile = home.resolve("data").resolve("databases").resolve("store_lock");
        if (!Files.exists(lockFile)) {
            return;
        }
        try (FileChannel ch = FileChannel.open(lockFile, StandardOpenOption.READ, StandardOpenOption.WRITE)) {
            FileLock lock = ch.tryLock();
            if (lock == null) {
                throw new Refusal("home " + home + " is in use by another Neo4j process (" + lockFile + " is locked)");
            }
            lock.release();
        } catch (OverlappingFileLockException e) {
            throw new Refusal("home " + home + " is in use (" + lockFile + " is locked)");
        } catch (IOException e) {
            // Let Neo4j report whatever is wrong with the store.
        }
    }

    /** Fail fast (exit 2) when another process already listens on the port. */
    static void checkPortFree(int port) throws Refusal {
        try (ServerSocket ss = new ServerSocket()) {
            ss.setReuseAddress(true); // what netty does too; ignores TIME_WAIT leftovers
            ss.bind(new InetSocketAddress(InetAddress.getByName(BIND_HOST), port));
        } catch (IOException e) {
            throw new Refusal("bolt port " + port + " on " + BIND_HOST + " is not available: " + e.getMessage());
        }
    }

    static Refusal classifyStartFailure(Throwable t, Options opts) {
        for (Throwable c = t; c != null; c = c.getCause()) {
            String name = c.getClass().getName();
            String msg = String.valueOf(c.getMessage());
            if (c instanceof BindException || name.endsWith("PortBindException")
                    || msg.contains("Address already in use")) {
                return new Refusal("bolt port " + opts.boltPort + " on " + BIND_HOST
                        + " is not available: " + msg);
            }
            if (name.endsWith("FileLockException") || msg.contains("Unable to obtain lock")) {
                return new Refusal("home " + opts.home + " is in use by another Neo4j process: " + msg);
            }
            if (c.getCause() == c) {
                break;
            }
        }
        return null;
    }

    /**
     * log4j2 configuration for Neo4j's "server" logs: the debug log (which also
     * receives every user-log message) plus the query / security / http loggers,
     * all into the one --log file, rotated at 20 MiB keeping 3 old files.
     */
    static String serverLogsXml(Path logFile) {
        String file = xmlEscape(logFile.toAbsolutePath().toString()).replace("${", "$${");
        return "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                + "<!-- Generated by neo4j-local at every start; edits are overwritten. -->\n"
                + "<Configuration status=\"ERROR\">\n"
                + "  <Appenders>\n"
                + "    <RollingFile name=\"Log\" fileName=\"" + file + "\" filePattern=\"" + file + ".%i\">\n"
                + "      <Neo4jDebugLogLayout pattern=\"%d{yyyy-MM-dd HH:mm:ss.SSSZ}{GMT+0} %-5p [%c{1.}] %m%n\"/>\n"
                + "      <Policies><SizeBasedTriggeringPolicy size=\"20 MB\"/></Policies>\n"
                + "      <DefaultRolloverStrategy fileIndex=\"min\" max=\"3\"/>\n"
                + "    </RollingFile>\n"
                + "  </Appenders>\n"
                + "  <Loggers>\n"
                + "    <Root level=\"INFO\"><AppenderRef ref=\"Log\"/></Root>\n"
                + "  </Loggers>\n"
                + "</Configuration>\n";
    }

    // ------------------------------------------------------------ arguments

    static Options parseArgs(String[] args) throws Refusal {
        Options o = new Options();
        String home = null;
        String port = null;
        String log = null;
        for (int i = 0; i < args.length; i++) {
            String a = args[i];
            String value = null;
            int eq = a.indexOf('=');
            if (a.startsWith("--") && eq > 0) {
                value = a.substring(eq + 1);
                a = a.substring(0, eq);
            }
            switch (a) {
                case "-h":
                case "--help":
                    return null;
                case "--exit-on-stdin-eof":
                    if (value != null) {
                        throw new Refusal("--exit-on-stdin-eof takes no value");
                    }
                    o.exitOnStdinEof = true;
                    break;
                case "--home":
                case "--bolt-port":
                case "--log":
                    if (value == null) {
                        if (i + 1 >= args.length) {
                            throw new Refusal(a + " needs a value");
                        }
                        value = args[++i];
                    }
                    if (a.equals("--home")) {
                        home = value;
                    } else if (a.equals("--bolt-port")) {
                        port = value;
                    } else {
                        log = value;
                    }
                    break;
                default:
                    throw new Refusal("unknown argument " + a + " (the password is read from $" + PASSWORD_ENV
                            + ", never from the command line; try --help)");
            }
        }
        if (home == null || home.isBlank()) {
            throw new Refusal("--home DIR is required");
        }
        if (port == null) {
            throw new Refusal("--bolt-port PORT is required");
        }
        try {
            o.boltPort = Integer.parseInt(port.trim());
        } catch (NumberFormatException e) {
            throw new Refusal("invalid --bolt-port " + port + ": not a number");
        }
        if (o.boltPort < 1 || o.boltPort > 65535) {
            throw new Refusal("invalid --bolt-port " + port + ": must be 1..65535");
        }
        o.home = Path.of(home).toAbsolutePath().normalize();
        o.log = (log == null || log.isBlank())
                ? o.home.resolve("logs").resolve("neo4j-local.log")
                : Path.of(log).toAbsolutePath().normalize();
        return o;
    }

    static String readPassword() throws Refusal {
        String pw = System.getenv(PASSWORD_ENV);
        if (pw == null || pw.isEmpty()) {
            throw new Refusal("environment variable " + PASSWORD_ENV + " is not set");
        }
        if (pw.codePointCount(0, pw.length()) < MIN_PASSWORD_LENGTH) {
            throw new Refusal(PASSWORD_ENV + " is shorter than " + MIN_PASSWORD_LENGTH + " characters");
        }
        return pw;
    }

    static String usage() {
        return "usage: NEO4J_PASSWORD=... java [-Xmx1g ...] -cp 'neo4j-local.jar:lib/*' dev.memstack.Neo4jLocal\n"
                + "         --home DIR --bolt-port PORT [--log FILE] [--exit-on-stdin-eof]\n"
                + "  --home DIR           data directory (databases, transaction logs, generated config)\n"
                + "  --bolt-port PORT     Bolt port, bound on 127.0.0.1 only\n"
                + "  --log FILE           Neo4j's own log output (default DIR/logs/neo4j-local.log)\n"
                + "  --exit-on-stdin-eof  shut down cleanly when stdin is closed (parent died)\n"
                + "Prints 'READY bolt://127.0.0.1:PORT' on stdout when ready; exit 2 = refused to start.";
    }

    // ------------------------------------------------------------- helpers

    /**
     * First TERM/INT: request a clean shutdown. A second one while shutting
     * down: give up and halt at once (exit 128 + signal number).
     */
    static void installSignalHandler(String name, CountDownLatch latch) {
        try {
            sun.misc.Signal.handle(new sun.misc.Signal(name), sig -> {
                if (latch.getCount() == 0) {
                    Runtime.getRuntime().halt(128 + sig.getNumber());
                }
                latch.countDown();
            });
        } catch (IllegalArgumentException e) {
            // Signal ignored by the parent (e.g. SIGINT for a background job of a
            // non-interactive shell) or reserved (-Xrs): nothing to handle.
        }
    }

    static String rootMessage(Throwable t) {
        Throwable root = t;
        StringBuilder sb = new StringBuilder(String.valueOf(t.getMessage()));
        while (root.getCause() != null && root.getCause() != root) {
            root = root.getCause();
            if (root.getMessage() != null && !sb.toString().contains(root.getMessage())) {
                sb.append(": ").append(root.getMessage());
            }
        }
        return sb.toString().replace('\n', ' ');
    }

    static String xmlEscape(String s) {
        return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
                .replace("\"", "&quot;").replace("'", "&apos;");
    }

    static void die(int code, String message) {
        System.err.println("neo4j-local: " + message);
        System.err.flush();
        System.exit(code);
    }
}
