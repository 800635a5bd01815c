//! The FHIR R4 connector against a real FHIR server (@medplum/fhir-router in node, from
//! tests/peers/fhir, installed by scripts/test-deps.sh): lookups at check-in, the offline cache,
//! conditional updates, conflicts resolved through the API, echo suppression and auth.

mod common;

use common::fhir_server::{FhirServer, MRN};
use common::*;
use serde_json::{Value, json};
use std::time::Duration;

const TAG: &str = "urn:clinic-gateway:write";

fn fhir_table(server: &FhirServer, extra: &str) -> String {
    format!(
        "[connectors.fhir]\nbase_url = \"{}\"\nidentifier_system = \"{MRN}\"\nlookup_timeout_ms = 2000\nrequest_timeout_ms = 2000\nconnect_timeout_ms = 500\n{extra}\n\n\
         [destinations.ehr-fhir]\nbackoff_initial_ms = 100\nbackoff_max_ms = 400\nmax_attempts = 1000\n",
        server.base()
    )
}

fn check_in(gw: &Gateway, body: Value) -> Value {
    let (status, v) = post(&gw.url("/api/v1/queues/general/check-in"), &body);
    assert_eq!(status, 201, "{v}");
    v["entry"].clone()
}

fn fhir_actor(gw: &Gateway) -> Value {
    let actors = gw.get_json("/api/v1/actors");
    actors
        .as_array()
        .expect("actors")
        .iter()
        .find(|a| a["name"] == "fhir")
        .cloned()
        .unwrap_or(Value::Null)
}

#[test]
fn check_in_finds_the_patient_by_identifier_or_name_and_uses_the_cache_when_the_ehr_is_down() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = FhirServer::start(dir.path(), &[("FHIR_BEARER_TOKEN", "s3cret")]);
    let jane = server.create_patient("M1", "Doe", "Jane", "1980-02-03");
    let _other = server.create_patient("M2", "Roe", "Rita", "1975-06-07");
    let nine = server.create_patient("M9", "Poe", "Nina", "1990-09-09");
    std::fs::write(dir.path().join("token"), "s3cret\n").expect("token");
    let mut gw = Gateway::new(
        dir.path(),
        &fhir_table(
            &server,
            "poll_interval_s = 1\n[connectors.fhir.auth]\nkind = \"bearer\"\ntoken_file = \"token\"",
        ),
    );
    gw.start();

    // By identifier: the server refuses requests without the bearer token, so an answer from
    // the EHR shows the header was sent.
    let entry = check_in(&gw, json!({ "patient_ref": "M1" }));
    let d = &entry["demographics"];
    assert_eq!(d["source"], "ehr", "{entry}");
    assert_eq!(d["patient_id"], jane["id"]);
    assert_eq!(d["family"], "Doe");
    assert_eq!(d["birth_date"], "1980-02-03");
    // By name and birth date (any case).
    let entry = check_in(
        &gw,
        json!({ "patient": { "family": "roe", "birth_date": "1975-06-07" } }),
    );
    assert_eq!(entry["demographics"]["given"], "Rita", "{entry}");
    assert_eq!(entry["demographics"]["identifier"], "M2");
    // An identifier the EHR does not know, with a name: found by the name.
    let entry = check_in(
        &gw,
        json!({ "patient_ref": "OLD-7", "patient": { "family": "Doe", "given": "Jane", "birth_date": "1980-02-03" } }),
    );
    assert_eq!(entry["demographics"]["identifier"], "M1", "{entry}");
    // Unknown to the EHR: queued all the same.
    let entry = check_in(&gw, json!({ "patient_ref": "M404" }));
    assert!(entry["demographics"].is_null(), "{entry}");
    assert_eq!(server.stats()["unauthorized"], 0);
    wait_for(
        "the connector to be healthy",
        Duration::from_secs(20),
        || (fhir_actor(&gw)["state"] == "healthy").then_some(()),
    );

    server.kill();
    let entry = check_in(&gw, json!({ "patient_ref": "M1" }));
    assert_eq!(entry["demographics"]["source"], "cache", "{entry}");
    assert_eq!(entry["demographics"]["family"], "Doe");
    let entry = check_in(
        &gw,
        json!({ "patient": { "family": "ROE", "birth_date": "1975-06-07" } }),
    );
    assert_eq!(entry["demographics"]["source"], "cache", "{entry}");
    let entry = check_in(&gw, json!({ "patient_ref": "M9" }));
    assert!(entry["demographics"].is_null());
    assert!(
        entry["ticket"].is_string(),
        "queued without the EHR: {entry}"
    );
    let actor = wait_for("the connector to degrade", Duration::from_secs(20), || {
        let a = fhir_actor(&gw);
        (a["state"] == "degraded").then_some(a)
    });
    assert!(
        actor["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("cannot reach the EHR"),
        "{actor}"
    );
    let status = gw.get_json("/api/v1/fhir/status");
    assert_eq!(status["lookups_cache"], 2, "{status}");

    // The EHR is back: the entry checked in without it is linked to its patient.
    let offline = entry["id"].as_i64().expect("id");
    server.restart();
    let linked = wait_for("the offline entry linked", Duration::from_secs(20), || {
        let open = gw.get_json("/api/v1/queues?queue=general");
        let e = open
            .as_array()?
            .iter()
            .find(|e| e["id"] == offline)?
            .clone();
        e["demographics"].is_object().then_some(e)
    });
    assert_eq!(linked["demographics"]["patient_id"], nine["id"]);
    assert_eq!(linked["demographics"]["source"], "ehr");
    let status = gw.get_json("/api/v1/fhir/status");
    assert_eq!(
        status["linked"], 1,
        "only M9; M404 is unknown to the EHR: {status}"
    );
}

#[test]
fn local_changes_wait_for_the_ehr_then_go_as_put_with_if_match_and_their_echo_is_ignored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = FhirServer::start(dir.path(), &[]);
    let jane = server.create_patient("M1", "Doe", "Jane", "1980-02-03");
    let id = jane["id"].as_str().expect("id").to_string();
    let v1 = jane["meta"]["versionId"]
        .as_str()
        .expect("version")
        .to_string();
    let mut gw = Gateway::new(dir.path(), &fhir_table(&server, "poll_interval_s = 1"));
    gw.start();
    check_in(&gw, json!({ "patient_ref": "M1" }));

    server.kill();
    let edit = |fields: Value| {
        post(
            &gw.url(&format!("/api/v1/fhir/patients/{id}/demographics")),
            &json!({ "fields": fields, "by": "desk-1" }),
        )
    };
    let (status, v) = edit(json!({ "phone": "+41 44 000 00 00" }));
    assert_eq!(status, 202, "{v}");
    assert_eq!(v["update_queued"], true);
    // The same change again changes nothing and sends nothing.
    let (status, v) = edit(json!({ "phone": "+41 44 000 00 00" }));
    assert_eq!((status, &v["update_queued"]), (202, &json!(false)), "{v}");
    let (status, v) = edit(json!({ "birth_date": "03.02.1980" }));
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap_or_default()
            .contains("birth_date")
    );
    wait_for("a failed delivery", Duration::from_secs(20), || {
        let b = gw.get_json("/api/v1/backlog");
        (b["destinations"]["ehr-fhir"]["pending"] == 1).then_some(())
    });

    server.restart();
    let stored = wait_for(
        "the update to reach the EHR",
        Duration::from_secs(30),
        || {
            let p = server.call("GET", &format!("/Patient/{id}"), None);
            (p["telecom"][0]["value"] == "+41 44 000 00 00").then_some(p)
        },
    );
    assert_eq!(
        stored["extension"][0]["valueString"], "kept",
        "nothing lost: {stored}"
    );
    assert_eq!(stored["name"][0]["use"], "official");
    assert!(
        stored["meta"]["tag"]
            .as_array()
            .expect("tags")
            .iter()
            .any(|t| t["system"] == TAG),
        "{stored}"
    );
    let put = format!("PUT /fhir/R4/Patient/{id} if-match=W/\"{v1}\" -> 200");
    assert!(
        server.log().iter().any(|l| l.contains(&put)),
        "{put} not in {:#?}",
        server.log()
    );
    // The cache holds the stored version; the poll sees our own write and ignores it.
    wait_for("the echo to be ignored", Duration::from_secs(20), || {
        let s = gw.get_json("/api/v1/fhir/status");
        (s["echoes_ignored"].as_u64() >= Some(1)).then_some(())
    });
    let cached = gw.get_json(&format!("/api/v1/fhir/patients/{id}"));
    assert_eq!(
        cached["version_id"], stored["meta"]["versionId"],
        "{cached}"
    );
    assert!(cached["local"].is_null(), "{cached}");
    let status = gw.get_json("/api/v1/fhir/status");
    assert_eq!(status["remote_changes"], 0, "{status}");
    assert_eq!(status["updates_sent"], 1, "{status}");

    // A change made in the EHR by someone else is picked up by the poll.
    let mut theirs = stored.clone();
    theirs["name"][0]["family"] = json!("Doe-Smith");
    theirs["meta"] = json!({});
    server.call("PUT", &format!("/Patient/{id}"), Some(theirs));
    wait_for(
        "the remote change in the cache",
        Duration::from_secs(20),
        || {
            let c = gw.get_json(&format!("/api/v1/fhir/patients/{id}"));
            (c["synced"]["name"][0]["family"] == "Doe-Smith").then_some(())
        },
    );
    let audit = audit_log(&gw);
    assert!(
        audit
            .iter()
            .any(|(a, by, _)| a == "fhir.local_change" && by == "staff:desk-1"),
        "{audit:?}"
    );
}

#[test]
fn a_change_on_both_sides_becomes_a_conflict_that_staff_resolve_per_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = FhirServer::start(dir.path(), &[]);
    let jane = server.create_patient("M1", "Doe", "Jane", "1980-02-03");
    let id = jane["id"].as_str().expect("id").to_string();
    // Polls only at start: the local change below is based on the version the lookup cached.
    let mut gw = Gateway::new(dir.path(), &fhir_table(&server, "poll_interval_s = 300"));
    gw.start();
    wait_for("the start-up poll", Duration::from_secs(20), || {
        let s = gw.get_json("/api/v1/fhir/status");
        s["last_poll_at"].as_i64()
    });
    check_in(&gw, json!({ "patient_ref": "M1" }));

    let mut theirs = jane.clone();
    theirs["telecom"] = json!([{ "system": "phone", "value": "111" }]);
    server.call("PUT", &format!("/Patient/{id}"), Some(theirs));
    let (status, v) = post(
        &gw.url(&format!("/api/v1/fhir/patients/{id}/demographics")),
        &json!({ "fields": { "phone": "222", "given": "Janet" } }),
    );
    assert_eq!(status, 202, "{v}");

    // The update meets a 412: both versions are kept, nothing is overwritten.
    let conflict = wait_for("the conflict", Duration::from_secs(30), || {
        let list = gw.get_json("/api/v1/fhir/conflicts");
        list.as_array().and_then(|l| l.first().cloned())
    });
    assert_eq!(conflict["patient_id"], id.as_str());
    assert_eq!(conflict["fields"], json!(["given", "phone"]), "{conflict}");
    assert_eq!(conflict["local"]["telecom"][0]["value"], "222");
    assert_eq!(conflict["remote"]["telecom"][0]["value"], "111");
    let ehr = server.call("GET", &format!("/Patient/{id}"), None);
    assert_eq!(
        ehr["telecom"][0]["value"], "111",
        "the EHR kept its version"
    );
    assert!(server.log().iter().any(|l| l.contains("-> 412")));
    // Further local changes wait for the resolution.
    let (status, _) = post(
        &gw.url(&format!("/api/v1/fhir/patients/{id}/demographics")),
        &json!({ "fields": { "phone": "333" } }),
    );
    assert_eq!(status, 409);

    let resolve = format!("/api/v1/fhir/conflicts/{}/resolve", conflict["id"]);
    let (status, v) = post(
        &gw.url(&resolve),
        &json!({ "fields": { "phone": "remote" } }),
    );
    assert_eq!(status, 409, "every conflicting field needs a choice: {v}");
    assert!(v["error"].as_str().unwrap_or_default().contains("given"));
    // Staff see the conflict on the status page (fields, never values) and resolve it there.
    let page = gw.get_text("/");
    assert!(page.contains("EHR conflicts to resolve"), "{page}");
    assert!(page.contains("name=\"given\" value=local"), "{page}");
    assert!(!page.contains("Janet") && !page.contains("Doe"), "{page}");
    let id_text = conflict["id"].to_string();
    let answer = ureq::Agent::config_builder()
        .max_redirects(0)
        .http_status_as_error(false)
        .build()
        .new_agent()
        .post(&gw.url("/fhir/conflicts/resolve"))
        .send_form([
            ("id", id_text.as_str()),
            ("phone", "remote"),
            ("given", "local"),
        ])
        .expect("form");
    assert_eq!(answer.status().as_u16(), 303);
    let merged = wait_for("the resolution in the EHR", Duration::from_secs(30), || {
        let p = server.call("GET", &format!("/Patient/{id}"), None);
        (p["name"][0]["given"] == json!(["Janet"])).then_some(p)
    });
    assert_eq!(merged["telecom"][0]["value"], "111");
    assert_eq!(merged["extension"][0]["valueString"], "kept");
    assert_eq!(gw.get_json("/api/v1/fhir/conflicts"), json!([]));
    let all = gw.get_json("/api/v1/fhir/conflicts?all=true");
    assert_eq!(
        all[0]["resolution"],
        json!({ "given": "local", "phone": "remote" })
    );
    let audit = audit_log(&gw);
    assert!(
        audit
            .iter()
            .any(|(a, by, _)| a == "fhir.conflict" && by == "fhir"),
        "{audit:?}"
    );
    assert!(
        audit
            .iter()
            .any(|(a, by, _)| a == "fhir.conflict_resolved" && by.starts_with("web:127.0.0.1")),
        "{audit:?}"
    );
}

#[test]
fn oauth_tokens_are_renewed_before_expiry_and_refused_credentials_pause_the_connector() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = FhirServer::start(
        dir.path(),
        &[
            ("FHIR_CLIENT_ID", "gateway"),
            ("FHIR_CLIENT_SECRET", "right"),
            ("FHIR_TOKEN_TTL_S", "3"),
        ],
    );
    std::fs::write(dir.path().join("secret"), "right").expect("secret");
    let auth = |secret: &str| {
        format!(
            "poll_interval_s = 1\ncredential_retry_s = 1\n[connectors.fhir.auth]\nkind = \"client_credentials\"\n\
             token_url = \"http://127.0.0.1:{}/oauth2/token\"\nclient_id = \"gateway\"\n\
             client_secret_file = \"{secret}\"\nrefresh_margin_s = 1",
            server.port
        )
    };
    let mut gw = Gateway::new(dir.path(), &fhir_table(&server, &auth("secret")));
    gw.start();
    // Tokens live 3 s and are renewed 1 s early: polls every second never meet a 401.
    wait_for("three tokens", Duration::from_secs(30), || {
        (server.stats()["token_requests"].as_u64() >= Some(3)).then_some(())
    });
    assert_eq!(server.stats()["unauthorized"], 0);
    assert_eq!(fhir_actor(&gw)["state"], "healthy");
    drop(gw);

    let dir2 = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir2.path().join("secret"), "wrong").expect("secret");
    let mut gw = Gateway::new(dir2.path(), &fhir_table(&server, &auth("secret")));
    gw.start();
    let actor = wait_for("the connector to degrade", Duration::from_secs(20), || {
        let a = fhir_actor(&gw);
        (a["state"] == "degraded").then_some(a)
    });
    assert!(
        actor["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("credentials"),
        "{actor}"
    );
    let status = gw.get_json("/api/v1/fhir/status");
    assert!(
        ["paused", "unreachable"].contains(&status["link"]["state"].as_str().unwrap_or("")),
        "{status}"
    );
    // The clinic keeps running.
    let entry = check_in(&gw, json!({ "patient_ref": "M1" }));
    assert!(entry["ticket"].is_string());
    // Staff and the cloud are told once, however often the connector retries.
    let tokens = server.stats()["token_requests"].as_u64().unwrap_or(0);
    wait_for(
        "two more tries with the refused secret",
        Duration::from_secs(20),
        || (server.stats()["token_requests"].as_u64()? >= tokens + 2).then_some(()),
    );
    let texts = notice_texts(&gw);
    assert_eq!(texts.len(), 1, "{texts:?}");
    assert!(
        texts[0].starts_with("The EHR refused the gateway's credentials"),
        "{texts:?}"
    );
    let alerts = journal_events(&gw, "fhir.credentials_refused");
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert!(
        !alerts[0].to_string().contains("wrong"),
        "no secret in the alert"
    );
}

#[test]
fn fhir_config_mistakes_name_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("fhir.toml");
    std::fs::write(
        &path,
        "[gateway]\nfacility_id = \"c\"\n[connectors.fhir]\nbase_url = \"ehr.local/fhir\"\nidentifier_system = \"urn:mrn\"\n\
         on_call = \"encounter\"\n[connectors.fhir.flags]\npriority = \"normal\"\npoll_interval_s = 300\n",
    )
    .expect("write");
    let (code, stderr) = check_config(&path);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains(":4: connectors.fhir.base_url: must be an http"),
        "{stderr}"
    );
    assert!(
        stderr.contains(":8: connectors.fhir.flags.priority: must be \"elevated\" or \"urgent\""),
        "{stderr}"
    );
    assert!(
        stderr.contains(":9: connectors.fhir.flags.poll_interval_s: must be 1 to 60"),
        "{stderr}"
    );
    std::fs::write(
        &path,
        "[gateway]\nfacility_id = \"c\"\n[connectors.fhir]\nbase_url = \"http://ehr\"\nidentifier_system = \"urn:mrn\"\non_call = \"chart\"\n",
    )
    .expect("write");
    let (code, stderr) = check_config(&path);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains(":6: connectors.fhir.on_call:"), "{stderr}");
    assert!(stderr.contains("encounter"), "{stderr}");
}

fn day(offset_days: u64) -> String {
    let at = std::time::SystemTime::now() + Duration::from_secs(offset_days * 86_400);
    humantime::format_rfc3339(at).to_string()[..10].to_string()
}

#[test]
fn todays_appointments_become_queue_entries_and_follow_cancellations_and_moves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = FhirServer::start(dir.path(), &[]);
    let jane = server.create_patient("M1", "Doe", "Jane", "1980-02-03");
    let patient = format!("Patient/{}", jane["id"].as_str().expect("id"));
    let appointment = |status: &str, start: String| {
        let end = start.replace(":00Z", ":15Z");
        server.call(
            "POST",
            "/Appointment",
            Some(json!({
                "resourceType": "Appointment", "status": status, "start": start, "end": end,
                "participant": [{ "actor": { "reference": patient }, "status": "accepted" }]
            })),
        )
    };
    let (today, tomorrow) = (day(0), day(1));
    let first = appointment("booked", format!("{today}T00:01:00Z"));
    let second = appointment("booked", format!("{today}T00:02:00Z"));
    appointment("cancelled", format!("{today}T00:03:00Z"));
    appointment("booked", format!("{tomorrow}T00:01:00Z"));
    // Not R4 (a booked appointment needs its end, app-3): refused whole, never queued.
    let invalid = server.call(
        "POST",
        "/Appointment",
        Some(json!({
            "resourceType": "Appointment", "status": "booked", "start": format!("{today}T00:04:00Z"),
            "participant": [{ "actor": { "reference": patient }, "status": "accepted" }]
        })),
    );
    let mut gw = Gateway::new(
        dir.path(),
        &fhir_table(
            &server,
            "[connectors.fhir.appointments]\nqueue = \"general\"\ncheck_in = \"booked\"\npoll_interval_s = 1",
        ),
    );
    gw.start();

    let open = |gw: &Gateway| -> Vec<Value> {
        gw.get_json("/api/v1/queues?queue=general")
            .as_array()
            .expect("entries")
            .clone()
    };
    let refs = |entries: &[Value]| -> Vec<String> {
        entries
            .iter()
            .filter_map(|e| e["appointment_ref"].as_str().map(str::to_string))
            .collect()
    };
    let reference = |a: &Value| format!("Appointment/{}", a["id"].as_str().expect("id"));
    let entries = wait_for("two appointment entries", Duration::from_secs(30), || {
        let e = open(&gw);
        (e.len() >= 2).then_some(e)
    });
    assert_eq!(refs(&entries), [reference(&first), reference(&second)]);
    let refused = gw.get_json("/api/v1/fhir/status")["refused"].as_u64();
    assert!(refused >= Some(1), "{refused:?}");
    let reason = audit_log(&gw)
        .into_iter()
        .find(|(a, _, _)| a == "fhir.refused")
        .map(|(_, _, detail)| detail)
        .expect("refusal audited");
    assert!(reason.contains(&reference(&invalid)), "{reason}");
    assert!(reason.contains("app-3"), "{reason}");
    assert_eq!(entries[0]["patient_ref"], "M1");
    assert_eq!(entries[0]["demographics"]["family"], "Doe");

    let mut cancelled = first.clone();
    cancelled["status"] = json!("cancelled");
    let path = format!("/Appointment/{}", first["id"].as_str().expect("id"));
    server.call("PUT", &path, Some(cancelled));
    let mut moved = second.clone();
    moved["start"] = json!(format!("{tomorrow}T00:02:00Z"));
    let path = format!("/Appointment/{}", second["id"].as_str().expect("id"));
    server.call("PUT", &path, Some(moved));
    wait_for("both entries closed", Duration::from_secs(30), || {
        open(&gw).is_empty().then_some(())
    });
    // Both patients are to be told: a cancellation, and a move with its new start.
    let told = journal_events(&gw, "patient.notification");
    let reasons: Vec<(&str, &Value)> = told
        .iter()
        .map(|n| (n["reason"].as_str().unwrap_or_default(), &n["new_start"]))
        .collect();
    assert_eq!(
        reasons,
        [
            ("appointment_cancelled", &Value::Null),
            (
                "appointment_rescheduled",
                &json!(format!("{tomorrow}T00:02:00Z"))
            )
        ]
    );
    assert_eq!(told[0]["appointment_ref"], reference(&first));
    assert_eq!(told[0]["patient_ref"], "M1");
    // Closed entries are not queued again by the next passes.
    let pass = |gw: &Gateway| gw.get_json("/api/v1/fhir/status")["last_appointments_at"].as_i64();
    let closed_at = pass(&gw);
    wait_for("two more passes", Duration::from_secs(30), || {
        let first = pass(&gw).filter(|t| Some(*t) > closed_at)?;
        wait_for("another pass", Duration::from_secs(30), || {
            pass(&gw).filter(|t| *t > first)
        });
        Some(())
    });
    assert!(open(&gw).is_empty());
}

#[test]
fn a_call_opens_the_encounter_a_room_starts_it_and_the_ehr_finishing_it_completes_the_entry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = FhirServer::start(dir.path(), &[]);
    let jane = server.create_patient("M1", "Doe", "Jane", "1980-02-03");
    server.create_patient("M2", "Roe", "Rick", "1975-06-07");
    let jane_id = jane["id"].as_str().expect("id").to_string();
    let mut gw = Gateway::new(
        dir.path(),
        &fhir_table(&server, "poll_interval_s = 1\non_call = \"encounter\""),
    );
    gw.start();
    let first = check_in(&gw, json!({ "patient_ref": "M1" }));
    let second = check_in(&gw, json!({ "patient_ref": "M2" }));
    assert_eq!(first["demographics"]["patient_id"], jane_id.as_str());
    let entry = first["id"].as_i64().expect("id");

    let (status, called) = post(
        &gw.url("/api/v1/queues/general/call-next"),
        &json!({ "room": "Exam 2" }),
    );
    assert_eq!(status, 200, "{called}");
    let search =
        format!("/Encounter?identifier=urn:clinic-gateway:queue-entry|test-clinic/{entry}");
    let encounter = |status: &str| {
        wait_for(
            &format!("the Encounter {status}"),
            Duration::from_secs(20),
            || {
                let found = server.call("GET", &search, None)["entry"].clone();
                let e = found.as_array()?.first()?["resource"].clone();
                (e["status"] == status).then_some(e)
            },
        )
    };
    let arrived = encounter("arrived");
    assert_eq!(
        arrived["subject"]["reference"],
        format!("Patient/{jane_id}")
    );
    assert_eq!(arrived["class"]["code"], "AMB");
    assert_eq!(arrived["location"][0]["location"]["display"], "Exam 2");
    assert_eq!(arrived["meta"]["tag"][0]["system"], TAG);

    let (status, v) = post(
        &gw.url(&format!("/api/v1/queue-entries/{entry}/assign-room")),
        &json!({ "room": "Exam 2" }),
    );
    assert_eq!(status, 200, "{v}");
    let started = encounter("in-progress");
    assert_eq!(started["id"], arrived["id"], "the same visit, moved on");
    assert_eq!(started["statusHistory"][0]["status"], "arrived");

    // The provider finishes the visit in the EHR.
    let mut finished = started.clone();
    finished["status"] = json!("finished");
    let path = format!("/Encounter/{}", started["id"].as_str().expect("id"));
    server.call("PUT", &path, Some(finished));
    wait_for("the entry done", Duration::from_secs(20), || {
        let open = gw.get_json("/api/v1/queues?queue=general");
        let still = open.as_array()?.iter().any(|e| e["id"] == entry);
        (!still).then_some(())
    });
    // The counter moves once the connector hears the close committed, a step after the queue.
    wait_for("the visit counted closed", Duration::from_secs(20), || {
        (gw.get_json("/api/v1/fhir/status")["visits_closed"] == 1).then_some(())
    });
    let prepared = journal_events(&gw, "queue.next_prepared");
    assert_eq!(prepared.len(), 1, "{prepared:?}");
    assert_eq!(prepared[0]["room"], "Exam 2");
    assert_eq!(prepared[0]["finished"]["id"], entry);
    assert_eq!(prepared[0]["next"]["ticket"], second["ticket"]);
    let status = gw.get_json("/api/v1/fhir/status");
    assert_eq!(status["encounters_sent"], 2, "{status}");
    assert_eq!(status["visits_closed"], 1, "{status}");

    // The second patient is called and leaves unseen: the EHR's visit is cancelled.
    let second_id = second["id"].as_i64().expect("id");
    let (status, _) = post(
        &gw.url("/api/v1/queues/general/call-next"),
        &json!({ "room": "Exam 2" }),
    );
    assert_eq!(status, 200);
    let (status, v) = post(
        &gw.url(&format!("/api/v1/queue-entries/{second_id}/left")),
        &json!({}),
    );
    assert_eq!(status, 200, "{v}");
    let search =
        format!("/Encounter?identifier=urn:clinic-gateway:queue-entry|test-clinic/{second_id}");
    wait_for(
        "the second visit cancelled",
        Duration::from_secs(20),
        || {
            let found = server.call("GET", &search, None)["entry"].clone();
            (found.as_array()?.first()?["resource"]["status"] == "cancelled").then_some(())
        },
    );
    // Our own cancellation, read back by the poll, changes nothing more.
    wait_passes(&gw, "last_poll_at", 2);
    assert_eq!(gw.get_json("/api/v1/fhir/status")["visits_closed"], 1);
}

#[test]
fn ehr_flags_raise_and_release_the_priority_of_the_flagged_patients_entries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = FhirServer::start(dir.path(), &[]);
    let jane = server.create_patient("M1", "Doe", "Jane", "1980-02-03");
    let rick = server.create_patient("M2", "Roe", "Rick", "1975-06-07");
    let flag = |patient: &Value, code: &str, text: &str| {
        server.call(
            "POST",
            "/Flag",
            Some(json!({
                "resourceType": "Flag", "status": "active",
                "code": { "text": text, "coding": [{ "system": "urn:ehr:flags", "code": code }] },
                "subject": { "reference": format!("Patient/{}", patient["id"].as_str().expect("id")) }
            })),
        )
    };
    // Set before the gateway starts: the first poll reads every Flag.
    let fall = flag(&jane, "fall", "Fall risk");
    let mut gw = Gateway::new(
        dir.path(),
        &fhir_table(
            &server,
            "[connectors.fhir.flags]\nurgent_codes = [\"infection\"]\npoll_interval_s = 1",
        ),
    );
    gw.start();
    wait_for("the first Flag poll", Duration::from_secs(20), || {
        (gw.get_json("/api/v1/fhir/status")["flags_applied"] == 1).then_some(())
    });
    let r = check_in(&gw, json!({ "patient_ref": "M2" }));
    let j = check_in(&gw, json!({ "patient_ref": "M1" }));
    assert_eq!(r["priority"], "normal");
    assert_eq!(j["priority"], "elevated");
    assert_eq!(j["priority_reason"], "EHR flag: Fall risk");

    let order = |gw: &Gateway| -> Vec<(String, String)> {
        gw.get_json("/api/v1/queues?queue=general")
            .as_array()
            .expect("entries")
            .iter()
            .map(|e| {
                let s = |k: &str| e[k].as_str().unwrap_or_default().to_string();
                (s("ticket"), s("priority"))
            })
            .collect()
    };
    let (rt, jt) = (
        r["ticket"].as_str().expect("ticket").to_string(),
        j["ticket"].as_str().expect("ticket").to_string(),
    );
    assert_eq!(
        order(&gw),
        [
            (jt.clone(), "elevated".into()),
            (rt.clone(), "normal".into())
        ]
    );

    // An infection-control flag on Rick makes him urgent: he goes first.
    let isolate = flag(&rick, "infection", "Isolate");
    wait_for("Rick urgent", Duration::from_secs(20), || {
        (order(&gw)[0] == (rt.clone(), "urgent".to_string())).then_some(())
    });
    // Jane's flag is withdrawn: back to what she checked in with.
    let mut inactive = fall.clone();
    inactive["status"] = json!("inactive");
    let path = format!("/Flag/{}", fall["id"].as_str().expect("id"));
    server.call("PUT", &path, Some(inactive));
    wait_for("Jane back to normal", Duration::from_secs(20), || {
        (order(&gw)[1] == (jt.clone(), "normal".to_string())).then_some(())
    });
    let entries = gw.get_json("/api/v1/queues?queue=general");
    assert_eq!(entries[1]["priority_reason"], Value::Null);
    // Rick's flag is deleted outright (no search shows a deletion): he goes back too.
    server.call(
        "DELETE",
        &format!("/Flag/{}", isolate["id"].as_str().expect("id")),
        None,
    );
    wait_for("Rick back to normal", Duration::from_secs(20), || {
        let o = order(&gw);
        o.iter().all(|(_, p)| p == "normal").then_some(())
    });

    // Staff were told of each change on the status page, without patient data.
    let notices = gw.get_json("/api/v1/notices");
    assert_eq!(
        notice_texts(&gw),
        [
            format!("{rt} (general): priority lowered to normal as the EHR flag was removed"),
            format!("{jt} (general): priority lowered to normal as the EHR flag was removed"),
            format!("{rt} (general): priority raised to urgent because of an EHR flag"),
            format!("{jt} (general): checked in at elevated priority because of an EHR flag"),
        ],
    );
    let page = gw.get_text("/");
    assert!(page.contains("Notices for staff"), "{page}");
    assert!(!page.contains("Fall risk") && !page.contains("Doe"));
    let first = notices[0]["id"].as_i64().expect("id");
    let (status, v) = post(
        &gw.url(&format!("/api/v1/notices/{first}/acknowledge")),
        &json!({ "by": "nurse-1" }),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        gw.get_json("/api/v1/notices").as_array().map(Vec::len),
        Some(3)
    );
    let (status, _) = post(
        &gw.url(&format!("/api/v1/notices/{first}/acknowledge")),
        &json!({}),
    );
    assert_eq!(status, 404, "acknowledged already");
    let audit = audit_log(&gw);
    assert!(
        audit
            .iter()
            .any(|(a, by, _)| a == "notice.acknowledged" && by == "api:nurse-1"),
        "{audit:?}"
    );
}

#[test]
fn waits_past_the_booked_slot_raise_one_suggestion_for_scheduling_staff_even_offline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = FhirServer::start(dir.path(), &[]);
    let jane = server.create_patient("M1", "Doe", "Jane", "1980-02-03");
    let today = day(0);
    // A three-second slot, so that the test need not wait a quarter of an hour.
    let booked = server.call(
        "POST",
        "/Appointment",
        Some(json!({
            "resourceType": "Appointment", "status": "booked",
            "start": format!("{today}T00:01:00Z"), "end": format!("{today}T00:01:03Z"),
            "participant": [{ "actor": { "reference": format!("Patient/{}", jane["id"].as_str().expect("id")) }, "status": "accepted" }]
        })),
    );
    let mut gw = Gateway::new(
        dir.path(),
        &fhir_table(
            &server,
            "[connectors.fhir.appointments]\nqueue = \"general\"\ncheck_in = \"booked\"\npoll_interval_s = 1\n\
             [connectors.fhir.waits]\ncheck_interval_s = 1\nowner = \"Group/scheduling\"",
        ),
    );
    gw.start();
    let entry = wait_for("the appointment queued", Duration::from_secs(20), || {
        let open = gw.get_json("/api/v1/queues?queue=general");
        open.as_array()?.first().cloned()
    });
    // The EHR goes away: the notice is raised all the same and the suggestion waits.
    server.kill();
    let notice = wait_for("the wait notice", Duration::from_secs(20), || {
        let n = gw.get_json("/api/v1/notices");
        n.as_array()?.first().cloned()
    });
    let text = notice["text"].as_str().expect("text");
    assert!(
        text.starts_with(&format!(
            "Queue general: {} has waited 0 min, longer than the booked 1 min slot (1 waiting)",
            entry["ticket"].as_str().expect("ticket")
        )),
        "{text}"
    );
    server.restart();
    let tasks = wait_for("the Task in the EHR", Duration::from_secs(30), || {
        let t = server.call("GET", "/Task", None)["entry"].clone();
        t.as_array().filter(|t| !t.is_empty()).cloned()
    });
    let task = &tasks[0]["resource"];
    assert_eq!(task["status"], "requested");
    assert_eq!(task["intent"], "proposal");
    assert_eq!(task["owner"]["reference"], "Group/scheduling");
    assert_eq!(
        task["focus"]["reference"],
        format!("Appointment/{}", booked["id"].as_str().expect("id"))
    );
    assert_eq!(task["description"], text);
    assert_eq!(task["meta"]["tag"][0]["system"], TAG);
    // Still past the slot: no second suggestion while the overrun lasts.
    wait_passes(&gw, "last_waits_at", 2);
    let count = |server: &FhirServer| {
        server.call("GET", "/Task", None)["entry"]
            .as_array()
            .map_or(0, Vec::len)
    };
    assert_eq!(count(&server), 1);
    assert_eq!(gw.get_json("/api/v1/fhir/status")["suggestions"], 1);
    assert_eq!(
        gw.get_json("/api/v1/notices").as_array().map(Vec::len),
        Some(1)
    );
}

#[test]
fn walk_ins_get_an_appointment_and_patients_the_ehr_does_not_know_are_registered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = FhirServer::start(dir.path(), &[]);
    let jane = server.create_patient("M1", "Doe", "Jane", "1980-02-03");
    let mut gw = Gateway::new(
        dir.path(),
        &fhir_table(
            &server,
            "[connectors.fhir.appointments]\nqueue = \"general\"\ncheck_in = \"booked\"\npoll_interval_s = 1\n\
             [connectors.fhir.registration]\ncreate_patients = true\nwalk_in_appointments = true\nwalk_in_minutes = 20",
        ),
    );
    gw.start();
    let entry_of = |gw: &Gateway, id: i64| {
        gw.get_json("/api/v1/queues?queue=general")
            .as_array()
            .expect("entries")
            .iter()
            .find(|e| e["id"] == id)
            .cloned()
            .expect("open entry")
    };

    // A walk-in the EHR knows: their visit is booked as it happens.
    let walk_in = check_in(&gw, json!({ "patient_ref": "M1" }));
    let id = walk_in["id"].as_i64().expect("id");
    let linked = wait_for("the walk-in's appointment", Duration::from_secs(20), || {
        let e = entry_of(&gw, id);
        e["appointment_ref"].as_str().map(str::to_string)
    });
    let appointment = server.call("GET", &format!("/{linked}"), None);
    assert_eq!(appointment["status"], "arrived");
    assert_eq!(
        appointment["appointmentType"]["coding"][0]["code"],
        "WALKIN"
    );
    assert_eq!(appointment["minutesDuration"], 20);
    assert_eq!(
        appointment["participant"][0]["actor"]["reference"],
        format!("Patient/{}", jane["id"].as_str().expect("id"))
    );
    assert_eq!(
        appointment["identifier"][0]["value"],
        format!("test-clinic/{id}")
    );

    // Someone the EHR has never seen, named at the kiosk: registered, then booked.
    let new = check_in(
        &gw,
        json!({ "patient": { "family": "Nguyen", "given": "An", "birth_date": "1990-01-02" } }),
    );
    assert_eq!(new["demographics"], Value::Null);
    let new_id = new["id"].as_i64().expect("id");
    let entry = wait_for(
        "the new patient linked and booked",
        Duration::from_secs(20),
        || {
            let e = entry_of(&gw, new_id);
            (e["appointment_ref"].is_string() && e["demographics"].is_object()).then_some(e)
        },
    );
    let created = server.call("GET", "/Patient?family=Nguyen", None)["entry"].clone();
    assert_eq!(created.as_array().map(Vec::len), Some(1), "{created}");
    let patient = &created[0]["resource"];
    assert_eq!(patient["birthDate"], "1990-01-02");
    assert_eq!(entry["demographics"]["patient_id"], patient["id"]);
    let booked = server.call(
        "GET",
        &format!("/{}", entry["appointment_ref"].as_str().expect("ref")),
        None,
    );
    assert_eq!(
        booked["participant"][0]["actor"]["reference"],
        format!("Patient/{}", patient["id"].as_str().expect("id"))
    );

    // The appointments poll sees both walk-in Appointments and queues nobody twice.
    let passes = gw.get_json("/api/v1/fhir/status")["last_appointments_at"].as_i64();
    wait_for("another appointments pass", Duration::from_secs(20), || {
        let now = gw.get_json("/api/v1/fhir/status")["last_appointments_at"].as_i64();
        (now > passes).then_some(())
    });
    let open = gw.get_json("/api/v1/queues?queue=general");
    assert_eq!(open.as_array().map(Vec::len), Some(2), "{open}");

    // With the EHR unreachable nobody is registered: it may know the patient.
    server.kill();
    let offline = check_in(
        &gw,
        json!({ "patient": { "family": "Later", "birth_date": "1970-05-06" } }),
    );
    server.restart();
    wait_for("the EHR answering again", Duration::from_secs(20), || {
        (gw.get_json("/api/v1/fhir/status")["link"]["state"] == "up").then_some(())
    });
    wait_passes(&gw, "last_appointments_at", 2);
    let later = server.call("GET", "/Patient?family=Later", None)["entry"].clone();
    assert!(later.as_array().is_none_or(Vec::is_empty), "{later}");
    assert_eq!(
        entry_of(&gw, offline["id"].as_i64().expect("id"))["demographics"],
        Value::Null
    );
    assert_eq!(gw.get_json("/api/v1/fhir/status")["registered"], 3);
}

/// Waits until the connector has finished `n` more passes of the kind whose time the status
/// field `field` shows: the first may have been under way already, the last started after.
fn wait_passes(gw: &Gateway, field: &str, n: usize) {
    for _ in 0..n {
        let before = gw.get_json("/api/v1/fhir/status")[field].as_i64();
        wait_for(field, Duration::from_secs(20), || {
            let now = gw.get_json("/api/v1/fhir/status")[field].as_i64();
            (now > before).then_some(())
        });
    }
}
