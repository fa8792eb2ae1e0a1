#!/usr/bin/python3
"""Checks an RDS IAM auth token as RDS would, for test_iam.py: run by PAM (pam_exec).

    iam_verifier.py POLICY_FILE LOG_FILE          (pam_exec expose_authtok: token on stdin,
                                                   the database user in PAM_USER)
    iam_verifier.py POLICY_FILE LOG_FILE USER     (the same, run directly by the test)

POLICY_FILE (JSON) is what the test's "AWS" knows, re-read every time:
    {"region": "us-east-1", "endpoint": "127.0.0.1:PORT",
     "keys": {"AKID": {"secret": "...", "token": "..." or null, "users": ["iam_app", ...]}}}
A token is accepted when its SigV4 signature, recomputed with botocore's own signer from the
secret key of its access key id, matches; the scope is REGION/rds-db; it names the endpoint;
the session token is the key's; X-Amz-Date + X-Amz-Expires has not passed (nor is the date
more than 5 minutes ahead); DBUser is the PAM user; and the key may connect as that user
(its "IAM policy"). Exit 0 accepts. Each verdict is one line in LOG_FILE:
    "ok USER AKID" or "refused USER REASON", so the test can tell why a login was refused.
"""
import calendar
import hmac
import json
import os
import sys
import time
import urllib.parse

import botocore.auth
import botocore.awsrequest
import botocore.credentials

MAX_EXPIRES = 900
CLOCK_SKEW = 300


def verdict(token, user, policy, now):
    """None when the token lets user in, else the reason."""
    hostport, sep, query = token.partition("/?")
    if not sep:
        return "malformed: no /? in the token"
    if hostport != policy["endpoint"]:
        return "wrong endpoint %s" % hostport
    pairs = [p.partition("=") for p in query.split("&")]
    raw = {k: v for k, _, v in pairs}
    params = {k: urllib.parse.unquote(v) for k, v in raw.items()}
    for key in ("Action", "DBUser", "X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date",
                "X-Amz-Expires", "X-Amz-SignedHeaders", "X-Amz-Signature"):
        if key not in params:
            return "malformed: no %s" % key
    if params["Action"] != "connect" or params["X-Amz-Algorithm"] != "AWS4-HMAC-SHA256":
        return "malformed: Action or algorithm"
    akid, _, scope = params["X-Amz-Credential"].partition("/")
    date, region, service, term = (scope.split("/") + ["", "", "", ""])[:4]
    if region != policy["region"] or service != "rds-db" or term != "aws4_request":
        return "wrong scope %s" % scope
    key = policy["keys"].get(akid)
    if key is None:
        return "unknown access key %s" % akid
    if (key.get("token") or None) != (params.get("X-Amz-Security-Token") or None):
        return "wrong session token for %s" % akid
    # The signature: botocore's SigV4 over the request the token presigns, without the signature.
    unsigned = "&".join(p for p in query.split("&") if not p.startswith("X-Amz-Signature="))
    request = botocore.awsrequest.AWSRequest(method="GET",
                                             url="https://%s/?%s" % (hostport, unsigned))
    request.context["timestamp"] = params["X-Amz-Date"]
    signer = botocore.auth.SigV4Auth(
        botocore.credentials.Credentials(akid, key["secret"], key.get("token")), "rds-db", region)
    canonical = signer.canonical_request(request)
    expected = signer.signature(signer.string_to_sign(request, canonical), request)
    if date != params["X-Amz-Date"][:8]:
        return "scope date differs from X-Amz-Date"
    if not hmac.compare_digest(expected, params["X-Amz-Signature"]):
        return "bad signature"
    signed_at = calendar.timegm(time.strptime(params["X-Amz-Date"], "%Y%m%dT%H%M%SZ"))
    expires = int(params["X-Amz-Expires"])
    if expires > MAX_EXPIRES:
        return "X-Amz-Expires %d over %d" % (expires, MAX_EXPIRES)
    if now > signed_at + expires:
        return "expired %ds ago" % (now - signed_at - expires)
    if signed_at > now + CLOCK_SKEW:
        return "signed in the future"
    if params["DBUser"] != user:
        return "token for user %s, not %s" % (params["DBUser"], user)
    if user not in key.get("users", []):
        return "access key %s may not connect as %s" % (akid, user)
    return None


def main():
    policy_file, log_file = sys.argv[1], sys.argv[2]
    user = sys.argv[3] if len(sys.argv) > 3 else os.environ.get("PAM_USER", "")
    token = sys.stdin.buffer.read().split(b"\0")[0].decode("utf-8", "replace").strip()
    with open(policy_file) as f:
        policy = json.load(f)
    try:
        why = verdict(token, user, policy, int(time.time()))
    except Exception as e:  # a malformed token must be refused, not crash the check
        why = "malformed: %s" % type(e).__name__
    with open(log_file, "a") as f:
        if why is None:
            akid = urllib.parse.unquote(token.split("X-Amz-Credential=")[1].split("%2F")[0])
            f.write("ok %s %s\n" % (user, akid))
        else:
            f.write("refused %s %s\n" % (user, why))
    return 0 if why is None else 1


if __name__ == "__main__":
    sys.exit(main())
