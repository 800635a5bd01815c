//! Expiring credentials against the real daemon: a served certificate close to its expiry
//! gives staff a notice and the cloud a `credential.expiring` event, once across restarts; its
//! renewal by replacing the files is served by the next TLS connection without a restart.

mod common;

use common::*;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use ureq::tls::{Certificate, RootCerts, TlsConfig, TlsProvider};

/// Writes a self-signed certificate for 127.0.0.1 valid until midnight UTC `days` from now,
/// and its key; the certificate's DER. The key is written first and the certificate renamed
/// into place, as a renewal script would.
fn certificate(dir: &Path, days: i64) -> Vec<u8> {
    let end = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_hours(24 * days))
        .expect("a date")
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date();
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("params");
    params.not_after =
        rcgen::date_time_ymd(i32::from(end.year()), end.month() as u8, end.day() as u8);
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = params.self_signed(&key).expect("certificate");
    std::fs::write(dir.join("web.key.new"), key.serialize_pem()).expect("key");
    std::fs::rename(dir.join("web.key.new"), dir.join("web.key")).expect("key in place");
    std::fs::write(dir.join("web.crt.new"), cert.pem()).expect("cert");
    std::fs::rename(dir.join("web.crt.new"), dir.join("web.crt")).expect("cert in place");
    cert.der().to_vec()
}

fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A client that trusts `der` and nothing else.
fn trusting(der: &[u8]) -> ureq::Agent {
    let roots = [Certificate::from_der(der).to_owned()];
    ureq::Agent::config_builder()
        .tls_config(
            TlsConfig::builder()
                .provider(TlsProvider::Rustls)
                .root_certs(RootCerts::new_with_certs(&roots))
                .unversioned_rustls_crypto_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .build(),
        )
        .build()
        .into()
}

/// `path` over HTTPS, trusting only `der`, once it answers.
fn get_trusting(gw: &Gateway, der: &[u8], path: &str) -> serde_json::Value {
    let url = format!("https://127.0.0.1:{}{path}", gw.web);
    wait_for(path, Duration::from_secs(20), || {
        trusting(der)
            .get(&url)
            .call()
            .ok()?
            .body_mut()
            .read_json()
            .ok()
    })
}

fn expiry_notices(gw: &Gateway, der: &[u8]) -> Vec<String> {
    get_trusting(gw, der, "/api/v1/notices")
        .as_array()
        .expect("notices")
        .iter()
        .filter(|n| n["kind"] == "credential.expiring")
        .filter_map(|n| n["text"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn a_certificate_near_expiry_is_told_once_and_its_renewal_served_without_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let old = certificate(dir.path(), 3);
    let broker = Broker::start(&dir.path().join("broker"));
    let consumer = Consumer::start(&broker, "clinic/test-clinic/events/+");
    let extra = format!(
        "{}\n[web.tls]\ncert_file = \"web.crt\"\nkey_file = \"web.key\"\n",
        relay_table(&broker)
    );
    let mut gw = Gateway::new(dir.path(), &extra);
    gw.spawn();

    let event = wait_for(
        "credential.expiring on the broker",
        Duration::from_secs(20),
        || {
            consumer
                .events()
                .into_iter()
                .find(|e| e["kind"] == "credential.expiring")
        },
    );
    assert_eq!(event["key"], "credential:web.tls.cert_file");
    assert_eq!(event["payload"]["credential"], "web.tls.cert_file");
    assert_eq!(event["payload"]["type"], "certificate");
    let days = event["payload"]["days_left"].as_i64().expect("days_left");
    assert!((1..=3).contains(&days), "{event}");
    let notices = expiry_notices(&gw, &old);
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(notices[0].contains("web.tls.cert_file"), "{notices:?}");

    // A restart checks again and tells nothing new.
    gw.signal("TERM");
    gw.wait(Duration::from_secs(20));
    std::fs::write(&gw.log, "").expect("log emptied");
    gw.spawn();
    wait_for("the check after restart", Duration::from_secs(20), || {
        gw.log_text()
            .contains("credential expiries checked")
            .then_some(())
    });
    assert!(
        !gw.log_text().contains("credential expiry told"),
        "{}",
        gw.log_text()
    );
    assert_eq!(expiry_notices(&gw, &old).len(), 1);

    // Renewed by replacing the files: the next connection is served the new certificate.
    let new = certificate(dir.path(), 365);
    assert_ne!(fingerprint(&old), fingerprint(&new));
    let status = get_trusting(&gw, &new, "/api/v1/health");
    assert!(status.is_object(), "{status}");
    assert_eq!(
        consumer
            .events()
            .iter()
            .filter(|e| e["kind"] == "credential.expiring")
            .count(),
        1
    );
}

/// A new client certificate from the test CA, renamed over `client.crt` and `client.key`.
fn renew_client_certificate(certs: &Certs) {
    let run = |args: &str| {
        let ok = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("cd {} && {args}", certs.dir.display()))
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl")
            .success();
        assert!(ok, "openssl failed: {args}");
    };
    run("openssl req -newkey rsa:2048 -nodes -subj /CN=gateway -keyout new.key -out new.csr");
    run(
        "openssl x509 -req -in new.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 60 -extfile client.ext -out new.crt",
    );
    run("mv new.key client.key && mv new.crt client.crt");
}

#[test]
fn a_renewed_relay_client_certificate_is_presented_after_a_reconnection_of_its_own() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cdir = dir.path().join("certs");
    std::fs::create_dir_all(&cdir).expect("mkdir");
    let certs = Certs::generate(&cdir);
    let broker = Broker::start_tls(&dir.path().join("broker"), &certs, true);
    let path = |name: &str| certs.path(name).display().to_string();
    let consumer = Consumer::start_with(
        &broker,
        "clinic/test-clinic/events/#",
        &[
            "--cafile",
            &path("ca.crt"),
            "--cert",
            &path("client.crt"),
            "--key",
            &path("client.key"),
        ],
    );
    let gdir = dir.path().join("gateway");
    std::fs::create_dir_all(&gdir).expect("mkdir");
    let relay = format!(
        "[relay]\nhost = \"localhost\"\nport = {}\nreconnect_initial_ms = 100\nreconnect_max_ms = 500\n[relay.tls]\nca_file = \"{}\"\nclient_cert_file = \"{}\"\nclient_key_file = \"{}\"\n",
        broker.port,
        path("ca.crt"),
        path("client.crt"),
        path("client.key")
    );
    let mut gw = Gateway::new(&gdir, &relay);
    gw.start();
    let sent = |id: &str| {
        let body = serde_json::json!({
            "source": "test", "id": id, "kind": "test.ping", "key": "k", "payload": {}
        });
        assert_eq!(gw.post_event(&body).0, 202);
    };
    let arrived = |n: usize| {
        wait_for("the pings", Duration::from_secs(30), || {
            (consumer
                .events()
                .iter()
                .filter(|e| e["kind"] == "test.ping")
                .count()
                >= n)
                .then_some(())
        })
    };
    sent("p1");
    arrived(1);

    renew_client_certificate(&certs);
    wait_for("the relay to reconnect", Duration::from_secs(30), || {
        let log = gw.log_text();
        let renewed = log.find("relay client certificate renewed")?;
        log[renewed..]
            .contains("cloud relay connected")
            .then_some(())
    });
    sent("p2");
    arrived(2);
}

/// The texts of the staff notices of `kind`, once there are any.
fn notices_of(gw: &Gateway, kind: &str) -> Vec<String> {
    wait_for(kind, Duration::from_secs(20), || {
        let texts: Vec<String> = gw
            .get_json("/api/v1/notices")
            .as_array()?
            .iter()
            .filter(|n| n["kind"] == kind)
            .filter_map(|n| n["text"].as_str().map(str::to_string))
            .collect();
        (!texts.is_empty()).then_some(texts)
    })
}

/// A FHIR connector table for an EHR that is not there: the watcher reads the credentials
/// from the configuration and files alone.
fn ehr(auth: &str) -> String {
    format!(
        "[connectors.fhir]\nbase_url = \"http://127.0.0.1:{}/fhir\"\nidentifier_system = \"urn:mrn\"\n\
         [connectors.fhir.auth]\n{auth}\n",
        free_port()
    )
}

#[test]
fn the_ehr_client_secret_near_its_stated_expiry_and_an_expired_bearer_token_are_told() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("secret"), "s3cret\n").expect("secret");
    let soon = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_hours(24 * 3))
        .expect("a date")
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date();
    let mut gw = Gateway::new(
        dir.path(),
        &ehr(&format!(
            "kind = \"client_credentials\"\ntoken_url = \"http://127.0.0.1:{}/token\"\n\
             client_id = \"gateway\"\nclient_secret_file = \"secret\"\nclient_secret_expires = \"{soon}\"",
            free_port()
        )),
    );
    gw.start();
    let texts = notices_of(&gw, "credential.expiring");
    assert_eq!(texts.len(), 1, "{texts:?}");
    assert!(
        texts[0].contains("client secret of connectors.fhir.auth.client_secret_file"),
        "{texts:?}"
    );
    drop(gw);

    // A bearer token that is a JWT whose `exp` has passed ({"alg":"none"}.{"exp":1700000000}).
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("token"),
        "eyJhbGciOiJub25lIn0.eyJleHAiOjE3MDAwMDAwMDB9.\n",
    )
    .expect("token");
    let mut gw = Gateway::new(
        dir.path(),
        &ehr("kind = \"bearer\"\ntoken_file = \"token\""),
    );
    gw.start();
    let texts = notices_of(&gw, "credential.expired");
    assert_eq!(texts.len(), 1, "{texts:?}");
    assert!(
        texts[0].contains("bearer token in connectors.fhir.auth.token_file"),
        "{texts:?}"
    );
}

#[test]
fn an_unreadable_client_secret_expiry_is_a_config_problem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gateway.toml");
    std::fs::write(
        &path,
        ehr("kind = \"client_credentials\"\ntoken_url = \"http://127.0.0.1:1/token\"\n\
             client_id = \"gateway\"\nclient_secret_file = \"secret\"\nclient_secret_expires = \"next spring\""),
    )
    .expect("config");
    let (code, stderr) = check_config(&path);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("connectors.fhir.auth.client_secret_expires: must be an RFC 3339 time"),
        "{stderr}"
    );
}
