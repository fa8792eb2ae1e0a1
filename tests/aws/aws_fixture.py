"""credproxy with --secret-id against the AWS stand-ins, for the integration tests.

AwsTestCase starts the stand-ins (tests/aws/standins.py) in threads, puts the fixture's real
database credentials into the Secrets Manager stand-in, and starts credproxy from a clean
environment: no AWS_* variable of the caller leaks in, HOME is an empty directory, and instance
metadata is disabled unless a test points it at the IMDS stand-in. Every AWS secret key and
every password the proxy could see is added to the set the harness checks the log against.
"""

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "integration"))

import harness  # noqa: E402
import standins  # noqa: E402

AKID = "AKIDCREDPROXYTEST01"
SECRET_KEY = "credproxy/Test+Secret/Key0123456789abcdef"
REGION = "eu-west-3"
SECRET_NAME = "prod/app/db"


class AwsProxy(harness.Proxy):
    """A credproxy process reading its secret from the Secrets Manager stand-in."""

    def __init__(self, workdir, args, env, listen=True):
        self.env = env
        super().__init__(workdir, args, {}, listen=listen)

    def write_secret(self, secret):
        pass  # the secret lives in the stand-in, not in a file

    def argv(self):
        argv = [harness.binary(), "--log-level", "debug"]
        if self.port:
            argv += ["--listen", "127.0.0.1:%d" % self.port]
        return argv + self.args

    def start(self, wait=True):
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, cwd=self.workdir, env=self.env)
        finally:
            log.close()
        if wait:
            self.wait_ready()
        return self

    def wait_exit(self, timeout=30):
        """For start-up failures: waits for the exit; returns (code, log)."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("credproxy still ran after %ds:\n%s"
                                 % (timeout, harness.log_tail(self.log_path)))
        self.returncode = self.proc.returncode
        return self.returncode, self.log()

    def count(self, text):
        return self.log().count(text)


class AwsTestCase(harness.ProxyTestCase):
    """Stand-ins per test, the fixture's credentials in Secrets Manager, a clean environment."""

    def setUp(self):
        super().setUp()
        self.keyring = standins.Keyring()
        self.keyring.add(AKID, SECRET_KEY)
        self.sm = standins.SecretsManager(self.keyring, region=REGION).start()
        self.addCleanup(self.sm.stop)
        self.addCleanup(self.sm.release_hang)
        self.db_secret = self.fixture.secret()
        self.secret_vid = self.sm.create(SECRET_NAME, self.db_secret)
        self.home = Path(tempfile.mkdtemp(prefix="home.", dir=self.workdir))
        self.secret_values = {SECRET_KEY, self.db_secret["password"]}

    def start_standin(self, cls, *args, **kw):
        s = cls(self.keyring, *args, **kw).start()
        self.addCleanup(s.stop)
        return s

    def clean_env(self, **extra):
        """The process environment without AWS_*, CREDPROXY_* or MYSQL_* variables, plus extra."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("AWS_", "CREDPROXY_", "MYSQL_"))}
        env.update(HOME=str(self.home), AWS_EC2_METADATA_DISABLED="true")
        for k in ("CREDPROXY_BIN", "ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"):
            if os.environ.get(k):
                env[k] = os.environ[k]
        env.update({k: v for k, v in extra.items() if v is not None})
        for k in [k for k, v in extra.items() if v is None]:
            env.pop(k, None)
        return env

    def env_keys(self, **extra):
        """A clean environment with the static test key in AWS_ACCESS_KEY_ID / _SECRET_."""
        return self.clean_env(AWS_ACCESS_KEY_ID=AKID, AWS_SECRET_ACCESS_KEY=SECRET_KEY, **extra)

    def aws_proxy(self, *args, env=None, secret_id=SECRET_NAME, region=REGION, endpoint=True,
                  start=True, wait=True, listen=True):
        """credproxy --secret-id against the stand-in; args are extra flags."""
        argv = ["--secret-id", secret_id]
        if region:
            argv += ["--region", region]
        if endpoint:
            argv += ["--secrets-endpoint", self.sm.url]
        argv += list(args)
        workdir = Path(tempfile.mkdtemp(prefix="p", dir=self.workdir))
        p = AwsProxy(workdir, argv, env if env is not None else self.env_keys(), listen=listen)
        p.passwords |= self.secret_values
        self.proxies.append(p)
        self.addCleanup(p.stop)
        return p.start(wait=wait) if start else p

    def expect_start_failure(self, *args, **kw):
        """Starts a proxy that must exit non-zero during start-up; returns its log."""
        p = self.aws_proxy(*args, wait=False, **kw)
        code, log = p.wait_exit()
        self.assertNotEqual(code, 0, "credproxy started although it should not have:\n" + log)
        p.proc = None  # already reaped; stop() only checks nothing more
        p.check_log()
        return log

    def query_user(self, proxy):
        """CURRENT_USER() through the proxy with a fresh connection."""
        conn = harness.connect(port=proxy.port)
        try:
            return harness.scalar(conn, "SELECT CURRENT_USER()")
        finally:
            conn.close()

    def assert_serving(self, proxy, user=None):
        got = self.query_user(proxy)
        self.assertTrue(got.startswith((user or self.db_secret["username"]) + "@"), got)

    def wait_for(self, cond, timeout=20.0, what="condition"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cond():
                return
            time.sleep(0.05)
        raise AssertionError("timed out waiting for %s" % what)

    def make_db_user(self, name, password):
        """A database user of its own, so rotating its password disturbs no other test."""
        self.fixture.root_sql(
            "CREATE OR REPLACE USER '%s'@'127.0.0.1' IDENTIFIED BY '%s';"
            "CREATE OR REPLACE USER '%s'@'localhost' IDENTIFIED BY '%s';"
            "GRANT ALL ON app.* TO '%s'@'127.0.0.1', '%s'@'localhost';"
            % (name, password, name, password, name, name))
        self.addCleanup(self.fixture.root_sql,
                        "DROP USER IF EXISTS '%s'@'127.0.0.1', '%s'@'localhost';" % (name, name))
        self.secret_values.add(password)
        secret = dict(self.db_secret, username=name, password=password)
        return secret
