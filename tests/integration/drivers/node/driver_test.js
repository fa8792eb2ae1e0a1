// The driver workload of tests/integration/test_drivers.py through node mysql2 (the version
// pinned in package.json / package-lock.json), with server-side prepared statements
// (connection.prepare / execute: COM_STMT_PREPARE + COM_STMT_EXECUTE).
//
// Settings come from the environment: DRIVER_HOST, DRIVER_PORT, DRIVER_USER, DRIVER_PASSWORD,
// DRIVER_DB, DRIVER_TABLE, DRIVER_ROWS. The program prints "IDLE <connection id>" when its
// workload is done and waits for a line on stdin (the test kills the upstream connection
// meanwhile), then runs again on the same connection, with a statement prepared before,
// prints "AFTER <connection id>" and "DONE". Any mismatch prints "FAIL ..." and exits 1.
'use strict';

const mysql = require('mysql2/promise');

const table = process.env.DRIVER_TABLE;
const rows = parseInt(process.env.DRIVER_ROWS || '100', 10);

function fail(msg) {
  process.stdout.write('FAIL ' + msg + '\n', () => process.exit(1));
  throw new Error('FAIL ' + msg);
}

function check(ok, msg) {
  if (!ok) fail(msg);
}

// The same rows every driver program writes: NULLs at fixed places, a BLOB of every byte.
const name = (i) => (i % 7 === 0 ? null : `name-${i}-\u00e9\u00df`);
const qty = (i) => (i % 5 === 0 ? null : BigInt(i) * 1000003n - 7n);
function data(i) {
  if (i % 3 === 0) return null;
  const n = i === 1 ? 70000 : (i * 13) % 300;
  const b = Buffer.alloc(n);
  for (let k = 0; k < n; k++) b[k] = (k * 7 + i) & 0xff;
  return b;
}
const params = (i) => [i, name(i), qty(i) === null ? null : qty(i).toString(), data(i)];

async function count(c) {
  const [r] = await c.query(`SELECT COUNT(*) AS n FROM ${table}`);
  return Number(r[0].n);
}

async function connectionId(c) {
  const [r] = await c.query('SELECT CONNECTION_ID() AS id');
  return Number(r[0].id);
}

async function checkRange(sel, lo, hi, when) {
  const [r] = await sel.execute([lo, hi]);
  let expect = lo;
  for (const row of r) {
    const id = row.id;
    check(id === expect, `${when}: id ${id}, expected ${expect}`);
    check(row.name === name(id), `${when}: name of ${id} is ${row.name}, expected ${name(id)}`);
    const q = row.qty === null ? null : BigInt(row.qty);
    check(q === qty(id), `${when}: qty of ${id} is ${row.qty}`);
    const d = data(id);
    check(d === null ? row.data === null : Buffer.isBuffer(row.data) && d.equals(row.data),
          `${when}: data of ${id} differs (${row.data === null ? 'NULL' : row.data.length + ' bytes'})`);
    expect++;
  }
  check(expect === hi + 1, `${when}: rows ${lo}..${hi} ended at ${expect}`);
}

// stdin is read from the start, so a line sent early is not lost.
let stdinText = '';
let stdinEnded = false;
let stdinWaiter = null;
process.stdin.setEncoding('utf8');
process.stdin.on('data', (d) => { stdinText += d; if (stdinWaiter) stdinWaiter(); });
process.stdin.on('end', () => { stdinEnded = true; if (stdinWaiter) stdinWaiter(); });

function waitLine() {
  return new Promise((resolve) => {
    const poll = () => {
      const nl = stdinText.indexOf('\n');
      if (nl >= 0) {
        stdinText = stdinText.slice(nl + 1);
        stdinWaiter = null;
        resolve(true);
      } else if (stdinEnded) {
        stdinWaiter = null;
        resolve(false);
      }
    };
    stdinWaiter = poll;
    poll();
  });
}

async function main() {
  for (const e of ['DRIVER_HOST', 'DRIVER_PORT', 'DRIVER_USER', 'DRIVER_DB', 'DRIVER_TABLE']) {
    check(process.env[e] !== undefined, `${e} not set`);
  }
  const c = await mysql.createConnection({
    host: process.env.DRIVER_HOST, port: parseInt(process.env.DRIVER_PORT, 10),
    user: process.env.DRIVER_USER, password: process.env.DRIVER_PASSWORD || '',
    database: process.env.DRIVER_DB, charset: 'utf8mb4', connectTimeout: 20000,
    supportBigNumbers: true, bigNumberStrings: true,
  });
  let lostError = null;
  c.on('error', (e) => { lostError = e; });
  await c.query(`DROP TABLE IF EXISTS ${table}`);
  await c.query(`CREATE TABLE ${table} (id INT PRIMARY KEY, name VARCHAR(64) NULL,
                 qty BIGINT NULL, data MEDIUMBLOB NULL) CHARACTER SET utf8mb4`);
  const ins = await c.prepare(`INSERT INTO ${table} (id, name, qty, data) VALUES (?, ?, ?, ?)`);
  const sel = await c.prepare(`SELECT id, name, qty, data FROM ${table}
                               WHERE id BETWEEN ? AND ? ORDER BY id`);
  // Rows 1..N in one transaction.
  await c.beginTransaction();
  for (let i = 1; i <= rows; i++) {
    const [res] = await ins.execute(params(i));
    check(res.affectedRows === 1, `insert ${i}`);
  }
  await c.commit();
  check(await count(c) === rows, 'count after commit');
  // A transaction rolled back leaves nothing.
  await c.beginTransaction();
  for (let i = rows + 1; i <= rows + 10; i++) await ins.execute(params(i));
  check(await count(c) === rows + 10, 'count inside the transaction');
  await c.rollback();
  check(await count(c) === rows, 'count after rollback');
  await checkRange(sel, 1, rows, 'before');
  await checkRange(sel, 3, 9, 'before, 3..9');

  process.stdout.write(`IDLE ${await connectionId(c)}\n`);
  check(await waitLine(), 'stdin closed');
  check(lostError === null, `connection error while idle: ${lostError}`);

  // The same connection and the statements prepared before.
  await checkRange(sel, 2, 11, 'after, prepared before');
  await c.beginTransaction();
  for (let i = rows + 1; i <= rows + 5; i++) {
    const [res] = await ins.execute(params(i));
    check(res.affectedRows === 1, `insert after ${i}`);
  }
  await c.commit();
  check(await count(c) === rows + 5, 'count after the reconnect');
  await checkRange(sel, rows - 2, rows + 5, 'after, new rows');
  // execute() prepares (and caches) a statement of its own.
  const [r2] = await c.execute('SELECT ? + 1 AS a, ? AS b', [41, null]);
  check(Number(r2[0].a) === 42 && r2[0].b === null, `SELECT ? + 1 gave ${JSON.stringify(r2)}`);
  process.stdout.write(`AFTER ${await connectionId(c)}\n`);
  await ins.close();
  await sel.close();
  await c.query(`DROP TABLE ${table}`);
  await c.end();
  process.stdout.write('DONE\n', () => process.exit(0));
}

main().catch((e) => {
  if (String(e.message).startsWith('FAIL ')) return;
  process.stdout.write(`FAIL error ${e.errno} (${e.code} ${e.sqlState}): ${e.message}\n`,
                       () => process.exit(1));
});
