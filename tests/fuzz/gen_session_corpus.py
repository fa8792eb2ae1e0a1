#!/usr/bin/python3
"""Writes the seed corpus of fuzz_session (tests/fuzz/fuzz_session.c describes the layout).

    /usr/bin/python3 tests/fuzz/gen_session_corpus.py tests/fuzz/corpus/fuzz_session
"""
import os
import struct
import sys

# Route and peer flags (input byte 0).
PLAIN, MUX, PASSWORD, PEER = 0, 1, 2, 3
UNIX = 4

# Server flags (first byte of the server script).
SRV_MARIADB, SRV_NO_TRACK, SRV_NO_DEPR_EOF, SRV_REFUSE = 1, 2, 4, 8
SRV_SWITCH, SRV_GREET_ERR, SRV_SHA2, SRV_SSL = 16, 32, 64, 128

CAP = dict(LONG_PASSWORD=1, LONG_FLAG=4, CONNECT_WITH_DB=8, PROTOCOL_41=1 << 9,
           TRANSACTIONS=1 << 13, SECURE_CONNECTION=1 << 15, MULTI_STATEMENTS=1 << 16,
           MULTI_RESULTS=1 << 17, PS_MULTI_RESULTS=1 << 18, PLUGIN_AUTH=1 << 19,
           CONNECT_ATTRS=1 << 20, PLUGIN_AUTH_LENENC=1 << 21, SESSION_TRACK=1 << 23,
           DEPRECATE_EOF=1 << 24)


def packet(seq, payload):
    return struct.pack('<I', len(payload))[:3] + bytes([seq]) + payload


def login(user=b'app_user', db=b'app', track=True, depr_eof=True, plugin=b'mysql_native_password',
          auth=b'', attrs=None, charset=45):
    caps = (CAP['LONG_PASSWORD'] | CAP['LONG_FLAG'] | CAP['PROTOCOL_41'] | CAP['TRANSACTIONS'] |
            CAP['SECURE_CONNECTION'] | CAP['MULTI_STATEMENTS'] | CAP['MULTI_RESULTS'] |
            CAP['PS_MULTI_RESULTS'] | CAP['PLUGIN_AUTH'] | CAP['PLUGIN_AUTH_LENENC'])
    if track:
        caps |= CAP['SESSION_TRACK']
    if depr_eof:
        caps |= CAP['DEPRECATE_EOF']
    if db is not None:
        caps |= CAP['CONNECT_WITH_DB']
    if attrs is not None:
        caps |= CAP['CONNECT_ATTRS']
    p = struct.pack('<IIB', caps, 1 << 24, charset) + bytes(23) + user + b'\0'
    p += bytes([len(auth)]) + auth
    if db is not None:
        p += db + b'\0'
    p += plugin + b'\0'
    if attrs is not None:
        kv = b''.join(bytes([len(k)]) + k + bytes([len(v)]) + v for k, v in attrs)
        p += bytes([len(kv)]) + kv
    return packet(1, p)


def query(sql):
    return packet(0, b'\x03' + sql)


def cmd(code, body=b''):
    return packet(0, bytes([code]) + body)


def prepare(sql):
    return cmd(0x16, sql)


def execute(stmt_id, params=0):
    body = struct.pack('<IBI', stmt_id, 0, 1)
    if params:
        body += bytes((params + 7) // 8) + b'\x01' + b'\x03\x00' * params + b'\x01\x00\x00\x00' * params
    return cmd(0x17, body)


def stmt_close(stmt_id):
    return cmd(0x19, struct.pack('<I', stmt_id))


def fetch(stmt_id, rows=1):
    return cmd(0x1c, struct.pack('<II', stmt_id, rows))


def change_user(user=b'app_user', db=b'app'):
    body = user + b'\0' + b'\0' + db + b'\0' + struct.pack('<H', 45) + b'mysql_native_password\0'
    return cmd(0x11, body)


QUIT = cmd(0x01)
PING = cmd(0x0e)
RESET = cmd(0x1f)


# Client script records.
def W(data):
    if len(data) < 255:
        return b'\x00' + bytes([len(data)]) + data
    return b'\x00\xff' + struct.pack('<H', len(data)) + data


def T(step):
    return b'\x01' + bytes([step])  # time_steps_ms: 1, 20, 101, 250, 1001, 2100, 10001, 300001


S, P, K, Q, D = b'\x02', b'\x03', b'\x04', b'\x05', b'\x07'


def L(v):
    return b'\x06' + bytes([v])


# Server reply ops (op, arg[, extra]).
def OK(status=0):
    return bytes([0, status])


def ERR(code=64):
    return bytes([1, code])


def RS(status=0, shape=0x0d):
    return bytes([2, status, shape])  # shape: cols = 1 + b % 3, rows = (b >> 2) % 5


def PREP(shape=0x05):
    return bytes([3, 0, shape])  # params = b & 3, cols = (b >> 2) & 3


def STATE(v, status=0):
    return bytes([4, status, v])


def RAW(data):
    return bytes([5, len(data)]) + data


def DIE(how=1):
    return bytes([6, how])


def BIG(size=3):
    return bytes([10, size])  # 40 * (1 + size % 8) rows of 8000 bytes


SILENT = bytes([7, 0])
EXTRA = bytes([8, 0])
KILLED = bytes([9, 0])

IN_TRANS, NO_AUTOCOMMIT, CURSOR, LAST_ROW, MORE = 1, 2, 4, 8, 0x30


def seed(flags, client, server):
    return bytes([flags]) + struct.pack('<H', len(client)) + client + server


SEEDS = {
    'select1': seed(PLAIN, W(login()) + Q + W(QUIT), bytes([0, 0]) + RS()),
    'select1_unix': seed(PLAIN | UNIX, L(0x17) + Q + Q + W(QUIT), bytes([0, 0])),
    'prepare_execute': seed(
        PLAIN, W(login()) + W(prepare(b'SELECT ? + 1')) + W(execute(1, 1)) + W(stmt_close(1)) +
        W(QUIT), bytes([0, 0]) + PREP(0x05) + RS()),
    'cursor_fetch': seed(
        PLAIN, W(login()) + W(prepare(b'SELECT a FROM t')) + W(execute(1)) + W(fetch(1)) +
        W(fetch(1)) + W(QUIT),
        bytes([0, 0]) + PREP(0x04) + RS(CURSOR, 0x04) + RS(CURSOR, 0x04) + RS(LAST_ROW, 0x04)),
    'change_user': seed(
        PLAIN, W(login()) + W(query(b'SET @a = 1')) + W(change_user(db=b'other')) + Q + W(QUIT),
        bytes([0, 0]) + STATE(0x05) + OK() + OK() + OK() + RS()),
    'reset_connection': seed(
        PLAIN, W(login()) + W(query(b'SET NAMES latin1')) + W(RESET) + W(PING) + W(QUIT),
        bytes([0, 0]) + STATE(0x09) + OK() + OK() + OK() + OK()),
    'pipelined_quit': seed(PLAIN, W(login() + query(b'SELECT 1') + QUIT), bytes([0, 0]) + RS()),
    'transaction_lost': seed(
        PLAIN, W(login()) + W(query(b'BEGIN')) + K + Q,
        bytes([0, 0]) + OK(IN_TRANS)),
    'lost_idle_reconnect': seed(
        PLAIN, W(login()) + W(query(b'USE other')) + W(prepare(b'SELECT 1')) + K + Q +
        W(execute(1)) + W(QUIT),
        bytes([0, 0]) + STATE(0x42) + PREP(0x04)),
    'mux_release_restore': seed(
        MUX, W(login()) + W(query(b"SET time_zone = '+01:00'")) + W(prepare(b'SELECT ?')) + T(3) +
        Q + W(execute(1, 1)) + T(3) + W(QUIT),
        bytes([0, 0]) + STATE(0x19) + PREP(0x05) + OK() + PREP(0x05) + RS()),
    'mux_two_waits': seed(
        MUX, L(0x07) + T(3) + Q + T(2) + Q + T(4) + W(QUIT), bytes([0, 0]) + RS() + ERR()),
    'no_deprecate_eof_mariadb': seed(
        PLAIN, W(login(depr_eof=False)) + W(query(b'SELECT a, b, c FROM t')) +
        W(query(b'CALL p()')) + W(QUIT),
        bytes([SRV_MARIADB | SRV_NO_DEPR_EOF, 0]) + RS(0, 0x12) + RS(MORE, 0x05) + OK()),
    'no_session_track_client': seed(
        PLAIN, W(login(track=False, depr_eof=False)) + W(query(b'USE app')) + W(QUIT),
        bytes([0, 0]) + STATE(0x02)),
    'server_no_track': seed(
        MUX, W(login()) + Q + T(3) + Q + W(QUIT), bytes([SRV_NO_TRACK, 0])),
    'login_refused': seed(PLAIN, W(login()) + T(2) + T(4) + T(4), bytes([SRV_REFUSE, 0])),
    'greeting_error': seed(PLAIN, W(login()) + T(4), bytes([SRV_GREET_ERR, 0])),
    'auth_switch_sha2': seed(PLAIN, W(login()) + Q + W(QUIT), bytes([SRV_SWITCH | SRV_SHA2])),
    'sha2_fast': seed(PLAIN, W(login(attrs=[(b'_client_name', b'libmariadb')])) + Q,
                      bytes([SRV_SHA2 | SRV_SSL])),
    'password_switch': seed(
        PASSWORD, W(login(plugin=b'caching_sha2_password', auth=b'x' * 32)) +
        W(packet(3, b'y' * 20)), bytes([0, 0])),
    'password_native_wrong': seed(PASSWORD, W(login(auth=b'z' * 20)), bytes([0, 0])),
    'peer_unix': seed(PEER | UNIX, W(login(db=None)) + Q + W(QUIT), bytes([0, 0])),
    'peer_tcp_denied': seed(PEER, W(login()), bytes([0, 0])),
    'server_dies_mid_reply': seed(PLAIN, W(login()) + Q + Q, bytes([0, 0]) + DIE(3)),
    'server_extra_reply': seed(PLAIN, W(login()) + Q + Q + W(QUIT), bytes([0, 0]) + EXTRA + OK()),
    'server_raw_junk': seed(
        PLAIN, W(login()) + Q + Q, bytes([0, 0]) + RAW(b'\x05\x00\x00\x01\xfb\x00\x00\x02\x00') + OK()),
    'silent_server_linger': seed(PLAIN, W(login()) + P + Q + T(5) + S + T(5), bytes([0, 0]) + SILENT),
    'killed_error': seed(PLAIN, W(login()) + Q + Q, bytes([0, 0]) + KILLED),
    'half_close_during_login': seed(PLAIN, W(login()[:20]) + S + T(6), bytes([0, 0])),
    'handshake_timeout': seed(PLAIN, T(6), bytes([0, 0])),
    'bad_sequence': seed(PLAIN, W(packet(0, b'\x00' * 40)), b''),
    'internal_errors': seed(PLAIN, W(login()) + W(RESET) + Q + W(QUIT), bytes([0, 1]) + ERR() + OK() + ERR() + RS()),
    'large_query': seed(PLAIN, W(login()) + W(query(b'SELECT "' + b'x' * 3000 + b'"')) + W(QUIT),
                        bytes([0, 0]) + RS()),
    'multi_statement_state': seed(
        PLAIN, W(login()) + W(query(b'SELECT 1; SET autocommit=0')) + K + Q + W(QUIT),
        bytes([0, 0]) + RS(MORE) + STATE(0x01, NO_AUTOCOMMIT)),
    'backpressure_big_result': seed(
        PLAIN, W(login()) + P + Q + P + D + Q + W(QUIT), bytes([0, 0]) + BIG(3) + RS()),
    'backpressure_quit_pending': seed(
        PLAIN, W(login()) + P + Q + W(QUIT) + T(2) + P + D, bytes([0, 0]) + BIG(7)),
    'pinned_user_var_mux': seed(
        MUX, W(login()) + W(query(b'SELECT GET_LOCK("a", 1)')) + T(3) + Q + W(QUIT),
        bytes([0, 0]) + RS()),
}


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else 'tests/fuzz/corpus/fuzz_session'
    os.makedirs(out, exist_ok=True)
    for name, data in SEEDS.items():
        with open(os.path.join(out, name), 'wb') as f:
            f.write(data)
    print(f'{len(SEEDS)} seeds written to {out}')


if __name__ == '__main__':
    main()
