//! API keys against the real daemon over HTTP: keys made, listed and revoked with the CLI,
//! presented as `Authorization: Bearer`, checked against their scope, and every refusal
//! audited with the key's id and never its secret.

mod common;

use common::*;
use serde_json::{Value, json};
use std::io::{Read, Write};

const ACCESS: &str = "[access]\nenabled = true\n";

/// Adds a key with the CLI; the key as printed.
fn add_key(gw: &Gateway, name: &str, options: &[&str]) -> String {
    let mut args = vec!["key", "add", name];
    args.extend_from_slice(options);
    let out = gw.cli(&args);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "key add: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .find_map(|l| l.strip_prefix("key (shown once; give it to the client):"))
        .unwrap_or_else(|| panic!("a key in {text}"))
        .trim()
        .to_string()
}

/// The id part of a key (`cgk_<id>_<secret>`).
fn id_of(key: &str) -> String {
    key.split('_').nth(1).expect("an id").to_string()
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

fn answer(mut r: ureq::http::Response<ureq::Body>) -> (u16, Value) {
    let status = r.status().as_u16();
    (status, r.body_mut().read_json().unwrap_or(Value::Null))
}

fn get(gw: &Gateway, path: &str, key: &str) -> (u16, Value) {
    let r = agent()
        .get(gw.url(path))
        .header("authorization", format!("Bearer {key}"))
        .call()
        .expect("GET");
    answer(r)
}

fn post(gw: &Gateway, path: &str, key: &str, body: &Value) -> (u16, Value) {
    let r = agent()
        .post(gw.url(path))
        .header("authorization", format!("Bearer {key}"))
        .send_json(body)
        .expect("POST");
    answer(r)
}

/// The refusals in the audit, newest first, as (actor, detail), read with an admin's key.
fn refusals(gw: &Gateway, admin_key: &str) -> Vec<(String, Value)> {
    let (status, rows) = get(gw, "/api/v1/audit?limit=500", admin_key);
    assert_eq!(status, 200, "{rows}");
    rows.as_array()
        .expect("audit")
        .iter()
        .filter(|r| r["action"] == "access.refused")
        .map(|r| {
            let detail = r["detail"].as_str().unwrap_or("{}");
            (
                r["actor"].as_str().unwrap_or("").to_string(),
                serde_json::from_str(detail).unwrap_or(Value::Null),
            )
        })
        .collect()
}

#[test]
fn keys_reach_their_scope_only_and_every_refusal_is_audited_without_the_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut gw = Gateway::new(dir.path(), ACCESS);
    gw.start();
    let admin = add_key(&gw, "ops-console", &["--scope", "admin"]);
    let scraper = add_key(
        &gw,
        "prometheus",
        &["--scope", "metrics,operations", "--expires-days", "30"],
    );
    let expired = add_key(
        &gw,
        "old-kiosk",
        &["--scope", "queue", "--expires-at", "2020-01-01T00:00:00Z"],
    );
    let secret_of = |key: &str| key.rsplit('_').next().expect("secret").to_string();

    // A metrics scrape works with logins on, and reaches only its groups.
    let r = agent()
        .get(gw.url("/metrics"))
        .header("authorization", format!("Bearer {scraper}"))
        .call()
        .expect("GET /metrics");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(get(&gw, "/api/v1/backlog", &scraper).0, 200);
    let key_file = dir.path().join("status.key");
    std::fs::write(&key_file, format!("{scraper}\n")).expect("key file");
    let key_file = key_file.to_string_lossy().to_string();
    let out = gw.cli(&["status", "--json", "--key-file", &key_file]);
    assert!(
        out.status.success(),
        "status with a key: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = gw.cli(&["status"]);
    assert!(!out.status.success(), "no key, no status");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--key-file"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, body) = get(&gw, "/api/v1/queues", &scraper);
    assert_eq!(
        (status, body),
        (403, json!({ "error": "forbidden" })),
        "no detail for an attacker"
    );
    assert_eq!(
        get(&gw, "/api/v1/session", &admin).0,
        403,
        "a browser's route"
    );

    // A key's state change needs no CSRF token, and the audit names the key's client.
    let (status, body) = post(
        &gw,
        "/api/v1/dlq/replay",
        &admin,
        &json!({ "destination": "cloud", "all": true }),
    );
    assert_eq!(status, 200, "{body}");
    let (_, rows) = get(&gw, "/api/v1/audit?limit=500", &admin);
    let replay = rows
        .as_array()
        .and_then(|r| r.iter().find(|r| r["action"] == "dlq-replay"))
        .expect("the replay audited");
    assert_eq!(replay["actor"], "key:ops-console");

    // Forged (the right id, another secret), unknown, malformed, expired: all the same 401.
    let forged = format!("cgk_{}_{}", id_of(&scraper), "0".repeat(64));
    let unknown = format!("cgk_{}_{}", "f".repeat(16), secret_of(&scraper));
    for key in [forged.as_str(), unknown.as_str(), "cgk_nonsense", &expired] {
        let (status, body) = get(&gw, "/api/v1/queues", key);
        assert_eq!(
            (status, body),
            (401, json!({ "error": "login required" })),
            "{key}"
        );
    }

    let out = gw.cli(&["key", "revoke", "prometheus"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(get(&gw, "/api/v1/backlog", &scraper).0, 401, "revoked");
    assert!(!gw.cli(&["key", "revoke", "prometheus"]).status.success());
    assert!(
        !gw.cli(&["key", "add", "prometheus", "--scope", "metrics"])
            .status
            .success(),
        "a name is never reused"
    );

    let reasons: Vec<(String, String, String)> = refusals(&gw, &admin)
        .into_iter()
        .map(|(actor, d)| {
            let text = |v: &Value| v.as_str().unwrap_or("").to_string();
            (actor, text(&d["reason"]), text(&d["key"]))
        })
        .collect();
    let (scraper_id, expired_id) = (id_of(&scraper), id_of(&expired));
    let row = |actor: &str, reason: &str, id: &str| (actor.into(), reason.into(), id.into());
    assert_eq!(
        reasons,
        [
            row("key:prometheus", "key_revoked", &scraper_id),
            row("key:old-kiosk", "key_expired", &expired_id),
            row("anonymous", "key_malformed", ""),
            row("anonymous", "key_unknown", &"f".repeat(16)),
            row("anonymous", "key_forged", &scraper_id),
            row("key:ops-console", "key_scope", &id_of(&admin)),
            row("key:prometheus", "key_scope", &scraper_id),
            row("anonymous", "no_session", ""),
        ]
    );

    let (_, rows) = get(&gw, "/api/v1/audit?limit=500", &admin);
    let audit = rows.to_string();
    for key in [&admin, &scraper, &expired] {
        assert!(!audit.contains(&secret_of(key)), "a secret in the audit");
    }
    let actions: Vec<(&str, &str)> = rows
        .as_array()
        .expect("audit")
        .iter()
        .filter(|r| {
            r["action"]
                .as_str()
                .is_some_and(|a| a.starts_with("access.key_"))
        })
        .map(|r| {
            (
                r["action"].as_str().unwrap_or(""),
                r["actor"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(actions.len(), 4, "{actions:?}");
    assert!(
        actions[0].0 == "access.key_revoked" && actions.iter().all(|(_, a)| a.starts_with("cli:")),
        "{actions:?}"
    );

    let out = gw.cli(&["key", "list", "--json"]);
    let listing = String::from_utf8_lossy(&out.stdout).to_string();
    let keys: Value = serde_json::from_str(&listing).expect("json");
    let state = |name: &str| {
        keys.as_array()
            .and_then(|k| k.iter().find(|k| k["name"] == name))
            .map(|k| (k["scope"].clone(), !k["revoked_at"].is_null()))
            .expect("listed")
    };
    assert_eq!(state("prometheus"), (json!("operations,metrics"), true));
    assert_eq!(state("ops-console"), (json!("admin"), false));
    for key in [&admin, &scraper, &expired] {
        assert!(!listing.contains(&secret_of(key)), "a secret listed");
    }
}

#[test]
fn a_key_from_a_foreign_host_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut gw = Gateway::new(dir.path(), ACCESS);
    gw.start();
    let admin = add_key(&gw, "ops-console", &["--scope", "admin"]);
    let request = format!(
        "GET /api/v1/backlog HTTP/1.1\r\nHost: evil.example\r\nAuthorization: Bearer {admin}\r\nConnection: close\r\n\r\n"
    );
    let mut s = std::net::TcpStream::connect(("127.0.0.1", gw.web)).expect("connect");
    s.write_all(request.as_bytes()).expect("write");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read");
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    let refused = refusals(&gw, &admin);
    assert_eq!(refused[0].0, "anonymous");
    assert_eq!(refused[0].1["reason"], "host");
}

/// Sends `body` as it is, with a content type, and answers the status and JSON.
fn post_raw(gw: &Gateway, path: &str, key: &str, body: &[u8]) -> (u16, Value) {
    let r = agent()
        .post(gw.url(path))
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .send(body)
        .expect("POST");
    answer(r)
}

#[test]
fn an_oversized_or_malformed_body_is_refused_without_quoting_it_audited_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut gw = Gateway::new(dir.path(), ACCESS);
    gw.start();
    let admin = add_key(&gw, "ops-console", &["--scope", "admin"]);
    let kiosk = add_key(&gw, "kiosk-1", &["--scope", "queue"]);
    let check_in = "/api/v1/queues/general/check-in";

    let huge = format!("{{\"patient_ref\": \"{}\"}}", "9".repeat(300 * 1024));
    let (status, body) = post_raw(&gw, check_in, &kiosk, huge.as_bytes());
    assert_eq!(status, 413, "{body}");
    let (status, body) = post_raw(&gw, check_in, &kiosk, b"{\"patient_ref\": \"MRN-7\"");
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap_or("").contains("not JSON"),
        "{body}"
    );
    let (status, body) = post_raw(&gw, check_in, &kiosk, br#"{"patient_ref": 19800203}"#);
    assert_eq!(status, 400, "{body}");
    assert!(
        !body.to_string().contains("19800203"),
        "the body is never quoted: {body}"
    );

    let (_, queues) = get(&gw, "/api/v1/queues", &admin);
    assert!(
        !queues.to_string().contains("MRN-7"),
        "nothing was checked in: {queues}"
    );
    let (_, rows) = get(&gw, "/api/v1/audit?limit=500", &admin);
    let reasons: Vec<(String, String, u64)> = rows
        .as_array()
        .expect("audit")
        .iter()
        .filter(|r| r["action"] == "request.refused")
        .map(|r| {
            let d: Value =
                serde_json::from_str(r["detail"].as_str().unwrap_or("{}")).expect("detail");
            (
                r["actor"].as_str().unwrap_or("").to_string(),
                d["reason"].as_str().unwrap_or("").to_string(),
                d["status"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    let row = |reason: &str, status: u64| ("key:kiosk-1".to_string(), reason.to_string(), status);
    assert_eq!(
        reasons,
        [
            row("body_malformed", 400),
            row("body_malformed", 400),
            row("body_too_large", 413),
        ]
    );
    assert!(
        !rows.to_string().contains("19800203") && !rows.to_string().contains("MRN-7"),
        "the audit holds no body"
    );
}
