"""The stand-ins checked with real AWS clients: Debian's awscli and python3-botocore.

Each stand-in must accept what the real client sends and reject a tampered request the way AWS
does, so an integration test that passes against a stand-in passes because credproxy speaks AWS,
not because two pieces of this project agree with each other.
"""

import json
import os
import subprocess
import sys
import tempfile
import unittest
import urllib.error
import urllib.request
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent))

import botocore.auth  # noqa: E402
import botocore.awsrequest  # noqa: E402
import botocore.credentials  # noqa: E402
import botocore.exceptions  # noqa: E402
import botocore.session  # noqa: E402
import botocore.utils  # noqa: E402
import standins  # noqa: E402

AWS_CLI = "/usr/bin/aws"
AKID, SECRET = "AKIDSTANDINCHECK", "stand-in/check+Secret0123456789"
REGION = "eu-west-1"
ROLE = "arn:aws:iam::123456789012:role/check"


def clean_environ(home, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(HOME=home, AWS_EC2_METADATA_DISABLED="true",
               AWS_CONFIG_FILE=os.path.join(home, "none"),
               AWS_SHARED_CREDENTIALS_FILE=os.path.join(home, "none"))
    env.update(extra)
    return env


class StandInTest(unittest.TestCase):

    def setUp(self):
        self.home = tempfile.mkdtemp(prefix="standin-home.")
        self.ring = standins.Keyring()
        self.ring.add(AKID, SECRET)

    def start(self, cls, *args, **kw):
        s = cls(self.ring, *args, **kw).start()
        self.addCleanup(s.stop)
        return s

    def botocore_session(self, **env):
        """A botocore session that sees only env (kept in place until the test ends)."""
        patcher = mock.patch.dict(os.environ, clean_environ(self.home, **env), clear=True)
        patcher.start()
        self.addCleanup(patcher.stop)
        return botocore.session.get_session()

    def client(self, service, url, akid=AKID, secret=SECRET, token=None):
        s = self.botocore_session()
        return s.create_client(service, region_name=REGION, endpoint_url=url,
                               aws_access_key_id=akid, aws_secret_access_key=secret,
                               aws_session_token=token)


class SecretsManagerWithAwsCli(StandInTest):

    def setUp(self):
        super().setUp()
        self.sm = self.start(standins.SecretsManager, region=REGION)
        self.vid = self.sm.create("app/db", {"username": "u", "password": "p1"})

    def aws(self, *args, secret=SECRET, akid=AKID):
        env = clean_environ(self.home, AWS_ACCESS_KEY_ID=akid, AWS_SECRET_ACCESS_KEY=secret,
                            AWS_DEFAULT_REGION=REGION)
        p = subprocess.run([AWS_CLI, "--endpoint-url", self.sm.url, "--output", "json",
                            "secretsmanager"] + list(args), env=env, capture_output=True,
                           text=True, timeout=120)
        return p.returncode, (json.loads(p.stdout) if p.returncode == 0 else None), p.stderr

    def test_get_secret_value(self):
        code, out, err = self.aws("get-secret-value", "--secret-id", "app/db")
        self.assertEqual(code, 0, err)
        self.assertEqual(out["VersionId"], self.vid)
        self.assertEqual(json.loads(out["SecretString"])["password"], "p1")
        self.assertEqual(out["VersionStages"], ["AWSCURRENT"])
        code, out, err = self.aws("get-secret-value", "--secret-id", "app/db",
                                  "--version-stage", "AWSCURRENT")
        self.assertEqual(code, 0, err)

    def test_version_stages_through_the_cli(self):
        code, out, err = self.aws("put-secret-value", "--secret-id", "app/db", "--secret-string",
                                  '{"username":"u","password":"p2"}', "--version-stages",
                                  "AWSPENDING")
        self.assertEqual(code, 0, err)
        pending = out["VersionId"]
        code, out, err = self.aws("describe-secret", "--secret-id", "app/db")
        self.assertEqual(code, 0, err)
        self.assertEqual(out["VersionIdsToStages"], {self.vid: ["AWSCURRENT"],
                                                     pending: ["AWSPENDING"]})
        code, out, err = self.aws("update-secret-version-stage", "--secret-id", "app/db",
                                  "--version-stage", "AWSCURRENT", "--move-to-version-id",
                                  pending, "--remove-from-version-id", self.vid)
        self.assertEqual(code, 0, err)
        code, out, err = self.aws("describe-secret", "--secret-id", "app/db")
        self.assertEqual(code, 0, err)
        self.assertIn("AWSCURRENT", out["VersionIdsToStages"][pending], out)
        self.assertEqual(out["VersionIdsToStages"][self.vid], ["AWSPREVIOUS"])
        code, out, err = self.aws("get-secret-value", "--secret-id", "app/db")
        self.assertEqual(json.loads(out["SecretString"])["password"], "p2")

    def test_unknown_secret(self):
        code, out, err = self.aws("get-secret-value", "--secret-id", "nope")
        self.assertNotEqual(code, 0)
        self.assertIn("ResourceNotFoundException", err)

    def test_wrong_secret_key_rejected(self):
        code, out, err = self.aws("get-secret-value", "--secret-id", "app/db", secret="wrong")
        self.assertNotEqual(code, 0)
        self.assertIn("InvalidSignatureException", err)
        self.assertEqual(self.sm.calls()[-1][2], "rejected:InvalidSignatureException")

    def test_unknown_key_rejected(self):
        code, out, err = self.aws("get-secret-value", "--secret-id", "app/db", akid="AKIDNOBODY")
        self.assertNotEqual(code, 0)
        self.assertIn("UnrecognizedClientException", err)


class SecretsManagerWithBotocore(StandInTest):

    def setUp(self):
        super().setUp()
        self.sm = self.start(standins.SecretsManager, region=REGION)
        self.sm.create("app/db", {"username": "u", "password": "p1"})

    def test_session_token_checked(self):
        c = self.ring.issue(600)
        ok = self.client("secretsmanager", self.sm.url, c["AccessKeyId"], c["SecretAccessKey"],
                         c["Token"])
        self.assertIn("SecretString", ok.get_secret_value(SecretId="app/db"))
        bad = self.client("secretsmanager", self.sm.url, c["AccessKeyId"], c["SecretAccessKey"],
                          c["Token"] + "x")
        with self.assertRaises(botocore.exceptions.ClientError) as cm:
            bad.get_secret_value(SecretId="app/db")
        self.assertEqual(cm.exception.response["Error"]["Code"], "UnrecognizedClientException")

    def signed(self, body):
        req = botocore.awsrequest.AWSRequest(
            method="POST", url=self.sm.url + "/", data=body,
            headers={"Content-Type": "application/x-amz-json-1.1",
                     "X-Amz-Target": "secretsmanager.GetSecretValue"})
        botocore.auth.SigV4Auth(botocore.credentials.Credentials(AKID, SECRET),
                                "secretsmanager", REGION).add_auth(req)
        return req

    def send(self, req, body=None):
        r = urllib.request.Request(req.url, data=body if body is not None else req.body,
                                   headers=dict(req.headers.items()), method="POST")
        try:
            with urllib.request.urlopen(r, timeout=10) as resp:
                return resp.status, resp.headers, json.loads(resp.read())
        except urllib.error.HTTPError as e:
            return e.code, e.headers, json.loads(e.read())

    def test_tampered_body_rejected(self):
        req = self.signed(b'{"SecretId":"app/db"}')
        status, _, out = self.send(req)
        self.assertEqual(status, 200)
        status, headers, out = self.send(req, b'{"SecretId":"app/dc"}')
        self.assertEqual(status, 403)
        self.assertEqual(out["__type"], "InvalidSignatureException")
        self.assertTrue(headers["x-amzn-ErrorType"].startswith("InvalidSignatureException"))

    def test_missing_and_incomplete_signature(self):
        req = self.signed(b'{"SecretId":"app/db"}')
        del req.headers["Authorization"]
        status, _, out = self.send(req)
        self.assertEqual((status, out["__type"]), (400, "MissingAuthenticationTokenException"))
        req.headers["Authorization"] = "AWS4-HMAC-SHA256 Credential=AKID/x"
        status, _, out = self.send(req)
        self.assertEqual((status, out["__type"]), (400, "IncompleteSignatureException"))

    def test_faults(self):
        self.sm.fault("throttle", 20)  # more than botocore's own retries
        with self.assertRaises(botocore.exceptions.ClientError) as cm:
            self.client("secretsmanager", self.sm.url).describe_secret(SecretId="app/db")
        self.assertEqual(cm.exception.response["Error"]["Code"], "ThrottlingException")
        self.sm.faults.clear()


class SecretsManagerRegionsWithBotocore(StandInTest):
    """Two stand-ins as two regions of a replicated secret, as botocore sees them."""

    REPLICA = "us-west-2"

    def setUp(self):
        super().setUp()
        self.primary = self.start(standins.SecretsManager, region=REGION)
        self.replica = self.start(standins.SecretsManager, region=self.REPLICA)
        self.vid = self.primary.create("app/db", {"username": "u", "password": "p1"})
        self.replica.replicate_from(self.primary, "app/db")

    def regional(self, sm, region):
        s = self.botocore_session()
        return s.create_client("secretsmanager", region_name=region, endpoint_url=sm.url,
                               aws_access_key_id=AKID, aws_secret_access_key=SECRET)

    def test_request_signed_for_another_region_rejected(self):
        with self.assertRaises(botocore.exceptions.ClientError) as cm:
            self.regional(self.replica, REGION).get_secret_value(SecretId="app/db")
        err = cm.exception.response
        self.assertEqual((err["ResponseMetadata"]["HTTPStatusCode"], err["Error"]["Code"]),
                         (403, "InvalidSignatureException"))
        self.assertIn("scoped to a valid region", err["Error"]["Message"])
        self.assertEqual(self.replica.calls()[-1][2], "rejected:InvalidSignatureException")

    def test_replica_has_the_same_versions_under_its_own_arn(self):
        p = self.regional(self.primary, REGION).get_secret_value(SecretId="app/db")
        r = self.regional(self.replica, self.REPLICA).get_secret_value(SecretId="app/db")
        self.assertEqual((r["VersionId"], r["SecretString"]), (p["VersionId"], p["SecretString"]))
        self.assertEqual(p["ARN"].split(":")[3], REGION)
        self.assertEqual(r["ARN"].split(":")[3], self.REPLICA)
        self.assertEqual(r["ARN"].split(":")[4:], p["ARN"].split(":")[4:])
        by_arn = self.regional(self.replica, self.REPLICA).describe_secret(SecretId=r["ARN"])
        self.assertEqual(by_arn["VersionIdsToStages"], {self.vid: ["AWSCURRENT"]})
        with self.assertRaises(botocore.exceptions.ClientError) as cm:
            # The primary's ARN names another region: the replica does not know it.
            self.regional(self.replica, self.REPLICA).describe_secret(SecretId=p["ARN"])
        self.assertEqual(cm.exception.response["Error"]["Code"], "ResourceNotFoundException")

    def test_replica_behind_until_replicated_again(self):
        new = self.primary.put("app/db", {"username": "u", "password": "p2"})
        rep = self.regional(self.replica, self.REPLICA)
        self.assertEqual(rep.describe_secret(SecretId="app/db")["VersionIdsToStages"],
                         {self.vid: ["AWSCURRENT"]})
        self.replica.replicate_from(self.primary, "app/db")
        self.assertEqual(rep.describe_secret(SecretId="app/db")["VersionIdsToStages"],
                         {self.vid: ["AWSPREVIOUS"], new: ["AWSCURRENT"]})
        self.assertEqual(rep.get_secret_value(SecretId="app/db")["VersionId"], new)

    def test_stopped_region_refuses_and_restarts_on_its_port(self):
        port = self.primary.port
        c = self.regional(self.primary, REGION)
        c.get_secret_value(SecretId="app/db")  # leaves a kept-alive connection in the pool
        self.primary.stop()
        with self.assertRaises(botocore.exceptions.EndpointConnectionError):
            c.get_secret_value(SecretId="app/db")
        again = self.start(standins.SecretsManager, region=REGION, port=port)
        again.replicate_from(self.replica, "app/db")
        self.assertEqual(again.port, port)
        got = self.regional(again, REGION).get_secret_value(SecretId="app/db")
        self.assertEqual(got["VersionId"], self.vid)


class StsWithBotocore(StandInTest):

    def setUp(self):
        super().setUp()
        self.sts = self.start(standins.STS)
        self.sts.roles.add(ROLE)
        self.sm = self.start(standins.SecretsManager, region=REGION)
        self.sm.create("app/db", {"username": "u", "password": "p1"})

    def test_assume_role(self):
        out = self.client("sts", self.sts.url).assume_role(RoleArn=ROLE, RoleSessionName="s1")
        c = out["Credentials"]
        sm = self.client("secretsmanager", self.sm.url, c["AccessKeyId"], c["SecretAccessKey"],
                         c["SessionToken"])
        self.assertIn("SecretString", sm.get_secret_value(SecretId="app/db"))
        self.assertEqual(self.sts.calls("AssumeRole")[-1][1], AKID)

    def test_assume_role_tampered(self):
        with self.assertRaises(botocore.exceptions.ClientError) as cm:
            self.client("sts", self.sts.url, secret="wrong").assume_role(RoleArn=ROLE,
                                                                          RoleSessionName="s2")
        self.assertEqual(cm.exception.response["Error"]["Code"], "SignatureDoesNotMatch")

    def test_assume_role_with_web_identity(self):
        self.sts.web_tokens.add("jwt-1")
        sts = self.client("sts", self.sts.url)
        out = sts.assume_role_with_web_identity(RoleArn=ROLE, RoleSessionName="ws",
                                                WebIdentityToken="jwt-1")
        self.assertTrue(out["Credentials"]["AccessKeyId"].startswith("ASIA"))
        with self.assertRaises(botocore.exceptions.ClientError) as cm:
            sts.assume_role_with_web_identity(RoleArn=ROLE, RoleSessionName="ws",
                                              WebIdentityToken="jwt-forged")
        self.assertEqual(cm.exception.response["Error"]["Code"], "InvalidIdentityToken")

    def test_botocore_web_identity_provider(self):
        """botocore's own AssumeRoleWithWebIdentity provider (env variables) against it."""
        self.sts.web_tokens.add("jwt-2")
        token = Path(self.home) / "token"
        token.write_text("jwt-2")
        session = self.botocore_session(AWS_WEB_IDENTITY_TOKEN_FILE=str(token),
                                        AWS_ROLE_ARN=ROLE, AWS_DEFAULT_REGION=REGION)
        real = session.create_client

        def create_client(name, *a, **kw):
            kw["endpoint_url"] = self.sts.url  # botocore 1.29 has no AWS_ENDPOINT_URL_STS
            return real(name, *a, **kw)

        with mock.patch.object(session, "create_client", create_client):
            creds = session.get_credentials().get_frozen_credentials()
        self.assertTrue(creds.access_key.startswith("ASIA"))
        self.assertEqual(session.get_credentials().method, "assume-role-with-web-identity")


class ImdsWithBotocore(StandInTest):

    def test_botocore_resolves_imds_credentials(self):
        imds = self.start(standins.IMDS)
        session = self.botocore_session(AWS_EC2_METADATA_DISABLED="false",
                                        AWS_EC2_METADATA_SERVICE_ENDPOINT=imds.url + "/")
        creds = session.get_credentials()
        self.assertEqual(creds.method, "iam-role")
        frozen = creds.get_frozen_credentials()
        self.assertTrue(frozen.access_key.startswith("ASIA"))
        paths = [c[0] for c in imds.calls()]
        self.assertEqual(paths[0], "PUT /latest/api/token")
        sm = self.start(standins.SecretsManager, region=REGION)
        sm.create("x", "y")
        c = self.client("secretsmanager", sm.url, frozen.access_key, frozen.secret_key,
                        frozen.token)
        self.assertEqual(c.get_secret_value(SecretId="x")["SecretString"], "y")

    def test_imds_v1_rejected(self):
        imds = self.start(standins.IMDS)
        with self.assertRaises(urllib.error.HTTPError) as cm:
            urllib.request.urlopen(imds.url + "/latest/meta-data/iam/security-credentials/",
                                   timeout=5)
        self.assertEqual(cm.exception.code, 401)
        fetcher = botocore.utils.InstanceMetadataFetcher(
            timeout=2, num_attempts=1, config={"ec2_metadata_service_endpoint": imds.url})
        self.assertEqual(fetcher.retrieve_iam_role_credentials()["role_name"],
                         "credproxy-test-role")


class ContainerWithBotocore(StandInTest):

    def test_botocore_resolves_container_credentials(self):
        ctr = self.start(standins.Container, token="tok-1")
        session = self.botocore_session(AWS_CONTAINER_CREDENTIALS_FULL_URI=ctr.url + "/creds",
                                        AWS_CONTAINER_AUTHORIZATION_TOKEN="tok-1")
        creds = session.get_credentials()
        self.assertEqual(creds.method, "container-role")
        self.assertTrue(creds.get_frozen_credentials().access_key.startswith("ASIA"))

    def test_wrong_token_rejected(self):
        ctr = self.start(standins.Container, token="tok-1")
        session = self.botocore_session(AWS_CONTAINER_CREDENTIALS_FULL_URI=ctr.url + "/creds",
                                        AWS_CONTAINER_AUTHORIZATION_TOKEN="tok-2")
        with self.assertRaises(Exception):
            session.get_credentials().get_frozen_credentials()


if __name__ == "__main__":
    unittest.main(verbosity=2)
