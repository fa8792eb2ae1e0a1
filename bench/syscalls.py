#!/usr/bin/python3
"""Syscalls per query and per connection of a running proxy (or server).

  bench/syscalls.py --pid PID --port PORT [--name credproxy] [--queries 10000]
  bench/syscalls.py --pid PID --port PORT --churn 2000
  BENCH_PASSWORD=... bench/syscalls.py --pid $(pidof haproxy) --port 3307 --name haproxy

Query mode (the default): one connection is opened and logged in BEFORE the
tracer attaches, so only the relaying is counted; then `strace -c -f -p PID`
(all threads of PID) is attached, N COM_QUERY "SELECT 1" are sent one after
the other on that connection (each reply read to its final EOF), the tracer is
detached and its summary printed as a table: syscall, calls, calls per query,
errors. epoll_wait (and epoll_pwait) is always listed, so a loop's share of
wake-ups shows even when it is zero.

Churn mode (--churn N): the tracer attaches first, then N cycles of connect,
login, SELECT 1, COM_QUIT, close are made one after the other; the table is
per connection and includes everything the proxy does for a client
connection (accept, the greeting, the login, its upstream side, the close).

Everything the process does while traced is counted: timers and other clients
of the same process too, so trace a proxy nobody else is using. Counts are
exact, timings are not (ptrace slows every syscall down), so no times are
printed. credproxy is not traceable by default (it turns off PR_SET_DUMPABLE so
no other process can read the password from its memory): trace one started
with --allow-core-dumps true. Without strace, `perf trace -s -p PID` is used instead (needs
perf_event_paranoid <= 1 or root).

The client is bench/mysqlproto.py (mysql_native_password over plain TCP);
the password comes from $BENCH_PASSWORD (empty by default: credproxy trusts
loopback clients). --json prints the numbers as one JSON object instead of the
table (bench/driver.py uses that). Traffic goes only to --host, 127.0.0.1 by
default.
"""

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mysqlproto  # noqa: E402

ALWAYS = ("epoll_wait",)


def query_select1(sock):
    """COM_QUERY SELECT 1 and its whole reply; raises MySQLError unless the value is 1."""
    sock.sendall(mysqlproto.packet(0, bytes([mysqlproto.COM_QUERY]) + b"SELECT 1"))
    _, first = mysqlproto.read_packet(sock)
    if not first or first[0] == 0xFF:
        raise mysqlproto.MySQLError("query failed: %s" % (mysqlproto.error_message(first) if first else "empty"))
    eofs, rows = 0, []
    while eofs < 2:  # column definitions, EOF, rows, EOF (no CLIENT_DEPRECATE_EOF)
        _, p = mysqlproto.read_packet(sock)
        if p[:1] == b"\xff":
            raise mysqlproto.MySQLError("query failed: %s" % mysqlproto.error_message(p))
        if p[:1] == b"\xfe" and len(p) < 9:
            eofs += 1
        elif eofs == 1:
            rows.append(p)
    if rows != [b"\x011"]:
        raise mysqlproto.MySQLError("SELECT 1 returned %r" % rows)


def quit_close(sock):
    try:
        sock.sendall(mysqlproto.packet(0, bytes([mysqlproto.COM_QUIT])))
    except OSError:
        pass
    sock.close()


class Tracer:
    """strace -c -f -p PID (or perf trace -s) for the duration of a with-block."""

    def __init__(self, pid, tool):
        self.pid, self.tool = pid, tool
        self.dir = Path(tempfile.mkdtemp(prefix="syscalls."))
        self.out = self.dir / "summary.txt"

    def __enter__(self):
        if self.tool == "strace":
            argv = ["strace", "-c", "-f", "-p", str(self.pid), "-o", str(self.out)]
        else:
            argv = ["perf", "trace", "-s", "-p", str(self.pid), "-o", str(self.out)]
        self.err = open(self.dir / "stderr.txt", "w+")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.err)
        self.wait_attached()
        return self

    def wait_attached(self):
        """strace says "Process N attached [with M threads]"; perf trace says nothing, so wait."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                hint = ""
                if "Operation not permitted" in self.stderr():
                    hint = (" (credproxy turns off PR_SET_DUMPABLE, which also forbids ptrace: "
                            "start the one to trace with --allow-core-dumps true)")
                raise RuntimeError("%s exited: %s%s" % (self.tool, self.stderr().strip(), hint))
            if self.tool == "strace" and " attached" in self.stderr():
                break
            time.sleep(0.05)
        else:
            if self.tool == "strace":
                raise RuntimeError("strace did not attach to %d within 10 s: %s" % (self.pid, self.stderr()))
        time.sleep(0.3 if self.tool == "strace" else 1.0)

    def stderr(self):
        self.err.flush()
        return (self.dir / "stderr.txt").read_text(errors="replace")

    def __exit__(self, *exc):
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.err.close()

    def counts(self):
        """{syscall: (calls, errors)} from the summary."""
        text = self.out.read_text(errors="replace") if self.out.exists() else ""
        shutil.rmtree(self.dir, ignore_errors=True)
        res = {}
        if self.tool == "strace":
            # % time  seconds  usecs/call  calls  [errors]  syscall
            for line in text.splitlines():
                f = line.split()
                if len(f) in (5, 6) and re.match(r"^[\d.]+$", f[0]) and f[-1] != "total":
                    calls = int(f[3])
                    errors = int(f[4]) if len(f) == 6 else 0
                    c, e = res.get(f[-1], (0, 0))
                    res[f[-1]] = (c + calls, e + errors)
        else:
            # per thread:  syscall  calls  errors  total  min  avg  max  stddev
            for line in text.splitlines():
                m = re.match(r"^\s+([a-z_0-9]+)\s+(\d+)\s+(\d+)\s+[\d.]+\s", line)
                if m:
                    c, e = res.get(m.group(1), (0, 0))
                    res[m.group(1)] = (c + int(m.group(2)), e + int(m.group(3)))
        if not res:
            raise RuntimeError("%s produced no summary: %s" % (self.tool, text[-500:]))
        return res


def measure(args):
    tool = args.tool or ("strace" if shutil.which("strace") else "perf" if shutil.which("perf") else None)
    if not tool or not shutil.which(tool):
        raise RuntimeError("neither strace nor perf is installed (apt-get install strace)")
    pw = os.environ.get("BENCH_PASSWORD", "")
    connect = lambda: mysqlproto.connect(args.host, args.port, args.user, pw, args.db)  # noqa: E731
    if args.churn:
        n, unit = args.churn, "connection"
        s = connect()  # check the path works before attaching
        query_select1(s)
        quit_close(s)
        t0 = time.monotonic()
        with Tracer(args.pid, tool) as tr:
            t1 = time.monotonic()
            for _ in range(n):
                s = connect()
                query_select1(s)
                quit_close(s)
            t2 = time.monotonic()
            time.sleep(0.3)  # let the proxy finish its side of the last close
    else:
        n, unit = args.queries, "query"
        s = connect()
        for _ in range(10):  # warm: first-query work (buffers, reply tracking) is not counted
            query_select1(s)
        t0 = time.monotonic()
        with Tracer(args.pid, tool) as tr:
            t1 = time.monotonic()
            for _ in range(n):
                query_select1(s)
            t2 = time.monotonic()
        quit_close(s)
    counts = tr.counts()
    for name in ALWAYS:
        counts.setdefault(name, (0, 0))
    total = sum(c for c, _ in counts.values())
    return {
        "name": args.name, "pid": args.pid, "tool": tool, "unit": unit, "n": n,
        "attach_s": round(t1 - t0, 2), "traced_s": round(t2 - t1, 2),
        "total": total, "per_unit_total": total / n,
        "syscalls": {k: {"calls": c, "errors": e, "per_unit": c / n}
                     for k, (c, e) in sorted(counts.items(), key=lambda kv: (-kv[1][0], kv[0]))},
    }


def table(r):
    out = ["%s (pid %d): %d %s, %s, traced %.1f s" % (
        r["name"], r["pid"], r["n"], {"query": "queries", "connection": "connections"}[r["unit"]],
        r["tool"], r["traced_s"])]
    out.append("%-20s %10s %12s %8s" % ("syscall", "calls", "per " + r["unit"], "errors"))
    for k, v in r["syscalls"].items():
        out.append("%-20s %10d %12.3f %8s" % (k, v["calls"], v["per_unit"], v["errors"] or ""))
    out.append("%-20s %10d %12.3f" % ("total", r["total"], r["per_unit_total"]))
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pid", type=int, required=True, help="process to trace (all its threads)")
    ap.add_argument("--port", type=int, required=True, help="its MySQL port")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--name", default="proxy", help="label for the output")
    ap.add_argument("--user", default="app")
    ap.add_argument("--db", default="app")
    ap.add_argument("--queries", type=int, default=10000, help="SELECT 1 on one connection (default 10000)")
    ap.add_argument("--churn", type=int, metavar="N", help="instead: N connect / SELECT 1 / close cycles")
    ap.add_argument("--tool", choices=("strace", "perf"), help="default: strace, perf trace if strace is missing")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    if not Path("/proc/%d" % args.pid).exists():
        sys.exit("syscalls.py: no process %d" % args.pid)
    if (args.churn or args.queries) < 1:
        sys.exit("syscalls.py: N must be >= 1")
    try:
        r = measure(args)
    except (RuntimeError, OSError, mysqlproto.MySQLError) as e:
        sys.exit("syscalls.py: %s" % e)
    print(json.dumps(r) if args.json else table(r))


if __name__ == "__main__":
    main()
