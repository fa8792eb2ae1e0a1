#!/usr/bin/python3
"""credproxy benchmark driver; bench/run.sh builds the binaries and calls this.

It starts a throwaway MariaDB (tests/mariadb.sh, then restarted with benchmark limits),
HAProxy in TCP mode and credproxy, runs every workload against a direct connection,
HAProxy and credproxy, and writes a markdown report (plus the raw numbers as JSON).

Why the runs are interleaved: the machine is small and shared (load generator, server and
proxies all on 2 cores), so absolute numbers drift from minute to minute. Every measured
round runs direct, haproxy and credproxy back to back, the order rotating between rounds,
and the report takes the median over rounds; the ratios between the three then hold even
when the absolute numbers move.

Only python3's standard library is used (Debian's /usr/bin/python3).
"""

import argparse
import datetime
import json
import os
import platform
import re
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mysqlproto  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ("direct", "haproxy", "credproxy")
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Durations and sizes. quick is a smoke run (CI): every workload runs, at tiny durations,
# so its numbers show the harness works, not how fast credproxy is.
PROFILES = {
    "full": dict(
        rounds=5,  # more, shorter rounds: a median of 5 shrugs off a burst from a neighbour
        duration=12,  # seconds per sysbench run
        warmup=5,
        point_threads=(1, 16, 64),
        oltp_threads=16,
        tables=4,
        table_size=100000,
        churn_seconds=10,
        idle_n=10000,
        large_mb=100,
        large_rate_mb=20,  # the slow client reads 100 MB in about 5 s
        throughput_mb=100,
        throughput_reps=4,  # transfers per round and via; CPU is counted over all of them
        rotation_seconds=40,
        startup_reps=20,
    ),
    "quick": dict(
        rounds=1,
        duration=3,
        warmup=1,
        point_threads=(1, 16, 64),
        oltp_threads=16,
        tables=2,
        table_size=10000,
        churn_seconds=3,
        idle_n=500,
        large_mb=100,
        large_rate_mb=60,
        throughput_mb=100,
        throughput_reps=3,
        rotation_seconds=14,
        startup_reps=5,
    ),
}

# Target thresholds, from the issue that asked for this harness.
LARGE_RESULT_BOUND_MIB = 16  # "bounded": peak RSS growth while streaming 100 MB stays below this
IDLE_TARGET_KIB = 16
STARTUP_TARGET_MS = 50


def log(msg):
    print("[bench %s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


def free_port():
    """A port nothing listens on right now. Other test suites run on this machine, so
    fixed ports collide; the tiny race between close and reuse is acceptable here."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kind_is_credproxy(via):
    """credproxy, credproxy-w2, credproxy-tls, ...: a credproxy (no password from clients)."""
    return via.startswith("credproxy")


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def proc_cpu_seconds(pid):
    """utime + stime of the whole process (all threads), from /proc/PID/stat."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_status_kib(pid, field):
    """VmRSS / VmHWM and friends from /proc/PID/status, in KiB."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def wait_listening(port, proc, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            time.sleep(0.02)
    return False


class Service:
    """A process the harness started (haproxy or credproxy), with its log file."""

    def __init__(self, name, argv, port, logdir):
        self.name, self.argv, self.port = name, argv, port
        self.log_path = Path(logdir) / ("%s.log" % name)
        self.proc = None

    def start(self):
        logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        logf.close()
        if not wait_listening(self.port, self.proc):
            raise RuntimeError(
                "%s did not start listening on %d; log:\n%s" % (self.name, self.port, self.log_tail())
            )
        return self

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def cpu(self):
        return proc_cpu_seconds(self.pid)

    def rss_kib(self):
        return proc_status_kib(self.pid, "VmRSS")

    def hwm_kib(self):
        return proc_status_kib(self.pid, "VmHWM")

    def stop(self):
        """SIGTERM, then SIGKILL after 15 s; returns the exit status (None if never started)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def log_tail(self, n=20):
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


class Bench:
    def __init__(self, args):
        self.args = args
        self.p = dict(PROFILES["quick" if args.quick else "full"])
        for k in ("rounds", "duration"):
            if getattr(args, k) is not None:
                self.p[k] = getattr(args, k)
        self.build = Path(args.build_dir).resolve()
        self.credproxy_bin = self.build / "proxy" / "credproxy"
        self.churn_bin = self.build / "bench" / "bench_churn"
        self.churn_proto_bin = self.build / "bench" / "bench_churn_proto"
        self.workdir = Path(tempfile.mkdtemp(prefix="credproxy-bench."))
        self.dbdir = self.workdir / "db"
        self.services = {}
        self.extra_services = []
        self.variants = {}  # via name -> (Service, kind, start options), see start_variant
        self.results = {}
        self.problems = []  # what went wrong in the run (crashes, errors): reported, not fatal
        self.notes = []
        self.verdicts = []
        self.nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        self.only = set(args.only.split(",")) if args.only else None

    # ---- set-up ---------------------------------------------------------------------------

    def secret(self):
        """The secret is read fresh every time: the rotation workload changes the password."""
        with open(self.dbdir / "secret.json") as f:
            return json.load(f)

    def root_sql(self, sql):
        out = subprocess.run(
            # --skip-ssl: the CLI would otherwise use TLS even on the socket, and count in
            # Ssl_accepts, which ssl_accepts() uses to prove the plaintext paths stay plaintext.
            ["mariadb", "--no-defaults", "--skip-ssl", "--socket=%s" % (self.dbdir / "mysqld.sock"),
             "--user=root", "--batch", "--skip-column-names"],
            input=sql, capture_output=True, text=True, check=True,
        )
        return out.stdout.strip()

    def start_mariadb(self):
        self.mysql_port = free_port()
        log("starting MariaDB on 127.0.0.1:%d in %s" % (self.mysql_port, self.dbdir))
        mdb = str(ROOT / "tests" / "mariadb.sh")
        # tests/mariadb.sh creates the datadir, the app user and secret.json; its my.cnf is
        # made for the integration tests (max_connections 500, TLS on). Restart the same
        # datadir with the limits the benchmark needs as command-line overrides:
        #   max-connections / open-files-limit   10,000 idle clients each hold one upstream
        #                                         connection while credproxy has no pool
        #   innodb-buffer-pool-size               the sysbench tables stay in memory
        #   max-connect-errors                    churn aborts must not get 127.0.0.1 blocked
        subprocess.run([mdb, "start", str(self.dbdir), str(self.mysql_port)], check=True,
                       stdout=subprocess.DEVNULL)
        subprocess.run([mdb, "stop", str(self.dbdir)], check=True)
        argv = [
            "mariadbd", "--defaults-file=%s" % (self.dbdir / "my.cnf"),
            "--max-connections=20000", "--open-files-limit=%d" % self.nofile,
            "--innodb-buffer-pool-size=512M", "--max-connect-errors=1000000000",
        ]
        logf = open(self.dbdir / "mysqld.out", "ab")
        self.mariadbd = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        logf.close()
        if not wait_listening(self.mysql_port, self.mariadbd, timeout=60):
            raise RuntimeError("mariadbd did not restart; see %s/mysqld.err" % self.dbdir)
        # The socket comes up a moment after TCP; root_sql needs it.
        for _ in range(100):
            try:
                self.root_sql("SELECT 1")
                break
            except subprocess.CalledProcessError:
                time.sleep(0.1)
        self.mariadb_version = self.root_sql("SELECT VERSION()")
        self.max_connections = int(self.root_sql("SELECT @@max_connections"))
        # TLS stays on (my.cnf's ssl-* lines) for the tls workload. Every other path is
        # plaintext: sysbench (--mysql-ssl=off is its default), bench_churn and mysqlproto
        # never ask for TLS, and credproxy runs with --upstream-tls disabled. run() checks
        # that with Ssl_accepts around each workload.
        self.have_tls = self.root_sql("SELECT @@have_ssl") == "YES"

    def ssl_accepts(self):
        """TLS handshakes MariaDB has accepted since it started (global status)."""
        out = self.root_sql("SHOW GLOBAL STATUS LIKE 'Ssl_accepts'")
        return int(out.split()[1]) if out else None

    def haproxy_argv(self, name, port, nbthread=1):
        # maxconn: as many as the fd limit allows (each connection is two fds); HAProxy
        # refuses to start when maxconn needs more fds than the hard limit.
        maxconn = max(100, (self.nofile - 200) // 2)
        cfg = self.workdir / ("%s.cfg" % name)
        cfg.write_text(
            "global\n"
            "    nbthread %d\n"
            "    maxconn %d\n"
            "defaults\n"
            "    mode tcp\n"
            "    maxconn %d\n"
            "    timeout connect 10s\n"
            "    timeout client 1h\n"
            "    timeout server 1h\n"
            "frontend mysql\n"
            "    bind 127.0.0.1:%d\n"
            "    default_backend db\n"
            "backend db\n"
            "    balance first\n"
            "    server db1 127.0.0.1:%d\n" % (nbthread, maxconn, maxconn, port, self.mysql_port)
        )
        # -db: stay in the foreground, so the pid we hold is the one process doing the work.
        return ["haproxy", "-db", "-f", str(cfg)]

    def credproxy_argv(self, port, extra=(), workers="arg", upstream_tls="disabled"):
        # --upstream-tls disabled: HAProxy passes plaintext through, so credproxy must not pay
        # for TLS to the server either (auto would be "preferred" on a loopback host); the
        # tls workload asks for "required".
        # --workers: as many event loops as HAProxy has threads (nbthread 1), by default;
        # workers=None starts credproxy without the flag, at its own default.
        if workers == "arg":
            workers = self.args.workers
        return [
            str(self.credproxy_bin), "--secret-file", str(self.dbdir / "secret.json"),
            "--listen", "127.0.0.1:%d" % port,
            *(("--workers", str(workers)) if workers is not None else ()),
            "--log-level", self.args.log_level, "--upstream-tls", upstream_tls, *extra,
        ]

    def start_service(self, kind, name, extra=(), **opts):
        """opts: nbthread for haproxy; workers, upstream_tls for credproxy."""
        port = free_port()
        if kind == "haproxy":
            argv = self.haproxy_argv(name, port, **opts)
        else:
            argv = self.credproxy_argv(port, extra, **opts)
        svc = Service(name, argv, port, self.workdir).start()
        return svc

    def start_variant(self, via, kind, **opts):
        """A proxy started for one workload under its own name (credproxy-w2, haproxy-nb2, ...):
        target(via) finds it, stop_variants() ends it."""
        svc = self.start_service(kind, via, **opts)
        self.extra_services.append(svc)
        self.variants[via] = (svc, kind, opts)
        return svc

    def variant_alive(self, via, when):
        """check_alive() for a variant: a finding, and a fresh instance to go on with."""
        svc, kind, opts = self.variants[via]
        if svc.alive():
            return False
        self.problems.append("%s stopped during %s (status %s); last log lines:\n%s"
                             % (via, when, svc.proc.returncode, svc.log_tail()))
        self.start_variant(via, kind, **opts)
        return True

    def stop_variants(self):
        for via, (svc, _, _) in list(self.variants.items()):
            rc = svc.stop()
            if kind_is_credproxy(via) and rc not in (0, None):
                self.problems.append("%s exited with status %s on SIGTERM" % (via, rc))
            self.extra_services.remove(svc)
        self.variants.clear()

    def start_all(self):
        self.start_mariadb()
        self.services["haproxy"] = self.start_service("haproxy", "haproxy")
        self.services["credproxy"] = self.start_service("credproxy", "credproxy")
        log("haproxy on %d, credproxy on %d" % (self.services["haproxy"].port,
                                                self.services["credproxy"].port))

    def target(self, name):
        """(port, user, password, service) for a target. credproxy needs no password."""
        if name == "direct":
            return self.mysql_port, "app", self.secret()["password"], None
        svc = self.services[name] if name in self.services else self.variants[name][0]
        pw = "" if kind_is_credproxy(name) else self.secret()["password"]
        return svc.port, "app", pw, svc

    def check_alive(self, when):
        """A proxy that died is a finding: record it and start a fresh one to go on. Returns
        True when one was restarted (the caller then repeats its run)."""
        restarted = False
        for name in ("haproxy", "credproxy"):
            svc = self.services[name]
            if not svc.alive():
                rc = svc.proc.returncode
                why = ("a clean exit: something sent it SIGTERM or SIGINT" if rc == 0 else
                       "killed by signal %d" % -rc if rc < 0 else "exit status %d" % rc)
                self.problems.append("%s stopped during %s (%s); last log lines:\n%s"
                                     % (name, when, why, svc.log_tail()))
                log("%s died during %s (%s); restarting it" % (name, when, why))
                svc.start()
                restarted = True
        return restarted

    def health(self, svc):
        """What leaks show up as: RSS, open fds, and sockets in CLOSE-WAIT (the peer closed,
        the process never did)."""
        pid = svc.pid
        try:
            fds = len(os.listdir("/proc/%d/fd" % pid))
        except OSError:
            return None
        out = subprocess.run(["ss", "-tanpH", "state", "close-wait"], capture_output=True, text=True).stdout
        close_wait = sum(1 for line in out.splitlines() if "pid=%d," % pid in line)
        return dict(rss_kib=svc.rss_kib(), fds=fds, close_wait=close_wait, pid=pid)

    def stop_all(self):
        for svc in list(self.services.values()) + self.extra_services:
            rc = svc.stop()
            if svc.name.startswith("credproxy") and rc not in (0, None):
                self.problems.append("%s exited with status %s on SIGTERM" % (svc.name, rc))
        if getattr(self, "mariadbd", None) and self.mariadbd.poll() is None:
            # mariadbd is our child: SIGTERM is its normal shutdown, and we must reap it
            # (tests/mariadb.sh stop would wait on a zombie).
            self.mariadbd.terminate()
            try:
                self.mariadbd.wait(120)
            except subprocess.TimeoutExpired:
                self.mariadbd.kill()
                self.mariadbd.wait()

    # ---- sysbench -------------------------------------------------------------------------

    def sysbench_argv(self, name, test, threads, seconds, extra=()):
        port, user, pw, _ = self.target(name)
        argv = [
            "sysbench", test, "--db-driver=mysql", "--mysql-host=127.0.0.1",
            "--mysql-port=%d" % port, "--mysql-user=%s" % user, "--mysql-db=app",
            "--tables=%d" % self.p["tables"], "--table-size=%d" % self.p["table_size"],
            "--threads=%d" % threads, "--time=%d" % seconds, *extra,
        ]
        if pw:
            # Through a config file, not argv, so the password is not in ps. Quoted: sysbench
            # would take the '#' in the test passwords for the start of a comment.
            cfg = self.workdir / "sysbench-password.cfg"
            fd = os.open(cfg, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write('mysql-password="%s"\n' % pw)
            argv.insert(2, "--config-file=%s" % cfg)
        return argv

    @staticmethod
    def parse_sysbench(out):
        def num(pattern):
            m = re.search(pattern, out)
            return float(m.group(1)) if m else None

        r = {
            "qps": num(r"queries:\s+\d+\s+\(([\d.]+) per sec"),
            "tps": num(r"transactions:\s+\d+\s+\(([\d.]+) per sec"),
            "queries": num(r"queries:\s+(\d+)"),
            "errors": num(r"ignored errors:\s+(\d+)"),
            "reconnects": num(r"reconnects:\s+(\d+)"),
            "avg_ms": num(r"avg:\s+([\d.]+)"),
            "lat_sum_ms": num(r"sum:\s+([\d.]+)"),
            "events": num(r"total number of events:\s+(\d+)"),
            "max_ms": num(r"max:\s+([\d.]+)"),
            "time_s": num(r"total time:\s+([\d.]+)s"),
        }
        # --histogram=on prints every latency bucket; both percentiles come from it (sysbench
        # itself prints only the one --percentile asks for).
        # sysbench prints avg with two decimals (10 us steps): recompute it from the sum.
        if r["lat_sum_ms"] and r["events"]:
            r["avg_ms"] = r["lat_sum_ms"] / r["events"]
        hist = [(float(v), int(c)) for v, c in re.findall(r"^\s*([\d.]+) \|\**\s+(\d+)$", out, re.M)]
        total = sum(c for _, c in hist)
        for pct in (95, 99):
            r["p%d_ms" % pct] = None
            acc = 0
            for v, c in hist:
                acc += c
                if acc >= total * pct / 100.0:
                    r["p%d_ms" % pct] = v
                    break
        return r

    def tls_client_dir(self):
        """sysbench --mysql-ssl=on loads client-key.pem, client-cert.pem and cacert.pem from
        its working directory (and fails without them): a client certificate from the test CA
        that tests/mariadb.sh made. MariaDB does not ask for it (no REQUIRE X509)."""
        d = self.workdir / "tls-client"
        if (d / "cacert.pem").exists():
            return d
        d.mkdir(exist_ok=True)
        tls = self.dbdir / "tls"
        def run(argv):
            subprocess.run(argv, cwd=d, check=True, capture_output=True)

        run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-subj", "/CN=credproxy bench client", "-keyout", "client-key.pem", "-out", "client.csr"])
        (d / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
        run(["openssl", "x509", "-req", "-in", "client.csr", "-CA", str(tls / "ca.pem"), "-CAkey",
             str(tls / "ca-key.pem"), "-CAcreateserial", "-CAserial", "ca.srl", "-days", "30",
             "-extfile", "client.ext", "-out", "client-cert.pem"])
        shutil.copy(tls / "ca.pem", d / "cacert.pem")
        return d

    def run_sysbench(self, name, test, threads, seconds, ssl=False):
        """ssl: sysbench itself speaks TLS (--mysql-ssl=on) to whatever name is."""
        extra = ["--histogram=on", "--percentile=95"] + (["--mysql-ssl=on"] if ssl else []) + ["run"]
        argv = self.sysbench_argv(name, test, threads, seconds, extra)
        _, _, _, svc = self.target(name)
        cwd = self.tls_client_dir() if ssl else None
        cpu0 = svc.cpu() if svc else None
        db0 = proc_cpu_seconds(self.mariadbd.pid)
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 120, cwd=cwd)
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu1 = svc.cpu() if svc else None
        db1 = proc_cpu_seconds(self.mariadbd.pid)
        r = self.parse_sysbench(out.stdout)
        r["exit"] = out.returncode
        if out.returncode != 0 or r["qps"] is None:
            tail = "\n".join((out.stdout + out.stderr).splitlines()[-8:])
            self.problems.append("sysbench %s %dt via %s failed (exit %d):\n%s"
                                 % (test, threads, name, out.returncode, tail))
            r["failed"] = True
        q = r["queries"] or 0
        # CPU per query: the proxy process's utime+stime over the run (all its threads),
        # divided by the queries sysbench completed. Connection set-up is included but is
        # negligible next to seconds of queries.
        r["proxy_cpu_s"] = (cpu1 - cpu0) if svc else None
        r["proxy_us_per_q"] = (cpu1 - cpu0) / q * 1e6 if svc and q else None
        r["db_us_per_q"] = (db1 - db0) / q * 1e6 if q else None
        # The load generator's own CPU (sysbench is the only child reaped meanwhile): where a
        # path puts TLS in the client, the client pays for it.
        client = ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime
        r["client_us_per_q"] = client / q * 1e6 if q else None
        return r

    def prepare_sysbench(self):
        log("sysbench prepare: %d tables x %d rows" % (self.p["tables"], self.p["table_size"]))
        argv = self.sysbench_argv("direct", "oltp_read_write", 4, 1)
        subprocess.run(argv + ["prepare"], check=True, stdout=subprocess.DEVNULL)

    def order(self, rnd):
        """Target order for a round, rotated so no target always runs first (cold) or last."""
        k = rnd % len(TARGETS)
        return TARGETS[k:] + TARGETS[:k]

    def wl_sysbench(self):
        p = self.p
        log("warm-up: point_select 16 threads, %ds per target" % p["warmup"])
        for name in TARGETS:
            self.run_sysbench(name, "oltp_point_select", 16, p["warmup"])
        configs = []
        if self.want("sysbench"):
            configs += [("oltp_point_select", t) for t in p["point_threads"]]
        if self.want("oltp"):
            configs += [("oltp_read_only", p["oltp_threads"]), ("oltp_read_write", p["oltp_threads"])]
        runs = {}
        for rnd in range(p["rounds"]):
            for test, threads in configs:
                for name in self.order(rnd):
                    log("round %d/%d: %s %d threads via %s (%ds)"
                        % (rnd + 1, p["rounds"], test, threads, name, p["duration"]))
                    r = self.run_sysbench(name, test, threads, p["duration"])
                    if self.check_alive("%s %d threads via %s" % (test, threads, name)):
                        r = self.run_sysbench(name, test, threads, p["duration"])  # void: once more
                    runs.setdefault("%s/%d" % (test, threads), {}).setdefault(name, []).append(r)
        summary = {key: {name: summarize_sysbench(rs) for name, rs in by_target.items()}
                   for key, by_target in runs.items()}
        self.results["sysbench"] = {"summary": summary, "runs": runs}

    # ---- workers: credproxy's default loop count, and two loops against two threads -------

    # (via, kind, start options): credproxy without --workers (its default, whatever it is
    # today), with 1 and with 2 loops; HAProxy with nbthread 1 and 2.
    WORKER_VIAS = (
        ("credproxy-default", "credproxy", dict(workers=None)),
        ("credproxy-w1", "credproxy", dict(workers=1)),
        ("credproxy-w2", "credproxy", dict(workers=2)),
        ("haproxy-nb1", "haproxy", dict(nbthread=1)),
        ("haproxy-nb2", "haproxy", dict(nbthread=2)),
    )

    def wl_workers(self):
        """point_select 16 threads through five fresh proxies, interleaved: does credproxy's
        default worker count cost more CPU per query than one loop, and how do two loops
        compare with HAProxy's two threads?"""
        p = self.p
        for via, kind, opts in self.WORKER_VIAS:
            self.start_variant(via, kind, **opts)
        threads = {via: proc_status_kib(self.variants[via][0].pid, "Threads") for via, _, _ in self.WORKER_VIAS}
        vias = [v for v, _, _ in self.WORKER_VIAS]
        log("workers: warm-up, point_select 16 threads, %ds per proxy" % p["warmup"])
        for via in vias:
            self.run_sysbench(via, "oltp_point_select", 16, p["warmup"])
        runs = {}
        for rnd in range(p["rounds"]):
            k = rnd % len(vias)
            for via in vias[k:] + vias[:k]:
                log("round %d/%d: workers: point_select 16 threads via %s (%ds)"
                    % (rnd + 1, p["rounds"], via, p["duration"]))
                r = self.run_sysbench(via, "oltp_point_select", 16, p["duration"])
                if self.variant_alive(via, "workers via %s" % via):
                    r = self.run_sysbench(via, "oltp_point_select", 16, p["duration"])
                runs.setdefault(via, []).append(r)
        summary = {via: summarize_sysbench(rs) for via, rs in runs.items()}
        for via in summary:
            summary[via]["threads"] = threads.get(via)
        self.results["workers"] = {"summary": summary, "runs": runs}
        self.stop_variants()

    # ---- tls: TLS to the server ------------------------------------------------------------

    # (label, target, sysbench speaks TLS): who encrypts what on each path.
    TLS_VIAS = (
        ("direct-tls", "direct", True),  # sysbench <-TLS-> MariaDB
        ("haproxy-tls", "haproxy", True),  # sysbench <-TLS-> (HAProxy relays the records) MariaDB
        ("credproxy-tls", "credproxy-tls", False),  # sysbench <-plain-> credproxy <-TLS-> MariaDB
        ("haproxy", "haproxy", False),  # plaintext baselines from the same rounds
        ("credproxy", "credproxy", False),
    )
    TLS_PATHS = {
        "direct-tls": "client to MariaDB (client and server do the crypto)",
        "haproxy-tls": "client to MariaDB, through HAProxy (which relays the TLS records)",
        "credproxy-tls": "credproxy to MariaDB only; the app talks plaintext on loopback",
        "haproxy": "nothing",
        "credproxy": "nothing",
    }

    def session_ssl_version(self, target, ssl):
        """What the server says about the TLS of the connection a query through target uses:
        SHOW SESSION STATUS LIKE 'Ssl_version' ('' when plaintext). Through credproxy this is
        the upstream connection the session was given."""
        import pymysql  # Debian's python3-pymysql, there for the integration tests

        port, user, pw, _ = self.target(target)
        kw = dict(ssl={"ca": str(self.dbdir / "tls" / "ca.pem")}, ssl_verify_cert=False) if ssl else {}
        try:
            con = pymysql.connect(host="127.0.0.1", port=port, user=user, password=pw, database="app", **kw)
            with con.cursor() as c:
                c.execute("SHOW SESSION STATUS LIKE 'Ssl_version'")
                row = c.fetchone()
            con.close()
            return row[1] if row else ""
        except Exception as e:  # a finding for the report, not a reason to stop the run
            self.problems.append("tls: Ssl_version through %s: %s" % (target, e))
            return None

    def wl_tls(self):
        """point_select 16 threads against MariaDB with TLS on: direct and through HAProxy with
        sysbench speaking TLS, through credproxy --upstream-tls required with sysbench in
        plaintext, and the plaintext HAProxy and credproxy paths for the cost of TLS."""
        p = self.p
        if not self.have_tls:
            self.problems.append("tls: MariaDB has no TLS (@@have_ssl is not YES); workload skipped")
            return
        self.start_variant("credproxy-tls", "credproxy", upstream_tls="required")
        seen = {label: self.session_ssl_version(target, ssl) for label, target, ssl in self.TLS_VIAS}
        for label, _, ssl in self.TLS_VIAS:
            if seen[label] is not None and bool(seen[label]) != (ssl or label == "credproxy-tls"):
                self.problems.append("tls: the server sees %r as the TLS version of %s's connection"
                                     % (seen[label], label))
        log("tls: warm-up, point_select 16 threads, %ds per path" % p["warmup"])
        for label, target, ssl in self.TLS_VIAS:
            self.run_sysbench(target, "oltp_point_select", 16, p["warmup"], ssl=ssl)
        runs = {}
        vias = list(self.TLS_VIAS)
        for rnd in range(p["rounds"]):
            k = rnd % len(vias)
            for label, target, ssl in vias[k:] + vias[:k]:
                log("round %d/%d: tls: point_select 16 threads via %s (%ds)"
                    % (rnd + 1, p["rounds"], label, p["duration"]))
                r = self.run_sysbench(target, "oltp_point_select", 16, p["duration"], ssl=ssl)
                again = (self.variant_alive(target, "tls via %s" % label) if target in self.variants
                         else self.check_alive("tls via %s" % label))
                if again:
                    r = self.run_sysbench(target, "oltp_point_select", 16, p["duration"], ssl=ssl)
                runs.setdefault(label, []).append(r)
        summary = {label: summarize_sysbench(rs) for label, rs in runs.items()}
        for label in summary:
            summary[label]["ssl_version"] = seen.get(label)
            summary[label]["encrypts"] = self.TLS_PATHS[label]
        self.results["tls"] = {"summary": summary, "runs": runs}
        self.stop_variants()

    # ---- connection churn -----------------------------------------------------------------

    # The churn clients: Connector/C (what applications use) and bench_churn_proto, which
    # speaks the protocol itself: about 2 µs of user CPU per connection instead of 11 (57 vs
    # 83 µs with the kernel's part), so more of the two cores go to the proxy and the server.
    CHURN_CLIENTS = ("proto", "connc")

    def run_churn(self, name, threads, seconds, client="connc"):
        port, user, pw, svc = self.target(name)
        binary = self.churn_proto_bin if client == "proto" else self.churn_bin
        if not binary.exists():
            self.problems.append("churn: %s is missing (bench/run.sh builds it)" % binary)
            return None
        env = dict(os.environ, BENCH_PASSWORD=pw)
        argv = [str(binary), "--host", "127.0.0.1", "--port", str(port), "--user", user,
                "--db", "app", "--threads", str(threads), "--seconds", str(seconds)]
        cpu0 = svc.cpu() if svc else None
        out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=seconds + 60)
        cpu1 = svc.cpu() if svc else None
        try:
            r = json.loads(out.stdout)
        except ValueError:
            self.problems.append("%s via %s printed no result (exit %d): %s"
                                 % (binary.name, name, out.returncode, out.stderr[-500:]))
            return None
        if svc and r["connections"]:
            r["proxy_us_per_conn"] = (cpu1 - cpu0) / r["connections"] * 1e6
        # A whole second without one finished cycle, or a run that overran its time: every
        # thread waited at once (seen on this shared machine: 1 + 2 s, SYN-retransmit-like,
        # for direct MariaDB logins at the same moment). The conn/s of such a run is no rate.
        idle_s = [i for i, n in enumerate(r["ok_per_s"][:int(seconds)]) if n == 0]
        if idle_s or r["seconds"] > seconds + 0.5:
            self.problems.append("churn (%s) via %s stalled: %.1f s for a %d s run, no cycle finished in "
                                 "second(s) %s; ok per second %s" % (binary.name, name, r["seconds"], seconds,
                                                                     idle_s, r["ok_per_s"]))
        if r["errors"]:
            self.problems.append("churn (%s) via %s: %d of %d connections failed; first: %s"
                                 % (binary.name, name, r["errors"], r["errors"] + r["connections"],
                                    r["first_error"]))
        return r

    def wl_churn(self):
        """Both clients, every target, interleaved per round. results["churn"]["summary"] stays
        the Connector/C one (its shape unchanged); "summary_proto" is bench_churn_proto's."""
        p = self.p
        runs = {c: {} for c in self.CHURN_CLIENTS}
        for rnd in range(p["rounds"]):
            for name in self.order(rnd):
                for client in self.CHURN_CLIENTS:
                    log("round %d/%d: churn (%s) 8 threads via %s (%ds)"
                        % (rnd + 1, p["rounds"], client, name, p["churn_seconds"]))
                    r = self.run_churn(name, 8, p["churn_seconds"], client)
                    if self.check_alive("churn (%s) via %s" % (client, name)):
                        r = self.run_churn(name, 8, p["churn_seconds"], client)  # void: once more
                    if r:
                        runs[client].setdefault(name, []).append(r)
        res = {}
        for client, by_target in runs.items():
            summary = {}
            for name, rs in by_target.items():
                summary[name] = {k: median([r.get(k) for r in rs]) for k in
                                 ("cps", "p50_ms", "p99_ms", "proxy_us_per_conn")}
                summary[name]["errors"] = sum(r["errors"] for r in rs)
            sfx = "" if client == "connc" else "_" + client
            res["summary" + sfx] = summary
            res["runs" + sfx] = {n: [{k: v for k, v in r.items() if not k.endswith("_per_s")} for r in rs]
                                 for n, rs in by_target.items()}
        self.results["churn"] = res

    # ---- syscalls per query and per connection (bench/syscalls.py) -------------------------

    def wl_syscalls(self):
        """strace -c on fresh proxies: SELECT 1 on one open connection, then connect/SELECT 1/
        close cycles. credproxy gets --allow-core-dumps true: it is not traceable otherwise."""
        nq, nc = (2000, 300) if self.args.quick else (10000, 2000)
        res = {}
        for kind, extra in (("haproxy", ()), ("credproxy", ("--allow-core-dumps", "true"))):
            svc = self.start_service(kind, "%s-syscalls" % kind, extra)
            self.extra_services.append(svc)
            env = dict(os.environ, BENCH_PASSWORD="" if kind == "credproxy" else self.secret()["password"])
            for mode, argv in (("query", ["--queries", str(nq)]), ("conn", ["--churn", str(nc)])):
                log("syscalls per %s via %s (strace)" % (mode, kind))
                out = subprocess.run([sys.executable, str(ROOT / "bench" / "syscalls.py"), "--pid", str(svc.pid),
                                      "--port", str(svc.port), "--name", kind, "--json", *argv],
                                     env=env, capture_output=True, text=True, timeout=600)
                try:
                    res.setdefault(kind, {})[mode] = json.loads(out.stdout)
                except ValueError:
                    self.problems.append("syscalls.py per %s via %s failed: %s" % (mode, kind, out.stderr[-500:]))
        self.results["syscalls"] = res

    # ---- large result to a slow client ----------------------------------------------------

    def slow_read(self, port, user, pw, svc):
        """Streams the large result with a 16 KiB receive buffer, paced to large_rate_mb;
        samples the proxy's RSS every 20 ms meanwhile."""
        mb, rate = self.p["large_mb"], self.p["large_rate_mb"] * 1024 * 1024
        samples = []
        stop = threading.Event()

        def sampler():
            while not stop.is_set():
                v = proc_status_kib(svc.pid, "VmRSS")
                if v:
                    samples.append(v)
                time.sleep(0.02)

        sock = mysqlproto.connect("127.0.0.1", port, user, pw, "app", rcvbuf=16384)
        th = threading.Thread(target=sampler, daemon=True)
        th.start()
        t0 = time.monotonic()
        sql = "SELECT REPEAT('x', 1024*1024) FROM seq_1_to_%d" % mb  # the sequence engine
        sock.sendall(mysqlproto.packet(0, bytes([mysqlproto.COM_QUERY]) + sql.encode()))
        scan, total = mysqlproto.ResultScanner(), 0
        while not scan.finished:
            data = sock.recv(16384)
            if not data:
                break
            total += len(data)
            scan.feed(data)
            ahead = total / rate - (time.monotonic() - t0)
            if ahead > 0:
                time.sleep(ahead)
        elapsed = time.monotonic() - t0
        stop.set()
        th.join()
        sock.close()
        return dict(bytes=total, rows=scan.rows, error=scan.error, complete=scan.finished,
                    seconds=elapsed, mb_per_s=total / elapsed / 1048576,
                    max_sampled_rss_kib=max(samples) if samples else None)

    def wl_large(self):
        """Fresh proxies, so that VmHWM (the peak RSS since start) covers only this transfer."""
        res = {}
        for kind in ("haproxy", "credproxy"):
            svc = self.start_service(kind, "%s-large" % kind)
            self.extra_services.append(svc)
            port = svc.port
            pw = "" if kind == "credproxy" else self.secret()["password"]
            # One small login first, so that lazily allocated per-process state is in the baseline.
            mysqlproto.ping(mysqlproto.connect("127.0.0.1", port, "app", pw, "app"))
            time.sleep(0.2)
            base = svc.rss_kib()
            log("large result: %d MB at %d MB/s via %s" % (self.p["large_mb"], self.p["large_rate_mb"], kind))
            try:
                r = self.slow_read(port, "app", pw, svc)
            except (OSError, mysqlproto.MySQLError) as e:
                self.problems.append("large result via %s failed: %s" % (kind, e))
                r = {"error": str(e)}
            if svc.alive():
                r["hwm_kib"] = svc.hwm_kib()
                time.sleep(0.5)
                r["rss_after_kib"] = svc.rss_kib()
            else:
                self.problems.append("%s exited during the large result: %s" % (kind, svc.log_tail()))
            r["rss_base_kib"] = base
            peak = max(v for v in (r.get("hwm_kib"), r.get("max_sampled_rss_kib"), base) if v)
            r["peak_growth_kib"] = peak - base
            if r.get("rows") != self.p["large_mb"] or r.get("error"):
                self.problems.append("large result via %s incomplete: %d rows, error %s"
                                     % (kind, r.get("rows") or 0, r.get("error")))
            res[kind] = r
            svc.stop()
        self.results["large"] = res

    # ---- throughput: a large result as fast as one client can take it --------------------

    def fast_read(self, sock, mb):
        """One SELECT of mb rows of 1 MiB through a logged-in socket, read as fast as Python
        can: recv_into one 1 MiB buffer, packet boundaries only (ResultScanner). Returns
        (bytes, rows, seconds, error)."""
        buf = bytearray(1 << 20)
        view = memoryview(buf)
        sql = "SELECT REPEAT('x', 1024*1024) FROM seq_1_to_%d" % mb
        t0 = time.perf_counter()
        sock.sendall(mysqlproto.packet(0, bytes([mysqlproto.COM_QUERY]) + sql.encode()))
        scan, total = mysqlproto.ResultScanner(), 0
        while not scan.finished:
            n = sock.recv_into(buf)
            if not n:
                scan.error = scan.error or "connection closed mid-result"
                break
            total += n
            scan.feed(view[:n])
        return total, scan.rows, time.perf_counter() - t0, scan.error

    def throughput_round(self, name):
        port, user, pw, svc = self.target(name)
        mb, reps = self.p["throughput_mb"], self.p["throughput_reps"]
        sock = mysqlproto.connect("127.0.0.1", port, user, pw, "app")
        self.fast_read(sock, 1)  # the login's lazy state and the first query out of the way
        cpu0 = svc.cpu() if svc else None
        db0 = proc_cpu_seconds(self.mariadbd.pid)
        me0 = resource.getrusage(resource.RUSAGE_SELF)
        rates, nbytes, secs, errors = [], 0, 0.0, []
        for _ in range(reps):
            b, rows, t, err = self.fast_read(sock, mb)
            if err or rows != mb:
                errors.append("%d of %d rows, %s" % (rows, mb, err))
                continue
            rates.append(b / t / 1048576)
            nbytes += b
            secs += t
        me1 = resource.getrusage(resource.RUSAGE_SELF)
        cpu1 = svc.cpu() if svc else None
        db1 = proc_cpu_seconds(self.mariadbd.pid)
        sock.close()
        mib = nbytes / 1048576
        if errors:
            self.problems.append("throughput via %s: %d of %d transfers failed; first: %s"
                                 % (name, len(errors), reps, errors[0]))
        client = me1.ru_utime + me1.ru_stime - me0.ru_utime - me0.ru_stime
        return dict(
            mb_per_s=median(rates), all_mb_per_s=rates, mib=mib, seconds=secs, failed=len(errors),
            proxy_us_per_mb=(cpu1 - cpu0) / mib * 1e6 if svc and mib else None,
            db_us_per_mb=(db1 - db0) / mib * 1e6 if mib else None,
            # The reader's own CPU over its time in recv: near 1.0 means the client, not the
            # path, set the pace.
            client_busy=client / secs if secs else None,
        )

    def wl_throughput(self):
        """Speed, not memory (that is wl_large): one client pulls throughput_mb MB as fast as
        it can, throughput_reps times per round, direct / HAProxy / credproxy interleaved."""
        p = self.p
        # Warm-up, not recorded: one full transfer per path. In a first try the first
        # transfers of the workload ran at a tenth of the speed of the later ones, whichever
        # path came first (cause not found: the server or a neighbour still busy).
        log("throughput: warm-up, one %d MB transfer per path" % p["throughput_mb"])
        for name in TARGETS:
            port, user, pw, _ = self.target(name)
            try:
                sock = mysqlproto.connect("127.0.0.1", port, user, pw, "app")
                self.fast_read(sock, p["throughput_mb"])
                sock.close()
            except (OSError, mysqlproto.MySQLError) as e:
                self.problems.append("throughput warm-up via %s failed: %s" % (name, e))
        runs = {}
        for rnd in range(p["rounds"]):
            for name in self.order(rnd):
                log("round %d/%d: throughput: %d x %d MB via %s"
                    % (rnd + 1, p["rounds"], p["throughput_reps"], p["throughput_mb"], name))
                try:
                    r = self.throughput_round(name)
                except (OSError, mysqlproto.MySQLError) as e:
                    self.problems.append("throughput via %s failed: %s" % (name, e))
                    r = None
                if self.check_alive("throughput via %s" % name):
                    r = None  # void: the next round measures it again
                if r:
                    runs.setdefault(name, []).append(r)
        summary = {}
        for name, rs in runs.items():
            summary[name] = {k: median([r.get(k) for r in rs]) for k in
                             ("mb_per_s", "proxy_us_per_mb", "db_us_per_mb", "client_busy")}
            rates = [x for r in rs for x in r["all_mb_per_s"]]
            summary[name]["transfers"] = len(rates)
            summary[name]["spread_pct"] = ((max(rates) - min(rates)) / median(rates) * 100
                                           if len(rates) > 1 else None)
        self.results["throughput"] = {"summary": summary, "runs": runs}

    # ---- idle connections -----------------------------------------------------------------

    def upstream_count(self):
        return int(self.root_sql("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER='app'"))

    def wait_upstream_below(self, n, timeout=60):
        end = time.monotonic() + timeout
        while time.monotonic() < end and self.upstream_count() > n:
            time.sleep(0.5)

    def supports(self, *flags):
        """Whether this credproxy build accepts flags (asked with --check-config, never guessed)."""
        argv = self.credproxy_argv(free_port(), flags) + ["--check-config"]
        out = subprocess.run(argv, capture_output=True, text=True)
        return out.returncode == 0, (out.stdout + out.stderr).strip()

    def idle_run(self, kind, name, n, extra=()):
        """Opens n logged-in connections through a fresh proxy and holds them. The upstream
        count is the app user's connections on MariaDB, relative to before the run (the
        main credproxy keeps its own pool open meanwhile)."""
        up_start = self.upstream_count()
        svc = self.start_service(kind, name, extra)
        self.extra_services.append(svc)
        pw = "" if kind == "credproxy" else self.secret()["password"]
        # One login first, so that lazily allocated per-process state is in the baseline.
        mysqlproto.ping(mysqlproto.connect("127.0.0.1", svc.port, "app", pw, "app"))
        time.sleep(0.5)
        base_rss = svc.rss_kib()
        log("idle: opening %d connections via %s" % (n, name))
        t0 = time.monotonic()
        socks, errors = mysqlproto.open_many("127.0.0.1", svc.port, "app", pw, "app", n,
                                             timeout=max(120, n / 20))
        open_s = time.monotonic() - t0
        time.sleep(2)  # let the proxy settle (deferred frees, upstream logins finishing)
        r = dict(requested=n, opened=len(socks), open_seconds=open_s, errors=errors, rss_base_kib=base_rss)
        if svc.alive():
            r["rss_kib"] = svc.rss_kib()
            r["upstream"] = self.upstream_count() - up_start
            r["kib_per_conn"] = (r["rss_kib"] - base_rss) / len(socks) if socks else None
            # The connections must still work, not just exist: ping a sample of them.
            bad = 0
            for s in socks[:: max(1, len(socks) // 50)]:
                try:
                    mysqlproto.ping(s)
                except (OSError, mysqlproto.MySQLError):
                    bad += 1
            r["ping_failures"] = bad
            if bad:
                self.problems.append("idle via %s: %d sampled connections failed a ping" % (name, bad))
        else:
            self.problems.append("%s exited (status %s) with %d idle connections open: %s"
                                 % (name, svc.proc.returncode, len(socks), svc.log_tail()))
        for s in socks:
            s.close()
        time.sleep(2)
        if svc.alive():
            # A pool may keep the upstream connections after the clients leave.
            r["rss_after_close_kib"] = svc.rss_kib()
            r["upstream_after_close"] = self.upstream_count() - up_start
        r["exit"] = svc.stop()
        self.wait_upstream_below(up_start, timeout=120)
        return r

    def wl_idle(self):
        n = self.p["idle_n"]
        # While every client holds its own upstream connection, the proxy has two fds per
        # client, and the hard fd limit (which run.sh cannot always raise) caps how many fit.
        cap = (self.nofile - 200) // 2  # the same as HAProxy's maxconn, see haproxy_argv
        n_paired = min(n, cap)
        if n_paired < n:
            self.notes.append("idle: the hard fd limit is %d, so with one upstream connection per "
                              "client at most %d clients fit in one proxy (2 fds each); measured "
                              "at %d instead of %d" % (self.nofile, cap, n_paired, n))
        res = {"haproxy": self.idle_run("haproxy", "haproxy-idle", n_paired)}
        # credproxy pins one upstream connection to each client session: pool_size (the most
        # upstream connections of the route) must allow one per client.
        has_pool, msg = self.supports("--pool-size", "16")
        extra = ("--pool-size", str(n_paired + 16)) if has_pool else ()
        res["credproxy"] = self.idle_run("credproxy", "credproxy-idle", n_paired, extra)
        if not has_pool:
            res["credproxy_pool"] = {"unsupported": "--pool-size not supported by this build (%s)"
                                     % (msg.splitlines() or ["rejected"])[0]}
            self.results["idle"] = res
            return
        # With pooling, can idle clients share a few upstream connections? Probe with a few
        # more clients than pool_size first: if those beyond it are refused, the build pins a
        # connection per session and 10,000 clients would only time out one by one.
        pool = 16
        extra = ("--pool-size", str(pool))
        if self.supports("--pool-size", str(pool), "--pool-wait-timeout", "1s")[0]:
            extra += ("--pool-wait-timeout", "1s")
        # Multiplexing (idle clients give their connection back) is what lets 10,000 clients
        # share pool_size connections; older builds do not have it.
        if self.supports("--pool-release-idle-after", "100ms")[0]:
            extra += ("--pool-release-idle-after", "100ms")
        probe = self.idle_run("credproxy", "credproxy-idle-pool", pool + 32, extra)
        probe["pool_size"] = pool
        if probe["opened"] < pool + 32:
            probe["unsupported"] = (
                "pool_size %d: only %d of %d clients logged in (%s): idle clients are not "
                "multiplexed over the pool in this build" % (
                    pool, probe["opened"], pool + 32, (probe["errors"] or ["?"])[0]))
            # The refusals are the expected outcome of this probe, not a problem of the run.
            self.problems = [p for p in self.problems if not p.startswith("idle via credproxy-idle-pool")]
            res["credproxy_pool"] = probe
        else:
            r = self.idle_run("credproxy", "credproxy-idle-pool", n, extra)
            r["pool_size"] = pool
            res["credproxy_pool"] = r
        self.results["idle"] = res

    # ---- rotation under load --------------------------------------------------------------

    def rotate_password(self):
        """What a rotation does: change the password on the server, then publish the new
        secret. The file is replaced atomically (write + rename), as a secrets agent would."""
        pw = secrets.token_hex(12) + "!%&*-_=+.:;,~^"
        self.root_sql("ALTER USER 'app'@'127.0.0.1' IDENTIFIED BY '%s';\n"
                      "ALTER USER 'app'@'localhost' IDENTIFIED BY '%s';" % (pw, pw))
        t_alter = time.monotonic()
        s = self.secret()
        s["password"] = pw
        path = self.dbdir / "secret.json"
        tmp = self.dbdir / "secret.json.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(s, f)
        os.rename(tmp, path)
        return t_alter, time.monotonic()

    def wl_rotation(self):
        """sysbench point_select (16 threads, persistent connections) with a per-second report,
        plus one churn thread that logs in anew all the time: the rotation matters most to
        new logins, which use the secret at that moment."""
        total, at = self.p["rotation_seconds"], self.p["rotation_seconds"] / 2
        svc = self.services["credproxy"]
        argv = self.sysbench_argv("credproxy", "oltp_point_select", 16, total,
                                  ["--report-interval=1", "--percentile=99", "run"])
        port, user, _, _ = self.target("credproxy")
        churn_argv = [str(self.churn_bin), "--host", "127.0.0.1", "--port", str(port), "--user", user,
                      "--db", "app", "--threads", "1", "--seconds", str(total)]
        log("rotation: %ds of point_select via credproxy, password rotated at %.0fs" % (total, at))
        t0 = time.monotonic()
        sb = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        ch = subprocess.Popen(churn_argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=dict(os.environ, BENCH_PASSWORD=""))
        time.sleep(max(0.0, t0 + at - time.monotonic()))
        t_alter, t_file = self.rotate_password()
        sb_out, _ = sb.communicate(timeout=total + 120)
        ch_out, ch_err = ch.communicate(timeout=total + 120)
        rot = t_alter - t0
        intervals = [
            dict(t=int(m.group(1)), qps=float(m.group(2)), p99=float(m.group(3)), err=float(m.group(4)))
            for m in re.finditer(
                r"^\[ (\d+)s \].*?qps: ([\d.]+).*?lat \(ms,99%\): ([\d.]+) err/s: ([\d.]+)", sb_out, re.M)
        ]
        # "During" is the 10 seconds around the rotation; steady state is the rest, less the
        # first two seconds (connections and caches warming up).
        # The rotation window is the 10 one-second reports around the rotation. It is compared
        # like for like with the 10 reports just before it ("before"): the worst 1 s p99 of
        # each (comparing a worst case with a median would fail a rotation that did nothing).
        # "steady" (the whole run outside the window, less 2 s of warm-up) is shown too.
        window = [i for i in intervals if rot - 5 < i["t"] <= rot + 5]
        before = [i for i in intervals if rot - 15 < i["t"] <= rot - 5 and i["t"] > 1]
        steady = [i for i in intervals if i not in window and i["t"] > 2] or \
                 [i for i in intervals if i not in window]
        final = self.parse_sysbench(sb_out)
        r = dict(
            rotated_at_s=rot, file_replaced_after_ms=(t_file - t_alter) * 1000,
            steady_qps=median([i["qps"] for i in steady]), window_qps=median([i["qps"] for i in window]),
            steady_p99_ms=median([i["p99"] for i in steady]),
            window_median_p99_ms=median([i["p99"] for i in window]),
            before_worst_p99_ms=max([i["p99"] for i in before], default=None),
            before_min_qps=min([i["qps"] for i in before], default=None),
            window_p99_ms=max([i["p99"] for i in window], default=None),
            window_min_qps=min([i["qps"] for i in window], default=None),
            sysbench_exit=sb.returncode, sysbench_errors=final.get("errors"),
            sysbench_err_intervals=sum(1 for i in intervals if i["err"] > 0),
            intervals=intervals,
        )
        if sb.returncode != 0:
            tail = "\n".join(sb_out.splitlines()[-6:])
            self.problems.append("rotation: sysbench failed (exit %d):\n%s" % (sb.returncode, tail))
        try:
            c = json.loads(ch_out)
            r["churn_ok"], r["churn_errors"] = c["connections"], c["errors"]
            r["churn_first_error"] = c["first_error"]
            r["churn_err_seconds"] = [i for i, e in enumerate(c["err_per_s"]) if e]
            if c["errors"]:
                self.problems.append(
                    "rotation: %d new logins via credproxy failed in seconds %s (rotation at %.1fs); "
                    "first: %s" % (c["errors"], r["churn_err_seconds"], rot, c["first_error"]))
        except ValueError:
            r["churn_errors"] = None
            self.problems.append("rotation: churn printed no result: %s" % ch_err[-300:])
        self.check_alive("rotation")
        self.results["rotation"] = r

    # ---- start-up -------------------------------------------------------------------------

    def wl_startup(self):
        """Time from exec (Popen) to the first accepted TCP connection, and to the greeting.
        Polling every 0.2 ms adds at most that much."""
        times, greet = [], []
        for i in range(self.p["startup_reps"]):
            port = free_port()
            argv = self.credproxy_argv(port)
            logf = open(self.workdir / "credproxy-startup.log", "ab")
            t0 = time.perf_counter()
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT)
            logf.close()
            t_listen = t_greet = None
            while time.perf_counter() - t0 < 5 and proc.poll() is None:
                s = socket.socket()
                try:
                    s.connect(("127.0.0.1", port))
                    t_listen = time.perf_counter() - t0
                    s.settimeout(5)
                    mysqlproto.read_packet(s)
                    t_greet = time.perf_counter() - t0
                    break
                except OSError:
                    time.sleep(0.0002)
                finally:
                    s.close()
            proc.send_signal(signal.SIGTERM)
            try:
                rc = proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = proc.wait()
            if t_listen is None:
                self.problems.append("start-up run %d: credproxy never accepted (exit %s)" % (i, rc))
                continue
            if rc != 0:
                self.problems.append("start-up run %d: credproxy exited %d on SIGTERM" % (i, rc))
            times.append(t_listen * 1000)
            if t_greet:
                greet.append(t_greet * 1000)
        self.results["startup"] = dict(
            reps=len(times), median_ms=median(times), max_ms=max(times, default=None),
            min_ms=min(times, default=None), greeting_median_ms=median(greet), all_ms=times,
        )

    # ---- profile (--profile) ---------------------------------------------------------------

    def wl_profile(self, out_dir):
        """perf profiles of HAProxy and credproxy under point_select at 16 threads: where each
        spends its CPU. Not part of the report; for whoever optimises credproxy."""
        if not shutil.which("perf"):
            self.problems.append("--profile: perf is not installed (apt-get install linux-perf)")
            return
        secs = self.p["duration"]
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        self.run_sysbench("credproxy", "oltp_point_select", 16, self.p["warmup"])
        for name in ("credproxy", "haproxy"):
            svc = self.services[name]
            data = self.workdir / ("perf-%s.data" % name)
            log("profile: %ds of point_select 16 threads via %s under perf" % (secs, name))
            perf = subprocess.Popen(["perf", "record", "-q", "-F", "999", "--call-graph", "dwarf,16384",
                                     "-o", str(data), "-p", str(svc.pid)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            time.sleep(0.5)
            r = self.run_sysbench(name, "oltp_point_select", 16, secs)
            perf.send_signal(signal.SIGINT)
            _, err = perf.communicate(timeout=120)
            txt = []
            for args in (["--no-children", "--sort", "dso,symbol", "-g", "none"],
                         ["--children", "--sort", "symbol", "-g", "caller,0.5,callee,function,percent"]):
                rep = subprocess.run(["perf", "report", "-i", str(data), "--stdio", "--percent-limit", "1"] + args,
                                     capture_output=True, text=True)
                txt.append(rep.stdout if rep.returncode == 0 else rep.stderr)
            path = Path(out_dir) / ("profile-%s.txt" % name)
            path.write_text("# %s under sysbench oltp_point_select, 16 threads, %d s: %s qps, %s us CPU/query\n"
                            "# perf record -F 999 --call-graph dwarf -p PID; perf stderr: %s\n\n"
                            "## self time by dso and symbol\n\n%s\n\n## with children (call graph)\n\n%s\n"
                            % (name, secs, fmt_int(r.get("qps")), fmt(r.get("proxy_us_per_q"), 1),
                               err.strip()[:300], txt[0], txt[1]))
            log("profile written to %s" % path)

    # ---- the run --------------------------------------------------------------------------

    def want(self, wl):
        return self.only is None or wl in self.only

    def run(self):
        t_start = time.monotonic()
        self.start_all()
        self.prepare_sysbench()
        self.results["health"] = {"start": {n: self.health(self.services[n]) for n in ("haproxy", "credproxy")}}
        if self.args.profile:
            self.wl_profile(self.args.profile)
            self.elapsed = time.monotonic() - t_start
            return
        steps = [("startup", self.wl_startup), ("sysbench", self.wl_sysbench),
                 ("workers", self.wl_workers), ("tls", self.wl_tls),
                 ("churn", self.wl_churn), ("syscalls", self.wl_syscalls), ("large", self.wl_large),
                 ("throughput", self.wl_throughput), ("idle", self.wl_idle),
                 ("rotation", self.wl_rotation)]  # rotation last: it changes the password
        for name, fn in steps:
            if name == "sysbench" and not (self.want("sysbench") or self.want("oltp")):
                continue
            if name != "sysbench" and not self.want(name):
                continue
            tls0 = self.ssl_accepts()
            try:
                fn()
            except Exception as e:  # a broken workload must not hide the others' results
                self.problems.append("workload %s raised %s: %s\n%s"
                                     % (name, type(e).__name__, e, traceback.format_exc(limit=3)))
                log("workload %s failed: %s" % (name, e))
                self.stop_variants()
            self.check_plaintext(name, tls0)
        # Health at the end, and again once the pool's idle timeout (5 min by default) could
        # have closed connections: a leak shows as fds / CLOSE-WAIT sockets that stay.
        self.results["health"]["end"] = {n: self.health(self.services[n]) for n in ("haproxy", "credproxy")}
        self.check_leaks()
        self.scan_logs()
        self.elapsed = time.monotonic() - t_start

    def check_plaintext(self, workload, accepts_before):
        """Every workload but tls must reach MariaDB in plaintext, as before TLS was on."""
        if workload == "tls" or accepts_before is None:
            return
        n = (self.ssl_accepts() or 0) - accepts_before
        self.results.setdefault("tls_handshakes", {})[workload] = n
        if n:
            self.problems.append("workload %s made %d TLS connections to MariaDB (Ssl_accepts); "
                                 "it should be plaintext throughout" % (workload, n))

    def check_leaks(self):
        cp = self.results["health"]["end"].get("credproxy")
        if cp and cp["close_wait"]:
            self.problems.append(
                "credproxy holds %d sockets in CLOSE-WAIT at the end of the run (%d fds open): "
                "connections the server closed that credproxy never closed" % (cp["close_wait"], cp["fds"]))
        start = self.results["health"]["start"].get("credproxy")
        if cp and start and cp["pid"] == start["pid"]:
            up = self.upstream_count()
            self.results["health"]["end"]["upstream_total"] = up
            if cp["fds"] > start["fds"] + 200:
                self.problems.append("credproxy's open fds grew from %d to %d over the run"
                                     % (start["fds"], cp["fds"]))

    def scan_logs(self):
        """credproxy runs at --log-level warn by default: every line it wrote is worth a look."""
        for path in sorted(self.workdir.glob("credproxy*.log")):
            lines = path.read_text(errors="replace").splitlines()
            if not lines:
                continue
            kinds = {}
            for line in lines:
                msg = re.sub(r"^\S+Z ", "", line)
                msg = re.sub(r"C-\d+ \S+", "C-N", msg)
                kinds[msg] = kinds.get(msg, 0) + 1
            top = sorted(kinds.items(), key=lambda kv: -kv[1])[:5]
            self.problems.append("%s wrote %d log lines at --log-level %s; most frequent:\n%s" % (
                path.name, len(lines), self.args.log_level, "\n".join("  %6d x %s" % (c, m[:200]) for m, c in top)))

    # ---- report ---------------------------------------------------------------------------

    def machine(self):
        def first_line(cmd):
            try:
                return subprocess.run(cmd, capture_output=True, text=True).stdout.strip().splitlines()[0]
            except (OSError, IndexError):
                return "?"

        cpu = "?"
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        mem = "?"
        with open("/proc/meminfo") as f:
            mem = "%.1f GiB" % (int(f.readline().split()[1]) / 1048576)
        osname = "?"
        try:
            osname = re.search(r'PRETTY_NAME="([^"]+)"', Path("/etc/os-release").read_text()).group(1)
        except (OSError, AttributeError):
            pass
        commit = first_line(["git", "-C", str(ROOT), "describe", "--always", "--dirty"])
        return [
            ("date (UTC)", datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")),
            ("credproxy", "%s, Release build, --workers %s" % (commit, self.args.workers)),
            ("CPU", "%s, nproc %d" % (cpu, os.cpu_count())),
            ("memory", mem),
            ("kernel / OS", "%s / %s" % (platform.release(), osname)),
            ("MariaDB", self.mariadb_version),
            ("HAProxy", first_line(["haproxy", "-v"]).replace(" - https://haproxy.org/", "")),
            ("sysbench", first_line(["sysbench", "--version"])),
            ("compiler", first_line(["cc", "--version"])),
            ("fd limit", str(self.nofile)),
        ]

    def verdict(self, name, measured, ok, note=""):
        """ok: True (met), False (NOT MET), None (not measured) or "report" (no target)."""
        if ok is None:
            v = "not measured"
        elif ok == "report":
            v = "reported (no target)"
        else:
            v = "met" if ok else "NOT MET"
        self.verdicts.append((name, measured, v + (" (%s)" % note if note else "")))

    def verdict_ratio(self, name, a, b, limit, unit, higher_is_better):
        """A target "a / b >= limit" (or <= limit): the ratio and both figures, or not measured."""
        if not a or not b:
            self.verdict(name, "-", None)
            return
        ratio = a / b
        figures = ("%s vs %s %s" % (fmt_int(a), fmt_int(b), unit) if unit in ("qps", "MB/s")
                   else "%.1f vs %.1f %s" % (a, b, unit))
        self.verdict(name, "%.2fx (%s)" % (ratio, figures), ratio >= limit if higher_is_better else ratio <= limit)

    def evaluate_query_path(self):
        """issue 10's query-path targets, from the sysbench workload (medians of the same run)."""
        sb = self.results.get("sysbench", {}).get("summary", {})
        ps16 = sb.get("oltp_point_select/16", {})
        cp, ha = ps16.get("credproxy", {}), ps16.get("haproxy", {})
        self.verdict_ratio("point-select 16t: qps >= 1.05x HAProxy", cp.get("qps"), ha.get("qps"),
                           1.05, "qps", True)
        self.verdict_ratio("point-select 16t: proxy CPU/query <= 0.85x HAProxy", cp.get("proxy_us_per_q"),
                           ha.get("proxy_us_per_q"), 0.85, "us", False)
        ro = sb.get("oltp_read_only/16", {})
        self.verdict_ratio("read-only 16t: proxy CPU/query <= 0.85x HAProxy",
                           ro.get("credproxy", {}).get("proxy_us_per_q"),
                           ro.get("haproxy", {}).get("proxy_us_per_q"), 0.85, "us", False)
        ps1 = sb.get("oltp_point_select/1", {})
        d, h, c = (ps1.get(t, {}).get("avg_ms") for t in TARGETS)
        name = "point-select 1t: added mean latency over direct <= 0.9x HAProxy's"
        if d and h and c:
            self.verdict(name, "%+.1f vs %+.1f us" % ((c - d) * 1000, (h - d) * 1000), c - d <= 0.9 * (h - d))
        else:
            self.verdict(name, "-", None)

    def evaluate_workers(self):
        wk = self.results.get("workers", {}).get("summary", {})
        dflt, w1, w2 = (wk.get(v, {}) for v in ("credproxy-default", "credproxy-w1", "credproxy-w2"))
        h2 = wk.get("haproxy-nb2", {})
        self.verdict_ratio("default workers (%s threads): CPU/query <= --workers 1's (point-select 16t)"
                           % (dflt.get("threads") or "?"),
                           dflt.get("proxy_us_per_q"), w1.get("proxy_us_per_q"), 1.0, "us", False)
        if w2.get("qps") and h2.get("qps") and w2.get("proxy_us_per_q") and h2.get("proxy_us_per_q"):
            self.verdict("--workers 2 vs HAProxy nbthread 2 (point-select 16t)",
                         "qps %.2fx (%s vs %s); CPU/query %.2fx (%.1f vs %.1f us)" % (
                             w2["qps"] / h2["qps"], fmt_int(w2["qps"]), fmt_int(h2["qps"]),
                             w2["proxy_us_per_q"] / h2["proxy_us_per_q"], w2["proxy_us_per_q"],
                             h2["proxy_us_per_q"]), "report")
        else:
            self.verdict("--workers 2 vs HAProxy nbthread 2 (point-select 16t)", "-", None)

    def evaluate_throughput(self):
        tp = self.results.get("throughput", {}).get("summary", {})
        cp, ha = tp.get("credproxy", {}), tp.get("haproxy", {})
        self.verdict_ratio("large result, one client: MB/s >= HAProxy's", cp.get("mb_per_s"), ha.get("mb_per_s"),
                           1.0, "MB/s", True)
        self.verdict_ratio("large result, one client: proxy CPU per MB <= HAProxy's", cp.get("proxy_us_per_mb"),
                           ha.get("proxy_us_per_mb"), 1.0, "us/MB", False)

    def evaluate_tls(self):
        tl = self.results.get("tls", {}).get("summary", {})
        ct, cpl, ht = (tl.get(v, {}) for v in ("credproxy-tls", "credproxy", "haproxy-tls"))
        if ct.get("qps") and cpl.get("qps") and ht.get("qps"):
            self.verdict("upstream TLS required (point-select 16t)",
                         "qps %.2fx credproxy plaintext, %.2fx HAProxy with TLS passed through; "
                         "proxy CPU/query %s vs %s us plaintext" % (
                             ct["qps"] / cpl["qps"], ct["qps"] / ht["qps"], fmt(ct.get("proxy_us_per_q"), 1),
                             fmt(cpl.get("proxy_us_per_q"), 1)), "report")
        else:
            self.verdict("upstream TLS required (point-select 16t)", "-", None)

    def evaluate(self):
        self.evaluate_query_path()
        self.evaluate_workers()
        self.evaluate_throughput()
        self.evaluate_tls()

        ch = self.results.get("churn", {}).get("summary", {})
        chp = self.results.get("churn", {}).get("summary_proto", {})
        d, h, c = (chp.get(t, {}).get("cps") for t in TARGETS)
        dc, cc = (ch.get(t, {}).get("cps") for t in ("direct", "credproxy"))
        connc = "; Connector/C: %.2fx" % (cc / dc) if dc and cc else ""
        if d and c:
            self.verdict("churn (proto client): credproxy >= 1.5x direct",
                         "%.2fx (%s vs %s conn/s)%s" % (c / d, fmt_int(c), fmt_int(d), connc), c >= 1.5 * d)
        else:
            self.verdict("churn (proto client): credproxy >= 1.5x direct", "-", None)
        cu = chp.get("credproxy", {}).get("proxy_us_per_conn")
        hu = chp.get("haproxy", {}).get("proxy_us_per_conn")
        ccu = ch.get("credproxy", {}).get("proxy_us_per_conn")
        if cu is not None:
            self.verdict("churn (proto client): credproxy CPU per client connection <= 50 µs",
                         "%.0f µs (HAProxy %s µs)%s" % (cu, fmt(hu, 0),
                                                       "; Connector/C: %.0f µs" % ccu if ccu is not None else ""),
                         cu <= 50)
        else:
            self.verdict("churn (proto client): credproxy CPU per client connection <= 50 µs", "-", None)
        d, h, c = (ch.get(t, {}).get("cps") for t in TARGETS)
        if d and c:
            self.verdict("churn (Connector/C): credproxy >= 2x direct",
                         "%.2fx (%s vs %s conn/s)" % (c / d, fmt_int(c), fmt_int(d)), c >= 2 * d)
        else:
            self.verdict("churn (Connector/C): credproxy >= 2x direct", "-", None)
        if h and c:
            self.verdict("churn (Connector/C): credproxy >= 3x HAProxy",
                         "%.2fx (%s vs %s conn/s)" % (c / h, fmt_int(c), fmt_int(h)), c >= 3 * h)
        else:
            self.verdict("churn (Connector/C): credproxy >= 3x HAProxy", "-", None)

        idle = self.results.get("idle", {})
        ci = idle.get("credproxy", {})
        note = "" if ci.get("opened") == 10000 else "at %s clients, not 10,000" % fmt_int(ci.get("opened"))
        if ci.get("kib_per_conn") is not None:
            self.verdict("idle: <= %d KiB RSS per client connection" % IDLE_TARGET_KIB,
                         "%.1f KiB" % ci["kib_per_conn"], ci["kib_per_conn"] <= IDLE_TARGET_KIB, note)
        else:
            self.verdict("idle: <= %d KiB RSS per client connection" % IDLE_TARGET_KIB, "-", None)
        pool = idle.get("credproxy_pool", {})
        if pool.get("unsupported"):
            self.verdict("idle with pooling: <= %d KiB per client" % IDLE_TARGET_KIB, "-", None,
                         "this build does not multiplex idle clients over the pool")
        elif pool.get("kib_per_conn") is not None:
            self.verdict("idle with pooling: <= %d KiB per client" % IDLE_TARGET_KIB,
                         "%.1f KiB, %d upstream" % (pool["kib_per_conn"], pool.get("upstream", -1)),
                         pool["kib_per_conn"] <= IDLE_TARGET_KIB)
        else:
            self.verdict("idle with pooling: <= %d KiB per client" % IDLE_TARGET_KIB, "-", None)

        lg = self.results.get("large", {}).get("credproxy", {})
        if lg.get("peak_growth_kib") is not None and lg.get("complete"):
            self.verdict("large result: peak RSS growth bounded (< %d MiB for %d MB)"
                         % (LARGE_RESULT_BOUND_MIB, self.p["large_mb"]),
                         "%.1f MiB" % (lg["peak_growth_kib"] / 1024),
                         lg["peak_growth_kib"] < LARGE_RESULT_BOUND_MIB * 1024)
        else:
            self.verdict("large result: peak RSS growth bounded", "-", None)

        rot = self.results.get("rotation", {})
        if rot.get("before_worst_p99_ms") and rot.get("window_p99_ms") is not None:
            self.verdict("rotation: p99 during <= 2x steady",
                         "worst 1 s p99 %.2f ms in the 10 s around it vs %.2f ms in the 10 s before"
                         % (rot["window_p99_ms"], rot["before_worst_p99_ms"]),
                         rot["window_p99_ms"] <= 2 * rot["before_worst_p99_ms"])
            errs = (rot.get("sysbench_errors") or 0) + (rot.get("churn_errors") or 0)
            self.verdict("rotation: zero errors", "%d (sysbench %d, new logins %s)"
                         % (errs, rot.get("sysbench_errors") or 0, rot.get("churn_errors")),
                         errs == 0 and rot.get("sysbench_exit") == 0 and rot.get("churn_errors") is not None)
        else:
            self.verdict("rotation: p99 during <= 2x steady", "-", None)
            self.verdict("rotation: zero errors", "-", None)

        st = self.results.get("startup", {})
        if st.get("median_ms") is not None:
            self.verdict("start-up: <= %d ms to listening" % STARTUP_TARGET_MS,
                         "%.1f ms median (max %.1f); greeting after %.1f ms"
                         % (st["median_ms"], st["max_ms"], st["greeting_median_ms"] or 0),
                         st["median_ms"] <= STARTUP_TARGET_MS)
        else:
            self.verdict("start-up: <= %d ms to listening" % STARTUP_TARGET_MS, "-", None)

    # ---- report sections of the workers, tls and throughput workloads -------------------

    def report_workers(self, w):
        wk = self.results.get("workers", {}).get("summary")
        if not wk:
            return
        w("## Workers (point_select, 16 threads)")
        w("")
        w("Fresh proxies: credproxy with no `--workers` flag (its default), with `--workers 1` and 2; "
          "HAProxy with `nbthread 1` and 2. Medians of interleaved rounds; threads = the process's "
          "threads (/proc, all of them, not only event loops).")
        w("")
        w("| via | threads | qps | avg | p95 | p99 | proxy CPU/q µs | MariaDB CPU/q µs | vs --workers 1 | spread | errors |")
        w("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        base = wk.get("credproxy-w1", {}).get("qps")
        for via, _, _ in self.WORKER_VIAS:
            m = wk.get(via)
            if m:
                w("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %d |" % (
                    via, m.get("threads") or "-", fmt_int(m["qps"]), fmt(m["avg_ms"], 3), fmt(m["p95_ms"], 3),
                    fmt(m["p99_ms"], 3), fmt(m["proxy_us_per_q"], 1), fmt(m["db_us_per_q"], 1),
                    "%.2fx" % (m["qps"] / base) if base and m["qps"] else "-",
                    "%.0f%%" % m["spread_pct"] if m["spread_pct"] is not None else "-", m["errors"]))
        w("")

    def report_tls(self, w):
        tl = self.results.get("tls", {}).get("summary")
        if not tl:
            return
        w("## Upstream TLS (point_select, 16 threads, MariaDB with TLS)")
        w("")
        w("direct-tls and haproxy-tls: sysbench speaks TLS (`--mysql-ssl=on`), HAProxy relays the "
          "records; credproxy-tls: `--upstream-tls required`, sysbench plaintext to credproxy. "
          "haproxy and credproxy: the plaintext paths in the same rounds. \"Server sees\" is "
          "`SHOW SESSION STATUS LIKE 'Ssl_version'` through that path. Client CPU is sysbench's.")
        w("")
        w("| path | encrypted | server sees | qps | avg | p99 | proxy CPU/q µs | MariaDB CPU/q µs | client CPU/q µs | spread | errors |")
        w("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for label, _, _ in self.TLS_VIAS:
            m = tl.get(label)
            if m:
                w("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %d |" % (
                    label, m["encrypts"], m.get("ssl_version") or "plaintext", fmt_int(m["qps"]),
                    fmt(m["avg_ms"], 3), fmt(m["p99_ms"], 3), fmt(m["proxy_us_per_q"], 1),
                    fmt(m["db_us_per_q"], 1), fmt(m.get("client_us_per_q"), 1),
                    "%.0f%%" % m["spread_pct"] if m["spread_pct"] is not None else "-", m["errors"]))
        w("")

    def report_throughput(self, w):
        tp = self.results.get("throughput", {}).get("summary")
        if not tp:
            return
        p = self.p
        w("## Large result, as fast as one client can read it")
        w("")
        w("`SELECT REPEAT('x', 1024*1024) FROM seq_1_to_%d` (%d MB, 1 MB = 2^20 bytes), %d times per "
          "round on one logged-in connection, read with `recv_into` a 1 MiB buffer; MB/s is the "
          "median transfer, CPU per MB is over all transfers of a round (median of rounds). "
          "Reader busy = the reader's CPU over its wall time (near 1 would mean the reader sets the pace)."
          % (p["throughput_mb"], p["throughput_mb"], p["throughput_reps"]))
        w("")
        w("| via | MB/s | vs direct | proxy CPU/MB µs | MariaDB CPU/MB µs | reader busy | transfers | spread |")
        w("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        base = tp.get("direct", {}).get("mb_per_s")
        for name in TARGETS:
            m = tp.get(name)
            if m:
                w("| %s | %s | %s | %s | %s | %s | %d | %s |" % (
                    name, fmt_int(m["mb_per_s"]), "%.2fx" % (m["mb_per_s"] / base) if base and m["mb_per_s"] else "-",
                    fmt(m["proxy_us_per_mb"], 0), fmt(m["db_us_per_mb"], 0), fmt(m["client_busy"], 2),
                    m["transfers"], "%.0f%%" % m["spread_pct"] if m["spread_pct"] is not None else "-"))
        w("")

    def report(self):
        self.evaluate()
        p = self.p
        out = []
        w = out.append
        w("# credproxy benchmark%s" % (": quick smoke run (durations far too short to judge performance)"
                                       if self.args.quick else ""))
        w("")
        w("Command: `bench/run.sh%s`; %d round(s), %d s per sysbench run, targets interleaved "
          "(direct, HAProxy, credproxy; order rotated each round); medians over rounds. "
          "Run took %.0f s." % (" --quick" if self.args.quick else "", p["rounds"], p["duration"], self.elapsed))
        w("")
        w("| machine | |")
        w("| --- | --- |")
        for k, v in self.machine():
            w("| %s | %s |" % (k, v))
        w("")
        w("## Targets")
        w("")
        w("| target | measured | verdict |")
        w("| --- | --- | --- |")
        for name, measured, v in self.verdicts:
            w("| %s | %s | %s |" % (name, measured, v))
        w("")

        sb = self.results.get("sysbench", {}).get("summary")
        if sb:
            w("## sysbench (%d tables x %s rows)" % (p["tables"], fmt_int(p["table_size"])))
            w("")
            w("Latencies in ms; CPU is the proxy process's utime+stime per query (µs), with "
              "MariaDB's own for scale. spread = (max-min)/median of qps over rounds.")
            w("")
            w("| workload | threads | via | qps | tps | avg | p95 | p99 | proxy CPU/q | MariaDB CPU/q | vs direct | spread | errors |")
            w("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
            for key, by_t in sb.items():
                test, threads = key.split("/")
                base = by_t.get("direct", {}).get("qps")
                for name in TARGETS:
                    m = by_t.get(name)
                    if not m:
                        continue
                    w("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                        test.replace("oltp_", ""), threads, name, fmt_int(m["qps"]),
                        fmt_int(m["tps"]) if test != "oltp_point_select" else "",
                        fmt(m["avg_ms"], 3), fmt(m["p95_ms"], 3), fmt(m["p99_ms"], 3),
                        fmt(m["proxy_us_per_q"], 1), fmt(m["db_us_per_q"], 1),
                        "%.2fx" % (m["qps"] / base) if base and m["qps"] else "-",
                        "%.0f%%" % m["spread_pct"] if m["spread_pct"] is not None else "-",
                        "%d%s" % (m["errors"], " (%d runs failed)" % m["failed_runs"] if m["failed_runs"] else ""),
                    ))
            w("")

        churn = self.results.get("churn", {})
        if churn.get("summary") or churn.get("summary_proto"):
            w("## Connection churn (8 threads, connect / SELECT 1 / close, %d s)" % p["churn_seconds"])
            w("")
            w("client: `proto` is bench_churn_proto (speaks the protocol itself, less client CPU), "
              "`Connector/C` is bench_churn (libmariadb). proxy CPU/conn = the proxy process's "
              "utime+stime over the run / connections made.")
            w("")
            w("| client | via | connections/s | vs direct | cycle p50 ms | cycle p99 ms | proxy CPU/conn µs | errors |")
            w("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
            for label, key in (("proto", "summary_proto"), ("Connector/C", "summary")):
                ch = churn.get(key) or {}
                base = ch.get("direct", {}).get("cps")
                for name in TARGETS:
                    m = ch.get(name)
                    if m:
                        w("| %s | %s | %s | %s | %s | %s | %s | %d |" % (
                            label, name, fmt_int(m["cps"]), "%.2fx" % (m["cps"] / base) if base else "-",
                            fmt(m["p50_ms"], 2), fmt(m["p99_ms"], 2), fmt(m["proxy_us_per_conn"], 0), m["errors"]))
            w("")

        sc = self.results.get("syscalls")
        if sc:
            w("## Syscalls per query and per connection (bench/syscalls.py, strace -c -f)")
            w("")
            w("Fresh proxies, nothing else connected. per query: SELECT 1 on one connection opened "
              "before strace attached; per connection: connect / login / SELECT 1 / close, one after "
              "the other. Counts are exact (strace slows the calls down; no times).")
            w("")
            w("| syscall | " + " | ".join("%s per %s" % (k, m) for m in ("query", "conn") for k in sc) + " |")
            w("| --- |" + " ---: |" * (2 * len(sc)))
            names = sorted({n for k in sc for m in ("query", "conn") for n in sc[k].get(m, {}).get("syscalls", {})},
                           key=lambda n: -max(sc[k].get(m, {}).get("syscalls", {}).get(n, {}).get("per_unit", 0)
                                              for k in sc for m in ("query", "conn")))
            for n in names + ["total"]:
                cells = []
                for m in ("query", "conn"):
                    for k in sc:
                        r = sc[k].get(m)
                        v = (r["per_unit_total"] if n == "total" else r["syscalls"].get(n, {}).get("per_unit")) if r else None
                        cells.append("**%.2f**" % v if n == "total" and v is not None else fmt(v, 2))
                w("| %s | %s |" % (n, " | ".join(cells)))
            w("")

        idle = self.results.get("idle")
        if idle:
            w("## Idle connections")
            w("")
            w("Logged-in client connections held open by one process; RSS of the proxy (fresh instance) "
              "before and after; upstream = the app user's connections on MariaDB.")
            w("")
            w("| via | clients | RSS before | RSS with clients | per client | upstream conns | RSS after close | upstream after close | open time |")
            w("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
            for name in ("haproxy", "credproxy", "credproxy_pool"):
                r = idle.get(name, {})
                if not r:
                    continue
                if "opened" not in r:
                    w("| %s | - | - | - | - | - | - | - | - |" % name)
                else:
                    label = name.replace("_pool", "")
                    if "pool_size" in r or name == "credproxy":
                        label += " (pool_size %s)" % r.get("pool_size", "= clients + 16")
                    w("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                        label, fmt_int(r.get("opened")), fmt_mib(r.get("rss_base_kib")), fmt_mib(r.get("rss_kib")),
                        "%.1f KiB" % r["kib_per_conn"] if r.get("kib_per_conn") is not None else "-",
                        fmt_int(r.get("upstream")), fmt_mib(r.get("rss_after_close_kib")),
                        fmt_int(r.get("upstream_after_close")), "%.1f s" % r["open_seconds"]))
            w("")
            for name in ("credproxy_pool",):
                if idle.get(name, {}).get("unsupported"):
                    w("Pooled idle clients: %s." % idle[name]["unsupported"])
                    w("")

        lg = self.results.get("large")
        if lg:
            w("## Large result to a slow client")
            w("")
            w("`SELECT REPEAT('x', 1024*1024) FROM seq_1_to_%d` (%d MB) read with a 16 KiB receive "
              "buffer at %d MB/s; proxy RSS from a fresh instance (VmHWM and 20 ms samples)."
              % (p["large_mb"], p["large_mb"], p["large_rate_mb"]))
            w("")
            w("| via | rows | MB/s | RSS before | peak RSS | peak growth | RSS after |")
            w("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
            for name in ("haproxy", "credproxy"):
                r = lg.get(name, {})
                if r:
                    peak = (r.get("rss_base_kib") or 0) + (r.get("peak_growth_kib") or 0)
                    w("| %s | %s | %s | %s | %s | %s | %s |" % (
                        name, r.get("rows", "-"), fmt(r.get("mb_per_s"), 1), fmt_mib(r.get("rss_base_kib")),
                        fmt_mib(peak), fmt_mib(r.get("peak_growth_kib")), fmt_mib(r.get("rss_after_kib"))))
            w("")

        self.report_throughput(w)
        self.report_workers(w)
        self.report_tls(w)

        rot = self.results.get("rotation")
        if rot:
            w("## Rotation under load (credproxy)")
            w("")
            w("point_select, 16 threads, %d s, 1 s reports; at %.1f s the password is changed with "
              "ALTER USER and the secret file replaced %.0f ms later. One more thread churns new "
              "logins all along. \"Window\" is the 10 s around the rotation."
              % (p["rotation_seconds"], rot["rotated_at_s"], rot["file_replaced_after_ms"]))
            w("")
            w("| 1 s reports | qps: median | qps: lowest | p99 ms: median | p99 ms: worst |")
            w("| --- | ---: | ---: | ---: | ---: |")
            w("| steady state (all but the window) | %s | - | %s | - |" % (
                fmt_int(rot["steady_qps"]), fmt(rot["steady_p99_ms"], 2)))
            w("| the 10 s before the window | - | %s | - | %s |" % (
                fmt_int(rot.get("before_min_qps")), fmt(rot.get("before_worst_p99_ms"), 2)))
            w("| rotation window (10 s around it) | %s | %s | %s | %s |" % (
                fmt_int(rot["window_qps"]), fmt_int(rot["window_min_qps"]),
                fmt(rot.get("window_median_p99_ms"), 2), fmt(rot["window_p99_ms"], 2)))
            w("")
            w("Errors: sysbench %s (exit %s); new logins %s ok, %s failed%s." % (
                fmt_int(rot.get("sysbench_errors")), rot.get("sysbench_exit"), fmt_int(rot.get("churn_ok")),
                fmt_int(rot.get("churn_errors")),
                " (seconds %s; first: %s)" % (rot["churn_err_seconds"], rot["churn_first_error"])
                if rot.get("churn_errors") else ""))
            w("")

        st = self.results.get("startup")
        if st:
            w("## Start-up")
            w("")
            w("Exec to the first accepted TCP connection, file secret, %d runs: median %s ms, min %s, "
              "max %s; to the greeting: median %s ms." % (
                  st["reps"], fmt(st["median_ms"], 1), fmt(st["min_ms"], 1), fmt(st["max_ms"], 1),
                  fmt(st["greeting_median_ms"], 1)))
            w("")

        hl = self.results.get("health", {})
        if hl.get("end"):
            w("## Process health (the main HAProxy and credproxy, whole run)")
            w("")
            w("| process | RSS start | RSS end | fds start | fds end | CLOSE-WAIT sockets at end |")
            w("| --- | ---: | ---: | ---: | ---: | ---: |")
            for name in ("haproxy", "credproxy"):
                a, b = hl["start"].get(name) or {}, hl["end"].get(name) or {}
                restarted = " (restarted during the run)" if a.get("pid") != b.get("pid") else ""
                w("| %s%s | %s | %s | %s | %s | %s |" % (
                    name, restarted, fmt_mib(a.get("rss_kib")), fmt_mib(b.get("rss_kib")),
                    a.get("fds", "-"), b.get("fds", "-"), b.get("close_wait", "-")))
            w("")

        if self.notes:
            w("## Notes")
            w("")
            for n in self.notes:
                w("- " + n)
            w("")
        w("## Problems observed")
        w("")
        if self.problems:
            for pr in self.problems:
                lines = pr.splitlines()
                w("- " + lines[0])
                if len(lines) > 1:
                    w("")
                    w("  ```")
                    for line in lines[1:]:
                        w("  " + line)
                    w("  ```")
        else:
            w("None: no errors, crashes or log lines from credproxy.")
        w("")
        return "\n".join(out)


def summarize_sysbench(rs):
    """Medians over the rounds of one (workload, via), and how far the rounds spread."""
    ok = [r for r in rs if not r.get("failed")]
    m = {k: median([r.get(k) for r in ok]) for k in
         ("qps", "tps", "avg_ms", "p95_ms", "p99_ms", "proxy_us_per_q", "db_us_per_q", "client_us_per_q")}
    qs = [r["qps"] for r in ok if r.get("qps")]
    m["spread_pct"] = (max(qs) - min(qs)) / m["qps"] * 100 if len(qs) > 1 and m["qps"] else None
    m["runs"] = len(ok)
    m["failed_runs"] = len(rs) - len(ok)
    m["errors"] = sum(r.get("errors") or 0 for r in rs)
    return m

# ---- charts ---------------------------------------------------------------------------------
#
# PNGs next to the report, from the same results (matplotlib, Agg: no display needed). Each
# chart is its own function that returns None when its workload did not run; a chart that
# fails is a note in the report, never a failed run.

VIA_COLOURS = {
    "direct": "#8c8c8c", "direct-tls": "#5f5f5f",
    "haproxy": "#3b75af", "haproxy-nb1": "#3b75af", "haproxy-nb2": "#85acd6", "haproxy-tls": "#1d4a78",
    "credproxy": "#ef8636", "credproxy-w1": "#ef8636", "credproxy-w2": "#f7b879",
    "credproxy-default": "#b85a12", "credproxy-tls": "#c9691a",
}


def via_colour(via):
    """direct grey, HAProxy blue, credproxy orange; their variants a shade of the same."""
    if via in VIA_COLOURS:
        return VIA_COLOURS[via]
    return next((c for v, c in VIA_COLOURS.items() if via.startswith(v)), "#6a9f58")


def grouped_bars(ax, groups, series, values, ylabel, fmt_label="{:,.0f}"):
    """groups along x, one bar per series in each group; values[(group, series)] (None: no bar)."""
    import numpy as np

    x = np.arange(len(groups))
    width = 0.8 / max(1, len(series))
    for i, name in enumerate(series):
        ys = [values.get((g, name)) for g in groups]
        pos = [x[j] - 0.4 + width * (i + 0.5) for j, y in enumerate(ys) if y is not None]
        ys = [y for y in ys if y is not None]
        if not ys:
            continue
        bars = ax.bar(pos, ys, width, label=name, color=via_colour(name))
        if len(groups) * len(series) <= 20:
            ax.bar_label(bars, labels=[fmt_label.format(y) for y in ys], fontsize=7, padding=1, rotation=90)
    ax.set_xticks(x)
    ax.set_xticklabels(groups, fontsize=8)
    ax.set_ylabel(ylabel)
    ax.margins(y=0.25)
    ax.grid(axis="y", alpha=0.3)


def sysbench_groups(results):
    sb = results.get("sysbench", {}).get("summary") or {}
    return [(k.replace("oltp_", "").replace("/", " ") + "t", v) for k, v in sb.items()]


def single_group_panel(ax, title, summary, order, key, ylabel, fmt_label="{:,.0f}"):
    """One bar per via, named on the x axis (no legend to cover the bars)."""
    vias = [v for v in order if summary.get(v, {}).get(key) is not None]
    ys = [summary[v][key] for v in vias]
    bars = ax.bar(range(len(vias)), ys, 0.7, color=[via_colour(v) for v in vias])
    ax.bar_label(bars, labels=[fmt_label.format(y) for y in ys], fontsize=7, padding=1)
    ax.set_xticks(range(len(vias)))
    ax.set_xticklabels(vias, fontsize=8, rotation=30, ha="right")
    ax.set_xlabel(title, fontsize=8)
    ax.set_ylabel(ylabel)
    ax.margins(y=0.12)
    ax.grid(axis="y", alpha=0.3)


def three_panels(plt, results, tls_width):
    """The sysbench groups, the workers paths and the TLS paths side by side (those measured):
    (groups, workers summary, tls summary, figure, axes) or None when none was."""
    groups = sysbench_groups(results)
    wk = results.get("workers", {}).get("summary") or {}
    tl = results.get("tls", {}).get("summary") or {}
    panels = [p for p in (groups, wk, tl) if p]
    if not panels:
        return None
    ratios = [max(2, len(groups))] * bool(groups) + [1.4] * bool(wk) + [tls_width] * bool(tl)
    fig, axes = plt.subplots(1, len(panels), figsize=(2 + 1.8 * sum(ratios), 5),
                             gridspec_kw={"width_ratios": ratios}, squeeze=False)
    return groups, wk, tl, fig, list(axes[0])


def chart_qps(plt, results):
    layout = three_panels(plt, results, 1.4)
    if not layout:
        return None
    groups, wk, tl, fig, axes = layout
    if groups:
        ax = axes.pop(0)
        vals = {(g, v): m.get(v, {}).get("qps") for g, m in groups for v in TARGETS}
        grouped_bars(ax, [g for g, _ in groups], list(TARGETS), vals, "queries per second")
        ax.set_title("sysbench: qps (median of rounds)", fontsize=10)
        ax.legend(fontsize=8)
    if wk:
        ax = axes.pop(0)
        single_group_panel(ax, "point_select 16t", wk, [v for v in wk], "qps", "queries per second")
        ax.set_title("workers / nbthread", fontsize=10)
    if tl:
        ax = axes.pop(0)
        single_group_panel(ax, "point_select 16t", tl, [v for v in tl], "qps", "queries per second")
        ax.set_title("TLS to MariaDB", fontsize=10)
    return fig


def chart_latency(plt, results):
    sb = results.get("sysbench", {}).get("summary") or {}
    keys = [k for k in sb if k.startswith("oltp_point_select/")]
    if not keys:
        return None
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 4.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        pcts = [("avg", "avg_ms"), ("p95", "p95_ms"), ("p99", "p99_ms")]
        vals = {(label, v): sb[key].get(v, {}).get(f) for label, f in pcts for v in TARGETS}
        grouped_bars(ax, [p for p, _ in pcts], list(TARGETS), vals, "latency, ms", "{:.2f}")
        ax.set_title("point_select, %s threads" % key.split("/")[1], fontsize=10)
        ax.legend(fontsize=7)
    fig.suptitle("sysbench latency (median of rounds)", fontsize=11)
    return fig


def chart_cpu(plt, results):
    layout = three_panels(plt, results, 1.8)
    if not layout:
        return None
    groups, wk, tl, fig, axes = layout
    if groups:
        ax = axes.pop(0)
        vals = {(g, v): m.get(v, {}).get("proxy_us_per_q") for g, m in groups for v in ("haproxy", "credproxy")}
        grouped_bars(ax, [g for g, _ in groups], ["haproxy", "credproxy"], vals, "proxy CPU per query, µs", "{:.1f}")
        ax.set_title("proxy CPU (utime+stime) per query", fontsize=10)
        ax.legend(fontsize=8)
    if wk:
        ax = axes.pop(0)
        single_group_panel(ax, "point_select 16t", wk, [v for v in wk], "proxy_us_per_q",
                           "proxy CPU per query, µs", "{:.1f}")
        ax.set_title("workers / nbthread", fontsize=10)
    if tl:
        ax = axes.pop(0)
        who = [("proxy", "proxy_us_per_q"), ("MariaDB", "db_us_per_q"), ("client", "client_us_per_q")]
        vals = {(label, v): tl[v].get(f) for label, f in who for v in tl}
        grouped_bars(ax, [w for w, _ in who], list(tl), vals, "CPU per query, µs", "{:.1f}")
        ax.set_title("TLS to MariaDB: who pays", fontsize=10)
        ax.legend(fontsize=6)
    return fig


def churn_points(summary):
    """(label path, conn/s, proxy CPU/conn µs) for every leaf of the churn summary that has a
    rate, however deep: {via: {...}} today; a client level may come on top (or below)."""
    rate_keys = ("cps", "conn_per_s", "connections_per_s")
    cpu_keys = ("proxy_us_per_conn", "proxy_cpu_us_per_conn")
    out = []

    def walk(node, path):
        if not isinstance(node, dict):
            return
        rate = next((node[k] for k in rate_keys if isinstance(node.get(k), (int, float))), None)
        if rate is not None:
            cpu = next((node[k] for k in cpu_keys if isinstance(node.get(k), (int, float))), None)
            out.append((path, rate, cpu))
            return
        for k, v in node.items():
            walk(v, path + (str(k),))

    walk(summary, ())
    return out


def chart_churn(plt, results):
    churn = results.get("churn", {})
    points = churn_points({c: churn[k] for c, k in (("proto", "summary_proto"), ("Connector/C", "summary"))
                           if churn.get(k)})
    if not points:
        return None

    def via_of(path):
        return next((p for p in path if p.split("-")[0] in TARGETS), path[-1] if path else "?")

    def group_of(path):
        rest = [p for p in path if p != via_of(path)]
        return " / ".join(rest) or "churn"

    groups = list(dict.fromkeys(group_of(p) for p, _, _ in points))
    vias = list(dict.fromkeys(via_of(p) for p, _, _ in points))
    rate = {(group_of(p), via_of(p)): r for p, r, _ in points}
    cpu = {(group_of(p), via_of(p)): c for p, _, c in points}
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(5 + 2.5 * len(groups), 4.5))
    grouped_bars(a1, groups, vias, rate, "connections per second")
    a1.set_title("connect, SELECT 1, close: conn/s", fontsize=10)
    a1.legend(fontsize=8)
    grouped_bars(a2, groups, [v for v in vias if v != "direct"], cpu, "proxy CPU per connection, µs")
    a2.set_title("proxy CPU per client connection", fontsize=10)
    return fig


def chart_throughput(plt, results):
    tp = results.get("throughput", {}).get("summary") or {}
    if not tp:
        return None
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 4.2))
    single_group_panel(a1, "one client, 100 MB result", tp, [v for v in TARGETS if v in tp], "mb_per_s", "MB/s")
    a1.set_title("large result: MB/s", fontsize=10)
    single_group_panel(a2, "one client, 100 MB result", tp, [v for v in ("haproxy", "credproxy") if v in tp],
                       "proxy_us_per_mb", "proxy CPU per MB, µs")
    a2.set_title("proxy CPU per MB", fontsize=10)
    return fig


CHARTS = (("qps", "queries per second", chart_qps), ("latency", "point_select latency", chart_latency),
          ("cpu", "CPU per query", chart_cpu), ("churn", "connection churn", chart_churn),
          ("throughput", "large result throughput", chart_throughput))


def write_charts(results, report_path):
    """Writes the PNGs next to the report (latest.md -> qps.png, ...; any other name X.md ->
    X-qps.png, ...). Returns (list of (title, file name), list of notes)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return [], ["charts skipped: matplotlib is not installed (apt-get install python3-matplotlib)"]
    prefix = "" if report_path.stem == "latest" else report_path.stem + "-"
    made, notes = [], []
    for name, title, fn in CHARTS:
        try:
            fig = fn(plt, results)
            if fig is None:
                continue
            fig.tight_layout()
            path = report_path.parent / ("%s%s.png" % (prefix, name))
            fig.savefig(path, dpi=100)
            plt.close(fig)
            made.append((title, path.name))
        except Exception as e:  # a chart is a picture of the report, never a reason to fail it
            notes.append("chart %s failed: %s: %s" % (name, type(e).__name__, e))
            plt.close("all")
    return made, notes


def charts_section(made, notes):
    out = ["## Charts", ""]
    for title, fname in made:
        out += ["![%s](%s)" % (title, fname), ""]
    for n in notes:
        out += ["- " + n]
    return "\n".join(out) + "\n"


def fmt(v, digits):
    return "-" if v is None else "%.*f" % (digits, v)


def fmt_int(v):
    return "-" if v is None else "{:,}".format(int(round(v)))


def fmt_mib(kib):
    return "-" if kib is None else "%.1f MiB" % (kib / 1024)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: every workload, tiny durations")
    ap.add_argument("--build-dir", default=str(ROOT / "build-release"))
    ap.add_argument("--out", help="report path (default bench/results/latest.md, or quick.md with --quick)")
    ap.add_argument("--rounds", type=int, help="interleaved rounds (default 5, quick 1)")
    ap.add_argument("--duration", type=int, help="seconds per sysbench run (default 12, quick 3)")
    ap.add_argument("--workers", type=int, default=1, help="credproxy --workers (default 1, like HAProxy's nbthread 1)")
    ap.add_argument("--only", help="comma list of workloads: startup,sysbench,oltp,workers,tls,churn,"
                    "syscalls,large,throughput,idle,rotation")
    ap.add_argument("--log-level", default="warn", help="credproxy --log-level (default warn; the report "
                    "counts the lines credproxy logged)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs, datadir)")
    ap.add_argument("--profile", metavar="DIR", help="instead of the workloads: perf profiles of both "
                    "proxies under point_select 16 threads, written to DIR/profile-*.txt")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a target is not met")
    args = ap.parse_args()

    # Every idle client is a socket in this process: use the whole fd allowance.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    b = Bench(args)
    for binary in (b.credproxy_bin, b.churn_bin):
        if not binary.exists():
            sys.exit("driver.py: %s is missing; run bench/run.sh, which builds it" % binary)
    out_path = Path(args.out) if args.out else ROOT / "bench" / "results" / ("quick.md" if args.quick else "latest.md")

    def on_signal(sig, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        b.run()
    except KeyboardInterrupt:
        log("interrupted; stopping everything")
        b.stop_all()
        sys.exit(130)
    except Exception:
        b.stop_all()
        log("work directory kept for inspection: %s" % b.workdir)
        raise
    b.stop_all()
    if args.profile:
        for p in b.problems:
            log(p)
        if not args.keep:
            shutil.rmtree(b.workdir, ignore_errors=True)
        return
    text = b.report()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(text + "\n")
    made, chart_notes = write_charts(b.results, out_path)
    if made or chart_notes:
        text += "\n" + charts_section(made, chart_notes)
        out_path.write_text(text + "\n")
    for n in chart_notes:
        log(n)
    raw = dict(profile=b.p, results=b.results, problems=b.problems, notes=b.notes,
               verdicts=b.verdicts, machine=b.machine())
    out_path.with_suffix(".json").write_text(json.dumps(raw, indent=1, default=str) + "\n")
    print(text)
    log("report written to %s (raw numbers in %s)" % (out_path, out_path.with_suffix(".json")))
    if args.keep:
        log("work directory kept: %s" % b.workdir)
    else:
        shutil.rmtree(b.workdir, ignore_errors=True)
    if args.strict and any(v.startswith("NOT MET") for _, _, v in b.verdicts):
        sys.exit(1)


if __name__ == "__main__":
    main()
