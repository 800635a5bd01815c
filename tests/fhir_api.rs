//! The FHIR R4 API against real peers: a SMART backend client (tests/peers/fhir_client.py)
//! signs its own private_key_jwt assertions and reads through the Python `fhirclient` library,
//! while the patients come from the FHIR test server through the gateway's FHIR connector.

mod common;

use common::fhir_server::FhirServer;
use common::*;
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

/// Runs the client script; its JSON answer.
fn client(args: &[&str]) -> Value {
    let out = peer_script("fhir_client.py")
        .args(args)
        .output()
        .expect("python3 (scripts/test-deps.sh)");
    assert!(
        out.status.success(),
        "fhir_client.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON from fhir_client.py")
}

fn cli_ok(gw: &Gateway, args: &[&str]) -> String {
    let out = gw.cli(args);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{args:?}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// A GET with a bearer token: status, content type and body.
fn get(gw: &Gateway, path: &str, token: &str) -> (u16, String, Value) {
    let mut r = agent()
        .get(gw.url(path))
        .header("authorization", format!("Bearer {token}"))
        .call()
        .expect("GET");
    let kind = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let status = r.status().as_u16();
    (
        status,
        kind,
        r.body_mut().read_json().unwrap_or(Value::Null),
    )
}

/// The audit, newest first, as (action, actor, detail), read with an admin's key.
fn audited(gw: &Gateway, admin: &str) -> Vec<Audited> {
    let (status, _, rows) = get(gw, "/api/v1/audit?limit=1000", admin);
    assert_eq!(status, 200, "{rows}");
    let text = |v: &Value| v.as_str().unwrap_or("").to_string();
    rows.as_array()
        .expect("audit")
        .iter()
        .map(|r| (text(&r["action"]), text(&r["actor"]), text(&r["detail"])))
        .collect()
}

/// Adds an API key with the CLI; the key as printed.
fn add_key(gw: &Gateway, name: &str, scope: &str) -> String {
    let text = cli_ok(gw, &["key", "add", name, "--scope", scope]);
    text.lines()
        .find_map(|l| l.strip_prefix("key (shown once; give it to the client):"))
        .expect("a key")
        .trim()
        .to_string()
}

fn key_path(dir: &Path, name: &str, ext: &str) -> String {
    dir.join(format!("{name}.{ext}"))
        .to_string_lossy()
        .to_string()
}

#[test]
fn a_smart_backend_client_reads_and_pages_the_queue_as_fhir_within_its_scopes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = FhirServer::start(dir.path(), &[]);
    let jane = server.create_patient("M1", "Doe", "Jane", "1980-02-03");
    server.create_patient("M2", "Roe", "Rita", "1975-06-07");
    let jane_id = jane["id"].as_str().expect("an id").to_string();
    let extra = format!(
        "[access]\nenabled = true\ntoken_lifetime_secs = 10\n\n\
         [connectors.fhir]\nbase_url = \"{}\"\nidentifier_system = \"{}\"\nlookup_timeout_ms = 2000\n\
         request_timeout_ms = 2000\nconnect_timeout_ms = 500\n",
        server.base(),
        common::fhir_server::MRN
    );
    let mut gw = Gateway::new(dir.path(), &extra);
    gw.start();
    let base = gw.url("");
    let base = base.trim_end_matches('/');

    // Three visits of Jane and one of Rita, checked in by the front desk's key.
    let desk = add_key(&gw, "desk", "front_desk");
    let admin = add_key(&gw, "auditor", "admin");
    for mrn in ["M1", "M1", "M2", "M1"] {
        let r = agent()
            .post(gw.url("/api/v1/queues/general/check-in"))
            .header("authorization", format!("Bearer {desk}"))
            .send_json(json!({ "patient_ref": mrn }))
            .expect("check-in");
        assert_eq!(r.status().as_u16(), 201);
    }

    // Two clients: an EHR with a JWK set (ES384), billing with a PEM key (RS384).
    let d = dir.path();
    let ehr = key_path(d, "ehr", "key");
    let (ehr_prefix, billing_prefix, rogue_prefix) =
        (d.join("ehr"), d.join("billing"), d.join("rogue"));
    for (prefix, alg) in [
        (&ehr_prefix, "ES384"),
        (&billing_prefix, "RS384"),
        (&rogue_prefix, "ES384"),
    ] {
        let out = prefix.to_string_lossy().to_string();
        client(&["keygen", "--alg", alg, "--kid", "k1", "--out", &out]);
    }
    let jwks = key_path(d, "ehr", "jwks");
    let scope = "system/Encounter.rs system/Patient.rs system/Task.rs system/AuditEvent.rs";
    cli_ok(
        &gw,
        &["client", "add", "ehr", "--jwks", &jwks, "--scope", scope],
    );
    let billing_pub = key_path(d, "billing", "pub");
    let billing_scope = "system/Appointment.rs";
    cli_ok(
        &gw,
        &[
            "client",
            "add",
            "billing",
            "--public-key",
            &billing_pub,
            "--scope",
            billing_scope,
        ],
    );
    let listed = cli_ok(&gw, &["client", "list"]);
    assert!(
        listed.contains("ehr") && listed.contains("billing"),
        "{listed}"
    );

    // The EHR's session through fhirclient: metadata, the paged search, reads.
    let s = client(&[
        "session",
        "--base",
        base,
        "--client",
        "ehr",
        "--key",
        &ehr,
        "--alg",
        "ES384",
        "--kid",
        "k1",
        "--scope",
        "system/Encounter.rs system/Patient.read",
        "--patient",
        &jane_id,
    ]);
    assert_eq!(s["token"]["status"], 200, "{s}");
    assert_eq!(
        s["token"]["body"]["scope"],
        "system/Encounter.rs system/Patient.rs"
    );
    assert_eq!(s["fhir_version"], "4.0.1");
    assert_eq!(
        s["resources"],
        json!([
            "Encounter",
            "Appointment",
            "Patient",
            "Flag",
            "Task",
            "AuditEvent"
        ])
    );
    assert_eq!(s["token_uri"], json!([format!("{base}/oauth/token")]));
    let pages = s["pages"].as_array().expect("pages");
    assert_eq!(pages.len(), 2, "three of Jane's visits, two a page: {s}");
    assert_eq!(
        pages
            .iter()
            .map(|p| p.as_array().map_or(0, Vec::len))
            .sum::<usize>(),
        3
    );
    assert_eq!(
        s["encounter"]["subject"]["reference"],
        format!("Patient/{jane_id}")
    );
    assert_eq!(s["encounter"]["status"], "arrived");
    assert_eq!(s["patient_family"], "Doe");
    assert_eq!(s["patient_search"], json!([jane_id]));

    // Every read and search was audited as the client's access to Jane's record.
    let audit = audited(&gw, &admin);
    let access: Vec<&Audited> = audit
        .iter()
        .filter(|(action, actor, _)| action.starts_with("fhir.") && actor == "client:ehr")
        .collect();
    assert!(access.len() >= 5, "{access:?}");
    assert!(
        access
            .iter()
            .all(|(_, _, detail)| detail.contains(&format!("Patient/{jane_id}"))),
        "{access:?}"
    );
    assert!(
        audit
            .iter()
            .any(|(a, who, _)| a == "access.token_issued" && who == "client:ehr")
    );

    // A token for the wrong resource type: 403 with an OperationOutcome.
    let t = client(&[
        "token",
        "--base",
        base,
        "--client",
        "billing",
        "--key",
        &key_path(d, "billing", "key"),
        "--alg",
        "RS384",
        "--scope",
        "system/Appointment.rs system/Encounter.rs",
    ]);
    assert_eq!(t["status"], 200, "{t}");
    assert_eq!(
        t["body"]["scope"], "system/Appointment.rs",
        "narrowed to the registration"
    );
    let billing_token = t["body"]["access_token"]
        .as_str()
        .expect("token")
        .to_string();
    let (status, _, _) = get(&gw, "/fhir/R4/AuditEvent?_count=5", &billing_token);
    assert_eq!(status, 403, "AuditEvent needs its own scope");
    let (status, kind, body) = get(&gw, "/fhir/R4/Encounter", &billing_token);
    assert_eq!(
        (status, kind.as_str()),
        (403, "application/fhir+json"),
        "{body}"
    );
    assert_eq!(body["resourceType"], "OperationOutcome");
    assert_eq!(body["issue"][0]["code"], "forbidden");
    let (status, _, body) = get(&gw, "/fhir/R4/Appointment", &billing_token);
    assert_eq!(
        (status, body["resourceType"].as_str()),
        (200, Some("Bundle")),
        "{body}"
    );
    // Nor does a SMART token open the staff API, or an API key the FHIR API.
    assert_eq!(get(&gw, "/api/v1/queues", &billing_token).0, 401);
    let (status, _, body) = get(&gw, "/fhir/R4/Encounter", &desk);
    assert_eq!(
        (status, body["resourceType"].as_str()),
        (401, Some("OperationOutcome"))
    );
    // Unknown parameters and bad values are refused with an OperationOutcome.
    let (status, _, body) = get(&gw, "/fhir/R4/Appointment?name=x", &billing_token);
    assert_eq!(
        (status, body["issue"][0]["code"].as_str()),
        (400, Some("not-supported"))
    );
    let (status, _, _) = get(&gw, "/fhir/R4/Appointment?date=someday", &billing_token);
    assert_eq!(status, 400);
    let r = agent()
        .get(gw.url("/fhir/R4/Appointment"))
        .header("authorization", format!("Bearer {billing_token}"))
        .header("accept", "application/fhir+xml")
        .call()
        .expect("GET");
    assert_eq!(r.status().as_u16(), 406, "JSON only");
    let mut r = agent()
        .post(gw.url("/fhir/R4/Appointment"))
        .header("authorization", format!("Bearer {billing_token}"))
        .header("content-type", "application/fhir+json")
        .send("{}")
        .expect("POST");
    let body: Value = r.body_mut().read_json().unwrap_or(Value::Null);
    assert_eq!(
        (r.status().as_u16(), body["resourceType"].as_str()),
        (405, Some("OperationOutcome"))
    );
    let (status, _, body) = get(&gw, "/fhir/R4/Appointment/nothing-here", &billing_token);
    assert_eq!(
        (status, body["issue"][0]["code"].as_str()),
        (404, Some("not-found"))
    );

    // Refused assertions: expired, replayed, forged, of an unknown client.
    let token = |extra: &[&str]| {
        let mut args = vec![
            "token",
            "--base",
            base,
            "--client",
            "ehr",
            "--key",
            &ehr,
            "--alg",
            "ES384",
            "--kid",
            "k1",
            "--scope",
            "system/Encounter.rs",
        ];
        args.extend_from_slice(extra);
        client(&args)
    };
    let invalid_client = json!({ "status": 401, "body": { "error": "invalid_client" } });
    assert_eq!(token(&["--exp-secs", "-10"]), invalid_client, "expired");
    assert_eq!(token(&["--exp-secs", "900"]), invalid_client, "too long");
    assert_eq!(token(&["--jti", "once"])["status"], 200);
    assert_eq!(token(&["--jti", "once"]), invalid_client, "replayed");
    let rogue = key_path(d, "rogue", "key");
    assert_eq!(token(&["--key", &rogue]), invalid_client, "forged");
    assert_eq!(token(&["--client", "nobody"]), invalid_client, "unknown");
    assert_eq!(
        token(&["--aud", "https://elsewhere/token"]),
        invalid_client,
        "audience"
    );
    let no_scope = token(&["--scope", "system/Flag.rs"]);
    assert_eq!(no_scope["body"]["error"], "invalid_scope", "{no_scope}");
    let reasons: Vec<String> = audited(&gw, &admin)
        .into_iter()
        .filter(|(action, _, _)| action == "access.token_refused")
        .map(|(_, _, detail)| {
            let d: Value = serde_json::from_str(&detail).expect("detail");
            d["reason"].as_str().unwrap_or("").to_string()
        })
        .collect();
    for reason in [
        "assertion_expired",
        "assertion_too_long",
        "assertion_replayed",
        "assertion_forged",
        "client_unknown",
        "assertion_claims",
        "scope",
    ] {
        assert!(
            reasons.iter().any(|r| r == reason),
            "{reason} in {reasons:?}"
        );
    }

    // The audit as AuditEvents, with the chain and the patients named.
    let t = token(&["--scope", "system/AuditEvent.rs system/Task.rs"]);
    let audit_token = t["body"]["access_token"]
        .as_str()
        .expect("token")
        .to_string();
    let (status, _, page) = get(
        &gw,
        "/fhir/R4/AuditEvent?_count=500&date=ge2020",
        &audit_token,
    );
    assert_eq!(status, 200, "{page}");
    let (status, _, tasks) = get(&gw, "/fhir/R4/Task?status=requested", &audit_token);
    assert_eq!((status, tasks["total"].as_u64()), (200, Some(0)), "{tasks}");
    let events = page["entry"].as_array().expect("entries");
    assert_eq!(page["total"].as_u64(), Some(events.len() as u64));
    let search = events
        .iter()
        .map(|e| &e["resource"])
        .find(|r| r["subtype"][0]["code"] == "search-type")
        .expect("a search audited");
    assert_eq!(search["agent"][0]["who"]["display"], "client:ehr");
    assert_eq!(
        search["entity"][0]["what"]["reference"],
        format!("Patient/{jane_id}")
    );
    assert_eq!(search["extension"][0]["extension"][0]["url"], "hash");

    // Tokens are short-lived: a token is refused once its lifetime has passed.
    wait_for("the token to expire", Duration::from_secs(40), || {
        let (status, _, body) = get(&gw, "/fhir/R4/Appointment", &billing_token);
        (status == 401 && body["resourceType"] == "OperationOutcome").then_some(())
    });
    // A revoked client gets no more tokens.
    cli_ok(&gw, &["client", "revoke", "ehr"]);
    assert_eq!(token(&[]), invalid_client, "revoked");
}

#[test]
fn smart_configuration_and_metadata_are_public_and_tell_the_token_endpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut gw = Gateway::new(dir.path(), "[access]\nenabled = true\n");
    gw.start();
    let config = gw.get_json("/.well-known/smart-configuration");
    let token_url = gw.url("/oauth/token");
    assert_eq!(config["token_endpoint"], token_url.as_str());
    assert_eq!(
        config["token_endpoint_auth_methods_supported"],
        json!(["private_key_jwt"])
    );
    let meta = gw.get_json("/fhir/R4/metadata");
    assert_eq!(meta["resourceType"], "CapabilityStatement");
    let encounter = &meta["rest"][0]["resource"][0];
    assert_eq!(encounter["type"], "Encounter");
    let params: Vec<&str> = encounter["searchParam"]
        .as_array()
        .expect("params")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(params, ["_id", "patient", "date", "status", "_lastUpdated"]);
}

#[test]
fn a_token_lifetime_out_of_range_names_its_line_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gateway.toml");
    let text = "[gateway]\nfacility_id = \"c\"\n[access]\ntoken_lifetime_secs = 0\n";
    std::fs::write(&path, text).expect("config");
    let (code, stderr) = check_config(&path);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(":4: access.token_lifetime_secs: must be 1 to 3600"),
        "{stderr}"
    );
}
