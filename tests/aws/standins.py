"""Local stand-ins for the AWS endpoints credproxy talks to, for the tests.

    SecretsManager  GetSecretValue, DescribeSecret, PutSecretValue, UpdateSecretVersionStage,
                    CreateSecret (JSON 1.1 protocol), with version stages and fault injection
    STS             AssumeRole (signed), AssumeRoleWithWebIdentity (unsigned; token checked)
    IMDS            EC2 instance metadata, IMDSv2 only (token PUT, then role and credentials)
    Container       the ECS / EKS Pod Identity credentials endpoint (Authorization checked)

Every signed request's SigV4 signature is recomputed with botocore's own signer
(botocore.auth.SigV4Auth) from the headers it names, and a bad one gets the AWS-shaped error:
HTTP 400/403 with x-amzn-ErrorType and {"__type": ..., "message": ...} for JSON services,
<ErrorResponse> XML for STS. Keys are known through one Keyring: static keys the test adds, and
temporary keys (with session tokens) that STS, IMDS and the container endpoint hand out.

Run with Debian's /usr/bin/python3 (python3-botocore). Everything runs in threads of the test
process (ThreadingHTTPServer on 127.0.0.1, port 0); the tests drive faults through method
calls, and a POST to /_control on the Secrets Manager port does the same from outside.
"""

import base64
import datetime
import hashlib
import json
import re
import secrets
import socket
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import botocore.auth
import botocore.awsrequest
import botocore.credentials

SKEW_LIMIT = 15 * 60  # AWS rejects a request whose X-Amz-Date is further off than this
AUTH_RE = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=([^/,\s]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request,\s*"
    r"SignedHeaders=([a-z0-9\-;]+),\s*Signature=([0-9a-f]{64})$")


def iso(t):
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class AuthError(Exception):
    """A request AWS would refuse before looking at it: (status, code, message)."""

    def __init__(self, status, code, message):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class Keyring:
    """Access keys the stand-ins accept: AKID -> (secret, session token or None, expiry or None)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.keys = {}

    def add(self, akid, secret, token=None, expires=None):
        with self.lock:
            self.keys[akid] = (secret, token, expires)

    def issue(self, lifetime=3600, prefix="ASIA"):
        """New temporary credentials: dict(AccessKeyId, SecretAccessKey, Token, Expiration)."""
        akid = prefix + secrets.token_hex(8).upper()
        secret = secrets.token_urlsafe(30)
        token = base64.b64encode(secrets.token_bytes(48)).decode()
        expires = time.time() + lifetime
        self.add(akid, secret, token, expires)
        return {"AccessKeyId": akid, "SecretAccessKey": secret, "Token": token,
                "Expiration": iso(expires)}

    def verify(self, method, path, headers, body, service, region=None):
        """Checks a SigV4 Authorization header; returns the AKID or raises AuthError.

        With region, the credential scope must name it, as a regional AWS endpoint requires.
        """
        authz = headers.get("Authorization")
        if not authz:
            raise AuthError(400, "MissingAuthenticationTokenException", "Missing Authentication Token")
        m = AUTH_RE.match(authz)
        if not m:
            raise AuthError(400, "IncompleteSignatureException",
                            "Authorization header requires 'Credential', 'Signature' and "
                            "'SignedHeaders' parameters.")
        akid, day, scope_region, svc, signed, signature = m.groups()
        amz_date = headers.get("X-Amz-Date", "")
        signed_names = signed.split(";")
        if "host" not in signed_names or not amz_date or "x-amz-date" not in signed_names:
            raise AuthError(400, "IncompleteSignatureException",
                            "Host and X-Amz-Date must be signed.")
        if svc != service or day != amz_date[:8]:
            raise AuthError(403, "InvalidSignatureException",
                            "Credential should be scoped to correct service: '%s'." % service)
        if region is not None and scope_region != region:
            raise AuthError(403, "InvalidSignatureException",
                            "Credential should be scoped to a valid region.")
        with self.lock:
            entry = self.keys.get(akid)
        if entry is None:
            raise AuthError(400, "UnrecognizedClientException",
                            "The security token included in the request is invalid.")
        secret, token, expires = entry
        if token is not None and headers.get("X-Amz-Security-Token") != token:
            raise AuthError(400, "UnrecognizedClientException",
                            "The security token included in the request is invalid.")
        if expires is not None and time.time() > expires:
            raise AuthError(400, "ExpiredTokenException",
                            "The security token included in the request is expired")
        try:
            when = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(
                tzinfo=datetime.timezone.utc).timestamp()
        except ValueError:
            raise AuthError(403, "InvalidSignatureException", "Invalid X-Amz-Date.")
        if abs(time.time() - when) > SKEW_LIMIT:
            raise AuthError(403, "InvalidSignatureException", "Signature expired: %s is now "
                            "earlier than the allowed window." % amz_date)
        expected = self.signature(method, path, headers, signed_names, body, akid, secret,
                                  token, scope_region, service, amz_date)
        if expected != signature:
            raise AuthError(403, "InvalidSignatureException",
                            "The request signature we calculated does not match the signature "
                            "you provided. Check your AWS Secret Access Key and signing method. "
                            "Consult the service documentation for details.")
        return akid

    @staticmethod
    def signature(method, path, headers, signed_names, body, akid, secret, token, region,
                  service, amz_date):
        """The signature botocore's SigV4Auth computes over the named headers."""
        hdrs = {}
        for name in signed_names:
            values = headers.get_all(name) or []
            hdrs[name] = ",".join(v.strip() for v in values)
        url = "http://%s%s" % (headers.get("Host", "localhost"), path)
        req = botocore.awsrequest.AWSRequest(method=method, url=url, data=body, headers=hdrs)
        req.context["timestamp"] = amz_date
        auth = botocore.auth.SigV4Auth(
            botocore.credentials.Credentials(akid, secret, token), service, region)
        # Only the headers the client signed are present, so botocore signs exactly those.
        creq = auth.canonical_request(req)
        sts = auth.string_to_sign(req, creq)
        return auth.signature(sts, req)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class StandIn:
    """An HTTP server in a background thread; subclasses implement handle(req)."""

    def __init__(self, keyring, port=0):
        self.keyring = keyring
        self.lock = threading.Lock()
        self.requests = []  # (path or operation, access key or None) of every request
        self.broken = False  # when set, every request gets HTTP 500
        self.open_conns = set()  # sockets of kept-alive connections, cut by stop()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def setup(self):
                super().setup()
                with outer.lock:
                    outer.open_conns.add(self.connection)

            def finish(self):
                with outer.lock:
                    outer.open_conns.discard(self.connection)
                try:
                    super().finish()
                except OSError:
                    pass

            def _do(self):
                n = int(self.headers.get("Content-Length") or 0)
                self.body = self.rfile.read(n) if n else b""
                try:
                    if outer.broken:
                        outer.record("broken " + self.command + " " + self.path)
                        status, headers, body = 500, {"Content-Type": "text/plain"}, b"broken"
                    else:
                        status, headers, body = outer.handle(self)
                except ConnectionError:
                    return
                if status is None:  # drop the connection without answering
                    self.close_connection = True
                    return
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_PUT = do_POST = _do

        self.server = _Server(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        """Stops like a host that went away: new connections are refused and the kept-alive
        ones are cut."""
        self.server.shutdown()
        self.server.server_close()
        with self.lock:
            conns = list(self.open_conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def record(self, what, akid=None, detail=None):
        with self.lock:
            self.requests.append((what, akid, detail))

    def calls(self, what=None):
        with self.lock:
            return [r for r in self.requests if what is None or r[0] == what]


# ---- Secrets Manager --------------------------------------------------------------------------

class Faults:
    """Faults for the next requests: a queue of (kind, operation or None, extra)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.queue = []
        self.release = threading.Event()
        self.release.set()

    def add(self, kind, count=1, op=None, extra=None):
        with self.lock:
            self.queue.extend([(kind, op, extra)] * count)

    def clear(self):
        with self.lock:
            self.queue.clear()
        self.release.set()

    def take(self, op):
        with self.lock:
            for i, (kind, fop, extra) in enumerate(self.queue):
                if fop is None or fop == op:
                    del self.queue[i]
                    return kind, extra
        return None, None


class SecretsManager(StandIn):
    """Secrets Manager with version stages (AWSCURRENT, AWSPENDING, AWSPREVIOUS) and faults.

    Faults (set with fault()): "throttle" (400 ThrottlingException), "500" (500
    InternalServiceError), "hang" (no answer until release_hang() or 60 s), "malformed" (200
    with a body that is not JSON), "error" (400 with the AWS error code given as extra).
    """

    def __init__(self, keyring, region="us-east-1", account="123456789012", port=0):
        super().__init__(keyring, port)
        self.region, self.account = region, account
        self.secrets = {}  # name -> {"arn": ..., "versions": {id: {...}}}
        self.faults = Faults()
        self.denied = set()  # access keys that get AccessDeniedException

    # -- state the tests set up directly --

    def create(self, name, value, version_id=None):
        """Creates a secret whose AWSCURRENT is value (a dict is stored as JSON)."""
        arn = "arn:aws:secretsmanager:%s:%s:secret:%s-%s" % (
            self.region, self.account, name, secrets.token_hex(3))
        with self.lock:
            self.secrets[name] = {"arn": arn, "name": name, "versions": {}}
        return self.put(name, value, version_id=version_id)

    def put(self, name, value, stages=("AWSCURRENT",), version_id=None, binary=False):
        """Adds a version with the given stages (moving them off other versions); returns its id."""
        vid = version_id or str(uuid.uuid4())
        with self.lock:
            s = self.secrets[name]
            for st in stages:
                self._move_stage(s, st, vid)
            v = {"stages": set(stages), "created": time.time()}
            if binary:
                v["binary"] = value if isinstance(value, bytes) else value.encode()
            else:
                v["string"] = value if isinstance(value, str) else json.dumps(value)
            s["versions"][vid] = v
        return vid

    def _move_stage(self, s, stage, to_vid):
        for vid, v in s["versions"].items():
            if stage in v["stages"] and vid != to_vid:
                v["stages"].discard(stage)
                if stage == "AWSCURRENT":
                    for o in s["versions"].values():
                        o["stages"].discard("AWSPREVIOUS")
                    v["stages"].add("AWSPREVIOUS")
        if to_vid in s["versions"]:
            s["versions"][to_vid]["stages"].add(stage)

    def replicate_from(self, primary, name):
        """Makes this region hold a replica of primary's secret as it is now, as Secrets
        Manager replication does: same name, VersionIds, values and stages, and the ARN with
        this region in it. Called again, it catches the replica up; not calling it leaves the
        replica behind."""
        with primary.lock:
            src = primary.secrets[name]
            arn = src["arn"].split(":")
            arn[3] = self.region
            versions = {vid: dict(v, stages=set(v["stages"])) for vid, v in
                        src["versions"].items()}
        with self.lock:
            self.secrets[name] = {"arn": ":".join(arn), "name": name, "versions": versions}

    def set_stage(self, name, stage, vid):
        with self.lock:
            self._move_stage(self.secrets[name], stage, vid)

    def remove_stage(self, name, stage):
        with self.lock:
            for v in self.secrets[name]["versions"].values():
                v["stages"].discard(stage)

    def fault(self, kind, count=1, op=None, extra=None):
        if kind == "hang":
            self.faults.release.clear()
        self.faults.add(kind, count, op, extra)

    def release_hang(self):
        self.faults.release.set()

    # -- the protocol --

    @staticmethod
    def error(status, code, message):
        body = json.dumps({"__type": code, "message": message}).encode()
        return status, {"Content-Type": "application/x-amz-json-1.1",
                        "x-amzn-ErrorType": code + ":http://internal.amazon.com/coral/",
                        "x-amzn-RequestId": str(uuid.uuid4())}, body

    @staticmethod
    def ok(obj):
        return 200, {"Content-Type": "application/x-amz-json-1.1",
                     "x-amzn-RequestId": str(uuid.uuid4())}, json.dumps(obj).encode()

    def handle(self, req):
        if req.path == "/_control" and req.command == "POST":
            return self.control(json.loads(req.body or b"{}"))
        target = req.headers.get("X-Amz-Target", "")
        if req.command != "POST" or not target.startswith("secretsmanager."):
            return self.error(400, "UnknownOperationException", "Unknown operation")
        op = target.split(".", 1)[1]
        try:
            akid = self.keyring.verify(req.command, req.path, req.headers, req.body,
                                       "secretsmanager", self.region)
        except AuthError as e:
            self.record(op, None, "rejected:" + e.code)
            return self.error(e.status, e.code, e.message)
        if req.headers.get("Content-Type", "").split(";")[0] != "application/x-amz-json-1.1":
            return self.error(400, "SerializationException", "Wrong Content-Type")
        try:
            args = json.loads(req.body or b"{}")
        except ValueError:
            return self.error(400, "SerializationException", "Body is not JSON")
        self.record(op, akid, args)
        kind, extra = self.faults.take(op)
        if kind == "throttle":
            return self.error(400, "ThrottlingException", "Rate exceeded")
        if kind == "500":
            return self.error(500, "InternalServiceError", "An internal error occurred")
        if kind == "malformed":
            return 200, {"Content-Type": "application/x-amz-json-1.1"}, b'{"ARN": "x", "Secr'
        if kind == "error":
            return self.error(400, extra, "Injected %s" % extra)
        if kind == "hang":
            self.faults.release.wait(60)
            return None, None, None
        if akid in self.denied:
            return self.error(400, "AccessDeniedException",
                              "User is not authorized to perform: secretsmanager:%s" % op)
        fn = getattr(self, "op_" + op, None)
        if fn is None:
            return self.error(400, "UnknownOperationException", "Unknown operation %s" % op)
        with self.lock:
            return fn(args)

    def control(self, cmd):
        """{"fault": KIND, "count": N, "op": OP, "extra": X} or {"release": true} or {"clear": true}."""
        if cmd.get("clear"):
            self.faults.clear()
        if cmd.get("release"):
            self.release_hang()
        if cmd.get("fault"):
            self.fault(cmd["fault"], cmd.get("count", 1), cmd.get("op"), cmd.get("extra"))
        return 200, {"Content-Type": "application/json"}, b"{}"

    def _find(self, secret_id):
        if not isinstance(secret_id, str) or not secret_id:
            return None
        for s in self.secrets.values():
            if secret_id in (s["name"], s["arn"]) or (
                    secret_id.startswith("arn:") and s["arn"].startswith(secret_id)):
                return s
        return None

    def _not_found(self):
        return self.error(400, "ResourceNotFoundException",
                          "Secrets Manager can't find the specified secret.")

    def op_GetSecretValue(self, a):
        s = self._find(a.get("SecretId"))
        if s is None:
            return self._not_found()
        vid, stage = a.get("VersionId"), a.get("VersionStage")
        if vid is None:
            stage = stage or "AWSCURRENT"
            vid = next((k for k, v in s["versions"].items() if stage in v["stages"]), None)
        v = s["versions"].get(vid)
        if v is None or (stage and stage not in v["stages"]):
            return self.error(400, "ResourceNotFoundException",
                              "Secrets Manager can't find the specified secret value for "
                              "staging label: %s" % (stage or vid))
        out = {"ARN": s["arn"], "Name": s["name"], "VersionId": vid,
               "VersionStages": sorted(v["stages"]), "CreatedDate": v["created"]}
        if "binary" in v:
            out["SecretBinary"] = base64.b64encode(v["binary"]).decode()
        else:
            out["SecretString"] = v["string"]
        return self.ok(out)

    def op_DescribeSecret(self, a):
        s = self._find(a.get("SecretId"))
        if s is None:
            return self._not_found()
        return self.ok({
            "ARN": s["arn"], "Name": s["name"], "RotationEnabled": False,
            "VersionIdsToStages": {k: sorted(v["stages"]) for k, v in s["versions"].items()
                                   if v["stages"]},
        })

    def op_CreateSecret(self, a):
        name = a.get("Name")
        if not name or name in self.secrets:
            return self.error(400, "ResourceExistsException", "The secret already exists.")
        self.lock.release()
        try:
            vid = self.create(name, a.get("SecretString", ""), a.get("ClientRequestToken"))
        finally:
            self.lock.acquire()
        s = self.secrets[name]
        return self.ok({"ARN": s["arn"], "Name": name, "VersionId": vid})

    def op_PutSecretValue(self, a):
        s = self._find(a.get("SecretId"))
        if s is None:
            return self._not_found()
        stages = a.get("VersionStages") or ["AWSCURRENT"]
        vid = a.get("ClientRequestToken") or str(uuid.uuid4())
        for st in stages:
            self._move_stage(s, st, vid)
        v = {"stages": set(stages), "created": time.time()}
        if "SecretBinary" in a:
            v["binary"] = base64.b64decode(a["SecretBinary"])
        else:
            v["string"] = a.get("SecretString", "")
        s["versions"][vid] = v
        return self.ok({"ARN": s["arn"], "Name": s["name"], "VersionId": vid,
                        "VersionStages": sorted(stages)})

    def op_UpdateSecretVersionStage(self, a):
        s = self._find(a.get("SecretId"))
        if s is None:
            return self._not_found()
        stage = a.get("VersionStage")
        move_to, remove_from = a.get("MoveToVersionId"), a.get("RemoveFromVersionId")
        if not stage:
            return self.error(400, "InvalidParameterException", "VersionStage is required")
        holder = next((k for k, v in s["versions"].items() if stage in v["stages"]), None)
        if holder and holder != move_to and holder != remove_from:
            return self.error(400, "InvalidParameterException",
                              "The staging label %s is currently attached to version %s, so you "
                              "must explicitly reference that version in RemoveFromVersionId."
                              % (stage, holder))
        if remove_from and remove_from in s["versions"] and stage != "AWSCURRENT":
            s["versions"][remove_from]["stages"].discard(stage)
        if move_to:
            if move_to not in s["versions"]:
                return self._not_found()
            self._move_stage(s, stage, move_to)
        return self.ok({"ARN": s["arn"], "Name": s["name"]})


# ---- STS -----------------------------------------------------------------------------------------

class STS(StandIn):
    """AssumeRole (signed with a known key) and AssumeRoleWithWebIdentity (token checked)."""

    NS = "https://sts.amazonaws.com/doc/2011-06-15/"

    def __init__(self, keyring, lifetime=3600):
        super().__init__(keyring)
        self.lifetime = lifetime
        self.roles = set()       # role ARNs that may be assumed
        self.web_tokens = set()  # web identity tokens accepted

    def error(self, status, code, message, kind="Sender"):
        body = ('<ErrorResponse xmlns="%s"><Error><Type>%s</Type><Code>%s</Code>'
                '<Message>%s</Message></Error><RequestId>%s</RequestId></ErrorResponse>'
                % (self.NS, kind, code, message, uuid.uuid4())).encode()
        return status, {"Content-Type": "text/xml"}, body

    def handle(self, req):
        form = urllib.parse.parse_qs(req.body.decode(), keep_blank_values=True)
        form.update(urllib.parse.parse_qs(urllib.parse.urlsplit(req.path).query))
        action = (form.get("Action") or [""])[0]
        arg = lambda k: (form.get(k) or [None])[0]  # noqa: E731
        if action == "AssumeRoleWithWebIdentity":
            self.record(action, None, {"RoleArn": arg("RoleArn"),
                                       "RoleSessionName": arg("RoleSessionName")})
            if arg("WebIdentityToken") not in self.web_tokens:
                return self.error(400, "InvalidIdentityToken", "Token is not valid")
            return self.assumed(action, arg("RoleArn"), arg("RoleSessionName"))
        if action == "AssumeRole":
            try:
                akid = self.keyring.verify(req.command, urllib.parse.urlsplit(req.path).path,
                                           req.headers, req.body, "sts")
            except AuthError as e:
                self.record(action, None, "rejected:" + e.code)
                code = {"InvalidSignatureException": "SignatureDoesNotMatch",
                        "UnrecognizedClientException": "InvalidClientTokenId",
                        "ExpiredTokenException": "ExpiredToken"}.get(e.code, e.code)
                return self.error(403, code, e.message)
            self.record(action, akid, {"RoleArn": arg("RoleArn"),
                                       "RoleSessionName": arg("RoleSessionName"),
                                       "ExternalId": arg("ExternalId")})
            return self.assumed(action, arg("RoleArn"), arg("RoleSessionName"))
        return self.error(400, "InvalidAction", "Could not find operation %s" % action)

    def assumed(self, action, role_arn, session_name):
        if role_arn not in self.roles:
            return self.error(403, "AccessDenied", "Not authorized to perform sts:%s" % action)
        if not session_name:
            return self.error(400, "ValidationError", "RoleSessionName is required")
        c = self.keyring.issue(self.lifetime)
        body = ('<%sResponse xmlns="%s"><%sResult><Credentials>'
                '<AccessKeyId>%s</AccessKeyId><SecretAccessKey>%s</SecretAccessKey>'
                '<SessionToken>%s</SessionToken><Expiration>%s</Expiration></Credentials>'
                '<AssumedRoleUser><Arn>%s/%s</Arn><AssumedRoleId>AROA:%s</AssumedRoleId>'
                '</AssumedRoleUser></%sResult><ResponseMetadata><RequestId>%s</RequestId>'
                '</ResponseMetadata></%sResponse>'
                % (action, self.NS, action, c["AccessKeyId"], c["SecretAccessKey"], c["Token"],
                   c["Expiration"], role_arn, session_name, session_name, action,
                   uuid.uuid4(), action)).encode()
        return 200, {"Content-Type": "text/xml"}, body


# ---- IMDSv2 and the container endpoint ----------------------------------------------------------

class IMDS(StandIn):
    """EC2 instance metadata, IMDSv2 only: GETs without a valid session token get 401."""

    def __init__(self, keyring, role="credproxy-test-role", region="us-east-1", lifetime=3600):
        super().__init__(keyring)
        self.role, self.region, self.lifetime = role, region, lifetime
        self.tokens = {}

    def handle(self, req):
        self.record(req.command + " " + req.path)
        text = lambda s, st=200: (st, {"Content-Type": "text/plain"}, s.encode())  # noqa: E731
        if req.path == "/latest/api/token":
            if req.command != "PUT":
                return text("Method Not Allowed", 405)
            ttl = req.headers.get("X-aws-ec2-metadata-token-ttl-seconds")
            if not ttl or not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
                return text("Bad Request", 400)
            tok = base64.b64encode(secrets.token_bytes(30)).decode()
            self.tokens[tok] = time.time() + int(ttl)
            return text(tok)
        tok = req.headers.get("X-aws-ec2-metadata-token")
        if not tok or self.tokens.get(tok, 0) < time.time():
            return text("Unauthorized", 401)
        base = "/latest/meta-data/iam/security-credentials/"
        if req.path == "/latest/meta-data/placement/region":
            return text(self.region)
        if req.path == base:
            return text(self.role)
        if req.path == base + self.role:
            c = self.keyring.issue(self.lifetime)
            return 200, {"Content-Type": "text/plain"}, json.dumps({
                "Code": "Success", "LastUpdated": iso(time.time()), "Type": "AWS-HMAC",
                "AccessKeyId": c["AccessKeyId"], "SecretAccessKey": c["SecretAccessKey"],
                "Token": c["Token"], "Expiration": c["Expiration"]}).encode()
        return text("Not Found", 404)


class Container(StandIn):
    """The ECS / EKS Pod Identity endpoint: GET with Authorization equal to the token."""

    def __init__(self, keyring, token=None, lifetime=3600):
        super().__init__(keyring)
        self.token, self.lifetime = token, lifetime

    def handle(self, req):
        self.record(req.command + " " + req.path)
        if self.token is not None and req.headers.get("Authorization") != self.token:
            return 401, {"Content-Type": "application/json"}, json.dumps(
                {"code": "AccessDeniedException", "message": "Unauthorized"}).encode()
        c = self.keyring.issue(self.lifetime)
        return 200, {"Content-Type": "application/json"}, json.dumps({
            "AccessKeyId": c["AccessKeyId"], "SecretAccessKey": c["SecretAccessKey"],
            "Token": c["Token"], "Expiration": c["Expiration"],
            "RoleArn": "arn:aws:iam::123456789012:role/pod"}).encode()


def sha256_hex(data):
    return hashlib.sha256(data).hexdigest()


if __name__ == "__main__":
    # Manual use: prints the ports, with one static key and one secret, until interrupted.
    ring = Keyring()
    ring.add("AKIDSTANDIN", "standin-secret-key")
    sm = SecretsManager(ring).start()
    sm.create("demo", {"username": "u", "password": "p", "host": "127.0.0.1", "port": 3306})
    sts, imds, ctr = STS(ring).start(), IMDS(ring).start(), Container(ring).start()
    print(json.dumps({"secretsmanager": sm.url, "sts": sts.url, "imds": imds.url,
                      "container": ctr.url, "access_key": "AKIDSTANDIN",
                      "secret_key": "standin-secret-key"}), flush=True)
    threading.Event().wait()
