"""The four steps of AWS's MySQL rotation Lambda, played against a secret file or Secrets Manager.

AWS's rotation templates (SecretsManagerRDSMySQLRotationSingleUser and ...MultiUser) run as a
Lambda with four steps, each a separate invocation:

    createSecret  make the next version (AWSPENDING): a new password, and with alternating
                  users the other user's name
    setSecret     make the database accept AWSPENDING (ALTER USER; with alternating users,
                  first CREATE USER the clone with the same grants)
    testSecret    log in with AWSPENDING
    finishSecret  move AWSCURRENT to the pending version

Where the secret lives is a store:

    SecretFile      the file credproxy polls (--secret-file). The pending version is kept in
                    memory (and, with pending_file, in a mode-600 file beside the secret);
                    finishSecret rewrites the file atomically (a temporary file, then
                    os.replace), as a Kubernetes secret sync or a config agent would.
    SecretsManager  a Secrets Manager endpoint (tests/aws/standins.py) reached with botocore,
                    as the Lambda does: PutSecretValue with VersionStages [AWSPENDING], then
                    UpdateSecretVersionStage to move AWSCURRENT (and, as the service does when
                    a rotation completes, AWSPENDING is taken off the new version).

With a single user, the database refuses the current version's password from setSecret until
finishSecret: the rotation window. window_pause stretches it (AWS's steps run as separate
invocations, seconds apart), so tests can check that new clients ride it out.

Root is reached through Fixture.root_sql (the mariadb CLI on the server's unix socket), the
stand-in for the Lambda's master secret.
"""

import json
import os
import secrets
import time
import uuid
from pathlib import Path

import pymysql

SINGLE_USER = "single"
ALTERNATING_USERS = "alternating"
CLONE_SUFFIX = "_clone"


def sql_string(s):
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def new_password():
    """32 characters with punctuation, but none of ' " \\ (AWS's ExcludeCharacters default)."""
    alphabet = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789!#%&*-_=+.:;,~^"
    return "".join(secrets.choice(alphabet) for _ in range(32))


def write_secret_file(path, secret):
    """Replaces path with secret (a dict) atomically: a mode-600 temporary file, then rename."""
    path = Path(path)
    tmp = path.with_name(".%s.rotating.%d" % (path.name, os.getpid()))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(secret, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


class TestSecretFailed(AssertionError):
    """testSecret could not log in with the pending version (the Lambda would fail the step)."""


class SecretFile:
    """The secret file credproxy reads: AWSCURRENT is the file, AWSPENDING lives in memory."""

    def __init__(self, path, pending_file=False):
        self.path = Path(path)
        self.pending_path = (self.path.with_name(self.path.name + ".pending") if pending_file
                             else None)
        self.pending = None

    def current(self):
        with open(self.path) as f:
            return json.load(f)

    def put_pending(self, secret):
        """Stores secret as the pending version; returns its token."""
        self.pending = dict(secret)
        if self.pending_path:
            write_secret_file(self.pending_path, secret)
        return secrets.token_hex(8)

    def finish(self, token):
        """The pending version becomes current: the file is replaced atomically."""
        write_secret_file(self.path, self.pending)
        self.abandon()

    def abandon(self):
        self.pending = None
        if self.pending_path:
            try:
                os.unlink(self.pending_path)
            except FileNotFoundError:
                pass

    def replace_current(self, secret):
        """Publishes secret as current outside a rotation; returns a function that undoes it."""
        before = self.current()
        write_secret_file(self.path, secret)
        return lambda: write_secret_file(self.path, before)


class SecretsManager:
    """A secret in Secrets Manager, reached with a botocore client (endpoint_url for a stand-in)."""

    def __init__(self, secret_id, region, endpoint_url, access_key, secret_key):
        import botocore.config
        import botocore.session

        self.secret_id = secret_id
        self.client = botocore.session.get_session().create_client(
            "secretsmanager", region_name=region, endpoint_url=endpoint_url,
            aws_access_key_id=access_key, aws_secret_access_key=secret_key,
            config=botocore.config.Config(retries={"max_attempts": 3}))

    def close(self):
        self.client.close()

    def _stages(self):
        return self.client.describe_secret(SecretId=self.secret_id)["VersionIdsToStages"]

    def _holder(self, stage):
        return next((v for v, st in self._stages().items() if stage in st), None)

    def current(self):
        r = self.client.get_secret_value(SecretId=self.secret_id, VersionStage="AWSCURRENT")
        return json.loads(r["SecretString"])

    def put_pending(self, secret):
        token = str(uuid.uuid4())
        self.client.put_secret_value(SecretId=self.secret_id, ClientRequestToken=token,
                                     SecretString=json.dumps(secret),
                                     VersionStages=["AWSPENDING"])
        return token

    def finish(self, token):
        current = self._holder("AWSCURRENT")
        if current != token:
            self.client.update_secret_version_stage(SecretId=self.secret_id,
                                                    VersionStage="AWSCURRENT",
                                                    MoveToVersionId=token,
                                                    RemoveFromVersionId=current)
        if self._holder("AWSPENDING") == token:
            self.client.update_secret_version_stage(SecretId=self.secret_id,
                                                    VersionStage="AWSPENDING",
                                                    RemoveFromVersionId=token)

    def abandon(self):
        pass  # a failed rotation leaves AWSPENDING on its version, as in AWS

    def replace_current(self, secret):
        before = self._holder("AWSCURRENT")
        token = str(uuid.uuid4())
        self.client.put_secret_value(SecretId=self.secret_id, ClientRequestToken=token,
                                     SecretString=json.dumps(secret),
                                     VersionStages=["AWSCURRENT"])

        def undo():
            self.client.update_secret_version_stage(SecretId=self.secret_id,
                                                    VersionStage="AWSCURRENT",
                                                    MoveToVersionId=before,
                                                    RemoveFromVersionId=token)
        return undo


class Rotation:
    """Rotates the secret in store; strategy is SINGLE_USER or ALTERNATING_USERS.

    root_sql(sql) runs SQL as root; db_port is the server's TCP port on 127.0.0.1; user_host is
    the host part of the database accounts. on_password(pw) is called with every password this
    rotation creates (tests use it to check none reaches a log). window_pause is the default
    pause, in seconds, between setSecret and finishSecret of a single-user rotation.
    """

    def __init__(self, store, root_sql, db_port, strategy=SINGLE_USER, user_host="127.0.0.1",
                 window_pause=0.0, on_password=None, log=None):
        if strategy not in (SINGLE_USER, ALTERNATING_USERS):
            raise ValueError("unknown strategy %r" % strategy)
        self.store = store
        self.root_sql = root_sql
        self.db_port = db_port
        self.strategy = strategy
        self.user_host = user_host
        self.window_pause = window_pause
        self.on_password = on_password or (lambda pw: None)
        self.log = log or (lambda msg: None)
        self.pending = None  # AWSPENDING, between createSecret and finishSecret
        self.token = None  # its version id
        self.previous = None  # AWSPREVIOUS after finishSecret
        self.windows = []  # (start, end) monotonic times of every setSecret..finishSecret
        self._set_at = None

    # --- helpers -------------------------------------------------------------------------

    def current(self):
        """AWSCURRENT as it is now."""
        return self.store.current()

    def account(self, username):
        return "%s@%s" % (sql_string(username), sql_string(self.user_host))

    def login(self, secret, timeout=10):
        """A direct connection to the database with secret's credentials."""
        return pymysql.connect(host="127.0.0.1", port=self.db_port, user=secret["username"],
                               password=secret["password"], database=secret.get("dbname"),
                               connect_timeout=timeout, read_timeout=timeout)

    @staticmethod
    def other_user(username):
        """The alternating strategy's flip: user <-> user_clone."""
        if username.endswith(CLONE_SUFFIX):
            return username[: -len(CLONE_SUFFIX)]
        return username + CLONE_SUFFIX

    # --- the four steps ------------------------------------------------------------------

    def create_secret(self, password=None):
        """createSecret: the pending version, with a new password (and the other user)."""
        current = self.current()
        pending = dict(current, password=password or new_password())
        if self.strategy == ALTERNATING_USERS:
            pending["username"] = self.other_user(current["username"])
        self.on_password(pending["password"])
        self.token = self.store.put_pending(pending)
        self.pending = pending
        self.log("createSecret: pending user %s" % pending["username"])
        return pending

    def set_secret(self):
        """setSecret: the database accepts the pending version from now on.

        Single user: ALTER USER, which opens the rotation window (AWSCURRENT still has the old
        password). Alternating: the other user is created if needed, with the current user's
        grants (as AWS's multi-user template copies SHOW GRANTS), and gets the new password;
        the current user is untouched, so there is no window.
        """
        pending, current = self.pending, self.current()
        if pending is None:
            raise AssertionError("setSecret before createSecret")
        self._set_at = time.monotonic()
        if self.strategy == ALTERNATING_USERS and pending["username"] != current["username"]:
            self.root_sql("CREATE USER IF NOT EXISTS %s IDENTIFIED BY %s"
                          % (self.account(pending["username"]), sql_string(pending["password"])))
            grants = self.root_sql("SHOW GRANTS FOR %s" % self.account(current["username"]))
            for (grant,) in grants:
                head = grant.split(" TO ", 1)[0]
                if head.startswith("GRANT USAGE ON *.*"):
                    continue  # the account itself; its password comes below
                self.root_sql("%s TO %s" % (head, self.account(pending["username"])))
        self.root_sql("ALTER USER %s IDENTIFIED BY %s"
                      % (self.account(pending["username"]), sql_string(pending["password"])))
        self.log("setSecret: %s has the pending password" % pending["username"])

    def test_secret(self):
        """testSecret: a direct login with the pending version; raises TestSecretFailed."""
        try:
            conn = self.login(self.pending)
        except pymysql.err.MySQLError as e:
            raise TestSecretFailed("testSecret: %s cannot log in with the pending password: %r"
                                   % (self.pending["username"], e)) from None
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT NOW()")
                cur.fetchone()
        finally:
            conn.close()
        self.log("testSecret: pending login works")

    def finish_secret(self):
        """finishSecret: the pending version becomes current (AWSCURRENT moves to it)."""
        if self.pending is None:
            raise AssertionError("finishSecret before createSecret")
        self.previous = self.current()
        self.store.finish(self.token)
        end = time.monotonic()
        self.windows.append((self._set_at if self._set_at is not None else end, end))
        self._set_at = None
        self.log("finishSecret: %s is current" % self.pending["username"])
        self.pending = None
        self.token = None

    def abandon(self):
        """Gives up on the pending version without finishing (the Lambda failed)."""
        self.store.abandon()
        self.pending = None
        self.token = None
        self._set_at = None

    # --- a whole rotation ----------------------------------------------------------------

    def rotate(self, window_pause=None, password=None):
        """The four steps in order; returns the new current secret.

        window_pause (default self.window_pause) is slept after setSecret and again, a
        little, after testSecret, as separate Lambda invocations would be spaced.
        """
        pause = self.window_pause if window_pause is None else window_pause
        pending = self.create_secret(password)
        self.set_secret()
        if pause:
            time.sleep(pause * 0.75)
        self.test_secret()
        if pause:
            time.sleep(pause * 0.25)
        self.finish_secret()
        return pending


def FileRotation(secret_path, root_sql, db_port, pending_file=False, **kw):
    """A Rotation of the secret file secret_path."""
    return Rotation(SecretFile(secret_path, pending_file), root_sql, db_port, **kw)
