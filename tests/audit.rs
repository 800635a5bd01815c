//! The hash-chained audit log, end to end: the daemon audits real actions, publishes the chain's
//! head through a real Mosquitto, and `audit verify` catches a row changed with `sqlite3` and,
//! given the published head, a truncated tail.

mod common;

use common::*;
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn sqlite3(db: &Path, sql: &str) {
    let out = Command::new("sqlite3")
        .arg(db)
        .arg(sql)
        .output()
        .expect("sqlite3 must be installed (scripts/test-deps.sh)");
    assert!(
        out.status.success(),
        "sqlite3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `audit verify` with `extra` arguments: (succeeded, stdout, stderr).
fn verify(gw: &Gateway, extra: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin())
        .args(["audit", "verify", "--config"])
        .arg(&gw.config)
        .args(extra)
        .output()
        .expect("audit verify");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn export(gw: &Gateway, extra: &[&str]) -> Vec<Value> {
    let out = Command::new(bin())
        .args(["audit", "export", "--config"])
        .arg(&gw.config)
        .args(extra)
        .output()
        .expect("audit export");
    assert!(
        out.status.success(),
        "audit export: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a record as JSON"))
        .collect()
}

#[test]
fn audit_verify_names_a_row_changed_with_sqlite3_and_the_published_head_exposes_a_truncated_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bdir = dir.path().join("broker");
    std::fs::create_dir_all(&bdir).expect("mkdir");
    let broker = Broker::start(&bdir);
    let consumer = Consumer::start(&broker, "clinic/test-clinic/events/audit.head");
    let extra = format!(
        "[journal]\naudit_head_interval_s = 1\n\n{}",
        relay_table(&broker)
    );
    let mut gw = Gateway::new(dir.path(), &extra);
    gw.start();

    let (status, body) = post(&gw.url("/api/v1/reload"), &json!({}));
    assert_eq!(status, 200, "{body}");
    let replay = gw.cli(&["dlq", "replay", "--destination", "cloud", "--all"]);
    assert!(
        replay.status.success(),
        "dlq replay: {}",
        String::from_utf8_lossy(&replay.stderr)
    );
    let (status, body) = post(&gw.url("/api/v1/reload"), &json!({}));
    assert_eq!(status, 200, "{body}");
    let audited = wait_for("three audit records", Duration::from_secs(20), || {
        let log = audit_log(&gw);
        (log.len() == 3).then_some(log)
    });
    assert_eq!(audited[1].0, "dlq-replay", "{audited:?}");

    // The cloud holds the head naming the last of them.
    let published = wait_for(
        "an audit.head event naming all three records",
        Duration::from_secs(30),
        || {
            consumer
                .events()
                .into_iter()
                .map(|e| e["payload"].clone())
                .find(|p| p["count"] == 3)
        },
    );
    assert_eq!(published["last_id"], 3, "{published}");
    let published_head = format!(
        "{}:{}",
        published["last_id"],
        published["hash"].as_str().expect("hash")
    );
    // The API's list carries the chain: the newest first, or a page after a given record.
    let newest = gw.get_json("/api/v1/audit?limit=1");
    assert_eq!(newest[0]["id"], 3, "{newest}");
    assert_eq!(newest[0]["hash"], published["hash"], "{newest}");
    let after = gw.get_json("/api/v1/audit?after=1&limit=2");
    assert_eq!(after[0]["id"], 2, "{after}");
    assert_eq!(after[1]["id"], 3, "{after}");
    assert_eq!(after[1]["prev_hash"], after[0]["hash"], "{after}");
    assert_eq!(after[1]["hash"], published["hash"], "{after}");

    gw.signal("TERM");
    assert_eq!(gw.wait(Duration::from_secs(20)), Some(0));

    let (ok, out, err) = verify(&gw, &["--head", &published_head]);
    assert!(ok, "{err}");
    assert!(out.contains("3 records"), "{out}");
    assert!(
        out.contains(published["hash"].as_str().expect("hash")),
        "{out}"
    );
    let records = export(&gw, &[]);
    assert_eq!(
        records.iter().map(|r| r["id"].clone()).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    for pair in records.windows(2) {
        assert_eq!(pair[1]["prev_hash"], pair[0]["hash"]);
    }
    assert_eq!(records[2]["hash"], published["hash"]);
    assert_eq!(export(&gw, &["--since", "2"]), records[2..]);

    let db = dir.path().join("data").join("journal.db");
    let original = records[1]["detail"].as_str().expect("detail").to_string();
    sqlite3(
        &db,
        "UPDATE audit SET detail = 'nothing happened' WHERE id = 2",
    );
    let (ok, _, err) = verify(&gw, &[]);
    assert!(!ok, "a changed record must not verify");
    assert!(
        err.contains("audit record 2") && err.contains("hash mismatch"),
        "{err}"
    );

    sqlite3(
        &db,
        &format!(
            "UPDATE audit SET detail = '{}' WHERE id = 2",
            original.replace('\'', "''")
        ),
    );
    assert!(verify(&gw, &[]).0, "restored, the chain is whole again");

    // A cut tail leaves a chain that is whole on its own; only the published head shows it.
    sqlite3(&db, "DELETE FROM audit WHERE id = 3");
    let (ok, out, err) = verify(&gw, &[]);
    assert!(ok, "{err}");
    assert!(out.contains("2 records"), "{out}");
    let (ok, _, err) = verify(&gw, &["--head", &published_head]);
    assert!(
        !ok,
        "a truncated log must not verify against the published head"
    );
    assert!(
        err.contains("audit record 3") && err.contains("truncated"),
        "{err}"
    );
}
