"""The little of the MySQL client protocol that the benchmark needs, on raw sockets.

Why not a client library: the idle-connection workload opens thousands of
connections from one process without a thread each (non-blocking login state
machines on one epoll), and the slow-client workload must control the socket's
receive buffer and the pace of every recv(), which no connector exposes. Only
mysql_native_password is spoken, which is what MariaDB and credproxy offer.
"""

import hashlib
import selectors
import socket
import struct
import time

CLIENT_LONG_PASSWORD = 0x1
CLIENT_CONNECT_WITH_DB = 0x8
CLIENT_PROTOCOL_41 = 0x200
CLIENT_TRANSACTIONS = 0x2000
CLIENT_SECURE_CONNECTION = 0x8000
CLIENT_PLUGIN_AUTH = 0x80000

COM_QUIT = 0x01
COM_QUERY = 0x03
COM_PING = 0x0E

# What the benchmark's clients announce: the classic 4.1 protocol with EOF packets
# (no CLIENT_DEPRECATE_EOF), so the end of a result set is an EOF packet.
BASE_CAPS = (
    CLIENT_LONG_PASSWORD
    | CLIENT_PROTOCOL_41
    | CLIENT_TRANSACTIONS
    | CLIENT_SECURE_CONNECTION
    | CLIENT_PLUGIN_AUTH
)


class MySQLError(Exception):
    pass


def native_scramble(password, salt):
    """mysql_native_password: SHA1(pw) XOR SHA1(salt + SHA1(SHA1(pw))); empty for no password."""
    if not password:
        return b""
    p1 = hashlib.sha1(password.encode()).digest()
    p2 = hashlib.sha1(p1).digest()
    p3 = hashlib.sha1(salt + p2).digest()
    return bytes(a ^ b for a, b in zip(p1, p3))


def packet(seq, payload):
    return struct.pack("<I", len(payload))[:3] + bytes([seq & 0xFF]) + payload


def parse_greeting(payload):
    """Returns (salt, plugin name) from a protocol-10 greeting."""
    if not payload or payload[0] != 10:
        if payload and payload[0] == 0xFF:
            raise MySQLError("server refused: %s" % error_message(payload))
        raise MySQLError("not a protocol-10 greeting")
    i = payload.index(b"\0", 1) + 1  # server version
    i += 4  # connection id
    salt = payload[i : i + 8]
    i += 8 + 1  # salt part 1, filler
    i += 2 + 1 + 2 + 2  # capabilities (low), charset, status, capabilities (high)
    salt_len = payload[i]
    i += 1 + 10  # length of auth data, reserved
    part2 = max(13, salt_len - 8)
    salt += payload[i : i + part2 - 1]  # the last byte is a NUL
    i += part2
    end = payload.find(b"\0", i)
    plugin = payload[i : end if end >= 0 else len(payload)].decode()
    return salt, plugin


def handshake_response(salt, user, password, db):
    caps = BASE_CAPS | (CLIENT_CONNECT_WITH_DB if db else 0)
    auth = native_scramble(password, salt)
    out = struct.pack("<IIB", caps, 1 << 24, 45) + b"\0" * 23
    out += user.encode() + b"\0" + bytes([len(auth)]) + auth
    if db:
        out += db.encode() + b"\0"
    return out + b"mysql_native_password\0"


def error_message(payload):
    code = struct.unpack("<H", payload[1:3])[0]
    msg = payload[3:]
    if msg[:1] == b"#":
        msg = msg[6:]
    return "%d %s" % (code, msg.decode(errors="replace"))


def recv_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise MySQLError("connection closed by the server")
        buf += chunk
    return bytes(buf)


def read_packet(sock):
    hdr = recv_exact(sock, 4)
    n = hdr[0] | hdr[1] << 8 | hdr[2] << 16
    return hdr[3], recv_exact(sock, n)


def connect(host, port, user, password, db, rcvbuf=None, timeout=30):
    """A logged-in blocking socket. rcvbuf, when set, is applied before connect() so
    that the TCP window stays small for the life of the connection."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(timeout)
    sock.connect((host, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    _, greeting = read_packet(sock)
    salt, _ = parse_greeting(greeting)
    sock.sendall(packet(1, handshake_response(salt, user, password, db)))
    while True:
        seq, reply = read_packet(sock)
        if reply[0] == 0x00:
            return sock
        if reply[0] == 0xFF:
            sock.close()
            raise MySQLError("login failed: %s" % error_message(reply))
        if reply[0] == 0xFE:  # auth switch: only mysql_native_password is understood
            end = reply.index(b"\0", 1)
            plugin = reply[1:end].decode()
            if plugin != "mysql_native_password":
                sock.close()
                raise MySQLError("server wants auth plugin %s" % plugin)
            salt = reply[end + 1 : end + 21]
            sock.sendall(packet(seq + 1, native_scramble(password, salt)))
            continue
        sock.close()
        raise MySQLError("unexpected login reply 0x%02x" % reply[0])


def ping(sock):
    sock.sendall(packet(0, bytes([COM_PING])))
    _, reply = read_packet(sock)
    if reply[0] != 0x00:
        raise MySQLError("ping failed")


class _Login:
    """One non-blocking login, driven by AsyncOpener."""

    __slots__ = ("sock", "buf", "state", "user", "password", "db")

    def __init__(self, sock, user, password, db):
        self.sock, self.user, self.password, self.db = sock, user, password, db
        self.buf = bytearray()
        self.state = "connecting"

    def packets(self):
        while len(self.buf) >= 4:
            n = self.buf[0] | self.buf[1] << 8 | self.buf[2] << 16
            if len(self.buf) < 4 + n:
                return
            seq, payload = self.buf[3], bytes(self.buf[4 : 4 + n])
            del self.buf[: 4 + n]
            yield seq, payload


def open_many(host, port, user, password, db, n, in_flight=64, timeout=120, progress=None):
    """Opens n logged-in connections, at most in_flight logins at a time. Returns
    (sockets, errors) where errors is a list of strings (the first few kept)."""
    sel = selectors.DefaultSelector()
    done, errors, n_err = [], [], 0
    started = 0
    active = 0
    deadline = time.monotonic() + timeout

    def fail(lg, why):
        nonlocal active, n_err
        sel.unregister(lg.sock)
        lg.sock.close()
        active -= 1
        n_err += 1
        if len(errors) < 5:
            errors.append(why)

    while len(done) + n_err < n:
        while active < in_flight and started < n:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            try:
                s.connect((host, port))
            except BlockingIOError:
                pass
            except OSError as e:  # e.g. EMFILE, EADDRNOTAVAIL: count it and stop starting new ones
                s.close()
                n_err += 1
                started += 1
                if len(errors) < 5:
                    errors.append("connect: %s" % e)
                continue
            lg = _Login(s, user, password, db)
            sel.register(s, selectors.EVENT_WRITE, lg)
            started += 1
            active += 1
        if time.monotonic() > deadline:
            errors.append("timed out with %d logins unfinished" % active)
            n_err += active
            for key in list(sel.get_map().values()):
                key.fileobj.close()
            break
        for key, _ in sel.select(timeout=1.0):
            lg = key.data
            if lg.state == "connecting":
                err = lg.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    fail(lg, "connect: errno %d" % err)
                    continue
                lg.state = "greeting"
                sel.modify(lg.sock, selectors.EVENT_READ, lg)
                continue
            try:
                data = lg.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as e:
                fail(lg, "recv: %s" % e)
                continue
            if not data:
                fail(lg, "closed during login (%s)" % lg.state)
                continue
            lg.buf += data
            for seq, payload in lg.packets():
                try:
                    if lg.state == "greeting":
                        salt, _ = parse_greeting(payload)
                        resp = handshake_response(salt, lg.user, lg.password, lg.db)
                        lg.sock.send(packet(1, resp))  # small: fits an empty send buffer
                        lg.state = "auth"
                    elif payload[0] == 0x00:
                        sel.unregister(lg.sock)
                        lg.sock.setblocking(True)
                        done.append(lg.sock)
                        active -= 1
                        lg.state = "done"
                    elif payload[0] == 0xFE:
                        end = payload.index(b"\0", 1)
                        salt = payload[end + 1 : end + 21]
                        lg.sock.send(packet(seq + 1, native_scramble(lg.password, salt)))
                    else:
                        msg = error_message(payload) if payload[0] == 0xFF else "bad reply"
                        fail(lg, "login: %s" % msg)
                        lg.state = "failed"
                except (MySQLError, ValueError, OSError) as e:
                    fail(lg, "login: %s" % e)
                    lg.state = "failed"
                if lg.state in ("done", "failed"):
                    break
        if progress and len(done) % 1000 == 0:
            progress(len(done))
    sel.close()
    return done, errors


class ResultScanner:
    """Walks a text-protocol result set as bytes arrive, without keeping them: only
    packet boundaries and first bytes are looked at. finished is set at the EOF that
    ends the rows; rows counts the row packets."""

    def __init__(self):
        self.hdr = bytearray()
        self.skip = 0
        self.phase = "count"  # count -> columns -> rows -> finished
        self.rows = 0
        self.finished = False
        self.error = None

    def _packet(self, length, first, payload_start):
        if self.phase == "count":
            if first == 0xFF:
                self.error = "query failed: " + error_message(bytes(payload_start))
                self.finished = True
            else:
                self.phase = "columns"
        elif self.phase == "columns":
            if first == 0xFE and length < 9:
                self.phase = "rows"
        elif self.phase == "rows":
            if first == 0xFE and length < 9:
                self.finished = True
            elif first == 0xFF:
                self.error = "error during rows"
                self.finished = True
            else:
                self.rows += 1

    def feed(self, data):
        i, n = 0, len(data)
        while i < n and not self.finished:
            if self.skip:
                take = min(self.skip, n - i)
                self.skip -= take
                i += take
                continue
            take = min(5 - len(self.hdr), n - i)
            self.hdr += data[i : i + take]
            i += take
            length = self.hdr[0] | self.hdr[1] << 8 | self.hdr[2] << 16 if len(self.hdr) >= 4 else -1
            if length == 0:
                self._packet(0, None, b"")
                self.hdr = self.hdr[4:]
                continue
            if len(self.hdr) < 5:
                break
            # For an ERR packet in the count phase the message is wanted: take what is here.
            self._packet(length, self.hdr[4], self.hdr[4:] + data[i : i + length - 1])
            self.skip = length - 1
            self.hdr = bytearray()
