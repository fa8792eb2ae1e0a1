"""The AWS credential provider chain end to end: one test per provider, each from a clean
environment, credproxy reading its secret from the Secrets Manager stand-in with whatever
credentials that provider produced (the stand-in checks each signature and session token).
"""

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "aws"))

import harness  # noqa: E402
import standins  # noqa: E402
from aws_fixture import AKID, REGION, SECRET_KEY, AwsTestCase  # noqa: E402

ROLE = "arn:aws:iam::123456789012:role/credproxy"


class Providers(AwsTestCase):

    def sm_keys(self):
        """The access keys Secrets Manager saw, in order (rejected requests have None)."""
        return [c[1] for c in self.sm.calls()]

    def write(self, path, text, mode=0o600):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        os.chmod(path, mode)
        return path

    def test_environment(self):
        p = self.aws_proxy(env=self.env_keys())
        self.assert_serving(p)
        self.assertEqual(set(self.sm_keys()), {AKID})
        self.assertIn("AWS credentials from environment", p.log())

    def test_environment_with_session_token(self):
        c = self.keyring.issue(3600)
        self.secret_values.add(c["SecretAccessKey"])
        env = self.clean_env(AWS_ACCESS_KEY_ID=c["AccessKeyId"],
                             AWS_SECRET_ACCESS_KEY=c["SecretAccessKey"],
                             AWS_SESSION_TOKEN=c["Token"])
        p = self.aws_proxy(env=env)
        self.assert_serving(p)
        self.assertEqual(set(self.sm_keys()), {c["AccessKeyId"]})

    def test_environment_wins_over_a_profile(self):
        self.write(self.home / ".aws" / "credentials",
                   "[default]\naws_access_key_id = AKIDPROFILE\naws_secret_access_key = x\n")
        p = self.aws_proxy(env=self.env_keys())
        self.assert_serving(p)
        self.assertEqual(set(self.sm_keys()), {AKID})

    def test_web_identity(self):
        sts = self.start_standin(standins.STS)
        sts.roles.add(ROLE)
        sts.web_tokens.add("eyJ.web-identity.token")
        token_file = self.write(self.workdir / "token", "eyJ.web-identity.token\n")
        env = self.clean_env(AWS_WEB_IDENTITY_TOKEN_FILE=str(token_file), AWS_ROLE_ARN=ROLE,
                             AWS_ROLE_SESSION_NAME="irsa-test", AWS_ENDPOINT_URL_STS=sts.url)
        p = self.aws_proxy(env=env)
        self.assert_serving(p)
        calls = sts.calls("AssumeRoleWithWebIdentity")
        self.assertEqual(len(calls), 1)
        self.assertEqual(calls[0][2], {"RoleArn": ROLE, "RoleSessionName": "irsa-test"})
        keys = set(self.sm_keys())
        self.assertEqual(len(keys), 1)
        self.assertTrue(next(iter(keys)).startswith("ASIA"))
        self.assertIn("AWS credentials from web identity (expire at", p.log())

    def test_web_identity_bad_token_fails_start(self):
        sts = self.start_standin(standins.STS)
        sts.roles.add(ROLE)
        token_file = self.write(self.workdir / "token", "not-a-valid-token")
        env = self.clean_env(AWS_WEB_IDENTITY_TOKEN_FILE=str(token_file), AWS_ROLE_ARN=ROLE,
                             AWS_ENDPOINT_URL_STS=sts.url)
        log = self.expect_start_failure(env=env)
        self.assertIn("InvalidIdentityToken", log)

    def test_profile_static_keys_and_region(self):
        self.write(self.home / ".aws" / "credentials",
                   "[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n"
                   % (AKID, SECRET_KEY))
        self.write(self.home / ".aws" / "config", "[default]\nregion = %s\n" % REGION)
        p = self.aws_proxy(env=self.clean_env(), region=None)
        self.assert_serving(p)
        self.assertEqual(set(self.sm_keys()), {AKID})
        self.assertIn("region %s" % REGION, p.log())

    def test_profile_files_from_env_variables(self):
        creds = self.write(self.workdir / "c.ini",
                           "[ops]\naws_access_key_id = %s\naws_secret_access_key = %s\n"
                           % (AKID, SECRET_KEY))
        conf = self.write(self.workdir / "conf.ini", "[profile ops]\nregion = %s\n" % REGION)
        env = self.clean_env(AWS_SHARED_CREDENTIALS_FILE=str(creds), AWS_CONFIG_FILE=str(conf),
                             AWS_PROFILE="ops")
        p = self.aws_proxy(env=env, region=None)
        self.assert_serving(p)
        self.assertEqual(set(self.sm_keys()), {AKID})

    def test_profile_role_arn_with_source_profile(self):
        sts = self.start_standin(standins.STS)
        sts.roles.add(ROLE)
        self.write(self.home / ".aws" / "credentials",
                   "[base]\naws_access_key_id = %s\naws_secret_access_key = %s\n"
                   % (AKID, SECRET_KEY))
        self.write(self.home / ".aws" / "config",
                   "[profile app]\nrole_arn = %s\nsource_profile = base\n"
                   "role_session_name = from-profile\nexternal_id = ext-42\nregion = %s\n"
                   % (ROLE, REGION))
        env = self.clean_env(AWS_PROFILE="app", AWS_ENDPOINT_URL_STS=sts.url)
        p = self.aws_proxy(env=env)
        self.assert_serving(p)
        calls = sts.calls("AssumeRole")
        self.assertEqual(len(calls), 1)
        self.assertEqual(calls[0][1], AKID)  # signed with the source profile's key
        self.assertEqual(calls[0][2], {"RoleArn": ROLE, "RoleSessionName": "from-profile",
                                       "ExternalId": "ext-42"})
        self.assertTrue(all(k.startswith("ASIA") for k in self.sm_keys()))

    def test_credential_process(self):
        c = self.keyring.issue(3600)
        self.secret_values.add(c["SecretAccessKey"])
        out = dict(Version=1, AccessKeyId=c["AccessKeyId"], SecretAccessKey=c["SecretAccessKey"],
                   SessionToken=c["Token"], Expiration=c["Expiration"])
        script = self.write(self.workdir / "creds helper.py",
                            "import json\nprint(json.dumps(%r))\n" % out, 0o700)
        self.write(self.home / ".aws" / "config",
                   "[default]\ncredential_process = /usr/bin/python3 '%s'\n" % script)
        p = self.aws_proxy(env=self.clean_env())
        self.assert_serving(p)
        self.assertEqual(set(self.sm_keys()), {c["AccessKeyId"]})
        self.assertIn("credential_process", p.log())

    def test_credential_process_failure_is_clear(self):
        script = self.write(self.workdir / "fail.sh", "#!/bin/sh\necho 'sso session expired' >&2\n"
                            "exit 3\n", 0o700)
        self.write(self.home / ".aws" / "config", "[default]\ncredential_process = %s\n" % script)
        log = self.expect_start_failure(env=self.clean_env())
        self.assertIn("exited with status 3: sso session expired", log)

    def test_container_endpoint(self):
        ctr = self.start_standin(standins.Container, token="pod-identity-token")
        token_file = self.write(self.workdir / "eks-token", "pod-identity-token\n")
        env = self.clean_env(AWS_CONTAINER_CREDENTIALS_FULL_URI=ctr.url + "/v1/credentials",
                             AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=str(token_file))
        p = self.aws_proxy(env=env)
        self.assert_serving(p)
        self.assertEqual(ctr.calls(), [("GET /v1/credentials", None, None)])
        self.assertTrue(all(k.startswith("ASIA") for k in self.sm_keys()))

    def test_container_endpoint_with_token_variable(self):
        ctr = self.start_standin(standins.Container, token="ecs-token")
        env = self.clean_env(AWS_CONTAINER_CREDENTIALS_FULL_URI=ctr.url + "/creds",
                             AWS_CONTAINER_AUTHORIZATION_TOKEN="ecs-token")
        p = self.aws_proxy(env=env)
        self.assert_serving(p)
        env["AWS_CONTAINER_AUTHORIZATION_TOKEN"] = "wrong"
        log = self.expect_start_failure(env=env)
        self.assertIn("container credentials endpoint: HTTP 401", log)

    def test_imds_v2_credentials_and_region(self):
        imds = self.start_standin(standins.IMDS, region=REGION)
        env = self.clean_env(AWS_EC2_METADATA_DISABLED=None,
                             AWS_EC2_METADATA_SERVICE_ENDPOINT=imds.url)
        p = self.aws_proxy(env=env, region=None)
        self.assert_serving(p)
        paths = [c[0] for c in imds.calls()]
        self.assertIn("PUT /latest/api/token", paths)
        self.assertIn("GET /latest/meta-data/placement/region", paths)
        self.assertIn("GET /latest/meta-data/iam/security-credentials/credproxy-test-role", paths)
        self.assertIn("region %s (from instance metadata)" % REGION, p.log())
        self.assertTrue(all(k.startswith("ASIA") for k in self.sm_keys()))

    def test_imds_disabled(self):
        imds = self.start_standin(standins.IMDS)
        env = self.clean_env(AWS_EC2_METADATA_SERVICE_ENDPOINT=imds.url)  # still disabled
        log = self.expect_start_failure(env=env)
        self.assertIn("AWS_EC2_METADATA_DISABLED", log)
        self.assertEqual(imds.calls(), [])

    def test_temporary_credentials_refreshed_before_expiry(self):
        """Short-lived credentials are replaced in the background; a failed refresh keeps the
        current ones until they expire, and says so once."""
        imds = self.start_standin(standins.IMDS, lifetime=42)
        env = self.clean_env(AWS_EC2_METADATA_DISABLED=None,
                             AWS_EC2_METADATA_SERVICE_ENDPOINT=imds.url)
        p = self.aws_proxy("--secret-refresh", "1s", env=env)
        role_path = "GET /latest/meta-data/iam/security-credentials/credproxy-test-role"
        self.wait_for(lambda: len(imds.calls(role_path)) >= 2, 20, "a credentials refresh")
        self.wait_for(lambda: len(set(k for k in self.sm_keys() if k)) >= 2, 10,
                      "Secrets Manager calls with the new key")
        imds.broken = True
        self.assertTrue(p.wait_log("refresh failed", 20), p.log())
        self.assertIn("keeping the current ones until they expire at", p.log())
        self.assertEqual(p.count("refresh failed"), 1)
        self.assert_serving(p)  # the secret is cached; queries never wait for AWS
        imds.broken = False
        self.assertTrue(p.wait_log("refreshed again", 30), p.log())


if __name__ == "__main__":
    harness.main()
