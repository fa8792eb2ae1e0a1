#!/usr/bin/python3
"""Prints the botocore-computed SigV4 vectors that tests/unit/test_sigv4.c embeds.

Run with Debian's /usr/bin/python3 (python3-botocore). Each vector is a Secrets Manager
GetSecretValue request signed by botocore.auth.SigV4Auth at a fixed time; the C test signs the
same request with secrets/sigv4.c and must produce the same Authorization header.
"""

import datetime
import json
from unittest import mock

import botocore.auth
import botocore.awsrequest
import botocore.credentials

AMZ_DATE = "20240229T235959Z"
VECTORS = [
    # name, region, secret id, version stage, access key, secret key, session token
    ("no session token", "us-east-1", "prod/app/db", "AWSCURRENT", "AKIDEXAMPLE",
     "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", None),
    ("with session token", "eu-west-3",
     "arn:aws:secretsmanager:eu-west-3:123456789012:secret:prod/db-AbCdEf", "AWSPENDING",
     "ASIAEXAMPLEEXAMPLE", "je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY",
     "IQoJb3JpZ2luX2VjEXAMPLE//////////wEaCXVzLWVhc3QtMSJHMEUCIQD+EXAMPLE/token=="),
]


def sign(region, secret_id, stage, akid, secret, token):
    body = json.dumps({"SecretId": secret_id, "VersionStage": stage}, separators=(",", ":"))
    host = "secretsmanager.%s.amazonaws.com" % region
    req = botocore.awsrequest.AWSRequest(
        method="POST", url="https://%s/" % host, data=body.encode(),
        headers={"Content-Type": "application/x-amz-json-1.1",
                 "X-Amz-Target": "secretsmanager.GetSecretValue"})
    creds = botocore.credentials.Credentials(akid, secret, token)
    when = datetime.datetime.strptime(AMZ_DATE, "%Y%m%dT%H%M%SZ")
    with mock.patch("botocore.auth.datetime") as dt:
        dt.datetime.utcnow.return_value = when
        botocore.auth.SigV4Auth(creds, "secretsmanager", region).add_auth(req)
    assert req.headers["X-Amz-Date"] == AMZ_DATE
    return host, body, req.headers["Authorization"]


def main():
    for name, region, secret_id, stage, akid, secret, token in VECTORS:
        host, body, authz = sign(region, secret_id, stage, akid, secret, token)
        print("    {%s, %s, %s, %s, %s, %s, %s, %s," % tuple(
            json.dumps(x) if x is not None else "NULL"
            for x in (name, region, host, body, akid, secret, token, AMZ_DATE)))
        print("     %s}," % json.dumps(authz))


if __name__ == "__main__":
    main()
