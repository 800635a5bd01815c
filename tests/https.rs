//! The page and API over HTTPS against the real daemon: a self-signed certificate created at
//! first start and kept for the next, a configured certificate and key, the fingerprint that
//! `status` prints, and the refusal of a network address without TLS and logins. The client
//! trusts exactly the certificate read from disk, as a staff member who checked the fingerprint
//! would.

mod common;

use common::https::{certificate, start_https};
use common::*;
use sha2::{Digest, Sha256};
use std::time::Duration;

fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[test]
fn a_self_signed_certificate_is_served_printed_by_status_and_kept_across_restarts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut gw = Gateway::new(dir.path(), "[web.tls]\nself_signed = true\n");
    let cert = dir.path().join("data/web-cert.pem");
    let status = start_https(&mut gw, &cert, "/api/v1/status");
    let der = certificate(&cert);
    let expected = fingerprint(&der);
    assert_eq!(status["tls_fingerprint"], expected.as_str());
    assert!(
        ureq::get(&gw.url("/api/v1/health")).call().is_err(),
        "plain HTTP must not be answered on an HTTPS port"
    );

    let out = gw.cli(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "status: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = text
        .lines()
        .find_map(|l| l.split_once(" SHA-256 ").map(|(_, f)| f.trim().to_string()))
        .unwrap_or_else(|| panic!("a fingerprint in {text}"));
    assert_eq!(printed, expected);
    assert!(text.contains("ok (test-clinic)"), "{text}");

    gw.signal("TERM");
    assert_eq!(gw.wait(Duration::from_secs(20)), Some(0));
    let status = start_https(&mut gw, &cert, "/api/v1/status");
    assert_eq!(certificate(&cert), der, "a restart keeps the certificate");
    assert_eq!(status["tls_fingerprint"], expected.as_str());
}

#[test]
fn a_configured_certificate_and_key_are_served() {
    let dir = tempfile::tempdir().expect("temp dir");
    let made = rcgen::generate_simple_self_signed(vec![
        "clinic-gw.example".to_string(),
        "127.0.0.1".to_string(),
    ])
    .expect("certificate");
    std::fs::create_dir(dir.path().join("tls")).expect("tls dir");
    std::fs::write(dir.path().join("tls/cert.pem"), made.cert.pem()).expect("cert");
    std::fs::write(
        dir.path().join("tls/key.pem"),
        made.signing_key.serialize_pem(),
    )
    .expect("key");
    let mut gw = Gateway::new(
        dir.path(),
        "[web.tls]\ncert_file = \"tls/cert.pem\"\nkey_file = \"tls/key.pem\"\n",
    );
    let status = start_https(&mut gw, &dir.path().join("tls/cert.pem"), "/api/v1/status");
    assert_eq!(
        status["tls_fingerprint"],
        fingerprint(made.cert.der()).as_str()
    );
    assert!(
        !dir.path().join("data/web-cert.pem").exists(),
        "no certificate is made when one is configured"
    );
}

#[test]
fn a_network_bind_without_tls_or_logins_is_refused_by_check_config() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("gateway.toml");
    let port = free_port();
    let text = config_text(dir.path(), port, "").replace("127.0.0.1:", "0.0.0.0:");
    std::fs::write(&path, &text).expect("config");
    let (code, stderr) = check_config(&path);
    assert_ne!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}:8: web.bind: 0.0.0.0 is reachable from the network: it needs [web.tls] and [access] enabled = true",
            path.display()
        )),
        "{stderr}"
    );

    let tls_only = format!("{text}[web.tls]\nself_signed = true\n");
    std::fs::write(&path, &tls_only).expect("config");
    let (code, stderr) = check_config(&path);
    assert_ne!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}:8: web.bind: 0.0.0.0 is reachable from the network: it needs [access] enabled = true",
            path.display()
        )),
        "{stderr}"
    );

    std::fs::write(&path, format!("{tls_only}[access]\nenabled = true\n")).expect("config");
    let (code, stderr) = check_config(&path);
    assert_eq!(code, Some(0), "{stderr}");
}
