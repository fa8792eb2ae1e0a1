#!/usr/bin/python3
"""MariaDB Connector/C's own unit tests (unittest/libmariadb) against MariaDB directly and
through credproxy, plain and multiplexed; fails when a test that passes directly fails
through credproxy and is not listed, with its reason, in connector_c_expected.txt.

    tests/conformance/connector_c.py [--credproxy BIN] [--work-dir DIR] [--only PROG,...]
                                     [--modes direct,plain,multiplex] [--fetch-only]

The suite's source is not in this repository. It comes from Debian: the source package that
the installed libmariadb3 is built from (mariadb, whose libmariadb/ directory is Connector/C),
at the installed version or, when the archive no longer has that one, the nearest it has.
apt-get fetches it with a private deb-src list derived from the system's Debian entries, so
its checksums are checked against the signed Sources index; it is cached under
WORK_DIR/source (WORK_DIR defaults to build/conformance).

Network: the suite's two timeout tests connect to off-machine addresses and one binds to one.
Before building they are pointed at 127.0.0.1 on a port where nothing listens (and the bind
at ::1, which an IPv4 socket cannot take); then every string literal of the test sources is
checked and the run is refused when a non-loopback address remains. At run time every test
program runs with loopback_guard.so preloaded, which refuses (and records) any connect() or
sendto() to a non-loopback destination; a recorded attempt fails the run.

The programs are linked against the system's libmariadb (Debian's), except the few that use
Connector/C internals the shared library does not export: those are the source build's own
(static) binaries. The table says which.

Modes: direct (MariaDB on TCP), plain (credproxy, trust mode, frontend TLS like the server),
multiplex (the same with --pool-release-idle-after 100ms). The server is started by
tests/mariadb.sh in a directory of its own and restarted before each mode, with a fresh
`test` database, so one mode's global changes do not leak into the next.

Exit status: 0 no unexpected difference; 1 unexpected differences (or credproxy died);
2 refused or could not set up (source, build, addresses, server).
"""

import argparse
import datetime
import functools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
EXPECTED_FILE = HERE / "connector_c_expected.txt"
GUARD_SOURCE = HERE / "loopback_guard.c"

# The port the patched tests connect to, where nothing may listen (checked before each mode).
# 3300 is the suite's own choice for "nothing listens here" (connection.c's host lists).
DEAD_PORT = 3300
# Bumped whenever the patch below changes, so a cached source tree is patched again.
PATCH_LEVEL = 1

# (file, exact text, replacement): the off-machine addresses of the suite, pointed at loopback.
ADDRESS_PATCHES = [
    # test_conc622: a non-blocking connect to an unreachable host must fail.
    ("async.c", 'const char *invalid_host= "1.0.0.0";',
     'const char *invalid_host= "127.0.0.1"; /* credproxy conformance: was 1.0.0.0 */'),
    ("async.c",
     "mysql_real_connect_start(&ret, &mysql, invalid_host, username, password, schema, port, "
     "socketname, 0);",
     "mysql_real_connect_start(&ret, &mysql, invalid_host, username, password, schema, %d, "
     "socketname, 0); /* credproxy conformance: nothing listens there */" % DEAD_PORT),
    # test_connection_timeout: a connect to an unreachable host must fail within 2x the timeout.
    ("connection.c",
     'my_test_connect(mysql, "192.168.1.101", "notexistinguser", "password", schema, port, '
     'socketname, CLIENT_REMEMBER_OPTIONS)',
     'my_test_connect(mysql, "127.0.0.1", "notexistinguser", "password", schema, %d, '
     'socketname, CLIENT_REMEMBER_OPTIONS) /* credproxy conformance: was 192.168.1.101 */'
     % DEAD_PORT),
    # test_wrong_bind_address: binding to an address the machine does not have must fail.
    # An IPv4 socket cannot bind to ::1, so the connect to 127.0.0.1 fails without a packet.
    ("connection.c", 'const char *bind_addr= "100.188.111.112";',
     'const char *bind_addr= "::1"; /* credproxy conformance: was 100.188.111.112 */'),
]

# String literals that look like host names but are never connected to.
NOT_ADDRESSES = {
    "skysql.mariadb.com": "my_test.h IS_SKYSQL(): a substring test of MYSQL_TEST_HOST",
}

# Programs of unittest/libmariadb/CMakeLists.txt's API_TESTS (ssl needs a certificate set the
# suite's own server provides; t_conc173 is manual upstream too).
SKIP_PROGRAMS = {"ssl", "t_conc173"}

MODES = ("direct", "plain", "multiplex")
PROGRAM_TIMEOUT = 150


def log(msg):
    sys.stdout.write(msg + "\n")
    sys.stdout.flush()


class Refused(Exception):
    """The run cannot or must not go ahead (exit 2)."""


def run(argv, **kw):
    kw.setdefault("check", True)
    if "input" not in kw:
        kw.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.run([str(a) for a in argv], **kw)


# ---------------------------------------------------------------- source from Debian


def os_codename():
    for line in Path("/etc/os-release").read_text().splitlines():
        if line.startswith("VERSION_CODENAME="):
            return line.split("=", 1)[1].strip().strip('"')
    raise Refused("no VERSION_CODENAME in /etc/os-release")


def debian_src_entries():
    """deb-src stanzas for the system's own Debian entries (same mirrors and keys)."""
    codename = os_codename()
    keep = lambda suite: suite == codename or suite.startswith(codename + "-")
    stanzas = []
    d = Path("/etc/apt/sources.list.d")
    for f in sorted(d.glob("*.sources")) if d.is_dir() else []:
        for block in re.split(r"\n\s*\n", f.read_text()):
            fields = {}
            for line in block.splitlines():
                if line.startswith("#") or ":" not in line or line[:1].isspace():
                    continue
                k, v = line.split(":", 1)
                fields[k.strip().lower()] = v.strip()
            if "deb" not in fields.get("types", "").split():
                continue
            suites = [s for s in fields.get("suites", "").split() if keep(s)]
            if not suites or not fields.get("uris"):
                continue
            st = ["Types: deb-src", "URIs: " + fields["uris"], "Suites: " + " ".join(suites),
                  "Components: " + fields.get("components", "main")]
            if fields.get("signed-by"):
                st.append("Signed-By: " + fields["signed-by"])
            stanzas.append("\n".join(st))
    lists = [Path("/etc/apt/sources.list")] + (sorted(d.glob("*.list")) if d.is_dir() else [])
    for f in lists:
        if not f.is_file():
            continue
        for line in f.read_text().splitlines():
            m = re.match(r"^\s*deb\s+(\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s+(.+)$", line)
            if not m or not keep(m.group(3)):
                continue
            opts = m.group(1) or ""
            signed = re.search(r"signed-by=(\S+?)\]?(\s|$)", opts)
            st = ["Types: deb-src", "URIs: " + m.group(2), "Suites: " + m.group(3),
                  "Components: " + m.group(4)]
            if signed:
                st.append("Signed-By: " + signed.group(1).rstrip("]"))
            stanzas.append("\n".join(st))
    if not stanzas:
        raise Refused("no Debian %s entry in the apt sources to derive deb-src from" % codename)
    return "\n\n".join(stanzas) + "\n"


def dpkg_version_cmp(a, b):
    if a == b:
        return 0
    r = subprocess.run(["dpkg", "--compare-versions", a, "lt", b])
    return -1 if r.returncode == 0 else 1


def installed_source():
    p = run(["dpkg-query", "-W", "-f=${source:Package}\t${source:Version}\t${Version}",
             "libmariadb3"], capture_output=True, text=True, check=False)
    if p.returncode != 0 or "\t" not in p.stdout:
        raise Refused("libmariadb3 is not installed (tests/run-all.sh --deps-only installs it)")
    pkg, srcver, binver = p.stdout.split("\t")
    return pkg, srcver, binver


def fetch_source(work):
    """Returns (connector source dir, info dict). Cached by installed version and patch level."""
    srcroot = work / "source"
    stamp = srcroot / "source.json"
    pkg, want, binver = installed_source()
    if stamp.is_file():
        info = json.loads(stamp.read_text())
        cdir = Path(info["connector_dir"])
        if (info.get("installed") == binver and info.get("patch_level") == PATCH_LEVEL
                and cdir.is_dir()):
            return cdir, info
    if srcroot.exists():
        shutil.rmtree(srcroot)
    apt_dir = srcroot / "apt"
    (apt_dir / "etc").mkdir(parents=True)
    (apt_dir / "lists" / "partial").mkdir(parents=True)
    (apt_dir / "etc" / "debian-src.sources").write_text(debian_src_entries())
    apt_opts = ["-o", "Dir::Etc::SourceList=/dev/null",
                "-o", "Dir::Etc::SourceParts=%s" % (apt_dir / "etc"),
                "-o", "Dir::State::Lists=%s" % (apt_dir / "lists"),
                "-o", "Dir::Cache::pkgcache=", "-o", "Dir::Cache::srcpkgcache=",
                "-o", "Debug::NoLocking=1", "-o", "APT::Sandbox::User=root"]
    log("source: apt-get update (deb-src of the system's Debian entries)")
    p = run(["apt-get", "-q"] + apt_opts + ["update"], capture_output=True, text=True,
            check=False)
    if p.returncode != 0:
        raise Refused("apt-get update for deb-src failed:\n" + p.stdout + p.stderr)
    p = run(["apt-cache"] + apt_opts + ["showsrc", pkg], capture_output=True, text=True,
            check=False)
    versions = sorted(set(re.findall(r"^Version: (\S+)$", p.stdout, re.M)))
    if not versions:
        raise Refused("the archive has no source package %s" % pkg)
    # The installed version first, then older ones (nearest first), then newer ones.
    key = functools.cmp_to_key(dpkg_version_cmp)
    older = sorted([v for v in versions if dpkg_version_cmp(v, want) < 0], key=key, reverse=True)
    newer = sorted([v for v in versions if dpkg_version_cmp(v, want) > 0], key=key)
    order = ([want] if want in versions else []) + older + newer
    dl = srcroot / "download"
    got = None
    errors = []
    for ver in order:
        if dl.exists():
            shutil.rmtree(dl)
        dl.mkdir()
        log("source: apt-get source --download-only %s=%s" % (pkg, ver))
        p = run(["apt-get", "-q"] + apt_opts + ["source", "--download-only",
                                                "%s=%s" % (pkg, ver)],
                cwd=dl, capture_output=True, text=True, check=False)
        if p.returncode == 0:
            got = ver
            break
        errors.append("%s: %s" % (ver, (p.stdout + p.stderr).strip().splitlines()[-1:]))
    if got is None:
        raise Refused("no version of %s could be downloaded:\n  %s" % (pkg, "\n  ".join(errors)))
    orig = sorted(dl.glob("*.orig.tar.*"))
    orig = [o for o in orig if not o.name.endswith(".asc")]
    if not orig:
        raise Refused("no .orig.tar in the download of %s %s" % (pkg, got))
    log("source: extracting libmariadb/ from %s" % orig[0].name)
    ex = srcroot / "tree"
    ex.mkdir()
    run(["tar", "-xf", orig[0], "-C", ex, "--wildcards", "*/libmariadb/*"])
    tops = [d for d in ex.iterdir() if d.is_dir()]
    if len(tops) != 1 or not (tops[0] / "libmariadb" / "unittest" / "libmariadb").is_dir():
        raise Refused("unexpected layout of %s" % orig[0].name)
    top = tops[0]
    apply_debian_patches(dl, top)
    cdir = top / "libmariadb"
    apply_address_patches(cdir / "unittest" / "libmariadb")
    cmake_text = (cdir / "CMakeLists.txt").read_text()
    cc_version = ".".join(re.search(r"SET\(CPACK_PACKAGE_VERSION_%s (\d+)\)" % part,
                                    cmake_text).group(1) for part in ("MAJOR", "MINOR", "PATCH"))
    shutil.rmtree(dl)
    info = {"package": pkg, "version": got, "installed": binver, "wanted": want,
            "connector_c": cc_version, "connector_dir": str(cdir), "patch_level": PATCH_LEVEL,
            "fetched": datetime.datetime.now(datetime.timezone.utc).isoformat()}
    stamp.write_text(json.dumps(info, indent=1) + "\n")
    return cdir, info


def apply_debian_patches(dl, top):
    """Applies the Debian patches that touch libmariadb/ (none in bookworm's, so far)."""
    deb = sorted(dl.glob("*.debian.tar.*"))
    if not deb:
        return
    tmp = dl / "debian"
    tmp.mkdir()
    run(["tar", "-xf", deb[0], "-C", tmp])
    series = tmp / "debian" / "patches" / "series"
    if not series.is_file():
        return
    for name in series.read_text().split("\n"):
        name = name.split("#")[0].strip()
        if not name:
            continue
        patch = tmp / "debian" / "patches" / name.split()[0]
        if not re.search(r"^\+\+\+ [^\s/]+/libmariadb/", patch.read_text(errors="replace"), re.M):
            continue
        if not shutil.which("patch"):
            raise Refused("Debian patch %s touches libmariadb/ and `patch` is not installed"
                          % name)
        log("source: applying Debian patch %s" % name)
        run(["patch", "-p1", "-d", top, "-i", patch], capture_output=True)


def apply_address_patches(testdir):
    for fname, old, new in ADDRESS_PATCHES:
        f = testdir / fname
        text = f.read_text()
        n = text.count(old)
        if n != 1:
            # The check below still refuses the run if the address is there in another form.
            log("source: patch for %s did not apply (%d matches): %s" % (fname, n, old))
            continue
        f.write_text(text.replace(old, new))


# ---------------------------------------------------------------- the address check

IPV4 = re.compile(r"(?<![\w.])(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})(?![\w.])")
IPV6 = re.compile(r"(?<![\w:])\[?([0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7})\]?(?![\w:])")
HOSTNAME = re.compile(
    r"(?<![\w.@-])((?:[A-Za-z0-9-]+\.)+(?:com|net|org|io|dev|info|biz|edu|gov|local|localdomain|"
    r"internal|lan|example|test|invalid|cloud|app|de|uk|fi|se|ru|cn|us|eu)|"
    r"[A-Za-z0-9-]+\.(?:[A-Za-z0-9-]+\.)*(?:mariadb|mysql|skysql)\.[A-Za-z]+)(?![\w-])")
STRING_LITERAL = re.compile(r'"((?:[^"\\\n]|\\.)*)"')
CONNECT_CALL = re.compile(
    r"\b(mysql_real_connect|my_test_connect|mysql_real_connect_start)\s*\(([^;]*?)\)\s*[;)]",
    re.S)


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def is_loopback_literal(s):
    s = s.strip("[]")
    if s in ("localhost", "::1", "0:0:0:0:0:0:0:1"):
        return True
    m = IPV4.fullmatch(s)
    return bool(m) and m.group(1) == "127"


def address_problems(testdir):
    """Every non-loopback address in a string literal of the test sources, and every literal
    host argument of a connect call that is not loopback."""
    problems = []
    files = sorted(testdir.glob("*.c")) + sorted(testdir.glob("*.h"))
    files += sorted((testdir.parent / "mytap").glob("*.[ch]"))
    for f in files:
        text = strip_comments(f.read_text(errors="replace"))
        for m in STRING_LITERAL.finditer(text):
            lit = m.group(1)
            line = text.count("\n", 0, m.start()) + 1
            where = "%s:%d" % (f.name, line)
            for a in IPV4.finditer(lit):
                octets = [int(x) for x in a.groups()]
                if max(octets) <= 255 and octets[0] != 127:
                    problems.append("%s: IPv4 address %s in \"%s\"" % (where, a.group(0), lit))
            for a in IPV6.finditer(lit):
                addr = a.group(1)
                if addr.count(":") >= 2 and "::" in addr or addr.count(":") == 7:
                    if addr.lower() not in ("::1", "0:0:0:0:0:0:0:1"):
                        problems.append("%s: IPv6 address %s in \"%s\"" % (where, addr, lit))
            for a in HOSTNAME.finditer(lit):
                if a.group(1).lower() not in NOT_ADDRESSES:
                    problems.append("%s: host name %s in \"%s\"" % (where, a.group(1), lit))
        for m in CONNECT_CALL.finditer(text):
            args = [a.strip() for a in m.group(2).split(",")]
            idx = 2 if m.group(1) == "mysql_real_connect_start" else 1
            if len(args) <= idx:
                continue
            host = args[idx]
            lm = re.fullmatch(r'"(.*)"', host)
            if lm and not is_loopback_literal(lm.group(1)):
                line = text.count("\n", 0, m.start()) + 1
                problems.append("%s:%d: %s() to host %s" % (f.name, line, m.group(1), host))
    return problems


def option_file_problems():
    """Host or bind settings in the option files Connector/C reads (groups the tests use)."""
    if not shutil.which("my_print_defaults"):
        return []
    p = run(["my_print_defaults", "client", "client-server", "client-mariadb", "myapp"],
            capture_output=True, text=True, check=False, env={"PATH": os.environ["PATH"],
                                                             "HOME": "/nonexistent"})
    problems = []
    for opt in p.stdout.split():
        m = re.match(r"--(host|bind[-_]address|ssl[-_]host)=(.*)", opt)
        if m and not is_loopback_literal(m.group(2)):
            problems.append("option file setting %s" % opt)
    return problems


# ---------------------------------------------------------------- build


def build(cdir, work, info):
    bdir = work / "cc-build"
    if not (bdir / "CMakeCache.txt").is_file() or \
            json.loads((work / "cc-build.json").read_text() if (work / "cc-build.json").is_file()
                       else "{}").get("connector_dir") != str(cdir):
        if bdir.exists():
            shutil.rmtree(bdir)
        bdir.mkdir(parents=True)
        log("build: configuring Connector/C %s with its unit tests" % info["connector_c"])
        p = run(["cmake", "-S", cdir, "-B", bdir, "-DWITH_UNIT_TESTS=ON", "-DWITH_CURL=OFF",
                 "-DCMAKE_BUILD_TYPE=RelWithDebInfo", "-DCMAKE_C_FLAGS=-w"],
                capture_output=True, text=True, check=False)
        (work / "logs").mkdir(exist_ok=True)
        (work / "logs" / "cc-configure.log").write_text(p.stdout + p.stderr)
        if p.returncode != 0:
            raise Refused("configuring Connector/C failed; see %s" % (work / "logs"))
        (work / "cc-build.json").write_text(json.dumps({"connector_dir": str(cdir)}))
    jobs = os.environ.get("CREDPROXY_CC_JOBS", "2")
    log("build: Connector/C and its unit tests (-j%s)" % jobs)
    p = run(["cmake", "--build", bdir, "-j", jobs], capture_output=True, text=True, check=False)
    (work / "logs").mkdir(exist_ok=True)
    (work / "logs" / "cc-build.log").write_text(p.stdout + p.stderr)
    if p.returncode != 0:
        raise Refused("building Connector/C failed; see %s" % (work / "logs" / "cc-build.log"))

    testdir = cdir / "unittest" / "libmariadb"
    cml = (testdir / "CMakeLists.txt").read_text()
    names = re.search(r'SET\(API_TESTS ((?:"[^"]+"\s*)+)\)', cml).group(1)
    programs = re.findall(r'"([^"]+)"', names)
    if re.search(r"WITH_DYNCOL", cml):
        programs.append("dyncol")
    programs += re.findall(r'SET\(API_TESTS \$\{API_TESTS\} "([^"]+)"\)\n(?!\s*ENDIF)', cml)
    programs = [p for p in dict.fromkeys(programs) if p not in SKIP_PROGRAMS]

    # Link what can be linked against the system's libmariadb (Debian's); the rest use the
    # source build's static binaries.
    sysdir = work / "cc-system"
    sysdir.mkdir(exist_ok=True)
    cflags = ["-O1", "-g", "-w", "-DLIBMARIADB", "-I%s" % (cdir / "include"),
              "-I%s" % (bdir / "include"), "-I%s" % (cdir / "unittest" / "mytap"),
              "-I%s" % testdir]
    tap = bdir / "unittest" / "mytap" / "libcctap.a"
    result = {}
    for prog in programs:
        src = testdir / (prog + ".c")
        out = sysdir / prog
        nolink = sysdir / (prog + ".nolink")
        if out.is_file() and out.stat().st_mtime >= src.stat().st_mtime:
            result[prog] = (out, "system")
            continue
        if nolink.is_file() and nolink.stat().st_mtime >= src.stat().st_mtime:
            p = None
        else:
            p = run(["gcc"] + cflags + ["-o", out, src, testdir / "ma_getopt.c", tap,
                                        "-lmariadb", "-lpthread"],
                    capture_output=True, text=True, check=False)
        if p is not None and p.returncode == 0:
            result[prog] = (out, "system")
        else:
            if p is not None:
                nolink.write_text(p.stdout + p.stderr)
            own = bdir / "unittest" / "libmariadb" / prog
            if not own.is_file():
                raise Refused("no binary for %s" % prog)
            result[prog] = (own, "source")
    guard = work / "loopback_guard.so"
    if not guard.is_file() or guard.stat().st_mtime < GUARD_SOURCE.stat().st_mtime:
        run(["gcc", "-O2", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC", "-o", guard,
             GUARD_SOURCE, "-ldl"])
    return result, guard


# ---------------------------------------------------------------- server and proxy


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def port_refuses(port):
    s = socket.socket()
    s.settimeout(2)
    try:
        s.connect(("127.0.0.1", port))
        return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    finally:
        s.close()


class Server:
    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="ccsuite-db.", dir="/tmp"))
        self.port = free_port()
        self.password = None

    def sh(self, cmd):
        p = run(["bash", REPO / "tests" / "mariadb.sh", cmd, self.dir]
                + ([str(self.port)] if cmd == "start" else []),
                capture_output=True, text=True, check=False)
        if p.returncode != 0:
            raise Refused("tests/mariadb.sh %s failed:\n%s%s" % (cmd, p.stdout, p.stderr))

    def root_sql(self, sql):
        p = run(["mariadb", "--no-defaults", "--socket=%s" % (self.dir / "mysqld.sock"),
                 "--user=root", "--batch", "--skip-column-names"], input=sql, text=True,
                capture_output=True, check=False)
        if p.returncode != 0:
            raise Refused("setting up the server as root failed: %s" % p.stderr.strip())

    def start(self):
        self.sh("start")
        if self.password is None:
            self.password = os.urandom(12).hex() + "-Cc1"
            self.root_sql(
                "CREATE OR REPLACE USER 'cctest'@'127.0.0.1' IDENTIFIED BY '{0}';\n"
                "CREATE OR REPLACE USER 'cctest'@'localhost' IDENTIFIED BY '{0}';\n"
                "GRANT ALL PRIVILEGES ON *.* TO 'cctest'@'127.0.0.1' WITH GRANT OPTION;\n"
                "GRANT ALL PRIVILEGES ON *.* TO 'cctest'@'localhost' WITH GRANT OPTION;\n"
                .format(self.password))
        self.root_sql("DROP DATABASE IF EXISTS test; CREATE DATABASE test;")

    def restart(self):
        self.sh("stop")
        self.start()

    def stop(self):
        try:
            self.sh("stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


class Proxy:
    def __init__(self, binary, server, workdir, extra):
        self.binary = binary
        self.server = server
        self.dir = workdir
        self.extra = extra
        self.port = None
        self.proc = None
        self.starts = 0
        self.deaths = []

    def start(self):
        self.port = free_port()
        secret = self.dir / "secret.json"
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"username": "cctest", "password": self.server.password,
                       "host": "127.0.0.1", "port": self.server.port, "dbname": "test"}, f)
        tls = self.server.dir / "tls"
        argv = [str(self.binary), "--secret-file", str(secret),
                "--listen", "127.0.0.1:%d" % self.port,
                "--tls-cert", str(tls / "proxy-cert.pem"), "--tls-key", str(tls / "proxy-key.pem"),
                "--log-level", "info"] + self.extra
        self.starts += 1
        logf = open(self.dir / ("credproxy.%d.log" % self.starts), "ab")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf,
                                     stderr=subprocess.STDOUT, cwd=self.dir)
        logf.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise Refused("credproxy exited with %s at start-up; see %s"
                              % (self.proc.returncode, self.dir))
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise Refused("credproxy did not listen within 20s")

    def check_alive(self, after):
        """Records a death (after which program) and starts a new one; returns True if alive."""
        if self.proc.poll() is None:
            return True
        self.deaths.append((after, self.proc.returncode,
                            str(self.dir / ("credproxy.%d.log" % self.starts))))
        self.start()
        return False

    def stop(self):
        """Stops credproxy; returns problems: a non-zero exit, sanitizer reports in its logs."""
        problems = []
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                problems.append("credproxy did not stop within 15s of SIGTERM")
            if self.proc.returncode != 0:
                problems.append("credproxy exited with %s on SIGTERM" % self.proc.returncode)
        for logp in sorted(self.dir.glob("credproxy.*.log")):
            text = logp.read_text(errors="replace")
            if re.search(r"ERROR: (Address|Leak|Undefined)Sanitizer|runtime error:", text):
                problems.append("sanitizer report in %s" % logp)
        return problems


# ---------------------------------------------------------------- running and comparing

TAP_LINE = re.compile(r"^(not )?ok (\d+)(?: - (.*?))?(?: # (skip|todo)\b\s*(.*))?\s*$")


def parse_tap(out):
    results = {}
    plan = None
    bail = None
    for line in out.splitlines():
        m = re.match(r"^1\.\.(\d+)", line)
        if m:
            plan = int(m.group(1))
            continue
        if line.startswith("Bail out!"):
            bail = line
            continue
        m = TAP_LINE.match(line)
        if not m:
            continue
        name = (m.group(3) or m.group(5) or "#%s" % m.group(2)).strip()
        if m.group(4) == "skip":
            status = "skip"
        else:
            status = "fail" if m.group(1) else "pass"
        key = name
        n = 2
        while key in results:
            key = "%s#%d" % (name, n)
            n += 1
        results[key] = status
    return results, plan, bail


def run_program(binary, env, cwd, timeout):
    start = time.monotonic()
    try:
        p = subprocess.run([str(binary)], env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout,
                           start_new_session=True)
        out = p.stdout.decode("utf-8", "replace")
        rc = p.returncode
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode("utf-8", "replace") + "\n[harness] timed out\n"
        rc = "timeout"
    results, plan, bail = parse_tap(out)
    return {"rc": rc, "results": results, "plan": plan, "bail": bail, "output": out,
            "seconds": round(time.monotonic() - start, 1)}


def test_env(mode_port, server, scratch, guard, guard_log):
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
           "HOME": str(scratch), "TMPDIR": str(scratch),
           "MARIADB_CC_TEST": "1", "MYSQL_TEST_HOST": "127.0.0.1",
           "MYSQL_TEST_PORT": str(mode_port), "MYSQL_TEST_USER": "cctest",
           "MYSQL_TEST_PASSWD": server.password, "MYSQL_TEST_DB": "test",
           "LD_PRELOAD": str(guard), "CREDPROXY_GUARD_LOG": str(guard_log)}
    return env


def load_expected(path):
    """Lines `program[:subtest]  mode[,mode]  reason`; mode may be `proxy` (plain and
    multiplex)."""
    entries = []
    if not path.is_file():
        return entries
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 2)
        if len(parts) < 3:
            raise Refused("%s:%d: want `program[:subtest]  modes  reason`" % (path, n))
        test, modes, reason = parts
        modes = set()
        for m in parts[1].split(","):
            if m == "proxy":
                modes |= {"plain", "multiplex"}
            elif m in ("plain", "multiplex"):
                modes.add(m)
            else:
                raise Refused("%s:%d: unknown mode %s" % (path, n, m))
        prog, _, sub = test.partition(":")
        entries.append({"program": prog, "subtest": sub or None, "modes": modes,
                        "reason": reason, "line": n, "used": False})
    return entries


def expected_entry(entries, prog, sub, mode):
    for e in entries:
        if e["program"] == prog and mode in e["modes"] and (e["subtest"] in (None, sub)):
            return e
    return None


def compare(programs, runs, modes, entries):
    """Rows (program, subtest, {mode: status}, verdict, reason) for every difference."""
    rows = []
    for prog in programs:
        d = runs["direct"].get(prog)
        if d is None:
            continue
        for mode in modes:
            if mode == "direct":
                continue
            r = runs[mode].get(prog)
            if r is None:
                continue
            explained = False
            for sub, st in d["results"].items():
                if st != "pass":
                    continue
                pst = r["results"].get(sub, "missing")
                if pst == "pass":
                    continue
                explained = True
                rows.append((prog, sub, mode, pst))
            proxy_bad = r["rc"] != 0 or r["bail"]
            direct_ok = d["rc"] == 0 and not d["bail"]
            if direct_ok and proxy_bad and not explained:
                rows.append((prog, None, mode, "exit %s%s" % (r["rc"], " bail" if r["bail"] else "")))
    out = []
    for prog, sub, mode, status in rows:
        e = expected_entry(entries, prog, sub, mode)
        if e:
            e["used"] = True
        out.append({"program": prog, "subtest": sub, "mode": mode, "status": status,
                    "verdict": "expected" if e else "UNEXPECTED",
                    "reason": e["reason"] if e else ""})
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--credproxy", default=os.environ.get("CREDPROXY_BIN",
                                                          str(REPO / "build/proxy/credproxy")))
    ap.add_argument("--work-dir", default=str(REPO / "build" / "conformance"))
    ap.add_argument("--expected", default=str(EXPECTED_FILE))
    ap.add_argument("--only", default="", help="comma-separated programs")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--timeout", type=int, default=PROGRAM_TIMEOUT, help="seconds per program")
    ap.add_argument("--fetch-only", action="store_true")
    args = ap.parse_args()

    work = Path(args.work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    modes = [m for m in args.modes.split(",") if m]
    if "direct" not in modes or any(m not in MODES for m in modes):
        raise Refused("--modes must include direct and name only %s" % ", ".join(MODES))
    t0 = time.monotonic()
    cdir, info = fetch_source(work)
    log("source: %s %s (installed libmariadb3 %s), Connector/C %s, in %s"
        % (info["package"], info["version"], info["installed"], info["connector_c"], cdir))
    testdir = cdir / "unittest" / "libmariadb"
    problems = address_problems(testdir) + option_file_problems()
    if problems:
        raise Refused("non-loopback addresses in the test sources; not running:\n  "
                      + "\n  ".join(problems))
    log("addresses: the test sources name only loopback addresses")
    if args.fetch_only:
        return 0
    binaries, guard = build(cdir, work, info)
    if args.only:
        wanted = args.only.split(",")
        unknown = [w for w in wanted if w not in binaries]
        if unknown:
            raise Refused("unknown programs: %s" % ", ".join(unknown))
        binaries = {k: v for k, v in binaries.items() if k in wanted}
    programs = list(binaries)
    t_build = time.monotonic() - t0
    log("build: done after %.0fs; %d programs: %s" % (
        t_build, len(programs), ", ".join("%s(%s)" % (p, binaries[p][1]) for p in programs)))
    credproxy = Path(args.credproxy).resolve()
    if len(modes) > 1 and not os.access(credproxy, os.X_OK):
        raise Refused("no credproxy binary at %s" % credproxy)

    entries = load_expected(Path(args.expected))
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    runs = {m: {} for m in modes}
    deaths = {}
    guard_hits = []
    server = Server()
    try:
        server.start()
        for i, mode in enumerate(modes):
            if i:
                server.restart()
            if not port_refuses(DEAD_PORT):
                raise Refused("something listens on 127.0.0.1:%d, the port the patched tests "
                              "expect to be refused" % DEAD_PORT)
            mdir = work / "run" / mode
            if mdir.exists():
                shutil.rmtree(mdir)
            mdir.mkdir(parents=True)
            proxy = None
            port = server.port
            if mode != "direct":
                extra = ["--pool-release-idle-after", "100ms"] if mode == "multiplex" else []
                proxy = Proxy(credproxy, server, mdir, extra)
                proxy.start()
                port = proxy.port
            guard_log = mdir / "guard.log"
            tm = time.monotonic()
            try:
                for prog in programs:
                    scratch = mdir / prog
                    scratch.mkdir()
                    shutil.copy(testdir / "data.csv", scratch / "data.csv")
                    env = test_env(port, server, scratch, guard, guard_log)
                    r = run_program(binaries[prog][0], env, scratch, args.timeout)
                    (logs / ("%s.%s.log" % (mode, prog))).write_text(r["output"])
                    runs[mode][prog] = r
                    counts = {s: list(r["results"].values()).count(s) for s in
                              ("pass", "fail", "skip")}
                    note = ""
                    if proxy and not proxy.check_alive(prog):
                        note = "  CREDPROXY DIED (%s)" % proxy.deaths[-1][1]
                    log("%-9s %-14s rc=%-7s pass=%-3d fail=%-3d skip=%-3d plan=%s %5.1fs%s%s"
                        % (mode, prog, r["rc"], counts["pass"], counts["fail"], counts["skip"],
                           r["plan"], r["seconds"], " BAIL" if r["bail"] else "", note))
            finally:
                if proxy:
                    for problem in proxy.stop():
                        proxy.deaths.append(("stop", problem, str(mdir)))
                    deaths[mode] = proxy.deaths
            log("%s: %.0fs" % (mode, time.monotonic() - tm))
            if guard_log.is_file() and guard_log.read_text().strip():
                guard_hits.append((mode, guard_log.read_text()))
    finally:
        server.stop()

    diffs = compare(programs, runs, modes, entries)
    report = render(info, binaries, programs, runs, modes, diffs, entries, deaths, guard_hits,
                    time.monotonic() - t0)
    (work / "report.md").write_text(report)
    # Every subtest in every mode, one line each.
    rows = ["program\tsubtest\t" + "\t".join(modes)]
    for prog in programs:
        subs = list(dict.fromkeys(s for m in modes if prog in runs[m]
                                  for s in runs[m][prog]["results"]))
        for sub in subs:
            rows.append("\t".join([prog, sub] + [runs[m][prog]["results"].get(sub, "missing")
                                                  if prog in runs[m] else "-" for m in modes]))
    (work / "subtests.tsv").write_text("\n".join(rows) + "\n")
    (work / "results.json").write_text(json.dumps(
        {"source": info, "modes": modes,
         "runs": {m: {p: {k: v for k, v in r.items() if k != "output"}
                      for p, r in runs[m].items()} for m in modes},
         "differences": diffs}, indent=1) + "\n")
    log(report)
    failed = [d for d in diffs if d["verdict"] == "UNEXPECTED"]
    died = [x for m in deaths.values() for x in m]
    if guard_hits:
        log("FAIL: a test tried to reach a non-loopback address (see above)")
        return 2
    if failed or died:
        log("FAIL: %d unexpected differences, %d credproxy deaths or bad exits (report: %s)"
            % (len(failed), len(died), work / "report.md"))
        return 1
    log("OK: no unexpected difference (report: %s)" % (work / "report.md"))
    return 0


def render(info, binaries, programs, runs, modes, diffs, entries, deaths, guard_hits, seconds):
    L = []
    L.append("# Connector/C unit tests: direct vs credproxy")
    L.append("")
    L.append("Source: Debian %s %s (installed libmariadb3 %s), Connector/C %s. %.0fs in all."
             % (info["package"], info["version"], info["installed"], info["connector_c"],
                seconds))
    L.append("")
    L.append("| program | library | " + " | ".join(modes) + " |")
    L.append("|---|---|" + "---|" * len(modes))
    for prog in programs:
        cells = []
        for m in modes:
            r = runs[m].get(prog)
            if r is None:
                cells.append("-")
                continue
            v = list(r["results"].values())
            cells.append("rc %s: %d ok, %d not ok, %d skip%s" % (
                r["rc"], v.count("pass"), v.count("fail"), v.count("skip"),
                ", bail" if r["bail"] else ""))
        L.append("| %s | %s | %s |" % (prog, binaries[prog][1], " | ".join(cells)))
    L.append("")
    L.append("Every subtest in every mode: subtests.tsv; outputs: logs/MODE.PROGRAM.log.")
    L.append("")
    L.append("## Passes directly, not through credproxy")
    L.append("")
    if diffs:
        L.append("| test | mode | through credproxy | verdict | reason |")
        L.append("|---|---|---|---|---|")
        for d in diffs:
            L.append("| %s%s | %s | %s | %s | %s |" % (
                d["program"], ":" + d["subtest"] if d["subtest"] else "", d["mode"], d["status"],
                d["verdict"], d["reason"]))
    else:
        L.append("none")
    stale = [e for e in entries if not e["used"]]
    if stale:
        L.append("")
        L.append("Listed as different by design but not different in this run:")
        for e in stale:
            L.append("- %s%s (%s)" % (e["program"], ":" + e["subtest"] if e["subtest"] else "",
                                      ",".join(sorted(e["modes"]))))
    for m, ds in deaths.items():
        for after, rc, logp in ds:
            L.append("")
            if after == "stop":
                L.append("credproxy (%s): %s" % (m, rc))
            else:
                L.append("credproxy (%s) DIED with %s during %s; log %s" % (m, rc, after, logp))
    for m, text in guard_hits:
        L.append("")
        L.append("loopback guard (%s):\n%s" % (m, text))
    return "\n".join(L) + "\n"


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Refused as e:
        log("REFUSED: %s" % e)
        sys.exit(2)
