//! The tamper suite for what is stored beside and around the hashed content (issue 17, classes
//! 1–3): `auditctl verify`, the real binary, against stores the real pipeline filled and an
//! attacker then changed — files edited byte by byte, raw SQL through sqlx, the MongoDB driver, a
//! Kafka producer of their own — never through the project's writers.
//!
//! 1. What verify hashes is what everyone else reads: stored text that is another spelling of the
//!    canonical event (whitespace, duplicate members, escaped and number aliases, serde tokens) is
//!    `non_canonical`.
//! 2. Query columns are part of the record: a column that differs from its hashed event is
//!    `column_mismatch`.
//! 3. Filters never weaken the checks: `--tenant`, `--since`, `--until` select, they do not hide.
//!
//! Every store has untouched controls that must stay intact, with and without the filters.

use std::path::Path;

use audit_tests::sinks::Processed;
use audit_tests::tamper::{
    demo_key, event_of, file_of, jsonl_copy, lines, next_event, postgres_store, produce_raw, runtime, sql, sqlite_copy,
    verify, write_lines, MongoStore,
};

// ---------------------------------------------------------------------------------------------
// JSONL files.

/// The index of the `n`th event line of `lines`, with its seq, eventId and tenant.
fn nth_event(lines: &[String], n: usize) -> (usize, u64, String, String) {
    let i = audit_tests::tamper::nth_event(lines, n);
    let e = event_of(&lines[i]).unwrap();
    (
        i,
        e["integrity"]["seq"].as_u64().unwrap(),
        e["eventId"].as_str().unwrap().to_owned(),
        e["context"]["tenantId"].as_str().unwrap().to_owned(),
    )
}

/// The tenants of the demo, some other than `tenant`.
fn another_tenant(lines: &[String], tenant: &str) -> String {
    lines
        .iter()
        .filter_map(|l| event_of(l))
        .filter_map(|e| e["context"]["tenantId"].as_str().map(str::to_owned))
        .find(|t| t != tenant)
        .expect("another tenant")
}

#[test]
fn control_the_jsonl_store_stays_intact_under_every_filter() {
    let dir = jsonl_copy();
    let source = format!("jsonl:{}", dir.path().display());
    let all = verify(&source, &[]);
    all.expect(0, &[]);
    assert_eq!(all.selected(), all.events());
    let lines = lines(&file_of(dir.path(), 1));
    let (_, _, _, tenant) = nth_event(&lines, 0);
    let one = verify(&source, &["--tenant", &tenant, "--public-key", &demo_key()]);
    one.expect(0, &[]);
    assert!(one.selected() > 0 && one.selected() < one.events() && one.events() == all.events(), "{one:?}");
    let since = verify(&source, &["--since", "2000-01-01T00:00:00Z", "--until", "2999-01-01T00:00:00Z"]);
    since.expect(0, &[]);
    assert_eq!(since.selected(), all.events());
}

/// Replaces the `n`th event line of partition 1's file by `edit` of it; the edited event's seq
/// and eventId.
fn edit_jsonl(dir: &Path, n: usize, edit: impl FnOnce(&str) -> String) -> (u64, String) {
    let file = file_of(dir, 1);
    let mut lines = lines(&file);
    let (i, seq, id, _) = nth_event(&lines, n);
    let edited = edit(&lines[i]);
    assert_ne!(edited, lines[i], "the edit changes the line");
    lines[i] = edited;
    write_lines(&file, &lines);
    (seq, id)
}

#[test]
fn class1_jsonl_any_other_spelling_of_the_canonical_event_is_non_canonical() {
    // Each the same event to a lenient parser (so its hash still matches), other bytes on disk.
    let same_content: [fn(&str) -> String; 6] = [
        |l| l.replacen("\"event\":{", "\"event\": {", 1),
        |l| l.replacen("\"environment\":\"demo\"", "\"environment\":\"\\u0064emo\"", 1),
        |l| l.replacen("\"chain\":\"audit.raw/1\"", "\"chain\":\"audit.raw\\/1\"", 1),
        |l| l.replacen("\"schemaVersion\":1,", "\"schemaVersion\":1.0,", 1),
        |l| l.replacen("\"schemaVersion\":1,", "\"schemaVersion\":1e0,", 1),
        |l| l.replacen("\"event\":{\"action\":", "\"event\":{\"action\":\"x\",\"action\":", 1),
    ];
    for edit in same_content {
        let dir = jsonl_copy();
        let (seq, id) = edit_jsonl(dir.path(), 11, edit);
        let out = verify(format!("jsonl:{}", dir.path().display()), &[]);
        out.expect(1, &[("non_canonical", seq)]).names("non_canonical", &id);
    }
    // A serde_json private token as a member: another parser reads other content; and it is not
    // what was hashed either.
    let dir = jsonl_copy();
    let (seq, id) = edit_jsonl(dir.path(), 11, |l| {
        l.replacen("\"event\":{", "\"event\":{\"$serde_json::private::Number\":\"1\",", 1)
    });
    verify(format!("jsonl:{}", dir.path().display()), &[])
        .expect(1, &[("modified", seq), ("non_canonical", seq)])
        .names("non_canonical", &id);
    // The wrapper too is the sink's, byte for byte.
    let dir = jsonl_copy();
    let (seq, _) = edit_jsonl(dir.path(), 3, |l| l.replacen("{\"partition\":", "{ \"partition\":", 1));
    verify(format!("jsonl:{}", dir.path().display()), &[]).expect(1, &[("non_canonical", seq)]);
}

#[test]
fn class3_jsonl_filters_select_but_never_hide() {
    // An event moved to another tenant by editing its content: that other tenant's filter, and
    // the original tenant's, both see it changed.
    let dir = jsonl_copy();
    let source = format!("jsonl:{}", dir.path().display());
    let (_, _, _, tenant) = nth_event(&lines(&file_of(dir.path(), 1)), 11);
    let others: Vec<String> = [0, 2].iter().flat_map(|p| lines(&file_of(dir.path(), *p))).collect();
    let other = another_tenant(&others, &tenant);
    let (seq, id) = edit_jsonl(dir.path(), 11, |l| {
        l.replacen(&format!("\"tenantId\":\"{tenant}\""), &format!("\"tenantId\":\"{other}\""), 1)
    });
    for t in [&tenant, &other] {
        verify(&source, &["--tenant", t]).expect(1, &[("modified", seq)]).names("modified", &id);
    }

    // An event's receivedAt moved out of the window: it is still verified, and so is everything
    // before the window (a deleted event there is still missing).
    let dir = jsonl_copy();
    let source = format!("jsonl:{}", dir.path().display());
    let file = file_of(dir.path(), 1);
    let mut lines = lines(&file);
    let (last, ..) = nth_event(&lines, 30);
    let newest = event_of(&lines[last]).unwrap()["receivedAt"].as_str().unwrap().to_owned();
    let (seq, _) = edit_jsonl(dir.path(), 29, |l| {
        let at = event_of(l).unwrap()["receivedAt"].as_str().unwrap().to_owned();
        l.replacen(&format!("\"receivedAt\":\"{at}\""), "\"receivedAt\":\"2000-01-01T00:00:00.000Z\"", 1)
    });
    verify(&source, &["--chain", "audit.raw/1", "--since", &newest]).expect(1, &[("modified", seq)]);
    lines = self::lines(&file);
    let (deleted, gone, ..) = nth_event(&lines, 2);
    lines.remove(deleted);
    write_lines(&file, &lines);
    verify(&source, &["--chain", "audit.raw/1", "--since", &newest]).expect(1, &[("missing", gone), ("modified", seq)]);

    // A window nothing was received in: verified, but nothing selected.
    let dir = jsonl_copy();
    let out = verify(format!("jsonl:{}", dir.path().display()), &["--since", "2999-01-01T00:00:00Z"]);
    out.expect(4, &[("no_events", 0)]);
    assert!(out.events() > 0 && out.selected() == 0, "{out:?}");
}

// ---------------------------------------------------------------------------------------------
// SQLite.

/// `(event_id, seq, tenant_id)` of the 12th event of chain `audit.raw/1`, and another tenant.
const VICTIM_SQL: &str = "SELECT event_id, CAST(seq AS TEXT), tenant_id, \
     (SELECT tenant_id FROM audit_events o WHERE o.tenant_id <> e.tenant_id LIMIT 1) \
     FROM audit_events e WHERE chain = 'audit.raw/1' ORDER BY seq LIMIT 1 OFFSET 11";

struct Victim {
    id: String,
    seq: u64,
    tenant: String,
    other: String,
}

fn victim(row: Vec<String>) -> Victim {
    Victim { id: row[0].clone(), seq: row[1].parse().unwrap(), tenant: row[2].clone(), other: row[3].clone() }
}

#[test]
fn control_the_sqlite_store_stays_intact_under_every_filter() {
    let (_dir, source) = sqlite_copy();
    let v = victim(sql(&source, &[VICTIM_SQL]));
    verify(&source, &[]).expect(0, &[]);
    let out = verify(&source, &["--tenant", &v.tenant, "--public-key", &demo_key()]);
    out.expect(0, &[]);
    assert!(out.selected() > 0 && out.selected() < out.events(), "{out:?}");
}

#[test]
fn class1_sqlite_the_event_column_is_the_canonical_bytes() {
    for edit in [
        "replace(event, '\"outcome\":\"', '\"outcome\": \"')",
        "replace(event, '{\"action\":', '{\"action\":\"x\",\"action\":')",
        "replace(event, '\"environment\":\"demo\"', '\"environment\":\"\\u0064emo\"')",
        "replace(event, '\"schemaVersion\":1,', '\"schemaVersion\":1.0,')",
    ] {
        let (_dir, source) = sqlite_copy();
        let v = victim(sql(&source, &[VICTIM_SQL]));
        sql(&source, &[format!("UPDATE audit_events SET event = {edit} WHERE event_id = '{}'", v.id)]);
        verify(&source, &[]).expect(1, &[("non_canonical", v.seq)]).names("non_canonical", &v.id);
    }
}

#[test]
fn class2_sqlite_every_query_column_equals_its_hashed_event() {
    for (column, value) in [
        ("tenant_id", "'evil'"),
        ("action", "'user.logout'"),
        ("actor_id", "'someone-else'"),
        ("occurred_at", "'2020-01-01T00:00:00.000Z'"),
        ("received_at", "'2020-01-01T00:00:00.000Z'"),
        ("hash", "'00'"),
        ("target_type", "'forged'"),
    ] {
        let (_dir, source) = sqlite_copy();
        let v = victim(sql(&source, &[VICTIM_SQL]));
        sql(&source, &[format!("UPDATE audit_events SET {column} = {value} WHERE event_id = '{}'", v.id)]);
        let out = verify(&source, &[]);
        let found = out.expect(1, &[("column_mismatch", v.seq)]).names("column_mismatch", &v.id);
        assert!(found.detail.contains(column), "{found:#?}");
    }
}

#[test]
fn class3_sqlite_the_tenant_comes_from_the_content_not_the_column() {
    // The tenant column moved to another tenant: the row is still the tenant's (the database reads
    // its content), and the column is reported.
    let (_dir, source) = sqlite_copy();
    let v = victim(sql(&source, &[VICTIM_SQL]));
    sql(&source, &[format!("UPDATE audit_events SET tenant_id = '{}' WHERE event_id = '{}'", v.other, v.id)]);
    verify(&source, &["--tenant", &v.tenant]).expect(1, &[("column_mismatch", v.seq)]).names("column_mismatch", &v.id);

    // The content moved, the column kept: handed over by its column, found changed.
    let (_dir, source) = sqlite_copy();
    let v = victim(sql(&source, &[VICTIM_SQL]));
    sql(
        &source,
        &[format!(
            "UPDATE audit_events SET event = json_set(event, '$.context.tenantId', '{}') WHERE event_id = '{}'",
            v.other, v.id
        )],
    );
    verify(&source, &["--tenant", &v.tenant])
        .expect(1, &[("column_mismatch", v.seq), ("modified", v.seq)])
        .names("modified", &v.id);

    // A window nothing was received in, and the received_at column edited into it: nothing is
    // selected by a column.
    let (_dir, source) = sqlite_copy();
    let v = victim(sql(&source, &[VICTIM_SQL]));
    sql(
        &source,
        &[format!("UPDATE audit_events SET received_at = '2999-06-01T00:00:00.000Z' WHERE event_id = '{}'", v.id)],
    );
    let out = verify(&source, &["--since", "2999-01-01T00:00:00Z"]);
    out.expect(1, &[("column_mismatch", v.seq), ("no_events", 0)]);
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL and MongoDB, loaded by their sinks with the demo's events and checkpoints.

#[test]
fn postgres_controls_and_classes_1_to_3() {
    let url = postgres_store();
    let v = victim(sql(&url, &[VICTIM_SQL]));
    verify(&url, &[]).expect(0, &[]);
    let out = verify(&url, &["--tenant", &v.tenant, "--public-key", &demo_key()]);
    out.expect(0, &[]);
    assert!(out.selected() > 0 && out.selected() < out.events(), "{out:?}");

    // Class 1: the event column is the canonical bytes, as for SQLite (whitespace, a duplicate
    // member, an escaped alias, a number alias).
    for edit in [
        r#"replace(event, '"outcome":"', '"outcome": "')"#,
        r#"replace(event, '{"action":', '{"action":"x","action":')"#,
        r#"replace(event, '"environment":"demo"', '"environment":"\u0064emo"')"#,
        r#"replace(event, '"schemaVersion":1,', '"schemaVersion":1.0,')"#,
    ] {
        let url = postgres_store();
        sql(&url, &[format!("UPDATE audit_events SET event = {edit} WHERE event_id = '{}'", v.id)]);
        verify(&url, &[]).expect(1, &[("non_canonical", v.seq)]).names("non_canonical", &v.id);
    }
    // The form column edited alone, either way: each text is checked in the form its row names.
    let same_event_as_jsonb = "event = event::jsonb::text";
    for edit in ["event_form = 'jsonb'", same_event_as_jsonb] {
        let url = postgres_store();
        sql(&url, &[format!("UPDATE audit_events SET {edit} WHERE event_id = '{}'", v.id)]);
        verify(&url, &[]).expect(1, &[("non_canonical", v.seq)]).names("non_canonical", &v.id);
    }
    // A form no writer uses, once the CHECK and NOT NULL are gone.
    for form in ["'raw'", "NULL"] {
        let url = postgres_store();
        sql(
            &url,
            &[
                "ALTER TABLE audit_events DROP CONSTRAINT audit_events_event_form".to_owned(),
                "ALTER TABLE audit_events ALTER COLUMN event_form DROP NOT NULL".to_owned(),
                format!("UPDATE audit_events SET event_form = {form} WHERE event_id = '{}'", v.id),
            ],
        );
        verify(&url, &[]).expect(1, &[("non_canonical", v.seq)]).names("non_canonical", &v.id);
    }
    // Text in jsonb's output form, its row saying so: a number alias jsonb keeps (numeric keeps its
    // scale), and a serde token member.
    let url = postgres_store();
    sql(
        &url,
        &[format!(
            "UPDATE audit_events SET event = jsonb_set(event::jsonb, '{{schemaVersion}}', '1.0'::jsonb)::text, \
             event_form = 'jsonb' WHERE event_id = '{}'",
            v.id
        )],
    );
    verify(&url, &[]).expect(1, &[("non_canonical", v.seq)]).names("non_canonical", &v.id);
    let url = postgres_store();
    sql(
        &url,
        &[format!(
            r#"UPDATE audit_events SET event = (event::jsonb || '{{"$serde_json::private::Number": "1"}}')::text,
               event_form = 'jsonb' WHERE event_id = '{}'"#,
            v.id
        )],
    );
    verify(&url, &[]).expect(1, &[("modified", v.seq), ("non_canonical", v.seq)]).names("non_canonical", &v.id);
    // The event rewritten as jsonb text and its form set to match: the same event in another
    // spelling that everyone reads alike, so verify finds nothing; with any change of content, it
    // is modified.
    let url = postgres_store();
    sql(
        &url,
        &[format!("UPDATE audit_events SET {same_event_as_jsonb}, event_form = 'jsonb' WHERE event_id = '{}'", v.id)],
    );
    verify(&url, &[]).expect(0, &[]);
    sql(
        &url,
        &[format!(
            "UPDATE audit_events SET event = jsonb_set(event::jsonb, '{{action}}', '\"auth.forged\"')::text, \
             action = 'auth.forged', event_form = 'jsonb' WHERE event_id = '{}'",
            v.id
        )],
    );
    verify(&url, &[]).expect(1, &[("modified", v.seq)]).names("modified", &v.id);

    // Class 2: columns, times compared as instants.
    for edit in ["tenant_id = 'evil'", "received_at = received_at + interval '1 hour'", "outcome = 'failure'"] {
        let url = postgres_store();
        sql(&url, &[format!("UPDATE audit_events SET {edit} WHERE event_id = '{}'", v.id)]);
        verify(&url, &[]).expect(1, &[("column_mismatch", v.seq)]).names("column_mismatch", &v.id);
    }

    // Class 3: the tenant column moved away does not take the row out of its tenant's check.
    let url = postgres_store();
    sql(&url, &[format!("UPDATE audit_events SET tenant_id = '{}' WHERE event_id = '{}'", v.other, v.id)]);
    verify(&url, &["--tenant", &v.tenant]).expect(1, &[("column_mismatch", v.seq)]).names("column_mismatch", &v.id);
    let out = verify(&url, &["--since", "2999-01-01T00:00:00Z"]);
    out.expect(1, &[("column_mismatch", v.seq), ("no_events", 0)]);

    // The content moved, the column kept: handed over by its column, found changed.
    let url = postgres_store();
    sql(
        &url,
        &[format!(
            "UPDATE audit_events SET event = jsonb_set(event::jsonb, '{{context,tenantId}}', to_jsonb('{}'::text))::text, \
             event_form = 'jsonb' WHERE event_id = '{}'",
            v.other, v.id
        )],
    );
    verify(&url, &["--tenant", &v.tenant])
        .expect(1, &[("column_mismatch", v.seq), ("modified", v.seq)])
        .names("modified", &v.id);

    // Text that is not JSON, its column moved away: whose it is cannot be told, so every tenant's
    // verification reports it (the reader reads the tenant from the text, not in its query).
    let url = postgres_store();
    sql(
        &url,
        &[format!(
            "UPDATE audit_events SET event = substr(event, 1, 100), tenant_id = '{}' WHERE event_id = '{}'",
            v.other, v.id
        )],
    );
    verify(&url, &["--tenant", &v.tenant]).expect(1, &[("unreadable", v.seq)]).names("unreadable", &v.id);
}

#[test]
fn mongodb_controls_and_classes_1_to_3() {
    use mongodb::bson::{doc, Bson};
    let store = MongoStore::new();
    let victim = store.victim();
    let id = victim.get_str("eventId").unwrap().to_owned();
    let tenant = victim.get_document("context").unwrap().get_str("tenantId").unwrap().to_owned();
    verify(&store.source, &[]).expect(0, &[]);
    verify(&store.source, &["--tenant", &tenant, "--public-key", &demo_key()]).expect(0, &[]);

    // Class 1: a whole number stored as a double, and a BSON type the sink never writes (a date,
    // which converts to a `$date` member).
    store.with("audit_events", async |c| {
        c.update_one(doc! {"eventId": &id}, doc! {"$set": {"schemaVersion": Bson::Double(1.0)}}).await.unwrap()
    });
    verify(&store.source, &[]).expect(1, &[("non_canonical", 12)]).names("non_canonical", &id);
    let store = MongoStore::new();
    store.with("audit_events", async |c| {
        c.update_one(doc! {"eventId": &id}, doc! {"$set": {"context.occurredAt": mongodb::bson::DateTime::now()}})
            .await
            .unwrap()
    });
    verify(&store.source, &[]).expect(1, &[("modified", 12), ("non_canonical", 12)]).names("non_canonical", &id);

    // Class 2: the `_id` lookups use is another event's.
    let store = MongoStore::new();
    store.with("audit_events", async |c| {
        let mut moved = c.find_one(doc! {"eventId": &id}).await.unwrap().unwrap();
        moved.insert("_id", "not-the-event-id");
        c.delete_one(doc! {"eventId": &id}).await.unwrap();
        c.insert_one(moved).await.unwrap();
    });
    verify(&store.source, &[]).expect(1, &[("column_mismatch", 12)]).names("column_mismatch", &id);

    // Class 3: content moved to another tenant is found by the original tenant's check.
    let store = MongoStore::new();
    store.with("audit_events", async |c| {
        c.update_one(doc! {"eventId": &id}, doc! {"$set": {"context.tenantId": "someone-else"}}).await.unwrap()
    });
    verify(&store.source, &["--tenant", &tenant]).expect(1, &[("modified", 12)]).names("modified", &id);
}

// ---------------------------------------------------------------------------------------------
// The processed topic.

#[test]
fn processed_topic_records_are_the_canonical_bytes() {
    let mut topic = runtime().block_on(Processed::create(2));
    topic.publish(40);
    let source = format!("kafka://{}/{}", topic.bootstrap, topic.topic);
    verify(&source, &[]).expect(0, &[]);

    // A well-chained event in canonical form is not what this test is about: it verifies.
    let (event, canonical) = next_event(&topic, 0);
    produce_raw(&topic, 0, Some(&canonical));
    topic.published.get_mut(&0).unwrap().push(event);
    verify(&source, &[]).expect(0, &[]);

    // The next one pretty-printed, then one with an escaped alias: each chains, neither is the
    // processor's bytes.
    let (event, _) = next_event(&topic, 0);
    let seq = event["integrity"]["seq"].as_u64().unwrap();
    produce_raw(&topic, 0, Some(serde_json::to_string_pretty(&event).unwrap().as_bytes()));
    topic.published.get_mut(&0).unwrap().push(event);
    verify(&source, &[]).expect(1, &[("non_canonical", seq)]).names("non_canonical", &format!("forged-{seq}"));
    let (event, canonical) = next_event(&topic, 0);
    let aliased = String::from_utf8(canonical).unwrap().replacen("\"eventId\":\"f", "\"eventId\":\"\\u0066", 1);
    produce_raw(&topic, 0, Some(aliased.as_bytes()));
    let seq2 = event["integrity"]["seq"].as_u64().unwrap();
    verify(&source, &[]).expect(1, &[("non_canonical", seq), ("non_canonical", seq2)]);
}
