#!/usr/bin/python3
"""The Go MySQL driver's own test suite (go-sql-driver/mysql) against MariaDB directly and
through credproxy, plain and multiplexed; fails when a test that passes directly fails through
credproxy and is not listed, with its reason, in EXPECTED below.

    tests/conformance/go_mysql_suite.py [--source DIR] [--credproxy BIN]
                                        [--modes direct,plain,multiplex] [--cmd-delay 5ms]

DIR is the driver's source with its tests, already on this machine (nothing is fetched);
default: Debian's golang-github-go-sql-driver-mysql-dev (1.5.0 on Debian 12), under
/usr/share/gocode. Needs golang-go; tests/run-all.sh installs neither, and this is not a ctest
test. The tree is copied to a temporary GOPATH and built offline (GO111MODULE=off). In the copy,
TestConnectorReturnsTimeout is skipped (it dials 1.1.1.1: traffic stays on loopback), and with
--cmd-delay the driver sleeps that long before each command, so that with multiplexing
(pool_release_idle_after = 1ms) every command finds its session released.

The MariaDB fixture must be running (tests/mariadb.sh start, then . DIR/env.sh); the database
gotest and the user gotest (ALL with GRANT OPTION) are created on it. credproxy runs with
client_auth = password (a users_file with gotest's password), so that the suite's wrong- and
empty-password tests get 1045 as directly.

Exit status: 0 no unexpected difference; 1 unexpected differences (or credproxy died);
2 could not set up.
"""

import argparse
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEBIAN_SOURCE = Path("/usr/share/gocode/src/github.com/go-sql-driver/mysql")

# Tests that fail through credproxy by design: name -> reason.
EXPECTED = {}

DELAY_PATCH = '''
var credproxyCmdDelay = func() time.Duration {
	d, _ := time.ParseDuration(os.Getenv("CREDPROXY_GO_CMD_DELAY"))
	return d
}()

func (mc *mysqlConn) writePacket(data []byte) error {
	if credproxyCmdDelay > 0 && mc.sequence == 0 {
		time.Sleep(credproxyCmdDelay)
	}
'''


def die(msg):
    print("go_mysql_suite: " + msg, file=sys.stderr)
    sys.exit(2)


def root_sql(sql):
    sock = os.environ["CREDPROXY_TEST_MYSQL_SOCKET"]
    subprocess.run(["mariadb", "--no-defaults", "--socket=" + sock, "--user=root"],
                   input=sql, text=True, check=True, timeout=60)


def prepare_tree(source, gopath):
    pkg = gopath / "src" / "github.com" / "go-sql-driver" / "mysql"
    shutil.copytree(source, pkg)
    t = pkg / "connector_test.go"
    text = t.read_text()
    head = "func TestConnectorReturnsTimeout(t *testing.T) {\n"
    if head in text:
        t.write_text(text.replace(head, head + '\tt.Skip("dials 1.1.1.1")\n', 1))
    p = pkg / "packets.go"
    text = p.read_text()
    head = "func (mc *mysqlConn) writePacket(data []byte) error {\n"
    if head not in text or not re.search(r'^import \(\n', text, re.M):
        die("packets.go has no writePacket to patch: another driver version?")
    text = text.replace(head, DELAY_PATCH.lstrip("\n"), 1)
    if '\t"os"\n' not in text.split(")")[0]:
        text = text.replace("import (\n", 'import (\n\t"os"\n', 1)
    p.write_text(text)
    return pkg


def run_suite(pkg, gopath, port, password, delay, out):
    env = dict(os.environ, GO111MODULE="off", GOFLAGS="", GOPROXY="off",
               GOPATH="%s:/usr/share/gocode" % gopath, GOCACHE=str(gopath / "cache"),
               MYSQL_TEST_USER="gotest", MYSQL_TEST_PASS=password, MYSQL_TEST_PROT="tcp",
               MYSQL_TEST_ADDR="127.0.0.1:%d" % port, MYSQL_TEST_DBNAME="gotest",
               CREDPROXY_GO_CMD_DELAY=delay)
    with open(out, "w") as log:
        subprocess.run(["go", "test", "-v", "-count=1", "-timeout", "600s", "."], cwd=pkg,
                       stdout=log, stderr=subprocess.STDOUT, env=env, timeout=900)
    results = {}
    for line in Path(out).read_text().splitlines():
        m = re.match(r"--- (PASS|FAIL|SKIP): (\S+)", line)
        if m:
            results[m.group(2)] = {"PASS": "passed", "FAIL": "failed", "SKIP": "skipped"}[m.group(1)]
    if not results:
        die("no test results in " + str(out))
    return results


def start_proxy(binary, conf, log):
    p = subprocess.Popen([binary, "--config", str(conf)], stdout=open(log, "w"),
                         stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        text = Path(log).read_text()
        if "ready" in text and "upstream server is" in text:
            return p
        if p.poll() is not None:
            die("credproxy exited at start-up; see " + str(log))
        time.sleep(0.1)
    p.kill()
    die("credproxy not ready in 20 s; see " + str(log))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--source", default=str(DEBIAN_SOURCE), type=Path)
    ap.add_argument("--credproxy", default=str(ROOT / "build" / "proxy" / "credproxy"))
    ap.add_argument("--modes", default="direct,plain,multiplex")
    ap.add_argument("--cmd-delay", default="", help="e.g. 5ms: sleep before each command")
    args = ap.parse_args()
    modes = args.modes.split(",")
    if not (args.source / "driver_test.go").is_file():
        die("%s is not the driver's source with its tests "
            "(apt-get install golang-github-go-sql-driver-mysql-dev)" % args.source)
    if not shutil.which("go"):
        die("go is not installed (apt-get install golang-go)")
    for v in ("CREDPROXY_TEST_MYSQL_PORT", "CREDPROXY_TEST_MYSQL_SOCKET"):
        if not os.environ.get(v):
            die(v + " not set: start the fixture and source its env.sh")
    port = int(os.environ["CREDPROXY_TEST_MYSQL_PORT"])
    work = Path(tempfile.mkdtemp(prefix="go-mysql-suite."))
    os.chmod(work, 0o700)
    pkg = prepare_tree(args.source, work / "gopath")
    pw = secrets.token_hex(12)
    root_sql("SET GLOBAL local_infile = ON;\n"
             "CREATE DATABASE IF NOT EXISTS gotest;\n"
             "CREATE OR REPLACE USER gotest@'%%' IDENTIFIED BY '%s';\n"
             "GRANT ALL ON *.* TO gotest@'%%' WITH GRANT OPTION;\n" % pw)
    secret = work / "secret.json"
    secret.write_text('{"username": "gotest", "password": "%s", "host": "127.0.0.1", '
                      '"port": %d, "dbname": "gotest"}' % (pw, port))
    users = work / "users"
    hashed = subprocess.run([args.credproxy, "--hash-password"], input=pw, text=True,
                            capture_output=True, check=True).stdout.strip()
    users.write_text("gotest:%s\n" % hashed)
    for f in (secret, users):
        os.chmod(f, 0o600)

    results, dead = {}, []
    for mode in modes:
        if mode == "direct":
            results[mode] = run_suite(pkg, work / "gopath", port, pw, args.cmd_delay,
                                      work / "direct.out")
            continue
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            pport = s.getsockname()[1]
        conf = work / (mode + ".conf")
        conf.write_text("workers = 1\nclient_auth = password\nusers_file = %s\n"
                        "[route go]\nlisten = 127.0.0.1:%d\nsecret_file = %s\n%s"
                        % (users, pport, secret,
                           "pool_release_idle_after = 1ms\n" if mode == "multiplex" else ""))
        log = work / (mode + ".log")
        proxy = start_proxy(args.credproxy, conf, log)
        results[mode] = run_suite(pkg, work / "gopath", pport, pw, args.cmd_delay,
                                  work / (mode + ".out"))
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
