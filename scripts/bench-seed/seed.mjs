// The seed's TypeScript audit library writing the end-to-end bench's events into PostgreSQL, for
// the comparison issue 21 asks for. Run by tests/benches/end_to_end.rs (which writes the events and
// creates the database); by hand:
//
//   dir=$(scripts/bench-seed/install)
//   AUDIT_BENCH_SEED_DIR=$dir DATABASE_URL=postgres://postgres@127.0.0.1:15432/somedb \
//     node scripts/bench-seed/seed.mjs events.jsonl
//
// Environment: AUDIT_BENCH_SEED_DIR (where scripts/bench-seed/install put the packages),
// DATABASE_URL, AUDIT_BENCH_CALLERS (concurrent callers, default 64), AUDIT_BENCH_SEED_SCHEMA
// (default "seed": the seed's own table, seed.audit_events, created with the package's migration),
// AUDIT_BENCH_SEED_INTEGRITY ("none", the library's default, or "hash-chain").
//
// Settings: the library's defaults (Queue mode, batches of 100, 4 concurrent sink writes, a queue
// of 5,000 events, redaction on), except the queue's overflow policy, BLOCK instead of DROP: a
// production user who must not lose audit events sets that, and a dropped event would not be a
// stored one. Prints "START" when the timed part begins, then one line "RESULT {json}".
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import path from 'node:path';

const dir = process.env.AUDIT_BENCH_SEED_DIR;
if (!dir) throw new Error('AUDIT_BENCH_SEED_DIR is required (the output of scripts/bench-seed/install)');
const require = createRequire(path.join(dir, 'package.json'));
const { createAuditLogger } = require('@hexmon_tech/audit-core');
const { createPostgresAuditSink } = require('@hexmon_tech/audit-sink-postgres');
const { Client } = require('pg');

const file = process.argv[2];
const connectionString = process.env.DATABASE_URL;
const callers = Number(process.env.AUDIT_BENCH_CALLERS ?? 64);
const schema = process.env.AUDIT_BENCH_SEED_SCHEMA ?? 'seed';
const integrityMode = process.env.AUDIT_BENCH_SEED_INTEGRITY ?? 'none';
if (!/^[a-z_][a-z0-9_]*$/.test(schema)) throw new Error(`bad schema name ${schema}`);

// The package's own migration, in a schema of its own.
const migration = readFileSync(
  path.join(dir, 'node_modules/@hexmon_tech/audit-sink-postgres/migrations/001_create_audit_logs.sql'),
  'utf8',
);
const admin = new Client({ connectionString });
await admin.connect();
await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE; CREATE SCHEMA ${schema}; SET search_path TO ${schema}`);
await admin.query(migration);

// Parsed before the clock starts: reading the file is the bench's work, not the library's.
const events = readFileSync(file, 'utf8')
  .split('\n')
  .filter((line) => line.length > 0)
  .map((line) => JSON.parse(line));

const audit = createAuditLogger({
  service: 'bench-seed',
  environment: 'production',
  integrityMode,
  queue: { overflowPolicy: 'BLOCK' },
  sinks: [createPostgresAuditSink({ connectionString, tableName: `${schema}.audit_events` })],
});

let next = 0;
let refused = 0;
const caller = async () => {
  while (next < events.length) {
    const result = await audit.log(events[next++]);
    if (!result.ok) refused += 1;
  }
};

console.log('START');
const cpu0 = process.cpuUsage();
const t0 = process.hrtime.bigint();
await Promise.all(Array.from({ length: callers }, caller));
const accepted = Number(process.hrtime.bigint() - t0) / 1e9;
await audit.flush();
const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
const cpu = process.cpuUsage(cpu0);
const stored = Number((await admin.query(`SELECT count(*) AS n FROM ${schema}.audit_events`)).rows[0].n);
const stats = audit.getStats();
await audit.shutdown();
await admin.end();
console.log(
  'RESULT ' +
    JSON.stringify({
      events: events.length,
      stored,
      refused,
      acceptedSeconds: accepted,
      seconds,
      eventsPerSecond: stored / seconds,
      cpuMicros: cpu.user + cpu.system,
      integrityMode,
      callers,
      counters: stats.counters,
    }),
);
