//! PostgreSQL-specific behaviour of the sink: a database outage in the middle of a run loses
//! nothing (the lane pauses and retries, the circuit opens, the process stays up), a row the
//! database refuses is isolated from its batch and dead-lettered while its neighbours are stored,
//! each row keeps the event's canonical text byte for byte, and a database written as `jsonb`
//! before the text migration still verifies, old rows and new, and is queried through its view.

use std::time::Duration;

use audit_sink::sink::{Sink as _, SinkRecord};
use audit_sink::stores::postgres::{PostgresSink, MIGRATOR};
use audit_tests::kafka::read_topic;
use audit_tests::pipeline::terminate;
use audit_tests::sinks::{http_get, metric, spawn_sink, wait_stored, Processed, Target};
use audit_tests::stores::postgres::PostgresTarget;
use audit_tests::stores::postgres::PrivatePostgres;
use audit_tests::tamper::{canonical, chained_after, runtime, seal, seq_of, sql, sql_rows, verify};
use audit_tests::unique_name;
use serde_json::{json, Value};

const SINK: &str = env!("CARGO_BIN_EXE_audit-test-sink");

fn ids(target: &dyn Target) -> Vec<String> {
    let mut ids: Vec<String> =
        target.read_back().values().flatten().map(|e| e["eventId"].as_str().unwrap().to_owned()).collect();
    ids.sort();
    ids
}

fn published_ids(p: &Processed) -> Vec<String> {
    let mut ids: Vec<String> =
        p.published.values().flatten().map(|e| e["eventId"].as_str().unwrap().to_owned()).collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_mid_run_loses_nothing_once_it_recovers() {
    let server = tokio::task::spawn_blocking(PrivatePostgres::start).await.unwrap();
    let target = PostgresTarget::new(Some(&server.url())).await;
    let mut processed = Processed::create(2).await;
    processed.publish(100);
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("sink.log");
    let mut sink = spawn_sink(SINK, &target, &processed.bootstrap, &processed.topic, &unique_name("g"), &log, &[]);
    assert_eq!(wait_stored(&target, 100, Duration::from_secs(60)).values().map(Vec::len).sum::<usize>(), 100);

    server.stop();
    processed.publish(200);
    // The sink keeps failing, backs off and opens its circuit; it does not exit.
    let mut retries = 0.0;
    for _ in 0..150 {
        let body = http_get(sink.port, "/metrics").unwrap_or_default();
        retries = metric(&body, "audit_sink_retries_total");
        if retries >= 3.0 && metric(&body, "audit_sink_circuit_open") == 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        retries >= 3.0,
        "writes are retried while the database is down ({retries}); log: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(sink.child.try_wait().unwrap().is_none(), "the sink stays up during the outage");

    server.start_server();
    wait_stored(&target, 300, Duration::from_secs(60));
    assert_eq!(ids(&target), published_ids(&processed), "every event once after the outage");
    let body = http_get(sink.port, "/metrics").unwrap_or_default();
    assert_eq!(metric(&body, "audit_sink_circuit_open"), 0.0, "the circuit closes again");
    terminate(&sink.child);
    assert!(sink.child.wait().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_the_database_refuses_is_isolated_and_dead_lettered() {
    let target = PostgresTarget::new(None).await;
    let mut processed = Processed::create(1).await;
    processed.publish(30);
    // PostgreSQL's text refuses a NUL character: an event whose query column (actor_id) holds one
    // can never be stored there. (The processor never emits one; the sink must still cope.)
    let mut refused = processed.published[&0][5].clone();
    refused["eventId"] = Value::String("refused-event".into());
    refused["actor"]["id"] = Value::String("a\u{0}b".into());
    processed.publish_bytes(0, &serde_json::to_vec(&refused).unwrap());
    processed.publish(30);
    let group = unique_name("g");
    let logs = tempfile::tempdir().unwrap();
    let mut sink = spawn_sink(
        SINK,
        &target,
        &processed.bootstrap,
        &processed.topic,
        &group,
        &logs.path().join("sink.log"),
        &[("AUDIT_BATCH__MAX_WAIT_MS", "500")],
    );
    wait_stored(&target, 60, Duration::from_secs(60));
    assert_eq!(ids(&target), published_ids(&processed), "its 60 neighbours are stored");
    let dead = read_topic(&processed.bootstrap, &format!("{}.dlq.{group}", processed.topic), 1, Duration::from_secs(1));
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].header("audit.error.class"), Some("poison"));
    assert!(
        dead[0].header("audit.error.reason").unwrap().contains("SQLSTATE 22"),
        "{:?}",
        dead[0].header("audit.error.reason")
    );
    assert_eq!(dead[0].header("audit.source.offset"), Some("30"));
    terminate(&sink.child);
    sink.child.wait().unwrap();
}

/// The event `value` as the processed topic's record at `offset` of partition `p` reaches a sink.
fn record(p: i32, offset: i64, value: &Value) -> SinkRecord {
    SinkRecord {
        partition: p,
        offset,
        event_id: value["eventId"].as_str().unwrap().to_owned(),
        hash: value["integrity"]["hash"].as_str().unwrap().to_owned(),
        event: value.clone(),
        json: String::from_utf8(canonical(value)).unwrap(),
    }
}

#[test]
fn each_row_holds_the_canonical_text_the_processor_hashed_byte_for_byte() {
    let rt = runtime();
    let target = rt.block_on(PostgresTarget::new(None));
    let mut processed = rt.block_on(Processed::create(2));
    processed.publish(40);
    // One more link of partition 0 whose text has what canonical form spells its own way: escapes,
    // raw non-ASCII, members ordered by UTF-16 units (U+10000 before U+FFFF), ES6 numbers.
    let mut tricky = chained_after(processed.published[&0].last().unwrap(), "01JTEXTTEXTTEXTTEXTTEXT001".into(), None);
    tricky["metadata"] = json!({
        "note": "é 漢字 😀 \u{1f} \u{2028} \"quoted\" back\\slash </script>\n",
        "numbers": [0.1, 1.5e-7, -5, 123456789, 1e300],
        "order": {"b": 1, "a": 2, "é": 3, "\u{10000}": 4, "\u{ffff}": 5, "aa": 6},
    });
    let tricky = seal(tricky);
    processed.publish_bytes(0, &serde_json::to_vec(&tricky).unwrap());
    // The same event id with other content: kept as a conflict, its text canonical too.
    let mut conflicting = processed.published[&1][3].clone();
    conflicting["outcome"] = Value::String("FAILURE".into());
    let conflicting = seal(conflicting);
    processed.publish_bytes(1, &serde_json::to_vec(&conflicting).unwrap());

    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("sink.log");
    let mut sink = spawn_sink(SINK, &target, &processed.bootstrap, &processed.topic, &unique_name("g"), &log, &[]);
    wait_stored(&target, 41, Duration::from_secs(60));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while target.conflicts() != Some(1) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    terminate(&sink.child);
    assert!(sink.child.wait().unwrap().success(), "{}", std::fs::read_to_string(&log).unwrap_or_default());

    let mut published: Vec<&Value> = processed.published.values().flatten().collect();
    published.push(&tricky);
    let rows = sql_rows(target.url(), &["SELECT event_id, event, event_form FROM audit_events"]);
    assert_eq!(rows.len(), published.len());
    for row in &rows {
        let value = published.iter().find(|e| e["eventId"] == row[0].as_str()).expect("a published event");
        let text = String::from_utf8(canonical(value)).unwrap();
        assert_eq!(row[1], text, "the stored text is the canonical form, byte for byte");
        assert_eq!(row[2], "canonical");
        let stored: Value = serde_json::from_str(&row[1]).unwrap();
        assert_eq!(
            audit_schema::chain::hash_event_value(&stored).unwrap(),
            value["integrity"]["hash"].as_str().unwrap(),
            "the stored text hashes to the event's hash"
        );
    }
    let conflicts = sql_rows(
        target.url(),
        &["SELECT event_id, incoming_hash, incoming_event, incoming_event_form FROM audit_event_conflicts"],
    );
    let text = String::from_utf8(canonical(&conflicting)).unwrap();
    let want =
        [conflicting["eventId"].as_str().unwrap(), conflicting["integrity"]["hash"].as_str().unwrap(), text.as_str()];
    assert_eq!(conflicts, [[want[0], want[1], want[2], "canonical"]]);
    verify(target.url(), &[]).expect(0, &[]);
}

/// The sink's insert before the event became text (`…, ev::jsonb`), one event at a time: every
/// query column from the event, the event parsed into `jsonb`.
const OLD_INSERT: &str = "INSERT INTO audit_events (event_id, tenant_id, action, outcome, actor_type, actor_id, \
     target_type, target_id, occurred_at, received_at, chain, seq, prev_hash, hash, kafka_partition, kafka_offset, event) \
     SELECT e->>'eventId', e#>>'{context,tenantId}', e->>'action', e->>'outcome', e#>>'{actor,type}', \
     e#>>'{actor,id}', e#>>'{target,type}', e#>>'{target,id}', (e#>>'{context,occurredAt}')::timestamptz, \
     (e->>'receivedAt')::timestamptz, e#>>'{integrity,chain}', (e#>>'{integrity,seq}')::int8, \
     e#>>'{integrity,prevHash}', e#>>'{integrity,hash}', $2, $3, ev::jsonb FROM (SELECT $1::text AS ev, $1::jsonb AS e) x";

#[test]
fn a_database_written_as_jsonb_before_the_text_migration_verifies_with_both_kinds_of_rows() {
    let rt = runtime();
    let target = rt.block_on(PostgresTarget::new(None));
    let mut processed = rt.block_on(Processed::create(2));
    processed.publish(60);
    let events = |range: std::ops::Range<usize>| -> Vec<(i32, i64, Value)> {
        processed
            .published
            .iter()
            .flat_map(|(p, events)| range.clone().map(move |i| (*p, i as i64, events[i].clone())))
            .collect()
    };
    let old_insert = |rows: Vec<(i32, i64, Value)>| {
        let url = target.url().to_owned();
        rt.block_on(async move {
            use sqlx::Connection as _;
            let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
            for (p, offset, e) in rows {
                let text = String::from_utf8(canonical(&e)).unwrap();
                sqlx::query(OLD_INSERT).bind(text).bind(p).bind(offset).execute(&mut c).await.unwrap();
            }
        })
    };

    // The schema before this change, and rows (and a conflict) written into it as jsonb.
    rt.block_on(async {
        let pool = sqlx::PgPool::connect(target.url()).await.unwrap();
        MIGRATOR.run_to(20261205000001, &pool).await.unwrap();
    });
    old_insert(events(0..15));
    let kept = String::from_utf8(canonical(&processed.published[&0][0])).unwrap();
    sql(
        target.url(),
        &[format!(
            "INSERT INTO audit_event_conflicts (event_id, stored_hash, incoming_hash, incoming_event, kafka_partition, \
             kafka_offset) VALUES ('e', 'a', 'b', '{}'::jsonb, 0, 99)",
            kept.replace('\'', "''")
        )],
    );

    // The migration (the sink applies it at start), then a sink of the previous version still
    // writing, then this one.
    let sink = rt.block_on(PostgresSink::connect(target.url(), 2, true)).unwrap();
    old_insert(events(15..20));
    let records: Vec<SinkRecord> = events(20..30).iter().map(|(p, offset, e)| record(*p, *offset, e)).collect();
    rt.block_on(sink.write(&records)).unwrap();

    let forms = sql_rows(
        target.url(),
        &["SELECT event_form, count(*)::text, bool_and(event = event::jsonb::text)::text FROM audit_events \
           GROUP BY 1 ORDER BY 1"],
    );
    // Converted rows hold jsonb's output; the others do not.
    assert_eq!(forms, [["canonical", "20", "false"], ["jsonb", "40", "true"]], "each row says how its text is written");
    let conflict = sql(
        target.url(),
        &["SELECT incoming_event_form, (incoming_event = incoming_event::jsonb::text)::text FROM audit_event_conflicts"],
    );
    assert_eq!(conflict, ["jsonb", "true"]);
    let compression = sql(
        target.url(),
        &["SELECT a.attname || ':' || a.attcompression::text FROM pg_attribute a \
           WHERE a.attrelid = 'audit_events'::regclass AND a.attname = 'event'"],
    );
    assert_eq!(compression, ["event:l"], "the text stays compressed with lz4");

    verify(target.url(), &[]).expect(0, &[]);
    let out = verify(target.url(), &["--tenant", "tenant-00"]);
    out.expect(0, &[]);
    assert!(out.selected() > 0 && out.selected() < out.events(), "{:#}", out.report);
    assert_eq!(out.events(), 60);

    // The view answers JSON queries over both kinds of rows.
    let (old, new) = (&processed.published[&0][3], &processed.published[&1][25]);
    for e in [old, new] {
        let id = e["eventId"].as_str().unwrap();
        let found = sql(
            target.url(),
            &[format!(
                "SELECT event::text, (event #>> '{{integrity,seq}}') FROM audit_events_json \
                 WHERE event @> jsonb_build_object('eventId', '{id}')"
            )],
        );
        assert_eq!(serde_json::from_str::<Value>(&found[0]).unwrap(), *e);
        assert_eq!(found[1], seq_of(e).to_string());
    }
    let chain = sql(
        target.url(),
        &["SELECT count(*)::text FROM audit_events_json WHERE event #>> '{integrity,chain}' = 'audit.raw/0' \
           AND event->'actor'->>'type' = 'user'"],
    );
    assert_eq!(chain, ["30"]);

    // An edit of either kind of row is found: the outcome changed in the text (jsonb's output
    // rewritten as such, the canonical text in place), the column left.
    sql(
        target.url(),
        &[
            format!(
                "UPDATE audit_events SET event = jsonb_set(event::jsonb, '{{outcome}}', '\"FORGED\"')::text \
                 WHERE event_id = '{}'",
                old["eventId"].as_str().unwrap()
            ),
            format!(
                "UPDATE audit_events SET event = regexp_replace(event, '\"outcome\":\"[^\"]*\"', '\"outcome\":\"FORGED\"') \
                 WHERE event_id = '{}'",
                new["eventId"].as_str().unwrap()
            ),
        ],
    );
    let (s_old, s_new) = (seq_of(old), seq_of(new));
    verify(target.url(), &[])
        .expect(1, &[("column_mismatch", s_old), ("modified", s_old), ("column_mismatch", s_new), ("modified", s_new)]);
}
