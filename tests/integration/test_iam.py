"""upstream_auth = iam end to end: credproxy logs in to a real MariaDB with RDS IAM auth tokens.

MariaDB's auth_pam plugin stands in for RDS's IAM plugin: with pam_use_cleartext_plugin=ON
(tests/mariadb.sh sets it) a PAM user asks the client for mysql_clear_password, as RDS does,
and the PAM service credproxy-iam-test-PORT (written here, removed at the end) hands the password
to tests/integration/iam_verifier.py through pam_exec. The verifier checks the token as RDS
would, with botocore's own SigV4 code: signature by the access key's secret, scope, endpoint,
session token, expiry, DBUser against the database user, and a small "IAM policy" of which key
may connect as which user. It logs one verdict line per check, which the tests read.

credproxy gets its AWS credentials from a credential_process that prints a JSON file the test
rewrites (rotation). Needs root (for /etc/pam.d) and the auth_pam plugin; skips otherwise.
Every token the verifier saw is added to the passwords that must not be in credproxy's log.
"""

import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "aws"))

import harness  # noqa: E402
import standins  # noqa: E402
from aws_fixture import AKID, SECRET_KEY, SECRET_NAME, AwsProxy, AwsTestCase  # noqa: E402

HERE = Path(__file__).resolve().parent
VERIFIER = HERE / "iam_verifier.py"
# One PAM service per fixture (its port), so runs against two servers do not share it.
PAM_SERVICE = "credproxy-iam-test-%s" % os.environ.get("CREDPROXY_TEST_MYSQL_PORT", "0")
PAM_FILE = Path("/etc/pam.d") / PAM_SERVICE
PLUGIN = Path("/usr/lib/mysql/plugin/auth_pam.so")
REGION = "us-east-1"
USER = "iam_app"    # the key may connect as this one
OTHER = "iam_other"  # a PAM user too, but no key's policy allows it

# Two generations of AWS credentials; the second is temporary (a session token). PAM hands
# at most 511 bytes to pam_exec, so the session token is short enough for the whole token to
# fit (credproxy itself sends tokens of any length; test_rds_token covers long ones).
KEY1 = {"AccessKeyId": "AKIAIAMTESTKEY00001", "SecretAccessKey": "first/Secret+Key0123456789abc"}
KEY2 = {"AccessKeyId": "ASIAIAMTESTKEY00002", "SecretAccessKey": "second/Secret+Key987654321xyz",
        "SessionToken": "FwoGZXIvYXdzEBYaDtest/session+token=="}

CREDS_PROCESS = """
import json, sys
with open(sys.argv[2], "a") as f:
    f.write("run\\n")
with open(sys.argv[1]) as f:
    c = json.load(f)
c["Version"] = 1
print(json.dumps(c))
"""


def skip_reason():
    if os.geteuid() != 0:
        return "needs root: it writes the PAM service %s" % PAM_FILE
    if not PLUGIN.is_file():
        return "MariaDB's auth_pam plugin (%s, package mariadb-server) is missing" % PLUGIN
    if not any(Path(d, "pam_exec.so").is_file()
               for d in ("/lib/x86_64-linux-gnu/security", "/usr/lib/x86_64-linux-gnu/security",
                         "/lib/security", "/usr/lib/security")):
        return "pam_exec.so (package libpam-modules) is missing"
    return None


def botocore_token(user, port, key, when, host="127.0.0.1"):
    """What botocore's generate_db_auth_token makes at time when (a datetime, UTC)."""
    code = """
import datetime, sys, botocore.auth, botocore.session
class Frozen(datetime.datetime):
    @classmethod
    def utcnow(cls):
        return datetime.datetime.utcfromtimestamp(%d)
class Module:
    datetime = Frozen
    def __getattr__(self, name):
        return getattr(datetime, name)
botocore.auth.datetime = Module()
try:
    import botocore.crt.auth
    botocore.crt.auth.datetime = Module()
except ImportError:
    pass
c = botocore.session.get_session().create_client(
    "rds", region_name=%r, aws_access_key_id=%r, aws_secret_access_key=%r,
    aws_session_token=%r)
print(c.generate_db_auth_token(%r, %d, %r))
""" % (int(when.timestamp()), REGION, key["AccessKeyId"], key["SecretAccessKey"],
       key.get("SessionToken"), host, port, user)
    p = subprocess.run(["/usr/bin/python3", "-c", code], capture_output=True, text=True,
                       timeout=60, check=True)
    return p.stdout.strip()


@unittest.skipIf(skip_reason(), skip_reason() or "")
class Iam(AwsTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        fx = cls.fixture
        if fx.root_sql("SELECT COUNT(*) FROM information_schema.PLUGINS "
                       "WHERE PLUGIN_NAME='pam'")[0][0] == "0":
            fx.root_sql("INSTALL SONAME 'auth_pam'")
        cleartext = fx.root_sql("SELECT @@pam_use_cleartext_plugin")[0][0]
        if cleartext != "1":
            raise AssertionError("the MariaDB fixture runs without pam_use_cleartext_plugin=ON; "
                                 "restart it with this tree's tests/mariadb.sh")
        try:
            cls.set_up_pam(fx)
        except BaseException:
            PAM_FILE.unlink(missing_ok=True)  # tearDownClass does not run after a failed setUp
            raise

    @classmethod
    def set_up_pam(cls, fx):
        cls.state = Path(fx.dir) / "iam"
        cls.state.mkdir(exist_ok=True)
        cls.policy_file = cls.state / "policy.json"
        cls.verdicts = cls.state / "verifier.log"
        PAM_FILE.write_text(
            "# credproxy's test_iam.py: IAM auth tokens checked by iam_verifier.py\n"
            "auth required pam_exec.so expose_authtok quiet /usr/bin/python3 %s %s %s\n"
            "account required pam_permit.so\n" % (VERIFIER, cls.policy_file, cls.verdicts))
        for u in (USER, OTHER):
            fx.root_sql("CREATE OR REPLACE USER '%s'@'127.0.0.1' IDENTIFIED VIA pam USING '%s' "
                        "REQUIRE SSL; GRANT ALL ON app.* TO '%s'@'127.0.0.1';"
                        % (u, PAM_SERVICE, u))

    @classmethod
    def tearDownClass(cls):
        PAM_FILE.unlink(missing_ok=True)
        if cls.fixture:
            cls.fixture.root_sql("DROP USER IF EXISTS '%s'@'127.0.0.1', '%s'@'127.0.0.1'"
                                 % (USER, OTHER))
        super().tearDownClass()

    def setUp(self):
        super().setUp()
        self.set_policy([KEY1])
        self.verdicts.write_text("")
        self.creds_file = self.workdir / "aws-creds.json"
        self.creds_runs = self.workdir / "creds-runs"
        self.set_aws_creds(KEY1)
        script = self.workdir / "creds_process.py"
        script.write_text(CREDS_PROCESS)
        config = self.home / ".aws" / "config"
        config.parent.mkdir(parents=True)
        config.write_text("[default]\ncredential_process = /usr/bin/python3 %s %s %s\n"
                          % (script, self.creds_file, self.creds_runs))
        self.secret_values |= {KEY1["SecretAccessKey"], KEY2["SecretAccessKey"]}
        self.addCleanup(self.tokens_must_not_be_logged)

    # ---- helpers -----------------------------------------------------------------------------

    def set_policy(self, keys, users=(USER,)):
        """What 'AWS' accepts: these keys, each allowed to connect as users."""
        policy = {"region": REGION, "endpoint": "127.0.0.1:%d" % self.fixture.port,
                  "keys": {k["AccessKeyId"]: {"secret": k["SecretAccessKey"],
                                              "token": k.get("SessionToken"),
                                              "users": list(users)} for k in keys}}
        harness.write_json_atomic(self.policy_file, policy)

    def set_aws_creds(self, key):
        harness.write_json_atomic(self.creds_file, key)

    def verdict_lines(self):
        return self.verdicts.read_text().splitlines()

    def tokens_must_not_be_logged(self):
        """Runs before the proxies stop (cleanups run last-in first-out): no token in a log."""
        for p in self.proxies:
            for part in ("X-Amz-Signature", "X-Amz-Credential", "Action=connect"):
                self.assertNotIn(part, p.log(), "a token reached credproxy's log")

    def iam_proxy(self, *args, secret=None, env=None, wait=True):
        """credproxy with upstream_auth=iam, TLS verified against the fixture's CA."""
        argv = ["--upstream-auth", "iam", "--upstream-ca", str(self.fixture.tls / "ca.pem"),
                "--connect-timeout", "10s"]
        if secret is not None:
            path = self.workdir / ("secret-%d.json" % len(self.proxies))
            harness.write_json_atomic(path, secret)
            argv += ["--secret-file", str(path)]
        argv += ["--region", REGION] + list(args)
        workdir = Path(tempfile.mkdtemp(prefix="p", dir=self.workdir))
        p = AwsProxy(workdir, argv, env if env is not None else self.clean_env())
        p.passwords |= self.secret_values
        self.proxies.append(p)
        self.addCleanup(p.stop)
        return p.start(wait=wait)

    def iam_secret(self, user=USER):
        """An RDS secret that gives the user, host and port; its password is not used."""
        return {"username": user, "password": "not-used-with-iam", "host": "127.0.0.1",
                "port": self.fixture.port, "dbname": "app"}

    def direct_login(self, user, password):
        """The mariadb CLI straight to the server over verified TLS; returns the process."""
        return harness.mariadb_cli(
            "SELECT CURRENT_USER()", port=self.fixture.port, user=user,
            extra=["--ssl", "--ssl-ca=%s" % (self.fixture.tls / "ca.pem"),
                   "--ssl-verify-server-cert"],
            env=harness.client_env({"MYSQL_PWD": password}))

    # ---- tests -------------------------------------------------------------------------------

    def test_good_token_from_secret(self):
        p = self.iam_proxy(secret=self.iam_secret())
        conn = harness.connect(port=p.port)
        try:
            self.assertEqual(harness.scalar(conn, "SELECT CURRENT_USER()"), USER + "@127.0.0.1")
            cur = conn.cursor()
            cur.execute("CREATE TABLE IF NOT EXISTS iam_t (id INT PRIMARY KEY)")
            cur.execute("REPLACE INTO iam_t VALUES (1)")
            self.assertEqual(harness.scalar(conn, "SELECT COUNT(*) FROM iam_t"), 1)
            # The upstream connection is TLS (the user REQUIRE SSL, and credproxy checks).
            cipher = harness.scalar(conn, "SELECT VARIABLE_VALUE FROM "
                                    "information_schema.SESSION_STATUS "
                                    "WHERE VARIABLE_NAME='Ssl_cipher'")
            self.assertTrue(cipher, "the upstream connection is not TLS")
        finally:
            conn.close()
        self.assertEqual(self.verdict_lines()[:1], ["ok %s %s" % (USER, KEY1["AccessKeyId"])])
        self.assertIn("IAM database authentication, tokens signed for region %s, AWS credentials "
                      "from" % REGION,
                      p.log())

    def test_good_token_without_secret(self):
        p = self.iam_proxy("--upstream-user", USER, "--upstream-host", "127.0.0.1",
                           "--upstream-port", str(self.fixture.port))
        conns = [harness.connect(port=p.port, database="app") for _ in range(3)]
        try:
            for c in conns:  # three upstream logins, all with tokens
                self.assertEqual(harness.scalar(c, "SELECT CURRENT_USER()"),
                                 USER + "@127.0.0.1")
        finally:
            for c in conns:
                c.close()
        oks = [v for v in self.verdict_lines() if v.startswith("ok ")]
        self.assertGreaterEqual(len(oks), 3, self.verdict_lines())

    def test_token_for_another_user_is_refused(self):
        # Through MariaDB directly: a good token for USER, presented as OTHER.
        self.set_policy([KEY1], users=(USER, OTHER))
        now = datetime.datetime.now(datetime.timezone.utc)
        token = botocore_token(USER, self.fixture.port, KEY1, now)
        p = self.direct_login(OTHER, token)
        self.assertNotEqual(p.returncode, 0, p.stdout)
        self.assertIn("1045", p.stderr)
        self.assertEqual(self.verdict_lines()[-1],
                         "refused %s token for user %s, not %s" % (OTHER, USER, OTHER))
        self.assertEqual(self.direct_login(USER, token).returncode, 0)  # the control

        # Through credproxy: a token for OTHER whose key may not connect as OTHER (its IAM
        # policy). credproxy makes a new token with refreshed credentials once, then gives up
        # at once with a clear error rather than waiting out connect_timeout.
        self.set_policy([KEY1], users=(USER,))
        self.verdicts.write_text("")
        px = self.iam_proxy(secret=self.iam_secret(OTHER))
        start = time.monotonic()
        err = self.assertMysqlError(harness.ER_ACCESS_DENIED, harness.connect, port=px.port)
        elapsed = time.monotonic() - start
        msg = str(err)
        self.assertIn("refused the IAM auth token for '%s'" % OTHER, msg)
        self.assertIn("rds-db:connect", msg)
        self.assertIn("also a new one made with refreshed AWS credentials", msg)
        self.assertLess(elapsed, 8.0, "credproxy waited for connect_timeout")
        refused = [v for v in self.verdict_lines() if v.startswith("refused %s" % OTHER)]
        self.assertGreaterEqual(len(refused), 2, self.verdict_lines())
        self.assertTrue(all("may not connect as %s" % OTHER in v for v in refused), refused)
        self.assertIn("making a new IAM auth token with AWS credentials fetched again",
                      px.log())

    def test_expired_token_is_refused(self):
        now = datetime.datetime.now(datetime.timezone.utc)
        old = now - datetime.timedelta(minutes=16)
        almost = now - datetime.timedelta(minutes=14)
        expired = botocore_token(USER, self.fixture.port, KEY1, old)
        fresh = botocore_token(USER, self.fixture.port, KEY1, almost)
        # The verifier alone, run as PAM would.
        for token, want in ((expired, 1), (fresh, 0)):
            r = subprocess.run(["/usr/bin/python3", str(VERIFIER), str(self.policy_file),
                                str(self.verdicts), USER], input=token + "\0", text=True,
                               timeout=60)
            self.assertEqual(r.returncode, want)
        lines = self.verdict_lines()
        self.assertRegex(lines[0], r"^refused %s expired \d+s ago$" % USER)
        self.assertEqual(lines[1], "ok %s %s" % (USER, KEY1["AccessKeyId"]))
        # And through MariaDB, over TLS with mysql_clear_password, as credproxy logs in.
        p = self.direct_login(USER, expired)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("1045", p.stderr)
        self.assertRegex(self.verdict_lines()[-1], r"^refused %s expired" % USER)
        self.assertEqual(self.direct_login(USER, fresh).returncode, 0)

    def test_rotated_aws_credentials(self):
        p = self.iam_proxy(secret=self.iam_secret())
        held = harness.connect(port=p.port)  # keeps its upstream connection
        self.assertEqual(harness.scalar(held, "SELECT CURRENT_USER()"), USER + "@127.0.0.1")
        runs_before = len(self.creds_runs.read_text().splitlines())
        # The keys rotate: AWS accepts only the new (temporary) one, and the credential source
        # hands it out; credproxy still holds the old one, with no expiry.
        self.set_policy([KEY2])
        self.set_aws_creds(KEY2)
        self.verdicts.write_text("")
        second = harness.connect(port=p.port)  # a new upstream login
        try:
            self.assertEqual(harness.scalar(second, "SELECT CURRENT_USER()"),
                             USER + "@127.0.0.1")
        finally:
            second.close()
        lines = self.verdict_lines()
        self.assertEqual(lines[0],
                         "refused %s unknown access key %s" % (USER, KEY1["AccessKeyId"]))
        self.assertIn("ok %s %s" % (USER, KEY2["AccessKeyId"]), lines)
        self.assertGreater(len(self.creds_runs.read_text().splitlines()), runs_before,
                           "credential_process was not run again")
        self.assertIn("login as '%s' with an IAM auth token refused; making a new token"
                      % USER, p.log())
        # The connection opened with the old key's token stays open.
        self.assertEqual(harness.scalar(held, "SELECT 1"), 1)
        held.close()

    def test_secret_from_secrets_manager(self):
        """The secret (user, host, port) may come from Secrets Manager; its password is unused."""
        # The secret lives in the region the token is for (--region signs both), and a
        # Secrets Manager endpoint refuses requests signed for another region.
        sm = self.start_standin(standins.SecretsManager, region=REGION)
        sm.create(SECRET_NAME, self.iam_secret())
        env = self.clean_env(AWS_ACCESS_KEY_ID=AKID, AWS_SECRET_ACCESS_KEY=SECRET_KEY)
        self.set_policy([{"AccessKeyId": AKID, "SecretAccessKey": SECRET_KEY}])
        argv = ["--secret-id", SECRET_NAME, "--secrets-endpoint", sm.url]
        p = self.iam_proxy(*argv, env=env)
        self.assertEqual(self.query_user(p), USER + "@127.0.0.1")
        self.assertEqual(self.verdict_lines()[-1], "ok %s %s" % (USER, AKID))

    def test_tls_is_required(self):
        for mode in ("disabled", "preferred"):
            p = self.iam_proxy("--upstream-tls", mode, secret=self.iam_secret(), wait=False)
            code, log = p.wait_exit()
            p.proc = None
            self.assertEqual(code, 2, log)
            self.assertIn("--upstream-tls: upstream_auth=iam sends the IAM token as a cleartext "
                          "password", log)


if __name__ == "__main__":
    harness.main()
