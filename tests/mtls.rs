//! Mutual TLS against the real daemon with curl as the client: a system's certificate bound to
//! an API key is its only credential, the audit names the key's client for what it changes,
//! a certificate from another CA never completes the handshake, one bound to no key is
//! refused and audited, a browser without a certificate still reaches the login page, and the
//! bound key's text without its certificate is refused.

mod common;

use common::*;
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// What curl got: none when the TLS handshake (or the connection) failed, else the status and
/// the body.
struct Answer(Option<(u16, String)>);

impl Answer {
    fn status(&self) -> u16 {
        self.0.as_ref().expect("an answer").0
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.0.as_ref().expect("an answer").1).unwrap_or(Value::Null)
    }
}

/// A request with curl over HTTPS, trusting the test CA, presenting the client certificate
/// `cert` (a name in `certs`) if given, and `headers`.
fn curl(
    gw: &Gateway,
    certs: &Certs,
    cert: Option<&str>,
    method: &str,
    path: &str,
    headers: &[String],
) -> Answer {
    let body = (method == "POST").then(|| json!({ "patient_ref": "MRN-7" }));
    send(gw, certs, cert, method, path, headers, body)
}

/// As [`curl`], with `body` as JSON.
fn send(
    gw: &Gateway,
    certs: &Certs,
    cert: Option<&str>,
    method: &str,
    path: &str,
    headers: &[String],
    body: Option<Value>,
) -> Answer {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "--max-time",
        "10",
        "-X",
        method,
        "-w",
        "\n%{http_code}",
    ])
    .arg("--cacert")
    .arg(certs.path("ca.crt"));
    if let Some(name) = cert {
        cmd.arg("--cert")
            .arg(certs.path(&format!("{name}.crt")))
            .arg("--key")
            .arg(certs.path(&format!("{name}.key")));
    }
    for h in headers {
        cmd.args(["-H", h]);
    }
    if let Some(body) = body {
        cmd.args(["-H", "content-type: application/json", "-d"])
            .arg(body.to_string());
    }
    cmd.arg(format!("https://127.0.0.1:{}{path}", gw.web));
    let out = cmd.output().expect("curl must be installed");
    if !out.status.success() {
        return Answer(None);
    }
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').expect("a status line");
    Answer(Some((
        code.trim().parse().expect("a status"),
        body.to_string(),
    )))
}

/// Adds a key with the CLI; the key as printed.
fn add_key(gw: &Gateway, name: &str, options: &[&str]) -> (String, String) {
    let mut args = vec!["key", "add", name];
    args.extend_from_slice(options);
    let out = gw.cli(&args);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "key add: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = text
        .lines()
        .find_map(|l| l.strip_prefix("key (shown once; give it to the client):"))
        .unwrap_or_else(|| panic!("a key in {text}"))
        .trim()
        .to_string();
    (key, text)
}

/// The audit, newest first, read with the admin's key over a connection without a
/// certificate.
fn audit(gw: &Gateway, certs: &Certs, admin: &str) -> Vec<Value> {
    let answer = curl(
        gw,
        certs,
        None,
        "GET",
        "/api/v1/audit?limit=500",
        &[format!("authorization: Bearer {admin}")],
    );
    assert_eq!(answer.status(), 200);
    answer.json().as_array().expect("audit").clone()
}

fn refusals(rows: &[Value]) -> Vec<(String, Value)> {
    rows.iter()
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

/// The gateway with logins, serving HTTPS with the test CA's server certificate and verifying
/// client certificates against that CA; `access` is appended to `[access]`. Running, with
/// its certificates.
fn start(dir: &Path, access: &str) -> (Gateway, Certs) {
    serve(dir, Certs::generate(dir), access, "")
}

/// As [`start`], with `certs` made beforehand and `tls` added to `[web.tls]`.
fn serve(dir: &Path, certs: Certs, access: &str, tls: &str) -> (Gateway, Certs) {
    let tls = format!(
        "[access]\nenabled = true\n{access}\n[web.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\nclient_ca_file = \"{}\"\n{tls}",
        certs.path("server.crt").display(),
        certs.path("server.key").display(),
        certs.path("ca.crt").display(),
    );
    let mut gw = Gateway::new(dir, &tls);
    gw.spawn();
    wait_for(
        "the gateway's API over HTTPS",
        Duration::from_secs(20),
        || curl(&gw, &certs, None, "GET", "/api/v1/health", &[]).0,
    );
    (gw, certs)
}

#[test]
fn a_system_with_its_bound_certificate_is_its_keys_client_and_nothing_else_passes_for_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (gw, certs) = start(dir.path(), "");
    certs.client("stray", Certs::CA);
    certs.client("stranger", Certs::OTHER_CA);
    let (admin, _) = add_key(&gw, "ops-console", &["--scope", "admin"]);
    let client = certs.path("client.crt");
    let (bound, printed) = add_key(
        &gw,
        "lab-analyser",
        &[
            "--scope",
            "queue,administration",
            "--expires-days",
            "365",
            "--certificate",
            &client.to_string_lossy(),
        ],
    );
    assert!(
        printed.contains("bound to the client certificate"),
        "{printed}"
    );
    let listed = gw.cli(&["key", "list"]);
    let listed = String::from_utf8_lossy(&listed.stdout).to_string();
    let line = listed
        .lines()
        .find(|l| l.starts_with("lab-analyser"))
        .unwrap_or_else(|| panic!("the key in {listed}"));
    assert!(line.contains(" certificate "), "{line}");
    let json = gw.cli(&["key", "list", "--json"]);
    let keys: Value = serde_json::from_slice(&json.stdout).expect("keys as JSON");
    let key = keys
        .as_array()
        .and_then(|k| k.iter().find(|k| k["name"] == "lab-analyser"))
        .expect("listed");
    let expires = key["expires_at"].as_i64().expect("an expiry");
    let in_31_days = now_ms() + 31 * 86_400_000;
    assert!(
        expires < in_31_days,
        "the certificate's 30 days, not the 365 asked"
    );

    // The certificate alone is the key's credential: it reads and changes the queue, replays
    // dead letters, and the audit names the key's client for that.
    let queues = curl(&gw, &certs, Some("client"), "GET", "/api/v1/queues", &[]);
    assert_eq!(queues.status(), 200, "{:?}", queues.0);
    let checked_in = curl(
        &gw,
        &certs,
        Some("client"),
        "POST",
        "/api/v1/queues/general/check-in",
        &[],
    );
    assert_eq!(checked_in.status(), 201, "{:?}", checked_in.0);
    let replay = send(
        &gw,
        &certs,
        Some("client"),
        "POST",
        "/api/v1/dlq/replay",
        &[],
        Some(json!({ "destination": "cloud", "all": true })),
    );
    assert_eq!(replay.status(), 200, "{:?}", replay.0);
    let rows = audit(&gw, &certs, &admin);
    assert!(
        rows.iter()
            .any(|r| r["actor"] == "key:lab-analyser" && r["action"] == "dlq-replay"),
        "the replay names its client: {rows:?}"
    );
    // Its scope still holds.
    let admin_route = curl(&gw, &certs, Some("client"), "GET", "/api/v1/backlog", &[]);
    assert_eq!(admin_route.status(), 403);

    // A certificate from another CA does not complete the handshake.
    let stranger = curl(&gw, &certs, Some("stranger"), "GET", "/api/v1/queues", &[]);
    assert!(stranger.0.is_none(), "{:?}", stranger.0);

    // One from the CA but bound to no key is refused, and the refusal audited.
    let stray = curl(&gw, &certs, Some("stray"), "GET", "/api/v1/queues", &[]);
    assert_eq!(
        (stray.status(), stray.json()),
        (401, json!({ "error": "login required" }))
    );

    // A browser with such a certificate opening the page is sent on to the login form.
    let page = curl(&gw, &certs, Some("stray"), "GET", "/", &[]);
    assert_eq!(page.status(), 401);
    assert!(
        page.0
            .as_ref()
            .is_some_and(|(_, b)| b.contains("url=/login")),
        "{:?}",
        page.0
    );

    // A browser without a certificate still gets the login page.
    let login = curl(&gw, &certs, None, "GET", "/login", &[]);
    assert_eq!(login.status(), 200);
    assert!(
        login.0.as_ref().is_some_and(|(_, b)| b.contains("<form")),
        "{:?}",
        login.0
    );

    // The bound key's text without its certificate is refused, and with it accepted.
    let bearer = [format!("authorization: Bearer {bound}")];
    let without = curl(&gw, &certs, None, "GET", "/api/v1/queues", &bearer);
    assert_eq!(without.status(), 401);
    let elsewhere = curl(&gw, &certs, Some("stray"), "GET", "/api/v1/queues", &bearer);
    assert_eq!(elsewhere.status(), 401);
    let with = curl(
        &gw,
        &certs,
        Some("client"),
        "GET",
        "/api/v1/queues",
        &bearer,
    );
    assert_eq!(with.status(), 200);

    let refused = refusals(&audit(&gw, &certs, &admin));
    let reasons: Vec<&str> = refused
        .iter()
        .filter_map(|(_, d)| d["reason"].as_str())
        .collect();
    assert!(reasons.contains(&"certificate_unknown"), "{refused:?}");
    assert_eq!(
        reasons.iter().filter(|r| **r == "key_certificate").count(),
        2,
        "{refused:?}"
    );
    assert!(
        refused
            .iter()
            .any(|(who, d)| who == "key:lab-analyser" && d["reason"] == "key_scope"),
        "{refused:?}"
    );

    // A revoked bound key's certificate is refused like the key.
    let out = gw.cli(&["key", "revoke", "lab-analyser"]);
    assert!(out.status.success());
    let revoked = curl(&gw, &certs, Some("client"), "GET", "/api/v1/queues", &[]);
    assert_eq!(revoked.status(), 401);
    let refused = refusals(&audit(&gw, &certs, &admin));
    assert!(
        refused
            .iter()
            .any(|(who, d)| who == "key:lab-analyser" && d["reason"] == "key_revoked"),
        "{refused:?}"
    );
}

#[test]
fn a_revoked_certificate_never_completes_the_handshake_and_a_new_list_counts_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = Certs::generate(dir.path());
    certs.client("analyser-2", Certs::CA);
    let crl = certs.crl(&["analyser-2.crt"]);
    let (gw, certs) = serve(
        dir.path(),
        certs,
        "",
        &format!("client_crl_file = {crl:?}\n"),
    );
    for (name, cert) in [
        ("analyser-1", "client.crt"),
        ("analyser-2", "analyser-2.crt"),
    ] {
        let cert = certs.path(cert);
        add_key(
            &gw,
            name,
            &["--scope", "queue", "--certificate", &cert.to_string_lossy()],
        );
    }
    let queues = |cert: &str| curl(&gw, &certs, Some(cert), "GET", "/api/v1/queues", &[]);
    assert_eq!(queues("client").status(), 200);
    assert!(
        queues("analyser-2").0.is_none(),
        "a revoked certificate completed the handshake"
    );
    // A browser, with no certificate, is still served.
    let page = curl(&gw, &certs, None, "GET", "/", &[]);
    assert!(page.0.is_some(), "the page without a certificate");

    // The CA lifts analyser-2's revocation and revokes analyser-1's; no restart.
    certs.crl(&["client.crt"]);
    assert_eq!(queues("analyser-2").status(), 200);
    assert!(
        queues("client").0.is_none(),
        "a certificate revoked by the new list completed the handshake"
    );
}

#[test]
fn a_certificate_client_draws_from_its_keys_budget_and_the_client_ca_is_watched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let limits = "credential_warning_days = 60\n\n[access.rate_limits]\nper_second = 100.0\nburst = 1000\n\n[access.rate_limits.clients.\"key:board\"]\nper_second = 0.2\nburst = 3\n";
    let (gw, certs) = start(dir.path(), limits);
    let (admin, _) = add_key(&gw, "ops-console", &["--scope", "admin"]);
    let client = certs.path("client.crt").to_string_lossy().to_string();
    add_key(
        &gw,
        "board",
        &["--scope", "queue", "--certificate", &client],
    );
    let limited = wait_for("the board's budget spent", Duration::from_secs(20), || {
        let answer = curl(&gw, &certs, Some("client"), "GET", "/api/v1/queues", &[]);
        (answer.status() == 429).then_some(answer)
    });
    assert_eq!(limited.json()["error"], "too many requests");
    // Another client is still served.
    let other = curl(
        &gw,
        &certs,
        None,
        "GET",
        "/api/v1/queues",
        &[format!("authorization: Bearer {admin}")],
    );
    assert_eq!(other.status(), 200);
    let rows = audit(&gw, &certs, &admin);
    assert!(
        rows.iter()
            .any(|r| r["action"] == "access.rate_limited" && r["actor"] == "key:board"),
        "{rows:?}"
    );

    // The test CA ends within the 60 days' warning: staff are told.
    let bearer = [format!("authorization: Bearer {admin}")];
    wait_for("the client CA's notice", Duration::from_secs(20), || {
        let notices = curl(&gw, &certs, None, "GET", "/api/v1/notices", &bearer).json();
        notices
            .as_array()?
            .iter()
            .any(|n| {
                n["text"]
                    .as_str()
                    .is_some_and(|t| t.contains("web.tls.client_ca_file"))
            })
            .then_some(())
    });
}

/// curl over HTTPS without a client certificate, trusting the test CA, keeping cookies in
/// `jar`; the status and body.
fn curl_with_jar(
    gw: &Gateway,
    certs: &Certs,
    jar: &Path,
    path: &str,
    args: &[&str],
) -> (u16, String) {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "-w",
            "\n%{http_code}",
            "--cacert",
        ])
        .arg(certs.path("ca.crt"))
        .arg("-c")
        .arg(jar)
        .arg("-b")
        .arg(jar)
        .args(args)
        .arg(format!("https://127.0.0.1:{}{path}", gw.web))
        .output()
        .expect("curl must be installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').expect("a status line");
    (code.trim().parse().expect("a status"), body.to_string())
}

#[test]
fn a_certificate_pasted_on_the_admin_page_binds_the_new_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (gw, certs) = start(dir.path(), "");
    let out = gw.cli(&["user", "add", "root", "--role", "admin"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "user add: {text}");
    let after = |label: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(label))
            .unwrap_or_else(|| panic!("{label} in {text}"))
            .trim()
            .to_string()
    };
    let password = after("one-time password:");
    let totp = totp_rs::Totp::from_url(after(
        "TOTP enrolment URI (add it to an authenticator app):",
    ))
    .expect("an otpauth URI");
    let jar = dir.path().join("cookies");
    let login = json!({
        "name": "root",
        "password": password,
        "code": totp.generate_current().to_string(),
    });
    let (status, body) = curl_with_jar(
        &gw,
        &certs,
        &jar,
        "/login",
        &[
            "-H",
            "content-type: application/json",
            "-d",
            &login.to_string(),
        ],
    );
    assert_eq!(status, 200, "{body}");
    let csrf = serde_json::from_str::<Value>(&body).expect("json")["csrf"]
        .as_str()
        .expect("csrf")
        .to_string();
    let certificate = format!("certificate@{}", certs.path("client.crt").display());
    let (status, page) = curl_with_jar(
        &gw,
        &certs,
        &jar,
        "/keys/add",
        &[
            "--data-urlencode",
            &format!("csrf={csrf}"),
            "--data-urlencode",
            "name=pharmacy-robot",
            "--data-urlencode",
            "scope=queue",
            "--data-urlencode",
            &certificate,
        ],
    );
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Bound to the client certificate"), "{page}");
    let (status, page) = curl_with_jar(
        &gw,
        &certs,
        &jar,
        "/keys/add",
        &[
            "--data-urlencode",
            &format!("csrf={csrf}"),
            "--data-urlencode",
            "name=broken",
            "--data-urlencode",
            "scope=queue",
            "--data-urlencode",
            "certificate=not a certificate",
        ],
    );
    assert_eq!(status, 400, "{page}");

    let queues = curl(&gw, &certs, Some("client"), "GET", "/api/v1/queues", &[]);
    assert_eq!(queues.status(), 200, "{:?}", queues.0);
    let (_, page) = curl_with_jar(&gw, &certs, &jar, "/", &[]);
    assert!(
        page.contains("valid, certificate "),
        "the list shows the binding"
    );
}

#[test]
fn a_client_ca_file_without_a_certificate_is_named_by_check_config() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("gateway.toml");
    std::fs::write(dir.path().join("ca.pem"), "not a certificate\n").expect("ca");
    let text = config_text(
        dir.path(),
        free_port(),
        "[web.tls]\nself_signed = true\nclient_ca_file = \"ca.pem\"\n",
    );
    std::fs::write(&path, &text).expect("config");
    let (code, stderr) = check_config(&path);
    assert_ne!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}:12: web.tls.client_ca_file: {} holds no PEM certificate",
            path.display(),
            dir.path().join("ca.pem").display()
        )),
        "{stderr}"
    );
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}
