#!/usr/bin/python3
"""A scriptable, fault-injecting MySQL server for tests (Python 3 standard library only).

It speaks protocol 41 with mysql_native_password (the real scramble check against a configured
password), CLIENT_SESSION_TRACK and, when the client asks, CLIENT_DEPRECATE_EOF. It answers:

    COM_QUERY               SELECT of literals ("SELECT 1", "SELECT 'a', 2"), SELECT DATABASE(),
                            SELECT @@name, SET ... (OK, reporting the variables through session
                            tracking), BEGIN/START TRANSACTION/COMMIT/ROLLBACK, a configurable
                            table of regex -> reply (queries=...), anything else: OK
    COM_INIT_DB             OK for a database in `databases`, else ERR 1049
    COM_PING, COM_RESET_CONNECTION: OK      COM_QUIT: closes
    COM_STMT_PREPARE/EXECUTE/CLOSE: minimal (a prepared SELECT of literals returns its row)
    anything else           ERR 1047 unknown command

Faults are scripted with Rule objects (see Rule). Everything received is recorded per
connection (FakeServer.connections, .commands()), so tests can assert on what arrived.

As a module:
    srv = FakeServer(user="app", password="pw", rules=[Rule(command="COM_INIT_DB",
                                                            action="err", error=(1049, ...))])
    srv.start(); ... srv.port ...; srv.stop()

As a process (the same options; rules as a JSON list of Rule keyword arguments):
    fakeserver.py --port 0 --user app --password pw --rules '[{"command": "COM_PING",
                  "action": "drop"}]' --log log.json
prints "PORT <n>" on stdout once listening, serves until SIGTERM/SIGINT, then writes the
per-connection command log as JSON to --log (if given).
"""

import argparse
import hashlib
import json
import os
import re
import signal
import socket
import struct
import sys
import threading
import time

# Capability flags.
CLIENT_LONG_PASSWORD = 1 << 0
CLIENT_FOUND_ROWS = 1 << 1
CLIENT_LONG_FLAG = 1 << 2
CLIENT_CONNECT_WITH_DB = 1 << 3
CLIENT_PROTOCOL_41 = 1 << 9
CLIENT_SSL = 1 << 11
CLIENT_TRANSACTIONS = 1 << 13
CLIENT_SECURE_CONNECTION = 1 << 15
CLIENT_MULTI_STATEMENTS = 1 << 16
CLIENT_MULTI_RESULTS = 1 << 17
CLIENT_PS_MULTI_RESULTS = 1 << 18
CLIENT_PLUGIN_AUTH = 1 << 19
CLIENT_CONNECT_ATTRS = 1 << 20
CLIENT_PLUGIN_AUTH_LENENC = 1 << 21
CLIENT_SESSION_TRACK = 1 << 23
CLIENT_DEPRECATE_EOF = 1 << 24

SERVER_CAPS = (CLIENT_LONG_PASSWORD | CLIENT_FOUND_ROWS | CLIENT_LONG_FLAG | CLIENT_CONNECT_WITH_DB
               | CLIENT_PROTOCOL_41 | CLIENT_TRANSACTIONS | CLIENT_SECURE_CONNECTION
               | CLIENT_MULTI_STATEMENTS | CLIENT_MULTI_RESULTS | CLIENT_PS_MULTI_RESULTS
               | CLIENT_PLUGIN_AUTH | CLIENT_CONNECT_ATTRS | CLIENT_PLUGIN_AUTH_LENENC
               | CLIENT_SESSION_TRACK | CLIENT_DEPRECATE_EOF)

SERVER_STATUS_IN_TRANS = 0x0001
SERVER_STATUS_AUTOCOMMIT = 0x0002
SERVER_SESSION_STATE_CHANGED = 0x4000

SESSION_TRACK_SYSTEM_VARIABLES = 0x00
SESSION_TRACK_SCHEMA = 0x01
SESSION_TRACK_STATE_CHANGE = 0x02

COMMANDS = {
    0x00: "COM_SLEEP", 0x01: "COM_QUIT", 0x02: "COM_INIT_DB", 0x03: "COM_QUERY",
    0x04: "COM_FIELD_LIST", 0x09: "COM_STATISTICS", 0x0e: "COM_PING", 0x11: "COM_CHANGE_USER",
    0x16: "COM_STMT_PREPARE", 0x17: "COM_STMT_EXECUTE", 0x18: "COM_STMT_SEND_LONG_DATA",
    0x19: "COM_STMT_CLOSE", 0x1a: "COM_STMT_RESET", 0x1f: "COM_RESET_CONNECTION",
}
COMMAND_CODES = {v: k for k, v in COMMANDS.items()}
NO_REPLY = ("COM_QUIT", "COM_STMT_CLOSE", "COM_STMT_SEND_LONG_DATA")

MYSQL_TYPE_LONGLONG = 0x08
MYSQL_TYPE_VAR_STRING = 0xfd
MYSQL_TYPE_NULL = 0x06

VERSION = "8.0.99-fakeserver"


def command_name(code):
    return COMMANDS.get(code, "COM_0x%02x" % code)


# --- wire helpers ------------------------------------------------------------------------------

def lenenc_int(n):
    if n < 251:
        return bytes([n])
    if n < 1 << 16:
        return b"\xfc" + struct.pack("<H", n)
    if n < 1 << 24:
        return b"\xfd" + struct.pack("<I", n)[:3]
    return b"\xfe" + struct.pack("<Q", n)


def lenenc_str(b):
    if isinstance(b, str):
        b = b.encode()
    return lenenc_int(len(b)) + b


def read_lenenc_int(buf, pos):
    first = buf[pos]
    if first < 251:
        return first, pos + 1
    if first == 0xfc:
        return struct.unpack_from("<H", buf, pos + 1)[0], pos + 3
    if first == 0xfd:
        return int.from_bytes(buf[pos + 1:pos + 4], "little"), pos + 4
    if first == 0xfe:
        return struct.unpack_from("<Q", buf, pos + 1)[0], pos + 9
    raise ValueError("bad length-encoded integer 0x%02x" % first)


def read_cstr(buf, pos):
    end = buf.index(b"\0", pos)
    return buf[pos:end], end + 1


def frame(packets, seq_offset=0):
    """Serialises [(seq, payload)] into wire bytes (payloads below 16 MiB)."""
    out = bytearray()
    for seq, payload in packets:
        out += struct.pack("<I", len(payload))[:3] + bytes([(seq + seq_offset) & 0xff]) + payload
    return bytes(out)


def native_scramble(password, nonce):
    """The mysql_native_password answer: SHA1(pw) XOR SHA1(nonce + SHA1(SHA1(pw)))."""
    if not password:
        return b""
    if isinstance(password, str):
        password = password.encode()
    h1 = hashlib.sha1(password).digest()
    h2 = hashlib.sha1(h1).digest()
    h3 = hashlib.sha1(nonce + h2).digest()
    return bytes(a ^ b for a, b in zip(h1, h3))


def ok_payload(caps, status=SERVER_STATUS_AUTOCOMMIT, affected=0, insert_id=0, warnings=0,
               info=b"", state=b"", header=0x00):
    """An OK packet (header 0xfe for the EOF-replacing OK of CLIENT_DEPRECATE_EOF)."""
    p = bytes([header]) + lenenc_int(affected) + lenenc_int(insert_id)
    if state and caps & CLIENT_SESSION_TRACK:
        status |= SERVER_SESSION_STATE_CHANGED
    p += struct.pack("<HH", status, warnings)
    if caps & CLIENT_SESSION_TRACK:
        if info or state:
            p += lenenc_str(info)
        if status & SERVER_SESSION_STATE_CHANGED:
            p += lenenc_str(state)
    else:
        p += info
    return p


def err_payload(code, sqlstate, message):
    if isinstance(message, str):
        message = message.encode()
    return b"\xff" + struct.pack("<H", code) + b"#" + sqlstate.encode()[:5].ljust(5, b"0") + message


def eof_payload(status=SERVER_STATUS_AUTOCOMMIT, warnings=0):
    return b"\xfe" + struct.pack("<HH", warnings, status)


def sysvar_record(name, value):
    record = lenenc_str(name) + lenenc_str(value)
    return bytes([SESSION_TRACK_SYSTEM_VARIABLES]) + lenenc_str(record)


def big_session_state(size):
    """Session-state info of at least size bytes: many SESSION_TRACK_SYSTEM_VARIABLES records."""
    out = bytearray()
    i = 0
    while len(out) < size:
        out += sysvar_record("fake_var_%05d" % i, "v" * 40)
        i += 1
    return bytes(out)


def column_def(name, col_type, db=b""):
    if isinstance(name, str):
        name = name.encode()
    charset, length = (63, 21) if col_type == MYSQL_TYPE_LONGLONG else (45, 1024)
    return (lenenc_str(b"def") + lenenc_str(db) + lenenc_str(b"") + lenenc_str(b"")
            + lenenc_str(name) + lenenc_str(name) + b"\x0c"
            + struct.pack("<HIBHB", charset, length, col_type, 0x81 if col_type ==
                          MYSQL_TYPE_LONGLONG else 0, 0) + b"\0\0")


def split_literals(text):
    """'1, 'a', NULL' -> [1, 'a', None]; None when text is not only literals."""
    values = []
    pos = 0
    text = text.strip()
    pat = re.compile(r"\s*(?:(-?\d+)|'((?:[^'\\]|\\.|'')*)'|\"((?:[^\"\\]|\\.)*)\"|(NULL))"
                     r"(?:\s+(?:AS\s+)?(\w+|`[^`]*`))?\s*(,|$)", re.I)
    while pos < len(text):
        m = pat.match(text, pos)
        if not m:
            return None
        if m.group(1) is not None:
            values.append((int(m.group(1)), m.group(5) or m.group(1)))
        elif m.group(2) is not None:
            v = m.group(2).replace("''", "'")
            values.append((v, m.group(5) or v))
        elif m.group(3) is not None:
            values.append((m.group(3), m.group(5) or m.group(3)))
        else:
            values.append((None, m.group(5) or "NULL"))
        pos = m.end()
        if not m.group(6):
            break
    return values


# --- rules -------------------------------------------------------------------------------------

class Rule:
    """One scripted fault. It matches a command and replaces or alters the normal reply.

    Matching (all given conditions must hold):
      command   name ("COM_QUERY") or code of the command
      query     regex searched (case-insensitive) in the command's text: the SQL of COM_QUERY
                and COM_STMT_PREPARE, the schema of COM_INIT_DB
      conn      index of the connection (0 = the first accepted), None for any
      nth       the command is the nth (1-based) packet received on its connection after login
      skip      let the first `skip` matching commands through untouched
      times     fire at most this many times (None: always); fired counts the firings

    action:
      "reply"   the normal reply (default), altered by the modifiers below
      "err"     an ERR packet: error=(code, sqlstate, message)
      "ok"      an OK packet; state_size=N adds >= N bytes of session-state info
                (SESSION_TRACK_SYSTEM_VARIABLES records) when the client has session tracking
      "raw"     packets=[[seq, "hex payload"], ...] sent as they are
      "drop"    close the connection; partial=N first sends N bytes of the normal reply
      "hang"    send nothing and keep the connection open
    modifiers (every action that sends):
      trickle=(chunk, delay)  write chunk bytes at a time, sleeping delay seconds in between
      seq_offset=K            add K to every sequence id of the reply
      extra="hex"             more bytes sent right after the reply, in the same write
      close_after=True        close the connection after the reply
    """

    def __init__(self, command=None, query=None, conn=None, nth=None, skip=0, times=None,
                 action="reply",
                 error=None, state_size=0, packets=None, partial=None, trickle=None,
                 seq_offset=0, extra=b"", close_after=False):
        if isinstance(command, str):
            if command not in COMMAND_CODES:
                raise ValueError("unknown command %r" % command)
            command = COMMAND_CODES[command]
        if action not in ("reply", "err", "ok", "raw", "drop", "hang"):
            raise ValueError("unknown action %r" % action)
        self.command = command
        self.query = re.compile(query, re.I | re.S) if query else None
        self.conn = conn
        self.nth = nth
        self.skip = skip
        self.skipped = 0
        self.times = times
        self.action = action
        self.error = tuple(error) if error else (1105, "HY000", "fakeserver: scripted error")
        self.state_size = state_size
        self.packets = [(seq, bytes.fromhex(p) if isinstance(p, str) else p)
                        for seq, p in (packets or [])]
        self.partial = partial
        self.trickle = tuple(trickle) if trickle else None
        self.seq_offset = seq_offset
        self.extra = bytes.fromhex(extra) if isinstance(extra, str) else extra
        self.close_after = close_after
        self.fired = 0

    def matches(self, conn_index, nth, cmd, text):
        if self.times is not None and self.fired >= self.times:
            return False
        if self.command is not None and self.command != cmd:
            return False
        if self.conn is not None and self.conn != conn_index:
            return False
        if self.nth is not None and self.nth != nth:
            return False
        if self.query is not None and (text is None or not self.query.search(text)):
            return False
        if self.skipped < self.skip:
            self.skipped += 1
            return False
        return True


# --- connections -------------------------------------------------------------------------------

class Conn:
    """One client connection and what it sent (read it after the fact, or under server.lock)."""

    def __init__(self, server, sock, index):
        self.server = server
        self.sock = sock
        self.index = index
        self.user = None
        self.database = None
        self.caps = 0
        self.plugin = None
        self.auth_ok = False
        self.clear_password_received = None  # the password that came in clear, if one did
        self.commands = []  # [(name, text or None)], in arrival order, after login
        self.closed = False
        self.closed_by = None  # "client", "fake" (a rule or COM_QUIT), "error"
        self.stmts = {}
        self.next_stmt = 1
        self.in_trans = False
        self.nonce = os.urandom(20).translate(bytes(range(1, 256)) + b"\x01")

    # I/O
    def recv_exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
        return buf

    def read_packet(self):
        head = self.recv_exact(4)
        length = int.from_bytes(head[:3], "little")
        return head[3], self.recv_exact(length)

    def send(self, data, trickle=None):
        if not trickle:
            self.sock.sendall(data)
            return
        chunk, delay = trickle
        for i in range(0, len(data), max(1, int(chunk))):
            self.sock.sendall(data[i:i + int(chunk)])
            time.sleep(delay)

    def status(self):
        return (SERVER_STATUS_IN_TRANS if self.in_trans else 0) | SERVER_STATUS_AUTOCOMMIT

    # login
    def greeting(self):
        s = self.server
        p = bytes([10]) + s.version.encode() + b"\0" + struct.pack("<I", 1000 + self.index)
        p += self.nonce[:8] + b"\0" + struct.pack("<H", s.caps & 0xffff) + bytes([45])
        p += struct.pack("<HH", SERVER_STATUS_AUTOCOMMIT, s.caps >> 16) + bytes([21]) + b"\0" * 10
        p += self.nonce[8:] + b"\0" + b"mysql_native_password\0"
        return p

    def login(self):
        s = self.server
        self.sock.sendall(frame([(0, self.greeting())]))
        seq, p = self.read_packet()
        caps = struct.unpack_from("<I", p, 0)[0]
        if len(p) == 32 and caps & CLIENT_SSL:
            raise EOFError  # SSLRequest: TLS is not offered, a client asking anyway is broken
        self.caps = caps & s.caps
        pos = 32
        user, pos = read_cstr(p, pos)
        if caps & CLIENT_PLUGIN_AUTH_LENENC:
            n, pos = read_lenenc_int(p, pos)
        elif caps & CLIENT_SECURE_CONNECTION:
            n, pos = p[pos], pos + 1
        else:
            auth, pos = read_cstr(p, pos)
            n, pos = len(auth), pos - len(auth) - 1
        auth = p[pos:pos + n]
        pos += n
        if caps & CLIENT_CONNECT_WITH_DB and pos < len(p):
            db, pos = read_cstr(p, pos)
            self.database = db.decode() or None
        plugin = b"mysql_native_password"
        if caps & CLIENT_PLUGIN_AUTH and pos < len(p):
            plugin, pos = read_cstr(p, pos)
        self.user = user.decode("utf-8", "replace")
        self.plugin = plugin.decode("utf-8", "replace")
        seq += 1
        with s.lock:
            s.logins += 1
        if s.auth_switch == "mysql_clear_password":
            # Ask for the password in clear; extra bytes may follow in the same write.
            self.send(frame([(seq, b"\xfe" + b"mysql_clear_password\0")]) + s.auth_switch_extra)
            seq, reply = self.read_packet()
            seq += 1
            password = reply.rstrip(b"\0")
            self.clear_password_received = password.decode("utf-8", "replace")
            good = password == s.password.encode()
        elif s.auth_switch == "client_ed25519":
            # A 32-byte nonce sent bare (no NUL), ending in a 0 byte on purpose. The fake cannot
            # verify the signature; it checks that one (64 bytes) came.
            nonce = os.urandom(31) + b"\0"
            self.send(frame([(seq, b"\xfe" + b"client_ed25519\0" + nonce)]))
            seq, reply = self.read_packet()
            seq += 1
            self.ed25519_reply_len = len(reply)
            good = len(reply) == 64
        else:
            if plugin != b"mysql_native_password":
                self.sock.sendall(frame([(seq, b"\xfe" + b"mysql_native_password\0"
                                          + self.nonce + b"\0")]))
                seq, auth = self.read_packet()
                seq += 1
            good = auth == native_scramble(s.password, self.nonce)
        if s.user is not None and self.user != s.user:
            good = False
        if good and self.database and self.database not in s.databases:
            self.sock.sendall(frame([(seq, err_payload(1049, "42000", "Unknown database '%s'"
                                                       % self.database))]))
            return False
        if not good:
            self.sock.sendall(frame([(seq, err_payload(
                1045, "28000", "Access denied for user '%s'@'127.0.0.1' (using password: %s)"
                % (self.user, "YES" if auth or self.clear_password_received else "NO")))]))
            return False
        self.auth_ok = True
        self.sock.sendall(frame([(seq, ok_payload(self.caps, self.status()))]))
        return True

    # replies
    def ok(self, state=b"", **kw):
        return [(1, ok_payload(self.caps, self.status(), state=state, **kw))]

    def err(self, code, sqlstate, msg):
        return [(1, err_payload(code, sqlstate, msg))]

    def resultset(self, columns, rows, binary=False):
        """columns: [(name, type)], rows: [[value]] -> packets, sequence ids from 1."""
        pkts = [lenenc_int(len(columns))]
        pkts += [column_def(name, t, (self.database or "").encode()) for name, t in columns]
        deprecate_eof = self.caps & CLIENT_DEPRECATE_EOF
        if not deprecate_eof:
            pkts.append(eof_payload(self.status()))
        for row in rows:
            if binary:
                nbytes = (len(row) + 7 + 2) // 8
                bitmap = bytearray(nbytes)
                body = b""
                for i, v in enumerate(row):
                    if v is None:
                        bitmap[(i + 2) // 8] |= 1 << ((i + 2) % 8)
                    elif columns[i][1] == MYSQL_TYPE_LONGLONG:
                        body += struct.pack("<q", v)
                    else:
                        body += lenenc_str(str(v))
                pkts.append(b"\0" + bytes(bitmap) + body)
            else:
                pkts.append(b"".join(b"\xfb" if v is None else lenenc_str(str(v)) for v in row))
        if deprecate_eof:
            pkts.append(ok_payload(self.caps, self.status(), header=0xfe))
        else:
            pkts.append(eof_payload(self.status()))
        return [(i + 1, p) for i, p in enumerate(pkts)]

    def select_reply(self, sql, binary=False):
        """The reply to a SELECT this fake understands, or None."""
        m = re.match(r"^\s*SELECT\s+(.*?)\s*;?\s*$", sql, re.I | re.S)
        if not m:
            return None
        body = m.group(1)
        if re.match(r"^DATABASE\(\)$", body, re.I):
            return self.resultset([("DATABASE()", MYSQL_TYPE_VAR_STRING)], [[self.database]],
                                  binary)
        names = re.findall(r"@@(?:session\.|global\.)?(\w+)", body, re.I)
        if len(names) > 1 and re.fullmatch(r"\s*@@[\w.]+(\s*,\s*@@[\w.]+)*\s*", body):
            # A row of system variables (credproxy reads the session_track_* defaults so).
            cols = [("@@" + n, MYSQL_TYPE_VAR_STRING) for n in names]
            row = [self.server.variables.get(n.lower(), "fake-%s" % n.lower()) for n in names]
            return self.resultset(cols, [row], binary)
        m2 = re.match(r"^@@(?:session\.|global\.)?(\w+)(?:\s+LIMIT\s+\d+)?$", body, re.I)
        if m2:
            name = m2.group(1).lower()
            value = self.server.variables.get(name, "fake-%s" % name)
            return self.resultset([("@@" + m2.group(1), MYSQL_TYPE_VAR_STRING)], [[value]],
                                  binary)
        values = split_literals(body)
        if values is None:
            return None
        columns = [(name, MYSQL_TYPE_LONGLONG if isinstance(v, int) else
                    MYSQL_TYPE_VAR_STRING) for v, name in values]
        return self.resultset(columns, [[v for v, _ in values]], binary)

    def query_reply(self, sql):
        for pattern, reply in self.server.queries:
            if re.search(pattern, sql, re.I | re.S):
                if callable(reply):
                    return reply(self, sql)
                if isinstance(reply, tuple) and reply and reply[0] == "err":
                    return self.err(*reply[1:])
                if isinstance(reply, dict):  # {"columns": [names], "rows": [[...]]}
                    cols = [(c, MYSQL_TYPE_VAR_STRING) for c in reply["columns"]]
                    return self.resultset(cols, reply["rows"])
                return reply
        rs = self.select_reply(sql)
        if rs is not None:
            return rs
        word = (sql.split(None, 1) or [""])[0].upper()
        if word == "SET":
            state = b""
            for name, value in re.findall(r"(?:SESSION\s+|@@session\.|@@)?(\w+)\s*=\s*"
                                          r"('[^']*'|[^,\s]+)", sql[3:], re.I):
                if name.upper() in ("SESSION", "GLOBAL", "NAMES"):
                    continue
                state += sysvar_record(name.lower(), value.strip("'"))
            return self.ok(state=state)
        if word in ("BEGIN", "START"):
            self.in_trans = True
        elif word in ("COMMIT", "ROLLBACK"):
            self.in_trans = False
        elif word == "SELECT":
            return self.err(1064, "42000", "fakeserver does not understand this SELECT")
        return self.ok()

    def normal_reply(self, cmd, payload, text):
        name = command_name(cmd)
        if name == "COM_QUERY":
            return self.query_reply(text)
        if name == "COM_INIT_DB":
            if text not in self.server.databases:
                return self.err(1049, "42000", "Unknown database '%s'" % text)
            self.database = text
            state = lenenc_str(lenenc_str(text))
            return self.ok(state=bytes([SESSION_TRACK_SCHEMA]) + state)
        if name in ("COM_PING",):
            return self.ok()
        if name == "COM_RESET_CONNECTION":
            self.in_trans = False
            self.stmts.clear()
            return self.ok()
        if name == "COM_STMT_PREPARE":
            sid = self.next_stmt
            self.next_stmt += 1
            self.stmts[sid] = text
            nparams = text.count("?")
            rs = self.select_reply(text.replace("?", "NULL"), binary=True)
            ncols = len(rs[1:1 + rs[0][1][0]]) if rs else 0
            pkts = [b"\0" + struct.pack("<IHHBH", sid, ncols, nparams, 0, 0)]
            pkts += [column_def("?", MYSQL_TYPE_VAR_STRING) for _ in range(nparams)]
            if nparams and not self.caps & CLIENT_DEPRECATE_EOF:
                pkts.append(eof_payload(self.status()))
            if ncols:
                pkts += [p for _, p in rs[1:1 + ncols]]
                if not self.caps & CLIENT_DEPRECATE_EOF:
                    pkts.append(eof_payload(self.status()))
            return [(i + 1, p) for i, p in enumerate(pkts)]
        if name == "COM_STMT_EXECUTE":
            sid = struct.unpack_from("<I", payload, 1)[0] if len(payload) >= 5 else 0
            if sid not in self.stmts:
                return self.err(1243, "HY000", "Unknown prepared statement handler (%d) given "
                                "to mysqld_stmt_execute" % sid)
            rs = self.select_reply(self.stmts[sid].replace("?", "NULL"), binary=True)
            return rs if rs is not None else self.ok()
        if name == "COM_STMT_CLOSE":
            sid = struct.unpack_from("<I", payload, 1)[0] if len(payload) >= 5 else 0
            self.stmts.pop(sid, None)
            return []
        if name in NO_REPLY:
            return []
        return self.err(1047, "08S01", "Unknown command")

    def serve(self):
        s = self.server
        if not self.login():
            return
        nth = 0
        while True:
            seq, payload = self.read_packet()
            nth += 1
            cmd = payload[0] if payload else 0
            name = command_name(cmd)
            text = None
            if name in ("COM_QUERY", "COM_INIT_DB", "COM_STMT_PREPARE"):
                text = payload[1:].decode("utf-8", "replace")
            with s.lock:
                self.commands.append((name, text))
                rule = None
                for r in s.rules:
                    if r.matches(self.index, nth, cmd, text):
                        r.fired += 1
                        rule = r
                        break
                s.cond.notify_all()
            if rule is None:
                if name == "COM_QUIT":
                    self.closed_by = "fake"
                    return
                self.sock.sendall(frame(self.normal_reply(cmd, payload, text)))
                continue
            if rule.action == "hang":
                continue
            if rule.action == "err":
                pkts = self.err(*rule.error)
            elif rule.action == "ok":
                state = big_session_state(rule.state_size) if rule.state_size else b""
                pkts = self.ok(state=state)
            elif rule.action == "raw":
                pkts = rule.packets
            else:
                pkts = self.normal_reply(cmd, payload, text)
            data = frame(pkts, rule.seq_offset) + rule.extra
            if rule.action == "drop":
                data = data[:rule.partial or 0]
            if data:
                self.send(data, rule.trickle)
            if rule.action == "drop" or rule.close_after or name == "COM_QUIT":
                self.closed_by = "fake"
                return

    def run(self):
        try:
            self.serve()
        except (EOFError, ConnectionError):
            self.closed_by = self.closed_by or "client"
        except OSError:
            self.closed_by = self.closed_by or "error"
        except Exception as e:  # a bug in the fake: make it visible to the test
            self.closed_by = "error"
            with self.server.lock:
                self.server.errors.append("conn %d: %r" % (self.index, e))
        finally:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.sock.close()
            with self.server.lock:
                self.closed = True
                self.server.cond.notify_all()


class FakeServer:
    """A MySQL server on 127.0.0.1 that follows Rules; see the module docstring."""

    def __init__(self, user="app", password="fake-password", databases=("app", "other"),
                 rules=(), queries=(), auth_switch=None, auth_switch_extra=b"", port=0,
                 version=VERSION, caps=SERVER_CAPS, variables=None):
        self.user = user
        self.password = password
        self.databases = set(databases)
        self.rules = [r if isinstance(r, Rule) else Rule(**r) for r in rules]
        self.queries = list(queries)  # [(regex, reply)]; reply: packets, dict, ("err", ...)
        self.auth_switch = auth_switch
        self.auth_switch_extra = (bytes.fromhex(auth_switch_extra)
                                  if isinstance(auth_switch_extra, str) else auth_switch_extra)
        self.version = version
        self.caps = caps
        self.variables = {
            "version": version, "version_comment": "fakeserver",
            # MariaDB 10.11's session-tracking defaults.
            "session_track_schema": "1", "session_track_state_change": "0",
            "session_track_system_variables": "autocommit,character_set_client,"
            "character_set_connection,character_set_results,time_zone",
            "session_track_transaction_info": "OFF",
        }
        self.variables.update(variables or {})
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.connections = []
        self.errors = []  # exceptions inside the fake (a test should assert this stays empty)
        self.logins = 0
        self._port = port
        self.port = None
        self._sock = None
        self._thread = None
        self._stopping = False

    def add_rule(self, rule=None, **kw):
        rule = rule or Rule(**kw)
        with self.lock:
            self.rules.append(rule)
        return rule

    def start(self):
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", self._port))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()
        return self

    def _accept_loop(self):
        while not self._stopping:
            try:
                sock, _ = self._sock.accept()
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                conn = Conn(self, sock, len(self.connections))
                self.connections.append(conn)
            threading.Thread(target=conn.run, daemon=True).start()

    def stop(self):
        self._stopping = True
        if self._sock:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._sock.close()
        with self.lock:
            conns = list(self.connections)
        for c in conns:
            try:
                c.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread:
            self._thread.join(5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # what arrived
    def commands(self, conn=None):
        """[(conn index, command name, text)] of every connection (or of one)."""
        with self.lock:
            return [(c.index, name, text) for c in self.connections
                    if conn is None or c.index == conn for name, text in c.commands]

    def count(self, command, query=None):
        pat = re.compile(query, re.I | re.S) if query else None
        return sum(1 for _, name, text in self.commands()
                   if name == command and (pat is None or (text and pat.search(text))))

    def wait_for(self, predicate, timeout=10.0):
        """Waits until predicate(self) is true; returns whether it became true in time."""
        deadline = time.monotonic() + timeout
        while not predicate(self):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def log(self):
        """The command log as JSON-friendly data."""
        with self.lock:
            return [{"index": c.index, "user": c.user, "database": c.database,
                     "plugin": c.plugin, "auth_ok": c.auth_ok,
                     "clear_password_received": c.clear_password_received is not None,
                     "closed": c.closed, "closed_by": c.closed_by,
                     "commands": [[n, t] for n, t in c.commands]} for c in self.connections]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--user", default="app")
    ap.add_argument("--password", default=None,
                    help="the password to accept (default: $FAKESERVER_PASSWORD or fake-password)")
    ap.add_argument("--databases", default="app,other")
    ap.add_argument("--rules", default="[]", help="JSON list of Rule keyword arguments, or @FILE")
    ap.add_argument("--auth-switch", default=None, choices=["mysql_clear_password"])
    ap.add_argument("--auth-switch-extra", default="", help="hex bytes sent after the auth switch")
    ap.add_argument("--log", default=None, help="write the command log here (JSON) on exit")
    args = ap.parse_args(argv)
    rules = args.rules
    if rules.startswith("@"):
        with open(rules[1:]) as f:
            rules = f.read()
    password = args.password
    if password is None:
        password = os.environ.get("FAKESERVER_PASSWORD", "fake-password")
    srv = FakeServer(user=args.user, password=password,
                     databases=[d for d in args.databases.split(",") if d],
                     rules=json.loads(rules), auth_switch=args.auth_switch,
                     auth_switch_extra=args.auth_switch_extra, port=args.port).start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: done.set())
    signal.signal(signal.SIGINT, lambda *a: done.set())
    print("PORT %d" % srv.port, flush=True)
    done.wait()
    srv.stop()
    if args.log:
        with open(args.log, "w") as f:
            json.dump({"connections": srv.log(), "errors": srv.errors}, f, indent=1)
    return 1 if srv.errors else 0


if __name__ == "__main__":
    sys.exit(main())
