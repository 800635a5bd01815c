//! Staff logins against the real daemon over HTTP: accounts made with the CLI, password and
//! TOTP code (computed here from the enrolment URI the CLI printed), a role check on every
//! route, and every refusal audited.

mod common;

use common::*;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::time::Duration;

const ACCESS: &str = "[access]\nenabled = true\nlockout_after = 3\nlockout_initial_secs = 600\nlockout_max_secs = 3600\n";

/// An account as the CLI printed it.
struct Account {
    name: String,
    password: String,
    totp: totp_rs::Totp,
}

impl Account {
    fn code(&self) -> String {
        self.totp.generate_current().to_string()
    }

    /// A code valid in no step the gateway accepts now.
    fn wrong_code(&self) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        let near: Vec<String> = [now - 60, now - 30, now, now + 30, now + 60]
            .iter()
            .map(|t| self.totp.generate(*t).to_string())
            .collect();
        ["000000", "111111", "222222", "333333", "444444", "555555"]
            .into_iter()
            .find(|c| !near.iter().any(|n| n == c))
            .expect("a wrong code")
            .to_string()
    }
}

fn add_user(gw: &Gateway, name: &str, role: &str) -> Account {
    let out = gw.cli(&["user", "add", name, "--role", role]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "user add: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = |label: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(label))
            .unwrap_or_else(|| panic!("{label} in {text}"))
            .trim()
            .to_string()
    };
    let uri = after("TOTP enrolment URI (add it to an authenticator app):");
    Account {
        name: name.into(),
        password: after("one-time password:"),
        totp: totp_rs::Totp::from_url(&uri).expect("an otpauth URI"),
    }
}

/// A browser's share of a session: its cookie and CSRF token, sent with each request.
struct Client {
    base: String,
    agent: ureq::Agent,
    cookie: Option<String>,
    csrf: Option<String>,
}

impl Client {
    fn new(gw: &Gateway) -> Client {
        Client {
            base: gw.url(""),
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .max_redirects(0)
                .build()
                .into(),
            cookie: None,
            csrf: None,
        }
    }

    fn answer(mut r: ureq::http::Response<ureq::Body>) -> (u16, Value) {
        let status = r.status().as_u16();
        (status, r.body_mut().read_json().unwrap_or(Value::Null))
    }

    fn get(&self, path: &str) -> (u16, Value) {
        let mut req = self.agent.get(format!("{}{path}", self.base));
        if let Some(c) = &self.cookie {
            req = req.header("cookie", c);
        }
        Self::answer(req.call().expect("GET"))
    }

    fn page(&self, path: &str) -> (u16, String) {
        let mut req = self.agent.get(format!("{}{path}", self.base));
        if let Some(c) = &self.cookie {
            req = req.header("cookie", c);
        }
        let mut r = req.call().expect("GET");
        let status = r.status().as_u16();
        (status, r.body_mut().read_to_string().unwrap_or_default())
    }

    /// Posts an HTML form as the page does (its CSRF token is a field, not a header).
    fn post_form(&self, path: &str, fields: &[(&str, &str)]) -> u16 {
        self.form_page(path, fields).0
    }

    /// Posts an HTML form; returns the status and the page answered.
    fn form_page(&self, path: &str, fields: &[(&str, &str)]) -> (u16, String) {
        let mut req = self.agent.post(format!("{}{path}", self.base));
        if let Some(c) = &self.cookie {
            req = req.header("cookie", c);
        }
        let mut r = req.send_form(fields.iter().copied()).expect("POST form");
        let status = r.status().as_u16();
        (status, r.body_mut().read_to_string().unwrap_or_default())
    }

    fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let mut req = self.agent.post(format!("{}{path}", self.base));
        if let Some(c) = &self.cookie {
            req = req.header("cookie", c);
        }
        if let Some(t) = &self.csrf {
            req = req.header("x-csrf-token", t);
        }
        Self::answer(req.send_json(body).expect("POST"))
    }

    /// Logs in; keeps the session cookie and CSRF token on success. Returns the status.
    fn login(&mut self, name: &str, password: &str, code: &str) -> u16 {
        let body = json!({ "name": name, "password": password, "code": code });
        let mut r = self
            .agent
            .post(format!("{}/login", self.base))
            .send_json(&body)
            .expect("POST /login");
        let status = r.status().as_u16();
        if status == 200 {
            let set = r
                .headers()
                .get("set-cookie")
                .and_then(|v| v.to_str().ok())
                .expect("a session cookie")
                .to_string();
            for attribute in ["HttpOnly", "Secure", "SameSite=Strict"] {
                assert!(set.contains(attribute), "{set}");
            }
            self.cookie = set.split(';').next().map(str::to_string);
            let v: Value = r.body_mut().read_json().expect("json");
            self.csrf = v["csrf"].as_str().map(str::to_string);
        }
        status
    }

    fn login_as(&mut self, a: &Account) -> u16 {
        self.login(&a.name, &a.password, &a.code())
    }
}

/// The audit records of `action`, newest first, as (actor, detail as JSON when it is JSON).
fn audited(admin: &Client, action: &str) -> Vec<(String, Value)> {
    let (status, rows) = admin.get("/api/v1/audit?limit=500");
    assert_eq!(status, 200, "{rows}");
    rows.as_array()
        .expect("audit")
        .iter()
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

fn refused(admin: &Client, actor: &str, reason: &str, path: &str) -> bool {
    audited(admin, "access.refused")
        .iter()
        .any(|(a, d)| a == actor && d["reason"] == reason && d["path"] == path)
}

fn raw_status(gw: &Gateway, request: &str) -> u16 {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", gw.web)).expect("connect");
    s.write_all(request.as_bytes()).expect("write");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read");
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn staff_reach_their_roles_routes_only_and_every_refusal_is_audited() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut gw = Gateway::new(dir.path(), ACCESS);
    gw.start();
    let desk = add_user(&gw, "desk", "front_desk");
    let nurse = add_user(&gw, "nurse", "clinical");
    let root = add_user(&gw, "root", "admin");

    let anonymous = Client::new(&gw);
    let (status, _) = anonymous.get("/api/v1/queues");
    assert_eq!(status, 401);
    assert_eq!(anonymous.get("/api/v1/health").0, 200);

    let mut d = Client::new(&gw);
    assert_eq!(d.login_as(&desk), 200);
    let (status, session) = d.get("/api/v1/session");
    assert_eq!((status, &session["role"]), (200, &json!("front_desk")));
    let (status, body) = d.post(
        "/api/v1/queues/general/check-in",
        &json!({ "patient_ref": "MRN-1" }),
    );
    assert_eq!(status, 201, "{body}");
    let (status, board) = d.get("/api/v1/queues");
    assert_eq!(status, 200);
    assert_eq!(board.as_array().map(Vec::len), Some(1));
    let (status, body) = d.get("/api/v1/notices");
    assert_eq!(status, 403);
    assert_eq!(
        body,
        json!({ "error": "forbidden" }),
        "no detail for an attacker"
    );
    assert_eq!(
        d.post(
            "/api/v1/dlq/replay",
            &json!({ "destination": "cloud", "all": true })
        )
        .0,
        403
    );
    // A state change without the session's CSRF token is refused even for the right role.
    let no_csrf = Client {
        csrf: None,
        cookie: d.cookie.clone(),
        ..Client::new(&gw)
    };
    assert_eq!(
        no_csrf
            .post("/api/v1/queues/general/call-next", &json!({}))
            .0,
        403
    );
    let forged = Client {
        csrf: Some("0".repeat(64)),
        cookie: d.cookie.clone(),
        ..Client::new(&gw)
    };
    assert_eq!(
        forged
            .post("/api/v1/queues/general/call-next", &json!({}))
            .0,
        403
    );

    let mut n = Client::new(&gw);
    assert_eq!(n.login_as(&nurse), 200);
    assert_eq!(n.get("/api/v1/notices").0, 200);
    assert_eq!(n.get("/api/v1/queues").0, 200);
    assert_eq!(n.get("/api/v1/backlog").0, 403);

    let mut admin = Client::new(&gw);
    assert_eq!(admin.login_as(&root), 200);
    assert_eq!(admin.get("/api/v1/backlog").0, 200);
    assert!(refused(&admin, "anonymous", "no_session", "/api/v1/queues"));
    assert!(refused(&admin, "staff:desk", "role", "/api/v1/notices"));
    assert!(refused(&admin, "staff:desk", "role", "/api/v1/dlq/replay"));
    assert!(refused(
        &admin,
        "staff:desk",
        "csrf",
        "/api/v1/queues/general/call-next"
    ));
    assert!(refused(&admin, "staff:nurse", "role", "/api/v1/backlog"));
    let (_, rows) = admin.get("/api/v1/audit?limit=500");
    let added: Vec<&Value> = rows
        .as_array()
        .expect("audit")
        .iter()
        .filter(|r| r["action"] == "access.user_added")
        .collect();
    assert_eq!(added.len(), 3);
    assert!(
        added
            .iter()
            .all(|r| r["at"].as_i64() > Some(1_700_000_000_000)
                && r["actor"].as_str().is_some_and(|a| a.starts_with("cli:"))),
        "the CLI's changes are audited when and by whom they happened: {added:?}"
    );
    let logins: Vec<String> = audited(&admin, "access.login")
        .into_iter()
        .map(|(a, _)| a)
        .collect();
    assert_eq!(logins, ["staff:root", "staff:nurse", "staff:desk"]);

    // Logging out ends the session on the server, not only in the browser.
    let (status, _) = d.post("/logout", &json!({}));
    assert_eq!(status, 200);
    assert_eq!(d.get("/api/v1/queues").0, 401);
    assert_eq!(audited(&admin, "access.logout")[0].0, "staff:desk");

    // A disabled account's sessions end with it.
    let out = gw.cli(&["user", "disable", "nurse"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(n.get("/api/v1/queues").0, 401);
    let out = gw.cli(&["user", "list", "--json"]);
    let users: Value = serde_json::from_slice(&out.stdout).expect("json");
    let nurse_row = users
        .as_array()
        .and_then(|u| u.iter().find(|u| u["name"] == "nurse"))
        .expect("nurse listed");
    assert_eq!(nurse_row["enabled"], false);
    assert_eq!(
        Client::new(&gw).login_as(&nurse),
        401,
        "a disabled account cannot log in"
    );
    let refusals = audited(&admin, "access.login_refused");
    assert_eq!(refusals[0].0, "staff:nurse");
    assert_eq!(refusals[0].1["reason"], "disabled");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("argon2"),
        "no secrets listed"
    );
}

#[test]
fn wrong_password_replayed_code_and_locked_account_are_refused_and_audited() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut gw = Gateway::new(dir.path(), ACCESS);
    gw.start();
    let root = add_user(&gw, "root", "admin");
    let victim = add_user(&gw, "victim", "clinical");

    let mut admin = Client::new(&gw);
    let code = root.code();
    assert_eq!(admin.login(&root.name, &root.password, &code), 200);
    // The same code again, even with the right password, is refused: a code is used once.
    let mut replay = Client::new(&gw);
    let status = replay.login(&root.name, &root.password, &code);
    assert_eq!(status, 401);

    let mut c = Client::new(&gw);
    assert_eq!(c.login("nobody", "x", "123456"), 401);
    assert_eq!(
        c.login(&victim.name, &victim.password, &victim.wrong_code()),
        401
    );
    for _ in 0..2 {
        assert_eq!(c.login(&victim.name, "wrong password", &victim.code()), 401);
    }
    // Three failures in a row lock the account: the right password and code are refused too.
    assert_eq!(c.login_as(&victim), 401);

    let refusals = audited(&admin, "access.login_refused");
    let reasons: Vec<(&str, &str)> = refusals
        .iter()
        .map(|(a, d)| (a.as_str(), d["reason"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(
        reasons,
        [
            ("staff:victim", "locked"),
            ("staff:victim", "bad_password"),
            ("staff:victim", "bad_password"),
            ("staff:victim", "bad_code"),
            ("anonymous", "no_account"),
            ("staff:root", "replayed_code"),
        ]
    );
    assert_eq!(refusals[1].1["failures"], 3);
    let out = gw.cli(&["user", "list"]);
    let listing = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("victim") && l.ends_with("locked")),
        "{listing}"
    );

    // Sessions, locks and used codes are in the journal: a restart changes none of them.
    gw.signal("TERM");
    gw.wait(std::time::Duration::from_secs(20));
    gw.start();
    assert_eq!(admin.get("/api/v1/backlog").0, 200, "the session survived");
    assert_eq!(
        Client::new(&gw).login(&root.name, &root.password, &code),
        401
    );
    assert_eq!(Client::new(&gw).login_as(&victim), 401, "still locked");
}

#[test]
fn a_foreign_host_or_origin_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut gw = Gateway::new(dir.path(), ACCESS);
    gw.start();
    let root = add_user(&gw, "root", "admin");

    // A rebinding DNS name reaches the same address with another Host header.
    let rebound = "GET /api/v1/health HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n";
    assert_eq!(raw_status(&gw, rebound), 400);

    let mut admin = Client::new(&gw);
    assert_eq!(admin.login_as(&root), 200);
    let cross = format!(
        "POST /api/v1/reload HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: http://evil.example\r\nCookie: {cookie}\r\nX-CSRF-Token: {csrf}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        port = gw.web,
        cookie = admin.cookie.clone().unwrap_or_default(),
        csrf = admin.csrf.clone().unwrap_or_default(),
    );
    assert_eq!(raw_status(&gw, &cross), 403);
    assert!(refused(&admin, "anonymous", "host", "/api/v1/health"));
    assert!(refused(&admin, "anonymous", "origin", "/api/v1/reload"));
}

#[test]
fn the_page_shows_each_role_its_own_parts_and_its_forms_carry_the_csrf_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut gw = Gateway::new(dir.path(), ACCESS);
    gw.start();
    let desk = add_user(&gw, "desk", "front_desk");
    let root = add_user(&gw, "root", "admin");

    let anonymous = Client::new(&gw);
    let (status, html) = anonymous.page("/");
    assert_eq!(status, 401);
    assert!(html.contains("/login"), "{html}");
    let (status, form) = anonymous.page("/login");
    assert_eq!(status, 200);
    assert!(form.contains("name=\"code\""), "{form}");

    // The login form: a redirect to the page with the session cookie.
    let code = desk.code();
    let mut r = anonymous
        .agent
        .post(gw.url("/login"))
        .send_form([
            ("name", "desk"),
            ("password", desk.password.as_str()),
            ("code", code.as_str()),
        ])
        .expect("POST /login");
    assert_eq!(r.status().as_u16(), 303);
    let cookie = r
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|c| c.split(';').next())
        .expect("cookie")
        .to_string();
    let _ = r.body_mut().read_to_string();
    let d = Client {
        cookie: Some(cookie),
        ..Client::new(&gw)
    };
    let (status, html) = d.page("/");
    assert_eq!(status, 200);
    assert!(html.contains("Waiting queues") && html.contains("desk (front_desk)"));
    assert!(
        !html.contains("Dead letters") && !html.contains("Outbound backlog"),
        "{html}"
    );
    assert!(!html.contains("Devices and connectors"));

    let mut admin = Client::new(&gw);
    assert_eq!(admin.login_as(&root), 200);
    let csrf = admin.csrf.take().expect("csrf");
    let (status, html) = admin.page("/");
    assert_eq!(status, 200);
    assert!(html.contains("Dead letters") && html.contains("Outbound backlog"));
    assert!(
        html.contains(&format!("name=csrf value=\"{csrf}\"")),
        "{html}"
    );
    let replay = [("destination", "cloud")];
    assert_eq!(
        admin.post_form("/dlq/replay", &replay),
        403,
        "no token, no change"
    );
    let with_token = [("destination", "cloud"), ("csrf", csrf.as_str())];
    assert_eq!(admin.post_form("/dlq/replay", &with_token), 303);
    let replays = audited(&admin, "dlq-replay");
    assert_eq!(replays.len(), 1);
    assert_eq!(
        replays[0].0, "staff:root",
        "the audit names the logged-in admin"
    );
    assert!(refused(&admin, "staff:root", "csrf", "/dlq/replay"));
}

/// The text of the element with `id` on a page the gateway wrote (`<code id=ID>TEXT</code>`).
fn element_text(page: &str, id: &str) -> String {
    let start = page
        .find(&format!("id={id}>"))
        .unwrap_or_else(|| panic!("#{id} in {page}"))
        + id.len()
        + 4;
    let end = page[start..].find('<').expect("element end") + start;
    page[start..end].replace("&amp;", "&")
}

#[test]
fn only_admins_reset_and_disable_accounts_through_the_pages_forms_and_each_is_audited() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut gw = Gateway::new(dir.path(), ACCESS);
    gw.start();
    let desk = add_user(&gw, "desk", "front_desk");
    let root = add_user(&gw, "root", "admin");

    let mut d = Client::new(&gw);
    assert_eq!(d.login_as(&desk), 200);
    let csrf = d.csrf.clone().expect("csrf");
    let (status, _) = d.form_page(
        "/users/add",
        &[("csrf", &csrf), ("name", "x"), ("role", "admin")],
    );
    assert_eq!(status, 403, "a front desk may not add accounts");
    let (status, page) = d.page("/");
    assert_eq!(status, 200);
    assert!(!page.contains("/users/add"), "nor see the form");

    let mut a = Client::new(&gw);
    assert_eq!(a.login_as(&root), 200);
    let admin_csrf = a.csrf.clone().expect("csrf");
    let (status, page) = a.page("/");
    assert_eq!(status, 200);
    assert!(page.contains("action=/users/add"), "{page}");
    assert_eq!(
        a.form_page("/users/reset", &[("name", "desk")]).0,
        403,
        "a form without the CSRF token changes nothing"
    );
    let (status, page) = a.form_page("/users/reset", &[("csrf", &admin_csrf), ("name", "desk")]);
    assert_eq!(status, 200, "{page}");
    let reset = Account {
        name: "desk".into(),
        password: element_text(&page, "one-time-password"),
        totp: totp_rs::Totp::from_url(element_text(&page, "enrolment-uri")).expect("URI"),
    };
    assert_eq!(d.get("/api/v1/session").0, 401, "a reset ends the sessions");
    assert_eq!(
        Client::new(&gw).login_as(&desk),
        401,
        "the old secrets are gone"
    );
    let mut d = Client::new(&gw);
    assert_eq!(d.login_as(&reset), 200);

    let (status, _) = a.form_page("/users/disable", &[("csrf", &admin_csrf), ("name", "root")]);
    assert_eq!(status, 409, "an admin cannot lock themselves out");
    let (status, _) = a.form_page("/users/disable", &[("csrf", &admin_csrf), ("name", "desk")]);
    assert_eq!(status, 303);
    assert_eq!(
        d.get("/api/v1/session").0,
        401,
        "disabling ends the sessions"
    );

    for action in ["access.user_reset", "access.user_disabled"] {
        let found = audited(&a, action);
        assert!(
            found
                .iter()
                .any(|(who, d)| who == "staff:root" && d["user"] == "desk"),
            "{action}: {found:?}"
        );
    }
    let refused = audited(&a, "access.refused");
    assert!(
        refused.iter().any(|(who, d)| who == "staff:desk"
            && d["path"] == "/users/add"
            && d["reason"] == "role"),
        "{refused:?}"
    );
}

/// The patients and purpose of each `access.patient_viewed` record by `who`, oldest first.
fn patient_views(admin: &Client, who: &str) -> Vec<(Value, Value, Value)> {
    let mut views: Vec<(Value, Value, Value)> = audited(admin, "access.patient_viewed")
        .into_iter()
        .filter(|(actor, _)| actor == who)
        .map(|(_, d)| {
            (
                d["role"].clone(),
                d["patients"].clone(),
                d["purpose"].clone(),
            )
        })
        .collect();
    views.reverse();
    views
}

#[test]
fn clinical_staff_see_both_values_of_a_conflict_and_every_view_of_patient_data_is_audited() {
    use common::fhir_server::{FhirServer, MRN};
    let dir = tempfile::tempdir().expect("tempdir");
    let server = FhirServer::start(dir.path(), &[]);
    let jane = server.create_patient("M1", "Doe", "Jane", "1980-02-03");
    let id = jane["id"].as_str().expect("id").to_string();
    let fhir = format!(
        "[connectors.fhir]\nbase_url = \"{}\"\nidentifier_system = \"{MRN}\"\npoll_interval_s = 300\n\
         lookup_timeout_ms = 2000\nrequest_timeout_ms = 2000\nconnect_timeout_ms = 500\n\n\
         [destinations.ehr-fhir]\nbackoff_initial_ms = 100\nbackoff_max_ms = 400\nmax_attempts = 1000\n",
        server.base()
    );
    let mut gw = Gateway::new(dir.path(), &format!("{ACCESS}\n{fhir}"));
    gw.start();
    let desk = add_user(&gw, "desk", "front_desk");
    let nurse = add_user(&gw, "nurse", "clinical");
    let root = add_user(&gw, "root", "admin");
    let mut d = Client::new(&gw);
    assert_eq!(d.login_as(&desk), 200);
    let mut n = Client::new(&gw);
    assert_eq!(n.login_as(&nurse), 200);
    let mut a = Client::new(&gw);
    assert_eq!(a.login_as(&root), 200);

    wait_for("the start-up poll", Duration::from_secs(20), || {
        n.get("/api/v1/fhir/status").1["last_poll_at"].as_i64()
    });
    let (status, v) = d.post(
        "/api/v1/queues/general/check-in",
        &json!({ "patient_ref": "M1" }),
    );
    assert_eq!(status, 201, "{v}");
    let mut theirs = jane.clone();
    theirs["telecom"] = json!([{ "system": "phone", "value": "+41 555 0111" }]);
    server.call("PUT", &format!("/Patient/{id}"), Some(theirs));
    let (status, v) = n.post(
        &format!("/api/v1/fhir/patients/{id}/demographics"),
        &json!({ "fields": { "phone": "+41 555 0222" } }),
    );
    assert_eq!(status, 202, "{v}");

    let conflict = wait_for("the conflict", Duration::from_secs(30), || {
        let (_, list) = n.get("/api/v1/fhir/conflicts");
        list.as_array().and_then(|l| l.first().cloned())
    });
    assert_eq!(conflict["local"]["telecom"][0]["value"], "+41 555 0222");
    assert_eq!(conflict["remote"]["telecom"][0]["value"], "+41 555 0111");
    let (status, _) = n.get(&format!("/api/v1/fhir/patients/{id}"));
    assert_eq!(status, 200);

    // The status page names the conflict's fields only; its own page shows both values.
    let (status, page) = n.page("/");
    assert_eq!(status, 200);
    assert!(page.contains("EHR conflicts to resolve"), "{page}");
    assert!(
        !page.contains("+41 555 0222") && !page.contains("+41 555 0111"),
        "{page}"
    );
    let compare = format!("/fhir/conflicts/{}", conflict["id"]);
    assert!(page.contains(&compare), "{page}");
    let (status, page) = n.page(&compare);
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains("+41 555 0222") && page.contains("+41 555 0111"),
        "{page}"
    );
    let (status, page) = a.page(&compare);
    assert_eq!(status, 200, "admins too");
    assert!(page.contains("+41 555 0111"), "{page}");

    // The front desk sees neither, and its attempts show no patient data.
    let (status, body) = d.get("/api/v1/fhir/conflicts");
    assert_eq!((status, body), (403, json!({ "error": "forbidden" })));
    let (status, page) = d.page(&compare);
    assert_eq!(status, 403);
    assert!(!page.contains("+41 555 0111"));
    assert_eq!(d.get(&format!("/api/v1/fhir/patients/{id}")).0, 403);
    let (_, page) = d.page("/");
    assert!(!page.contains("EHR conflicts") && !page.contains(&compare));

    let views = patient_views(&a, "staff:nurse");
    let role = json!("clinical");
    let patient = json!([id]);
    assert_eq!(
        views,
        [
            (role.clone(), patient.clone(), json!("operations")),
            (role.clone(), patient.clone(), json!("treatment")),
            (role, patient.clone(), json!("operations")),
        ],
        "the conflicts list, the patient, the conflict's page"
    );
    assert_eq!(
        patient_views(&a, "staff:root"),
        [(json!("admin"), patient, json!("operations"))]
    );
    assert!(patient_views(&a, "staff:desk").is_empty());
}

#[test]
fn a_passkey_challenge_tells_nothing_about_the_name_or_password() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut gw = Gateway::new(dir.path(), ACCESS);
    gw.start();
    let desk = add_user(&gw, "desk", "front_desk");
    let c = Client::new(&gw);
    let options = |name: &str| {
        let (status, v) = c.post("/login/passkey/options", &json!({ "name": name }));
        assert_eq!(status, 200, "{v}");
        let ids = v["allowCredentials"].as_array().map(Vec::len);
        (ids, v["challenge"].as_str().map(str::len))
    };
    assert_eq!(options("desk"), options("nobody"));
    let (status, v) = c.post("/login/passkey/options", &json!({ "name": "desk" }));
    assert_eq!(status, 200);
    // A forged answer with the right password is refused like any failed login.
    let forged = json!({
        "password": desk.password,
        "challenge": v["challenge"],
        "id": v["allowCredentials"][0],
        "clientDataJSON": "e30",
        "authenticatorData": "AAAA",
        "signature": "AAAA",
    });
    assert_eq!(
        c.post("/login/passkey", &forged),
        (401, json!({ "error": "login required" }))
    );
    assert_eq!(
        c.post("/login/passkey", &forged).0,
        401,
        "a challenge is used once"
    );
    let (status, session) = Client::new(&gw).get("/api/v1/session");
    assert_eq!(
        (status, session),
        (401, json!({ "error": "login required" }))
    );
    let mut root = Client::new(&gw);
    let admin = add_user(&gw, "root", "admin");
    assert_eq!(root.login_as(&admin), 200);
    let refused = audited(&root, "access.login_refused");
    assert!(
        refused
            .iter()
            .any(|(who, d)| who == "staff:desk" && d["reason"] == "bad_code"),
        "{refused:?}"
    );
}
