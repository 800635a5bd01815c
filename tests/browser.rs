//! The staff's browser side against the real daemon over HTTPS (its self-signed certificate):
//! headless Chromium (Debian's `chromium` and `chromium-driver`, driven by selenium through
//! `tests/peers/browser_steps.py`) logs in with a password and a TOTP code computed from the
//! enrolment URI, sees what its role may see and nothing else, is refused elsewhere with a page,
//! and logs out.

mod common;

use common::fhir_server::{FhirServer, MRN};
use common::https::{certificate, start_https, trusting};
use common::*;
use serde_json::{Value, json};
use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

const ACCESS: &str = "[web.tls]\nself_signed = true\n\n[access]\nenabled = true\n";

/// An account as the CLI printed it.
struct Account {
    name: String,
    password: String,
    uri: String,
}

impl Account {
    fn login(&self) -> Value {
        json!({ "login": { "name": self.name, "password": self.password, "uri": self.uri } })
    }
}

fn add_user(gw: &Gateway, name: &str, role: &str) -> Account {
    let out = gw.cli(&["user", "add", name, "--role", role]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "user add: {text}");
    let after = |label: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(label))
            .unwrap_or_else(|| panic!("{label} in {text}"))
            .trim()
            .to_string()
    };
    Account {
        name: name.into(),
        password: after("one-time password:"),
        uri: after("TOTP enrolment URI (add it to an authenticator app):"),
    }
}

/// A gateway with logins, serving HTTPS, started and answering.
fn gateway(dir: &Path) -> Gateway {
    gateway_with(dir, "")
}

fn gateway_with(dir: &Path, extra: &str) -> Gateway {
    let mut gw = Gateway::new(dir, &format!("{ACCESS}\n{extra}"));
    start_https(&mut gw, &dir.join("data/web-cert.pem"), "/api/v1/health");
    gw
}

/// Runs `steps` in headless Chromium against the gateway; fails the test with what the driver
/// printed when a step fails, and loudly when the browser is not installed.
fn browse(gw: &Gateway, steps: &[Value]) {
    browse_at(&format!("https://127.0.0.1:{}", gw.web), steps);
}

/// Runs `steps` against the gateway at `base`.
fn browse_at(base: &str, steps: &[Value]) {
    for tool in ["chromium", "chromedriver"] {
        let found = std::process::Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(found, "{tool} is missing: run scripts/test-deps.sh");
    }
    let mut child = peer_script("browser_steps.py")
        .arg(base)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 with selenium (scripts/test-deps.sh)");
    let input = serde_json::to_vec(steps).expect("steps");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&input)
        .expect("steps to the driver");
    let out = child.wait_with_output().expect("the browser driver");
    assert!(
        out.status.success(),
        "the browser steps failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The audit records of `action` (actor, detail), read from the journal by the CLI.
fn audited(gw: &Gateway, action: &str) -> Vec<(String, Value)> {
    let out = gw.cli(&["audit", "export"]);
    assert!(out.status.success(), "audit export");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["action"] == action)
        .map(|r| {
            let detail = r["detail"].as_str().unwrap_or("{}");
            (
                r["actor"].as_str().unwrap_or("").to_string(),
                serde_json::from_str(detail).unwrap_or_else(|_| Value::from(detail)),
            )
        })
        .collect()
}

#[test]
fn staff_see_their_roles_page_only_are_refused_elsewhere_and_log_out() {
    let dir = tempfile::tempdir().expect("temp dir");
    let gw = gateway(dir.path());
    let desk = add_user(&gw, "desk", "front_desk");
    let facilities = add_user(&gw, "fm", "facilities");

    browse(
        &gw,
        &[
            json!({ "open": "/" }),
            json!({ "path": "/login" }),
            json!({ "login": { "name": "desk", "password": "not-the-password", "uri": desk.uri } }),
            json!({ "see": "not accepted" }),
            desk.login(),
            json!({ "path": "/" }),
            json!({ "see": "desk (front_desk)" }),
            json!({ "see": "Waiting queues" }),
            json!({ "not_see": "Devices and connectors" }),
            json!({ "not_see": "Outbound backlog" }),
            json!({ "not_see": "Dead letters" }),
            json!({ "open": "/api/v1/backlog" }),
            json!({ "title": "not for your role" }),
            json!({ "open": "/" }),
            json!({ "click": "Log out" }),
            json!({ "path": "/login" }),
            json!({ "open": "/" }),
            json!({ "path": "/login" }),
            facilities.login(),
            json!({ "path": "/" }),
            json!({ "see": "fm (facilities)" }),
            json!({ "see": "Devices and connectors" }),
            json!({ "see": "Outbound backlog" }),
            json!({ "not_see": "Waiting queues" }),
            json!({ "not_see": "Notices for staff" }),
            json!({ "open": "/api/v1/queues" }),
            json!({ "title": "not for your role" }),
            json!({ "open": "/" }),
            json!({ "click": "Log out" }),
            json!({ "path": "/login" }),
        ],
    );

    let refused = audited(&gw, "access.refused");
    let by = |who: &str, path: &str| {
        refused
            .iter()
            .any(|(a, d)| a == who && d["reason"] == "role" && d["path"] == path)
    };
    assert!(by("staff:desk", "/api/v1/backlog"), "{refused:?}");
    assert!(by("staff:fm", "/api/v1/queues"), "{refused:?}");
    let logins: Vec<String> = audited(&gw, "access.login")
        .into_iter()
        .map(|(a, _)| a)
        .collect();
    assert_eq!(logins, ["staff:desk", "staff:fm"]);
    let logouts = audited(&gw, "access.logout");
    assert_eq!(logouts.len(), 2, "{logouts:?}");
    let wrong = audited(&gw, "access.login_refused");
    assert!(
        wrong
            .iter()
            .any(|(a, d)| a == "staff:desk" && d["reason"] == "bad_password"),
        "{wrong:?}"
    );
}

#[test]
fn an_admin_adds_a_front_desk_user_and_a_key_on_the_page_and_that_user_logs_in() {
    let dir = tempfile::tempdir().expect("temp dir");
    let gw = gateway(dir.path());
    let admin = add_user(&gw, "boss", "admin");
    let fill = |form: &str, field: &str, value: &str| json!({ "fill": { "form": form, "field": field, "value": value } });

    browse(
        &gw,
        &[
            admin.login(),
            json!({ "path": "/" }),
            json!({ "see": "Users" }),
            json!({ "see": "API keys" }),
            fill("/users/add", "name", "newdesk"),
            fill("/users/add", "role", "front_desk"),
            json!({ "click": "Add user" }),
            json!({ "see": "Account newdesk added" }),
            json!({ "see": "newdesk (front_desk)" }),
            json!({ "element": "svg[aria-label='TOTP enrolment QR code'] path" }),
            json!({ "keep": { "id": "one-time-password", "as": "password" } }),
            json!({ "keep": { "id": "enrolment-uri", "as": "uri" } }),
            json!({ "open": "/" }),
            json!({ "see": "Disable newdesk" }),
            fill("/keys/add", "name", "kiosk-1"),
            fill("/keys/add", "scope", "queue"),
            fill("/keys/add", "expires_days", "30"),
            json!({ "click": "Add key" }),
            json!({ "see": "Key kiosk-1 added" }),
            json!({ "element": "#key-text" }),
            json!({ "open": "/" }),
            json!({ "see": "in 30 days" }),
            json!({ "click": "Revoke kiosk-1" }),
            json!({ "see": "revoked" }),
            json!({ "not_see": "Revoke kiosk-1" }),
            json!({ "click": "Log out" }),
            json!({ "path": "/login" }),
            json!({ "login": { "name": "newdesk", "password": "$password", "uri": "$uri" } }),
            json!({ "path": "/" }),
            json!({ "see": "newdesk (front_desk)" }),
            json!({ "see": "Waiting queues" }),
            json!({ "not_see": "API keys" }),
            json!({ "not_see": "Disable" }),
        ],
    );

    let by_admin = |action: &str| {
        let found = audited(&gw, action);
        assert!(
            found.iter().any(|(a, _)| a == "staff:boss"),
            "{action} by the admin: {found:?}"
        );
        found
    };
    let added = by_admin("access.user_added");
    assert!(
        added
            .iter()
            .any(|(_, d)| d["user"] == "newdesk" && d["role"] == "front_desk"),
        "{added:?}"
    );
    by_admin("access.key_added");
    by_admin("access.key_revoked");
    let logins: Vec<String> = audited(&gw, "access.login")
        .into_iter()
        .map(|(a, _)| a)
        .collect();
    assert_eq!(logins, ["staff:boss", "staff:newdesk"]);
}

/// A system calling the API over HTTPS with a key the CLI made.
struct System {
    agent: ureq::Agent,
    base: String,
    key: String,
}

impl System {
    fn new(gw: &Gateway, scope: &str) -> System {
        let out = gw.cli(&["key", "add", "ehr-tool", "--scope", scope]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let key = text
            .lines()
            .find_map(|l| l.strip_prefix("key (shown once; give it to the client):"))
            .unwrap_or_else(|| panic!("a key in {text}"))
            .trim()
            .to_string();
        let der = certificate(&gw.dir.join("data/web-cert.pem"));
        let agent = trusting(&der);
        System {
            agent,
            base: format!("https://127.0.0.1:{}", gw.web),
            key: format!("Bearer {key}"),
        }
    }

    fn get(&self, path: &str) -> Value {
        self.agent
            .get(format!("{}{path}", self.base))
            .header("authorization", &self.key)
            .call()
            .expect("GET")
            .body_mut()
            .read_json()
            .unwrap_or(Value::Null)
    }

    fn post(&self, path: &str, body: &Value) -> u16 {
        self.agent
            .post(format!("{}{path}", self.base))
            .header("authorization", &self.key)
            .send_json(body)
            .expect("POST")
            .status()
            .as_u16()
    }
}

#[test]
fn clinical_staff_compare_a_conflicts_values_in_the_browser_and_the_front_desk_cannot() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = FhirServer::start(dir.path(), &[]);
    let jane = server.create_patient("M1", "Doe", "Jane", "1980-02-03");
    let id = jane["id"].as_str().expect("id").to_string();
    let fhir = format!(
        "[connectors.fhir]\nbase_url = \"{}\"\nidentifier_system = \"{MRN}\"\npoll_interval_s = 300\n\
         lookup_timeout_ms = 2000\nrequest_timeout_ms = 2000\nconnect_timeout_ms = 500\n\n\
         [destinations.ehr-fhir]\nbackoff_initial_ms = 100\nbackoff_max_ms = 400\nmax_attempts = 1000\n",
        server.base()
    );
    let gw = gateway_with(dir.path(), &fhir);
    let desk = add_user(&gw, "desk", "front_desk");
    let nurse = add_user(&gw, "nurse", "clinical");

    // A conflict: the patient changed in the EHR and here since the gateway cached it.
    let system = System::new(&gw, "admin");
    wait_for("the start-up poll", Duration::from_secs(20), || {
        system.get("/api/v1/fhir/status")["last_poll_at"].as_i64()
    });
    let check_in = json!({ "patient_ref": "M1" });
    assert_eq!(
        system.post("/api/v1/queues/general/check-in", &check_in),
        201
    );
    let mut theirs = jane.clone();
    theirs["telecom"] = json!([{ "system": "phone", "value": "555-0111" }]);
    server.call("PUT", &format!("/Patient/{id}"), Some(theirs));
    let ours = json!({ "fields": { "phone": "555-0222" } });
    let edit = format!("/api/v1/fhir/patients/{id}/demographics");
    assert_eq!(system.post(&edit, &ours), 202);
    let conflict = wait_for("the conflict", Duration::from_secs(30), || {
        let list = system.get("/api/v1/fhir/conflicts");
        list.as_array()
            .and_then(|l| l.first())
            .map(|c| c["id"].clone())
    });
    let compare = format!("/fhir/conflicts/{conflict}");

    browse(
        &gw,
        &[
            nurse.login(),
            json!({ "path": "/" }),
            json!({ "see": "EHR conflicts to resolve" }),
            json!({ "not_see": "555-0" }),
            json!({ "element": format!("a[href='{compare}']") }),
            json!({ "open": compare }),
            json!({ "see": "555-0222" }),
            json!({ "see": "555-0111" }),
            json!({ "open": "/" }),
            json!({ "click": "Log out" }),
            json!({ "path": "/login" }),
            desk.login(),
            json!({ "path": "/" }),
            json!({ "not_see": "EHR conflicts" }),
            json!({ "open": compare }),
            json!({ "title": "not for your role" }),
            json!({ "not_see": "555-0" }),
        ],
    );

    let views: Vec<(String, Value)> = audited(&gw, "access.patient_viewed")
        .into_iter()
        .filter(|(who, _)| who.starts_with("staff:"))
        .collect();
    assert_eq!(
        views,
        [(
            "staff:nurse".to_string(),
            json!({ "role": "clinical", "patients": [id], "purpose": "operations" })
        )],
        "the nurse's one look, and nothing for the front desk"
    );
}

#[test]
fn a_nurse_enrols_a_passkey_and_logs_in_with_password_and_passkey() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Chromium refuses WebAuthn on a page whose certificate it does not trust, and trusts
    // http://localhost as a secure context: the passkey's origin is that one.
    let mut gw = Gateway::new(dir.path(), "[access]\nenabled = true\n");
    gw.start();
    let nurse = add_user(&gw, "nurse", "clinical");
    let fill = |field: &str, value: &str| json!({ "fill": { "form": "/login", "field": field, "value": value } });

    browse_at(
        &format!("http://localhost:{}", gw.web),
        &[
            json!({ "virtual_authenticator": true }),
            nurse.login(),
            json!({ "path": "/" }),
            json!({ "press": "Add a passkey" }),
            json!({ "wait_see": "Passkey added" }),
            json!({ "click": "Log out" }),
            json!({ "path": "/login" }),
            fill("name", "nurse"),
            fill("password", "not-the-password"),
            json!({ "press": "Log in with a passkey" }),
            json!({ "wait_see": "not accepted" }),
            fill("password", &nurse.password),
            json!({ "press": "Log in with a passkey" }),
            json!({ "path": "/" }),
            json!({ "see": "nurse (clinical)" }),
        ],
    );

    assert_eq!(audited(&gw, "access.passkey_added").len(), 1);
    let logins = audited(&gw, "access.login");
    let factors: Vec<Value> = logins.iter().map(|(_, d)| d["factor"].clone()).collect();
    assert_eq!(factors, [Value::Null, json!("passkey")], "{logins:?}");
    let refused = audited(&gw, "access.login_refused");
    assert!(
        refused
            .iter()
            .any(|(a, d)| a == "staff:nurse" && d["reason"] == "bad_password"),
        "{refused:?}"
    );
}
