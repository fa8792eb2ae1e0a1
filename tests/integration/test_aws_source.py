"""credproxy --secret-id: the Secrets Manager source end to end, with a real MariaDB.

The Secrets Manager stand-in (tests/aws/standins.py) verifies every request's SigV4 signature
with botocore's signer, so these pass only when credproxy signs as AWS expects.
"""

import json
import secrets
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "aws"))

import harness  # noqa: E402
from aws_fixture import AKID, REGION, SECRET_NAME, AwsTestCase  # noqa: E402


class SecretsManagerSource(AwsTestCase):

    def test_serves_queries_with_the_secret(self):
        p = self.aws_proxy()
        self.assert_serving(p)
        self.assertEqual(harness.scalar(harness.connect(port=p.port), "SELECT 1 + 1"), 2)
        # Start-up reads the stages first, then the value, naming the stage explicitly.
        ops = [c[0] for c in self.sm.calls()]
        self.assertEqual(ops[:2], ["DescribeSecret", "GetSecretValue"])
        get = self.sm.calls("GetSecretValue")[0]
        self.assertEqual(get[1], AKID)
        self.assertEqual(get[2], {"SecretId": SECRET_NAME, "VersionStage": "AWSCURRENT"})
        self.assertIn("loaded credentials (version %s" % self.secret_vid, p.log())

    def test_secret_by_arn_gives_the_region(self):
        arn = self.sm.secrets[SECRET_NAME]["arn"]
        p = self.aws_proxy(secret_id=arn, region=None)
        self.assert_serving(p)
        self.assertIn("region %s" % REGION, p.log())

    def test_refresh_fetches_only_a_new_awscurrent(self):
        p = self.aws_proxy("--secret-refresh", "300ms")
        self.wait_for(lambda: len(self.sm.calls("DescribeSecret")) >= 4, what="4 DescribeSecret")
        # Unchanged VersionId: DescribeSecret only, no second GetSecretValue.
        self.assertEqual(len(self.sm.calls("GetSecretValue")), 1)
        self.assert_serving(p)

    def test_refresh_picks_up_a_new_awscurrent(self):
        old = self.make_db_user("aws_rot", "old-" + secrets.token_hex(8))
        self.sm.put(SECRET_NAME, old)
        p = self.aws_proxy("--secret-refresh", "500ms")
        self.assert_serving(p, "aws_rot")
        new = dict(old, password="new-" + secrets.token_hex(8))
        self.secret_values.add(new["password"])
        p.passwords.add(new["password"])
        self.fixture.root_sql("ALTER USER 'aws_rot'@'127.0.0.1' IDENTIFIED BY '%s';"
                              "ALTER USER 'aws_rot'@'localhost' IDENTIFIED BY '%s';"
                              % (new["password"], new["password"]))
        vid = self.sm.put(SECRET_NAME, new)
        self.assertTrue(p.wait_log("loaded new credentials (version %s" % vid, 15), p.log())
        self.assert_serving(p, "aws_rot")

    def test_awspending_is_loaded_and_cleared(self):
        p = self.aws_proxy("--secret-refresh", "300ms")
        pending = dict(self.db_secret, password="pending-" + secrets.token_hex(8))
        p.passwords.add(pending["password"])
        vid = self.sm.put(SECRET_NAME, pending, stages=("AWSPENDING",))
        self.assertTrue(p.wait_log("AWSPENDING version %s loaded" % vid, 10), p.log())
        pend_gets = [c for c in self.sm.calls("GetSecretValue")
                     if c[2].get("VersionStage") == "AWSPENDING"]
        self.assertEqual(len(pend_gets), 1)
        self.sm.remove_stage(SECRET_NAME, "AWSPENDING")
        self.assertTrue(p.wait_log("AWSPENDING version %s is gone" % vid, 10), p.log())
        self.assert_serving(p)

    def test_access_denied_logins_cause_one_refresh(self):
        """A burst of failed logins asks Secrets Manager once (single flight), not per login."""
        user = self.make_db_user("aws_sf", "sf-" + secrets.token_hex(8))
        self.sm.put(SECRET_NAME, user)
        p = self.aws_proxy("--secret-refresh", "1h", "--aws-timeout", "30s")
        self.assert_serving(p, "aws_sf")
        # The next DescribeSecret hangs, so every refresh asked for meanwhile must join it.
        self.sm.fault("hang", 1, op="DescribeSecret")
        self.fixture.root_sql("ALTER USER 'aws_sf'@'127.0.0.1' IDENTIFIED BY 'changed-%s';"
                              "ALTER USER 'aws_sf'@'localhost' IDENTIFIED BY 'changed-%s';"
                              % (secrets.token_hex(8), secrets.token_hex(8)))
        before = len(self.sm.calls("DescribeSecret"))
        refused_before = p.count("refused")
        errors = []

        def login():
            try:
                self.query_user(p)
            except Exception as e:  # access denied is what is expected here
                errors.append(e)

        threads = [threading.Thread(target=login) for _ in range(8)]
        for t in threads:
            t.start()
        self.wait_for(lambda: p.count("refused") - refused_before >= 6, 20, "refused logins")
        self.wait_for(lambda: len(self.sm.calls("DescribeSecret")) > before, 5, "a refresh")
        harness.time.sleep(1.0)
        self.assertEqual(len(self.sm.calls("DescribeSecret")) - before, 1,
                         [c[0] for c in self.sm.calls()])
        self.sm.release_hang()
        for t in threads:
            t.join(60)
        self.assertTrue(errors)


class StartupFailures(AwsTestCase):
    """Start-up stops with a message naming the secret and the AWS error code, never a value."""

    def test_unknown_secret(self):
        log = self.expect_start_failure(secret_id="no/such/secret")
        self.assertIn("secret 'no/such/secret'", log)
        self.assertIn("ResourceNotFoundException", log)

    def test_access_denied(self):
        self.sm.denied.add(AKID)
        log = self.expect_start_failure()
        self.assertIn("secret '%s'" % SECRET_NAME, log)
        self.assertIn("AccessDeniedException", log)

    def test_aws_error_codes_are_named(self):
        for code in ("DecryptionFailure", "InvalidParameterException", "InternalServiceError"):
            self.sm.faults.clear()
            self.sm.fault("error", 5, extra=code)
            log = self.expect_start_failure()
            self.assertIn(code, log)
            self.assertIn("secret '%s'" % SECRET_NAME, log)

    def test_throttled_past_the_retries(self):
        self.sm.fault("throttle", 10)
        log = self.expect_start_failure()
        self.assertIn("ThrottlingException", log)
        self.assertIn("after 3 attempts", log)

    def test_wrong_secret_key_is_invalid_signature(self):
        env = self.clean_env(AWS_ACCESS_KEY_ID=AKID, AWS_SECRET_ACCESS_KEY="not-the-key")
        log = self.expect_start_failure(env=env)
        self.assertIn("InvalidSignatureException", log)
        self.assertNotIn("not-the-key", log)

    def test_not_an_rds_secret_names_the_key(self):
        bad = {"username": "u", "pass": self.db_secret["password"]}
        self.sm.put(SECRET_NAME, bad)
        log = self.expect_start_failure()
        self.assertIn("not an RDS secret", log)
        self.assertIn("'password'", log)

    def test_secret_string_not_json(self):
        self.sm.put(SECRET_NAME, "just-a-" + self.db_secret["password"])
        log = self.expect_start_failure()
        self.assertIn("not an RDS secret", log)

    def test_secret_binary_is_refused(self):
        self.sm.put(SECRET_NAME, json.dumps(self.db_secret).encode(), binary=True)
        log = self.expect_start_failure()
        self.assertIn("SecretBinary", log)

    def test_no_credentials_at_all(self):
        log = self.expect_start_failure(env=self.clean_env())
        self.assertIn("no AWS credentials", log)

    def test_plain_http_only_to_loopback(self):
        log = self.expect_start_failure("--secrets-endpoint", "http://198.51.100.7:8080",
                                        endpoint=False)
        self.assertIn("loopback", log)

    def test_no_region(self):
        log = self.expect_start_failure(region=None)
        self.assertIn("no AWS region", log)


if __name__ == "__main__":
    harness.main()
