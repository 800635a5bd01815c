//! Per-client rate limits against the real daemon over HTTP: a key flooding the API is
//! answered 429 with `Retry-After` while other keys and its own check-ins go on being served;
//! a peer flooding with bad credentials is answered 429 and not audited request by request.

mod common;

use common::*;
use serde_json::{Value, json};

const LIMITS: &str = "[access]\nenabled = true\n\n[access.rate_limits]\nper_second = 0.2\nburst = 5\ncritical_per_second = 0.2\ncritical_burst = 3\nrefused_per_second = 0.2\nrefused_burst = 4\n\n[access.rate_limits.clients.\"key:ops-console\"]\nper_second = 100.0\nburst = 1000\n";

fn add_key(gw: &Gateway, name: &str, scope: &str) -> String {
    let out = gw.cli(&["key", "add", name, "--scope", scope]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "key add: {text}");
    text.lines()
        .find_map(|l| l.strip_prefix("key (shown once; give it to the client):"))
        .unwrap_or_else(|| panic!("a key in {text}"))
        .trim()
        .to_string()
}

/// Status, `Retry-After` and body of a request made with `key`.
fn call(gw: &Gateway, method: &str, path: &str, key: &str) -> (u16, Option<u64>, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let auth = format!("Bearer {key}");
    let r = if method == "POST" {
        agent
            .post(gw.url(path))
            .header("authorization", &auth)
            .send_json(json!({ "patient_ref": "MRN-7" }))
    } else {
        agent
            .get(gw.url(path))
            .header("authorization", &auth)
            .call()
    };
    let mut r = r.expect("request");
    let retry = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let status = r.status().as_u16();
    (
        status,
        retry,
        r.body_mut().read_json().unwrap_or(Value::Null),
    )
}

/// Requests `path` with `key` until it is answered 429; that answer's `Retry-After`.
fn flood_until_limited(gw: &Gateway, path: &str, key: &str) -> u64 {
    for _ in 0..200 {
        let (status, retry, body) = call(gw, "GET", path, key);
        if status == 429 {
            assert_eq!(body, json!({ "error": "too many requests" }));
            return retry.expect("a Retry-After header");
        }
    }
    panic!("{path} never answered 429");
}

fn audited(gw: &Gateway, admin: &str, action: &str) -> Vec<(String, Value)> {
    let (status, _, rows) = call(gw, "GET", "/api/v1/audit?limit=1000", admin);
    assert_eq!(status, 200, "{rows}");
    rows.as_array()
        .expect("audit")
        .iter()
        .filter(|r| r["action"] == action)
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
fn a_flooding_key_is_limited_while_other_keys_and_its_check_ins_are_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut gw = Gateway::new(dir.path(), LIMITS);
    gw.start();
    let admin = add_key(&gw, "ops-console", "admin");
    let flood = add_key(&gw, "board-poller", "queue");
    let calm = add_key(&gw, "kiosk", "queue");

    let retry = flood_until_limited(&gw, "/api/v1/queues", &flood);
    assert!(retry >= 1, "Retry-After in whole seconds: {retry}");
    for _ in 0..10 {
        assert_eq!(call(&gw, "GET", "/api/v1/queues", &flood).0, 429);
    }

    // Another client has its own budget, and the flooder's check-ins their reserved one.
    assert_eq!(call(&gw, "GET", "/api/v1/queues", &calm).0, 200);
    let (status, _, body) = call(&gw, "POST", "/api/v1/queues/general/check-in", &flood);
    assert_eq!(status, 201, "{body}");

    // The flood left one record, not one per refused request.
    let limited = audited(&gw, &admin, "access.rate_limited");
    assert_eq!(limited.len(), 1, "{limited:?}");
    assert_eq!(limited[0].0, "key:board-poller");
    assert_eq!(limited[0].1["lane"], "general");
}

#[test]
fn a_peer_flooding_with_bad_keys_is_limited_and_audited_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut gw = Gateway::new(dir.path(), LIMITS);
    gw.start();
    let admin = add_key(&gw, "ops-console", "admin");

    let bogus = format!("cgk_{}_{}", "f".repeat(16), "0".repeat(64));
    let mut refused = 0;
    let retry = loop {
        let (status, retry, _) = call(&gw, "GET", "/api/v1/queues", &bogus);
        match status {
            401 => refused += 1,
            429 => break retry.expect("a Retry-After header"),
            other => panic!("answered {other}"),
        }
        assert!(refused < 200, "never limited");
    };
    assert!(retry >= 1);
    for _ in 0..20 {
        assert_eq!(call(&gw, "GET", "/api/v1/queues", &bogus).0, 429);
    }
    // A valid key from the same address is still served: only refusals draw this budget.
    assert_eq!(call(&gw, "GET", "/api/v1/backlog", &admin).0, 200);

    let refusals = audited(&gw, &admin, "access.refused");
    assert_eq!(
        refusals.len(),
        refused,
        "each refusal within the budget audited"
    );
    let limited = audited(&gw, &admin, "access.rate_limited");
    assert_eq!(limited.len(), 1, "{limited:?}");
    assert_eq!(
        (
            limited[0].0.as_str(),
            &limited[0].1["lane"],
            &limited[0].1["peer"]
        ),
        ("anonymous", &json!("refused"), &json!("127.0.0.1"))
    );
}

#[test]
fn a_budget_of_nothing_is_reported_with_file_line_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let extra = "[access]\nenabled = true\n\n[access.rate_limits]\nper_second = 0.0\nburst = 0\n";
    let gw = Gateway::new(dir.path(), extra);
    let (code, stderr) = check_config(&gw.config);
    assert_eq!(code, Some(2), "{stderr}");
    let file = gw.config.display();
    assert!(
        stderr.contains(&format!(
            "{file}:14: access.rate_limits.per_second: must be above 0"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{file}:15: access.rate_limits.burst: must be at least 1"
        )),
        "{stderr}"
    );
}
