//! `verify_chain` names each kind of break, and only that break, at the right seq.

mod common;

use audit_schema::chain::{
    chain_name, seal, verify_chain, verify_chain_with, BreakKind, ChainHead, Start, VerifyOptions,
};
use audit_schema::AuditEvent;
use serde_json::json;

fn kinds(events: &[AuditEvent]) -> Vec<(BreakKind, u64)> {
    let report = verify_chain(events).unwrap();
    report.findings.iter().map(|f| (f.kind, f.seq)).collect()
}

#[test]
fn an_untouched_chain_is_intact_and_reports_its_head() {
    let events = common::chain(10);
    let report = verify_chain(&events).unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.events, 10);
    let head = report.head.unwrap();
    assert_eq!((head.chain.as_str(), head.seq), ("audit.raw/0", 10));
    assert_eq!(head.hash, events[9].integrity.hash);
}

#[test]
fn an_edited_field_is_reported_as_modified_at_its_seq() {
    let mut events = common::chain(10);
    events[4].actor.id = "someone-else".into();
    assert_eq!(kinds(&events), [(BreakKind::Modified, 5)]);
    let report = verify_chain(&events).unwrap();
    let first = report.first_break().unwrap();
    assert_eq!(first.event_id.as_deref(), Some("evt-0005"));
    assert!(first.detail.contains("content hashes to"), "{}", first.detail);
}

#[test]
fn an_edited_and_rehashed_event_is_reported_as_modified_through_its_successor_link() {
    let mut events = common::chain(10);
    events[4].metadata = Some(json!({"n": 999}).as_object().unwrap().clone());
    seal(&mut events[4]).unwrap();
    assert_eq!(kinds(&events), [(BreakKind::Modified, 5)]);
}

#[test]
fn a_deleted_event_is_reported_as_missing() {
    let mut events = common::chain(10);
    events.remove(6);
    assert_eq!(kinds(&events), [(BreakKind::Missing, 7)]);
    let mut events = common::chain(10);
    events.drain(2..5);
    let report = verify_chain(&events).unwrap();
    assert_eq!(report.findings.len(), 1);
    assert_eq!((report.findings[0].kind, report.findings[0].seq), (BreakKind::Missing, 3));
    assert!(report.findings[0].detail.contains("3..=5"), "{}", report.findings[0].detail);
}

#[test]
fn a_missing_genesis_is_reported_unless_verifying_a_window() {
    let events = common::chain(10);
    assert_eq!(kinds(&events[3..]), [(BreakKind::Missing, 1)]);
    let options = VerifyOptions { start: Start::Anywhere, ..VerifyOptions::default() };
    assert!(verify_chain_with(&events[3..], options).unwrap().is_intact());
    let anchor = ChainHead { chain: chain_name("audit.raw", 0), seq: 3, hash: events[2].integrity.hash.clone() };
    let options = VerifyOptions { start: Start::After(anchor), ..VerifyOptions::default() };
    assert!(verify_chain_with(&events[3..], options).unwrap().is_intact());
}

#[test]
fn two_swapped_events_are_reported_as_reordered() {
    let mut events = common::chain(10);
    events.swap(3, 4);
    assert_eq!(kinds(&events), [(BreakKind::Reordered, 4)]);
}

#[test]
fn a_repeated_event_is_reported_as_duplicated() {
    let mut events = common::chain(10);
    events.insert(6, events[5].clone());
    assert_eq!(kinds(&events), [(BreakKind::Duplicated, 6)]);
}

#[test]
fn two_different_events_with_one_seq_are_reported_as_forked() {
    let mut events = common::chain(10);
    let mut fork = events[5].clone();
    fork.action = "user.logout".into();
    seal(&mut fork).unwrap();
    events.insert(6, fork);
    assert_eq!(kinds(&events), [(BreakKind::Forked, 6)]);
}

#[test]
fn a_wrong_genesis_link_is_reported_as_modified() {
    let mut events = common::chain(3);
    events[0].integrity.prev_hash = "1".repeat(64);
    seal(&mut events[0]).unwrap();
    // The rewritten genesis no longer matches what seq 2 links to either.
    assert_eq!(kinds(&events), [(BreakKind::Modified, 1), (BreakKind::Modified, 1)]);
}

#[test]
fn an_event_from_another_chain_is_named() {
    let mut events = common::chain(3);
    let mut other = common::chain(4).pop().unwrap();
    other.integrity.chain = chain_name("audit.raw", 9);
    seal(&mut other).unwrap();
    events.push(other);
    let report = verify_chain(&events).unwrap();
    assert_eq!(report.findings.len(), 1);
    assert!(report.findings[0].detail.contains("audit.raw/9"), "{}", report.findings[0].detail);
}

#[test]
fn findings_are_capped_and_counted() {
    let mut events = common::chain(50);
    for e in &mut events {
        e.action = "tampered.action".into();
    }
    let options = VerifyOptions { max_findings: 10, ..VerifyOptions::default() };
    let report = verify_chain_with(&events, options).unwrap();
    assert_eq!(report.findings.len(), 10);
    assert_eq!(report.findings_dropped, 40);
    assert!(!report.is_intact());
}
