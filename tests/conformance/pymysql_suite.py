#!/usr/bin/python3
"""PyMySQL's own test suite (pymysql/tests) against MariaDB directly and through credproxy,
plain and multiplexed; fails when a test that passes directly fails through credproxy and is
not listed, with its reason, in EXPECTED below.

    tests/conformance/pymysql_suite.py --source DIR [--credproxy BIN]
                                       [--modes direct,plain,multiplex]

DIR is a PyMySQL source tree already on this machine (nothing is fetched), ideally at the tag
of Debian's python3-pymysql (v1.0.2 for Debian 12), e.g. `git archive v1.0.2` of a clone. It is
copied to a temporary directory (the suite reads its databases.json from inside its own tree)
and run with its own pymysql package. Needs python3-pytest (the suite imports pytest), which
tests/run-all.sh does not install: without it this exits 2. The MariaDB fixture must be
running (tests/mariadb.sh start, then . DIR/env.sh); the databases test1 and test2 and the
users pymysql_root (ALL with GRANT OPTION) and test2 (ALL on test2.*) are created on it, as
PyMySQL's CI does.

credproxy runs in trust mode with one route per database entry of the suite (test1 as
pymysql_root, test2 as test2), as the suite's two connections are to different users;
multiplex adds pool_release_idle_after = 1ms.

Exit status: 0 no unexpected difference; 1 unexpected differences (or credproxy died);
2 could not set up.
"""

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Tests that fail through credproxy by design: id -> reason.
EXPECTED = {
    "pymysql.tests.test_issues.TestNewIssues.test_issue_36":
        "SHOW PROCESSLIST lists upstream thread ids, the greeting's id is credproxy's "
        "(README, Known limits: CONNECTION_ID())",
}


def die(msg):
    print("pymysql_suite: " + msg, file=sys.stderr)
    sys.exit(2)


def root_sql(sql):
    sock = os.environ["CREDPROXY_TEST_MYSQL_SOCKET"]
    subprocess.run(["mariadb", "--no-defaults", "--socket=" + sock, "--user=root"],
                   input=sql, text=True, check=True, timeout=60)


def run_suite(tree, databases, out):
    (tree / "pymysql" / "tests" / "databases.json").write_text(json.dumps(databases))
    xml = out.with_suffix(".xml")
    with open(out, "w") as log:
        subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-v",
                        "--junitxml", str(xml), "pymysql"], cwd=tree, stdout=log,
                       stderr=subprocess.STDOUT, timeout=900,
                       env=dict(os.environ, PYTHONPATH=str(tree)))
    results = {}
    for case in ET.parse(xml).iter("testcase"):
        name = case.get("classname") + "." + case.get("name")
        kinds = [c.tag for c in case]
        results[name] = ("failed" if "failure" in kinds or "error" in kinds
                         else "skipped" if "skipped" in kinds else "passed")
    return results


def start_proxy(binary, conf, log):
    p = subprocess.Popen([binary, "--config", str(conf)], stdout=open(log, "w"),
                         stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if "ready" in Path(log).read_text() and "upstream server is" in Path(log).read_text():
            return p
        if p.poll() is not None:
            die("credproxy exited at start-up; see " + str(log))
        time.sleep(0.1)
    p.kill()
    die("credproxy not ready in 20 s; see " + str(log))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--source", required=True, type=Path)
    ap.add_argument("--credproxy", default=str(ROOT / "build" / "proxy" / "credproxy"))
    ap.add_argument("--modes", default="direct,plain,multiplex")
    args = ap.parse_args()
    modes = args.modes.split(",")
    if not (args.source / "pymysql" / "tests" / "base.py").is_file():
        die("%s is not a PyMySQL source tree with its tests" % args.source)
    if subprocess.run([sys.executable, "-c", "import pytest"]).returncode:
        die("python3-pytest is not installed (apt-get install python3-pytest)")
    for v in ("CREDPROXY_TEST_MYSQL_PORT", "CREDPROXY_TEST_MYSQL_SOCKET"):
        if not os.environ.get(v):
            die(v + " not set: start the fixture and source its env.sh")
    port = int(os.environ["CREDPROXY_TEST_MYSQL_PORT"])
    work = Path(tempfile.mkdtemp(prefix="pymysql-suite."))
    tree = work / "src"
    shutil.copytree(args.source, tree, ignore=shutil.ignore_patterns(".git"))
    os.chmod(work, 0o700)
    pw = {"pymysql_root": secrets.token_hex(12), "test2": "some password"}
    root_sql("SET GLOBAL local_infile = ON;\n"
             "CREATE DATABASE IF NOT EXISTS test1 DEFAULT CHARACTER SET utf8mb4;\n"
             "CREATE DATABASE IF NOT EXISTS test2 DEFAULT CHARACTER SET utf8mb4;\n"
             "CREATE OR REPLACE USER pymysql_root@'%%' IDENTIFIED BY '%s';\n"
             "GRANT ALL ON *.* TO pymysql_root@'%%' WITH GRANT OPTION;\n"
             "CREATE OR REPLACE USER test2@'%%' IDENTIFIED BY '%s';\n"
             "GRANT ALL ON test2.* TO test2@'%%';\n" % (pw["pymysql_root"], pw["test2"]))
    route_db = {"pymysql_root": "test1", "test2": "test2"}
    for user, db in route_db.items():
        f = work / (user + ".json")
        f.write_text(json.dumps({"username": user, "password": pw[user], "host": "127.0.0.1",
                                 "port": port, "dbname": db}))
        os.chmod(f, 0o600)

    def databases(p1, p2, direct):
        return [{"host": "127.0.0.1", "port": p1, "user": "pymysql_root",
                 "password": pw["pymysql_root"] if direct else "", "database": "test1",
                 "use_unicode": True, "local_infile": True},
                {"host": "127.0.0.1", "port": p2, "user": "test2", "password": pw["test2"],
                 "database": "test2"}]

    results, dead = {}, []
    for mode in modes:
        if mode == "direct":
            results[mode] = run_suite(tree, databases(port, port, True), work / "direct.out")
            continue
        ports = []
        for _ in route_db:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                ports.append(s.getsockname()[1])
        conf = work / (mode + ".conf")
        extra = "pool_release_idle_after = 1ms\n" if mode == "multiplex" else ""
        conf.write_text("workers = 1\n" + "".join(
            "[route %s]\nlisten = 127.0.0.1:%d\nsecret_file = %s\n%s"
            % (user, pt, work / (user + ".json"), extra) for user, pt in zip(route_db, ports)))
        log = work / (mode + ".log")
        proxy = start_proxy(args.credproxy, conf, log)
        results[mode] = run_suite(tree, databases(ports[0], ports[1], False), work / (mode + ".out"))
        proxy.send_signal(signal.SIGTERM)
        rc = proxy.wait(timeout=40)
        text = log.read_text()
        if rc != 0 or "Sanitizer" in text or "runtime error:" in text:
            dead.append("%s: credproxy exited %d or a sanitizer reported; see %s" % (mode, rc, log))

    status = 0
    for mode, res in results.items():
        counts = {k: sum(1 for v in res.values() if v == k) for k in ("passed", "failed", "skipped")}
        print("%-9s %s" % (mode, " ".join("%s %d" % kv for kv in counts.items())))
    base = results.get("direct", {})
    for mode, res in results.items():
        if mode == "direct":
            continue
        for name, outcome in sorted(res.items()):
            if outcome != "failed" or base.get(name) != "passed":
                continue
            if name in EXPECTED:
                print("  %s %s: expected (%s)" % (mode, name, EXPECTED[name]))
            else:
                print("  %s %s: FAILS ONLY THROUGH CREDPROXY" % (mode, name))
                status = 1
    for d in dead:
        print("  " + d)
        status = 1
    if status:
        print("logs and outputs in " + str(work))
    else:
        shutil.rmtree(work, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
