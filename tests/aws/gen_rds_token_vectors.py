#!/usr/bin/python3
"""RDS IAM auth tokens made by botocore's own generate_db_auth_token, at fixed times.

Prints one case a line, tab-separated:
    SIGNER  EPOCH  REGION  HOST  PORT  USER  ACCESS_KEY_ID  SECRET_KEY  SESSION_TOKEN|-  TOKEN
tests/unit/test_rds_token.c runs this (Debian's python3-botocore) and checks that
rds_token_make() gives the same TOKEN for each line; the vectors it embeds came from here.

SIGNER is "python" for botocore's own SigV4QueryAuth (what boto3 installed from PyPI uses):
the token must be the same string. With python3-awscrt installed (Debian pulls it in),
botocore signs with the CRT instead ("crt"), which writes X-Amz-SignedHeaders before
X-Amz-Expires: the same parameters and signature in another order, so for those lines the
test compares the parameters as a set.

botocore reads the clock with datetime.datetime.utcnow() in botocore.auth; the cases swap
that module's `datetime` for one whose utcnow() returns the case's time, so the token is a
pure function of the inputs, as credproxy's is.
"""
import datetime
import sys

import botocore.auth
import botocore.session

try:
    import botocore.crt.auth as crt_auth
except ImportError:  # no python3-awscrt: botocore signs in Python only
    crt_auth = None

CASES = [
    # epoch, region, host, port, user, akid, secret, session token
    (1700000000, "us-east-1", "mydb.abcdefghijkl.us-east-1.rds.amazonaws.com", 3306, "app",
     "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", None),
    (1767225599, "eu-west-1", "cluster.cluster-xyz.eu-west-1.rds.amazonaws.com", 3307,
     "iam user+1@x", "AKIAIOSFODNN7EXAMPLE", "je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY", None),
    (1704067200, "ap-southeast-2", "127.0.0.1", 13306, "iam_app", "ASIAEXAMPLETEMPKEY",
     "tempSecret/With+Symbols=",
     "IQoJb3JpZ2luX2VjEHIaCXVzLWVhc3QtMSJHMEUCIQD/+token==with/slashes+plus"),
]


class FrozenDatetime(datetime.datetime):
    frozen = None

    @classmethod
    def utcnow(cls):
        return cls.frozen


class FrozenModule:
    """Stands in for the datetime module inside botocore.auth."""
    datetime = FrozenDatetime

    def __getattr__(self, name):
        return getattr(datetime, name)


def token_at(signer, epoch, region, host, port, user, akid, secret, token):
    FrozenDatetime.frozen = datetime.datetime.utcfromtimestamp(epoch)
    modules = [botocore.auth] + ([crt_auth] if crt_auth else [])
    saved = [m.datetime for m in modules]
    saved_query = botocore.auth.AUTH_TYPE_MAPS["v4-query"]
    for m in modules:
        m.datetime = FrozenModule()
    if signer == "python":
        botocore.auth.AUTH_TYPE_MAPS["v4-query"] = botocore.auth.SigV4QueryAuth
    try:
        session = botocore.session.get_session()
        client = session.create_client("rds", region_name=region, aws_access_key_id=akid,
                                       aws_secret_access_key=secret, aws_session_token=token)
        return client.generate_db_auth_token(host, port, user)
    finally:
        for m, d in zip(modules, saved):
            m.datetime = d
        botocore.auth.AUTH_TYPE_MAPS["v4-query"] = saved_query


def main():
    signers = ["python"]
    if botocore.auth.AUTH_TYPE_MAPS["v4-query"] is not botocore.auth.SigV4QueryAuth:
        signers.append("crt")
    for signer in signers:
        for c in CASES:
            print("\t".join([signer, str(c[0]), c[1], c[2], str(c[3]), c[4], c[5], c[6],
                             c[7] or "-", token_at(signer, *c)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
