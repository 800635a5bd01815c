//! The page's administration for admins: the accounts and API keys, listed, added, disabled,
//! reset and revoked through forms. Served only with logins on; the route table puts every
//! route here in the administration group, so the server refuses them to any other role, and
//! the page shows the section only to a role it admits.
//!
//! Each change is the CLI's own journal request, audited with the admin's name. A new
//! account's one-time password and TOTP enrolment URI, or a new key, are shown once on the
//! answer to the form (never cached, never stored in clear); the lists show no secrets.

use super::AppState;
use super::html::{age, esc};
use crate::access::{
    self, AccessError, DisableUser, KeySummary, ListKeys, ListUsers, RevokeKey, Role, Scope, Staff,
    UserSummary, totp,
};
use crate::journal::{self, JournalError};
use actix_web::http::StatusCode;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use serde::Deserialize;
use std::fmt::Write;

/// The administration's form routes, served when logins are on.
pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/users/add", web::post().to(add_user))
        .route("/users/disable", web::post().to(disable_user))
        .route("/users/reset", web::post().to(reset_user))
        .route("/keys/add", web::post().to(add_key))
        .route("/keys/revoke", web::post().to(revoke_key));
}

/// The accounts and keys for the section; empty lists when the journal does not answer, as
/// the rest of the page does.
pub(super) async fn listing(s: &AppState) -> (Vec<UserSummary>, Vec<KeySummary>) {
    let users = journal::ask(&s.journal, ListUsers).await;
    let keys = journal::ask(&s.journal, ListKeys).await;
    (users.unwrap_or_default(), keys.unwrap_or_default())
}

/// The Users and Keys sections, each row with its actions and each form with `token` (the
/// CSRF field).
pub(super) fn section(users: &[UserSummary], keys: &[KeySummary], token: &str, now: i64) -> String {
    let mut h = String::from(
        "<h2 id=users>Users</h2><table><tr><th>Name</th><th>Role</th><th>State</th><th></th></tr>",
    );
    for u in users {
        let state = match (u.enabled, u.locked_until) {
            (false, _) => "disabled",
            (true, Some(t)) if t > now => "locked",
            _ => "enabled",
        };
        let name = esc(&u.name);
        let _ = write!(
            h,
            "<tr><td>{name}</td><td>{role}</td><td>{state}</td><td>\
             <form method=post action=/users/reset>{token}<input type=hidden name=name value=\"{name}\">\
             <button title=\"new one-time password and TOTP secret\">Reset {name}</button></form>",
            role = u.role.as_str(),
        );
        if u.enabled {
            let _ = write!(
                h,
                " <form method=post action=/users/disable>{token}<input type=hidden name=name value=\"{name}\">\
                 <button>Disable {name}</button></form>"
            );
        }
        h.push_str("</td></tr>");
    }
    h.push_str("</table><form method=post action=/users/add><p>");
    h.push_str(token);
    h.push_str(
        "<label>Name <input name=name required pattern=\"[A-Za-z0-9._\\-]{1,64}\"></label> \
         <label>Role <select name=role>",
    );
    for role in Role::ALL {
        let _ = write!(h, "<option value={r}>{r}</option>", r = role.as_str());
    }
    h.push_str("</select></label> <button>Add user</button></p></form>");

    h.push_str(
        "<h2 id=keys>API keys</h2><table><tr><th>Name</th><th>Scope</th><th>Created</th>\
         <th>Expires</th><th>State</th><th></th></tr>",
    );
    for k in keys {
        let name = esc(&k.name);
        let expires = match k.expires_at {
            None => "never".to_string(),
            Some(t) if t <= now => "expired".to_string(),
            Some(t) => format!("in {} days", (t - now + 86_399_999) / 86_400_000),
        };
        let bound = k
            .certificate
            .as_deref()
            .map(|c| format!(", certificate {}", esc(&access::mtls::prefix(c))))
            .unwrap_or_default();
        let _ = write!(
            h,
            "<tr><td>{name}</td><td>{scope}</td><td>{created} by {by}</td><td>{expires}</td><td>{state}{bound}</td><td>",
            scope = esc(&k.scope),
            created = age(now, k.created_at),
            by = esc(&k.created_by),
            state = if k.revoked_at.is_some() {
                "revoked"
            } else {
                "valid"
            },
        );
        if k.revoked_at.is_none() {
            let _ = write!(
                h,
                "<form method=post action=/keys/revoke>{token}<input type=hidden name=name value=\"{name}\">\
                 <button>Revoke {name}</button></form>"
            );
        }
        h.push_str("</td></tr>");
    }
    let _ = write!(
        h,
        "</table><form method=post action=/keys/add><p>{token}\
         <label>Client <input name=name required pattern=\"[A-Za-z0-9._\\-]{{1,64}}\"></label> \
         <label>Scope <input name=scope required placeholder=\"a role, or groups: queue,metrics\"></label> \
         <label>Expires after <input name=expires_days inputmode=numeric size=4> days</label></p>\
         <p><label>Client certificate (PEM; optional: binds the key to it) \
         <textarea name=certificate rows=4 cols=64></textarea></label> \
         <button>Add key</button></p></form>"
    );
    h
}

/// A page answering a form: a heading and its body, never cached (it may hold a secret shown
/// once).
fn answer(status: StatusCode, title: &str, body: &str) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header(("cache-control", "no-store"))
        .body(format!(
            "<!doctype html><html lang=en><head><meta charset=utf-8><title>clinic-gateway: {t}</title></head>\
             <body><h1>{t}</h1>{body}<p><a href=\"/#users\">Back to the status page</a></p></body></html>",
            t = esc(title),
        ))
}

fn refused(status: StatusCode, why: &str) -> HttpResponse {
    answer(
        status,
        "Not done",
        &format!("<p role=alert>{}</p>", esc(why)),
    )
}

fn journal_refused(e: JournalError) -> HttpResponse {
    match e {
        JournalError::Rejected(why) => refused(StatusCode::CONFLICT, &why),
        JournalError::NotFound(why) => refused(StatusCode::NOT_FOUND, &why),
        e => {
            tracing::warn!(error = %e, "administration not recorded");
            refused(
                StatusCode::SERVICE_UNAVAILABLE,
                "the journal did not answer; try again",
            )
        }
    }
}

fn access_refused(e: AccessError) -> HttpResponse {
    match e {
        AccessError::BadName | AccessError::BadKeyName => {
            refused(StatusCode::BAD_REQUEST, &e.to_string())
        }
        e => {
            tracing::warn!(error = %e, "account secrets not made");
            refused(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the secrets could not be made",
            )
        }
    }
}

/// The admin behind a request and their name in the audit. The guard let the request through
/// only for a role granted the route; with no session there is no one to record, so nothing is
/// done.
fn admin(req: &HttpRequest) -> Option<(Staff, String)> {
    let staff = req.extensions().get::<Staff>().cloned()?;
    let by = access::audit_actor(req)?;
    Some((staff, by))
}

fn no_admin() -> HttpResponse {
    refused(
        StatusCode::FORBIDDEN,
        "administration needs an admin's login",
    )
}

/// The secrets of a new or reset account, told once.
fn enrolment(name: &str, role: Option<Role>, password: &str, uri: &str) -> String {
    let qr = totp::qr_svg(uri).unwrap_or_default();
    let who = match role {
        Some(r) => format!("{} ({})", esc(name), r.as_str()),
        None => esc(name),
    };
    format!(
        "<p>Give these to {who} in person: they are shown this once. The password must be used \
         with a code from an authenticator app enrolled with the URI or the QR code.</p>\
         <p>One-time password: <code id=one-time-password>{pw}</code></p>\
         <p>TOTP enrolment URI: <code id=enrolment-uri>{uri}</code></p><p>{qr}</p>",
        pw = esc(password),
        uri = esc(uri),
    )
}

#[derive(Deserialize)]
pub(super) struct AddUserForm {
    name: String,
    role: String,
}

async fn add_user(
    s: web::Data<AppState>,
    req: HttpRequest,
    form: web::Form<AddUserForm>,
) -> HttpResponse {
    let Some((_, by)) = admin(&req) else {
        return no_admin();
    };
    let AddUserForm { name, role } = form.into_inner();
    let Some(role) = Role::parse(&role) else {
        return refused(StatusCode::BAD_REQUEST, "unknown role");
    };
    // argon2 is meant to be slow: off the async executor.
    let made = web::block(move || access::new_account(&name, role, &by)).await;
    let account = match made {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => return access_refused(e),
        Err(_) => return refused(StatusCode::SERVICE_UNAVAILABLE, "try again"),
    };
    let name = account.request.name.clone();
    if let Err(e) = journal::ask(&s.journal, account.request).await {
        return journal_refused(e);
    }
    let body = enrolment(&name, Some(role), &account.password, &account.enrolment_uri);
    answer(StatusCode::OK, &format!("Account {name} added"), &body)
}

#[derive(Deserialize)]
pub(super) struct NameForm {
    name: String,
}

async fn reset_user(
    s: web::Data<AppState>,
    req: HttpRequest,
    form: web::Form<NameForm>,
) -> HttpResponse {
    let Some((_, by)) = admin(&req) else {
        return no_admin();
    };
    let name = form.into_inner().name;
    let made = web::block(move || access::reset_account(&name, &by)).await;
    let reset = match made {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return access_refused(e),
        Err(_) => return refused(StatusCode::SERVICE_UNAVAILABLE, "try again"),
    };
    let name = reset.request.name.clone();
    if let Err(e) = journal::ask(&s.journal, reset.request).await {
        return journal_refused(e);
    }
    let body = enrolment(&name, None, &reset.password, &reset.enrolment_uri);
    answer(StatusCode::OK, &format!("Account {name} reset"), &body)
}

async fn disable_user(
    s: web::Data<AppState>,
    req: HttpRequest,
    form: web::Form<NameForm>,
) -> HttpResponse {
    let Some((staff, by)) = admin(&req) else {
        return no_admin();
    };
    let name = form.into_inner().name;
    // The last admin disabling themselves would leave nobody to undo it from the page.
    if name == staff.user {
        return refused(StatusCode::CONFLICT, "you cannot disable your own account");
    }
    match journal::ask(&s.journal, DisableUser { name, by }).await {
        Ok(()) => to_section("/#users"),
        Err(e) => journal_refused(e),
    }
}

#[derive(Deserialize)]
pub(super) struct AddKeyForm {
    name: String,
    scope: String,
    /// Empty: the key does not expire.
    #[serde(default)]
    expires_days: String,
    /// A client certificate as PEM text; empty: the key is not bound to one.
    #[serde(default)]
    certificate: String,
}

async fn add_key(
    s: web::Data<AppState>,
    req: HttpRequest,
    form: web::Form<AddKeyForm>,
) -> HttpResponse {
    let Some((_, by)) = admin(&req) else {
        return no_admin();
    };
    let f = form.into_inner();
    let Some(scope) = Scope::parse(f.scope.trim()) else {
        return refused(
            StatusCode::BAD_REQUEST,
            "scope: a role, or route groups separated by commas",
        );
    };
    let days = match f.expires_days.trim() {
        "" => None,
        text => match text.parse::<u32>() {
            Ok(d @ 1..=3650) => Some(d),
            _ => return refused(StatusCode::BAD_REQUEST, "expiry: 1 to 3650 days"),
        },
    };
    let expires_at = days.map(|d| journal::now_ms() + i64::from(d) * 86_400_000);
    let certificate = match f.certificate.trim() {
        "" => None,
        text => match access::mtls::binding_of_pem(text) {
            Some(b) => Some(b),
            None => {
                return refused(
                    StatusCode::BAD_REQUEST,
                    "certificate: a PEM certificate (-----BEGIN CERTIFICATE-----)",
                );
            }
        },
    };
    let key = match access::new_key(&f.name, scope, expires_at, certificate, &by) {
        Ok(k) => k,
        Err(e) => return access_refused(e),
    };
    let bound = key
        .request
        .key
        .certificate
        .as_deref()
        .map(|c| {
            format!(
                "<p>Bound to the client certificate {}: its key is accepted only over a \
                 connection presenting it, and the certificate alone suffices.</p>",
                esc(c)
            )
        })
        .unwrap_or_default();
    if let Err(e) = journal::ask(&s.journal, key.request).await {
        return journal_refused(e);
    }
    let body = format!(
        "<p>Give this key to the client {name}'s administrator: it is shown this once and \
         stored only as a hash.</p><p>Key: <code id=key-text>{key}</code></p>{bound}",
        name = esc(&f.name),
        key = esc(&key.text),
    );
    answer(StatusCode::OK, &format!("Key {} added", f.name), &body)
}

async fn revoke_key(
    s: web::Data<AppState>,
    req: HttpRequest,
    form: web::Form<NameForm>,
) -> HttpResponse {
    let Some((_, by)) = admin(&req) else {
        return no_admin();
    };
    let name = form.into_inner().name;
    match journal::ask(&s.journal, RevokeKey { name, by }).await {
        Ok(()) => to_section("/#keys"),
        Err(e) => journal_refused(e),
    }
}

fn to_section(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header(("location", location))
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_lists_without_secrets_and_every_form_carries_the_token() {
        let users = [UserSummary {
            name: "desk<1>".into(),
            role: Role::FrontDesk,
            enabled: true,
            failed_attempts: 0,
            locked_until: None,
        }];
        let keys = [KeySummary {
            id: "k1".into(),
            name: "kiosk".into(),
            scope: "queue".into(),
            created_at: 0,
            created_by: "staff:admin".into(),
            expires_at: Some(3 * 86_400_000),
            revoked_at: None,
            certificate: Some("AB:CD:EF:01:23".into()),
        }];
        let token = "<input type=hidden name=csrf value=\"T\">";
        let html = section(&users, &keys, token, 60_000);
        assert!(
            html.contains("desk&lt;1&gt;") && !html.contains("desk<1>"),
            "{html}"
        );
        assert_eq!(html.matches("<form").count(), 5);
        assert_eq!(html.matches(token).count(), 5);
        assert!(html.contains("in 3 days"));
        assert!(html.contains("valid, certificate AB:CD:EF:01"), "{html}");
        assert!(!html.contains("k1"), "the key's id stays off the page");
    }
}
