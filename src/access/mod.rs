//! Staff access: local accounts with a role, an argon2id password and a TOTP second factor;
//! sessions; API keys for systems, scoped to a role or to route groups; which role or key may
//! use which route, checked on the server for every request.
//!
//! The account, session and key tables are this domain's own (`store.rs`), changed only through
//! the journal's writer ([`Work`]); password hashing runs in the caller, never on the writer's
//! thread. `http.rs` is the actix-web side: the guard every request passes and the login and
//! logout routes; `oidc/` signs staff in through the clinic's OpenID provider instead.
//!
//! SMART Backend Services clients (the FHIR API's callers) are registered with a
//! public key and the system scopes they may get (`smart.rs`); they trade a signed assertion
//! (`oauth.rs`) for a short-lived bearer token at the token endpoint (`token.rs`), whose
//! check the guard hands the routes the table gives to SMART clients.
//!
//! **Invariant:** with `[access]` disabled nothing here runs: the page and API behave as
//! before, on loopback only.
//! **Invariant:** a refused request or login is audited (a peer past its refusal budget once per
//! window, see `throttle.rs`) and answered with no detail beyond its status; secrets
//! (passwords, TOTP secrets, session ids, key secrets, tokens, assertions) are never logged
//! or audited.

pub mod config;
pub mod http;
pub mod keys;
pub mod mtls;
pub mod oauth;
pub mod oidc;
pub mod passkey;
pub mod password;
pub mod policy;
pub mod ratelimit;
pub mod smart;
pub mod store;
pub mod throttle;
pub mod token;
pub mod totp;
pub mod webauthn;

pub use policy::{Role, Scope};

use crate::journal::{JournalError, Tx, Work};
use serde::Serialize;
use serde_json::json;

/// Why an account could not be created.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("user name: 1 to 64 letters, digits, '.', '-' or '_'")]
    BadName,
    #[error(transparent)]
    Hash(#[from] password::HashError),
    #[error("cannot make the TOTP enrolment URI for {0}")]
    Enrolment(String),
    #[error("key name: 1 to 64 letters, digits, '.', '-' or '_'")]
    BadKeyName,
    #[error("client name: 1 to 64 letters, digits, '.', '-' or '_'")]
    BadClientName,
    #[error(transparent)]
    BadClientKey(#[from] oauth::AssertionError),
}

/// The client's address of a request, for the audit.
pub fn peer(req: &actix_web::HttpRequest) -> String {
    req.peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// Whether `name` can be an account name: it appears in the audit and, without a colon, in
/// the TOTP enrolment URI.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// An account as listed, without its secrets.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UserSummary {
    pub name: String,
    pub role: Role,
    pub enabled: bool,
    pub failed_attempts: u32,
    /// Until when (ms since the epoch) logins are refused, if the account is locked.
    pub locked_until: Option<i64>,
}

/// What a login is checked against.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub role: Role,
    pub password_hash: String,
    pub totp_secret: Vec<u8>,
    pub enabled: bool,
    pub locked_until: Option<i64>,
    pub last_totp_step: Option<i64>,
}

/// A new account with what its owner is told once: the one-time password and the TOTP
/// enrolment URI. The request adds it to the journal.
#[derive(Debug)]
pub struct NewAccount {
    pub password: String,
    pub enrolment_uri: String,
    pub request: AddUser,
}

/// Fresh secrets for the account `name`: a one-time password with its hash, a TOTP secret
/// with its enrolment URI.
struct Secrets {
    password: String,
    password_hash: String,
    totp_secret: Vec<u8>,
    enrolment_uri: String,
}

fn secrets(name: &str) -> Result<Secrets, AccessError> {
    if !valid_name(name) {
        return Err(AccessError::BadName);
    }
    let password = password::one_time();
    let totp_secret = totp::new_secret();
    let enrolment_uri = totp::enrolment_uri(&totp_secret, name)
        .ok_or_else(|| AccessError::Enrolment(name.into()))?;
    Ok(Secrets {
        password_hash: password::hash(&password)?,
        password,
        totp_secret,
        enrolment_uri,
    })
}

/// A new account for `name` with `role`: a one-time password and a fresh TOTP secret.
pub fn new_account(name: &str, role: Role, by: &str) -> Result<NewAccount, AccessError> {
    let s = secrets(name)?;
    Ok(NewAccount {
        request: AddUser {
            name: name.into(),
            role,
            password_hash: s.password_hash,
            totp_secret: s.totp_secret,
            by: by.into(),
        },
        password: s.password,
        enrolment_uri: s.enrolment_uri,
    })
}

/// An account's new one-time password and TOTP enrolment URI, told once to its owner; the
/// request puts them in the journal.
#[derive(Debug)]
pub struct ResetAccount {
    pub password: String,
    pub enrolment_uri: String,
    pub request: ResetUser,
}

/// New secrets for the account `name`, for when its owner forgot the password or lost the
/// authenticator.
pub fn reset_account(name: &str, by: &str) -> Result<ResetAccount, AccessError> {
    let s = secrets(name)?;
    Ok(ResetAccount {
        request: ResetUser {
            name: name.into(),
            password_hash: s.password_hash,
            totp_secret: s.totp_secret,
            by: by.into(),
        },
        password: s.password,
        enrolment_uri: s.enrolment_uri,
    })
}

/// Adds an account (audited with `by`); a name already taken is refused.
#[derive(Debug)]
pub struct AddUser {
    pub name: String,
    pub role: Role,
    pub password_hash: String,
    pub totp_secret: Vec<u8>,
    pub by: String,
}

/// Every account.
#[derive(Debug)]
pub struct ListUsers;

/// Disables an account and ends its sessions (audited with `by`).
#[derive(Debug)]
pub struct DisableUser {
    pub name: String,
    pub by: String,
}

/// Replaces an account's password and TOTP secret, unlocks it and ends its sessions (audited
/// with `by`); a disabled account stays disabled.
#[derive(Debug)]
pub struct ResetUser {
    pub name: String,
    pub password_hash: String,
    pub totp_secret: Vec<u8>,
    pub by: String,
}

/// A passkey of an account.
#[derive(Debug, Clone, PartialEq)]
pub struct Passkey {
    pub id: i64,
    pub credential_id: Vec<u8>,
    /// An uncompressed P-256 point.
    pub public_key: Vec<u8>,
    pub sign_count: u32,
}

/// Adds a passkey to `user`'s account (audited as the user, who enrols it after a login).
#[derive(Debug)]
pub struct AddPasskey {
    pub user: String,
    pub key: webauthn::NewPasskey,
}

/// The passkeys of `user`'s account.
#[derive(Debug)]
pub struct FindPasskeys {
    pub user: String,
}

/// The credentials of an account, if there is one by that name.
#[derive(Debug)]
pub struct FindCredentials {
    pub name: String,
}

/// What checking a login's password and code found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    /// Both matched; the code was the one of this TOTP step.
    Verified {
        step: u64,
    },
    /// The password matched and the account's passkey `id` signed the challenge, its counter
    /// now reading `count`.
    PasskeyVerified {
        id: i64,
        count: u32,
    },
    BadPassword,
    /// The password matched, the code did not.
    BadCode,
    /// Not checked: the account is locked.
    Locked,
    /// Not checked: there is no such account, or it is disabled.
    NoAccount,
}

/// How failed logins lock an account (see [`policy::lock_secs`]).
#[derive(Debug, Clone, Copy)]
pub struct Lockout {
    pub after: u32,
    pub initial_secs: u64,
    pub max_secs: u64,
}

/// Records a login attempt's outcome, audited: a verified one opens the session `id_hash`
/// (with its CSRF token) unless its code was used already; a failed one counts towards the
/// lock. Answers the role when the session was opened.
#[derive(Debug)]
pub struct FinishLogin {
    pub name: String,
    pub proof: Proof,
    pub lockout: Lockout,
    /// The sessions' idle and absolute limits (ms): sessions past them are deleted.
    pub limits: (i64, i64),
    pub id_hash: Vec<u8>,
    pub csrf: String,
    /// The client's address, for the audit.
    pub peer: String,
}

/// The session `id_hash`, if still valid: its user, role and CSRF token.
#[derive(Debug)]
pub struct CheckSession {
    pub id_hash: Vec<u8>,
    /// The sessions' idle and absolute limits (ms).
    pub limits: (i64, i64),
}

/// Ends the session `id_hash` (audited).
#[derive(Debug)]
pub struct Logout {
    pub id_hash: Vec<u8>,
}

/// A valid session's owner.
#[derive(Debug, Clone, PartialEq)]
pub struct Staff {
    pub user: String,
    pub role: Role,
    pub csrf: String,
}

/// A system calling with a valid API key.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiClient {
    /// The key's name, which the audit gives as `key:<name>`.
    pub name: String,
}

/// A key as listed, without its secret's hash.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeySummary {
    pub id: String,
    pub name: String,
    pub scope: String,
    pub created_at: i64,
    pub created_by: String,
    /// ms since the epoch; none: it does not expire.
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    /// The fingerprint of the client certificate the key is bound to, if any.
    pub certificate: Option<String>,
}

/// A new key with its text, shown once; the request adds it to the journal.
#[derive(Debug)]
pub struct NewKey {
    pub text: String,
    pub request: AddKey,
}

/// A new key for the client `name`, of `scope`, expiring at `expires_at` (ms) if given; bound
/// to a client certificate, it expires with the certificate at the latest.
pub fn new_key(
    name: &str,
    scope: Scope,
    expires_at: Option<i64>,
    certificate: Option<mtls::Binding>,
    by: &str,
) -> Result<NewKey, AccessError> {
    if !valid_name(name) {
        return Err(AccessError::BadKeyName);
    }
    let (id, secret) = keys::generate();
    let text = keys::text(&id, &secret);
    let key = keys::StoredKey {
        id,
        name: name.into(),
        scope,
        secret_hash: keys::secret_hash(&secret),
        expires_at: mtls::expiry(expires_at, certificate.as_ref()),
        revoked_at: None,
        certificate: certificate.map(|c| c.fingerprint),
    };
    Ok(NewKey {
        text,
        request: AddKey { key, by: by.into() },
    })
}

/// Adds a key (audited with `by`); a name used before is refused.
#[derive(Debug)]
pub struct AddKey {
    pub key: keys::StoredKey,
    pub by: String,
}

/// Every key.
#[derive(Debug)]
pub struct ListKeys;

/// Revokes the key `name` (audited with `by`).
#[derive(Debug)]
pub struct RevokeKey {
    pub name: String,
    pub by: String,
}

/// The key with this id, if there is one.
#[derive(Debug)]
pub struct FindKey {
    pub id: String,
}

/// The key bound to the client certificate with this fingerprint, if there is one.
#[derive(Debug)]
pub struct FindBoundKey {
    pub fingerprint: String,
}

/// A system calling with a SMART Backend Services token: the client and what it was granted.
#[derive(Debug, Clone, PartialEq)]
pub struct SmartClient {
    /// The client id, which the audit gives as `client:<name>`.
    pub name: String,
    pub scopes: smart::Scopes,
}

/// A SMART client as listed, without its key.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClientSummary {
    pub name: String,
    /// `jwks` or `pem`.
    pub key_kind: String,
    pub scope: String,
    pub created_at: i64,
    pub created_by: String,
    pub revoked_at: Option<i64>,
}

/// Registers the SMART client `name` with its public key and the scopes it may be granted;
/// the key is checked first.
pub fn new_client(
    name: &str,
    key: oauth::ClientKey,
    scopes: smart::Scopes,
    by: &str,
) -> Result<AddClient, AccessError> {
    if !valid_name(name) {
        return Err(AccessError::BadClientName);
    }
    key.check()?;
    Ok(AddClient {
        client: oauth::StoredClient {
            name: name.into(),
            key,
            scopes,
            revoked_at: None,
        },
        by: by.into(),
    })
}

/// Adds a SMART client (audited with `by`); a name used before is refused.
#[derive(Debug)]
pub struct AddClient {
    pub client: oauth::StoredClient,
    pub by: String,
}

/// Every SMART client.
#[derive(Debug)]
pub struct ListClients;

/// Revokes the SMART client `name` and its tokens (audited with `by`).
#[derive(Debug)]
pub struct RevokeClient {
    pub name: String,
    pub by: String,
}

/// The SMART client `name`, if there is one.
#[derive(Debug)]
pub struct FindClient {
    pub name: String,
}

/// Issues a token to a client whose assertion was verified, unless the assertion's `jti` was
/// used before: records the `jti` until `jti_expires_at`, keeps the token's hash, and audits
/// the grant. False when the `jti` was a replay (then nothing is kept; the caller audits the
/// refusal).
#[derive(Debug)]
pub struct IssueToken {
    pub client: String,
    pub jti: String,
    /// ms since the epoch.
    pub jti_expires_at: i64,
    pub token_hash: Vec<u8>,
    pub scopes: smart::Scopes,
    /// ms since the epoch.
    pub expires_at: i64,
    /// The client's address, for the audit.
    pub peer: String,
}

/// The client of the token with this hash, if it is valid now.
#[derive(Debug)]
pub struct CheckToken {
    pub hash: Vec<u8>,
}

crate::journal_work!(
    FindClient,
    IssueToken,
    CheckToken,
    AddUser,
    ListUsers,
    DisableUser,
    ResetUser,
    AddPasskey,
    FindPasskeys,
    FindCredentials,
    FinishLogin,
    CheckSession,
    Logout,
    AddKey,
    ListKeys,
    RevokeKey,
    FindKey,
    FindBoundKey
);

/// Requests the CLI also runs on the journal file itself (their `apply` takes the time): the
/// daemon runs them at the writer's clock.
macro_rules! applied_now {
    ($($work:ty),* $(,)?) => {
        $(
            impl Work for $work {
                type Output = ();
                fn run(self, tx: &mut Tx<'_>) -> Result<(), JournalError> {
                    let now = tx.now();
                    self.apply(tx, now)
                }
            }
        )*
    };
}

applied_now!(AddUser, DisableUser, AddKey, RevokeKey);

/// Who made a request, for the audit of what it changes: the logged-in staff member
/// (`staff:<name>`), the system whose key it carried (`key:<name>`) or the SMART client whose
/// token it carried (`client:<name>`); none with access off.
pub fn audit_actor(req: &actix_web::HttpRequest) -> Option<String> {
    let ext = actix_web::HttpMessage::extensions(req);
    if let Some(staff) = ext.get::<Staff>() {
        return Some(actor(&staff.user));
    }
    if let Some(client) = ext.get::<SmartClient>() {
        return Some(client_actor(&client.name));
    }
    ext.get::<ApiClient>().map(|c| key_actor(&c.name))
}

/// The audit's name for a staff member.
fn actor(name: &str) -> String {
    format!("staff:{name}")
}

/// The audit's name for a system calling with a key.
fn key_actor(name: &str) -> String {
    format!("key:{name}")
}

/// The audit's name for a SMART client.
pub fn client_actor(name: &str) -> String {
    format!("client:{name}")
}

impl AddClient {
    /// Adds the client at `now`, audited; the CLI runs this on the journal file itself.
    pub fn apply(&self, tx: &mut Tx<'_>, now: i64) -> Result<(), JournalError> {
        let c = &self.client;
        store::add_client(tx, c, &self.by, now)?;
        let detail = json!({
            "client": c.name,
            "key_kind": c.key.kind(),
            "scope": c.scopes.to_string(),
        });
        tx.audit(&self.by, "access.client_added", &detail.to_string(), now)
    }
}

impl Work for ListClients {
    type Output = Vec<ClientSummary>;
    fn run(self, tx: &mut Tx<'_>) -> Result<Self::Output, JournalError> {
        store::clients(tx)
    }
}

impl RevokeClient {
    /// Revokes the client at `now`, audited; the CLI runs this on the journal file itself.
    pub fn apply(&self, tx: &mut Tx<'_>, now: i64) -> Result<(), JournalError> {
        store::revoke_client(tx, &self.name, now)?;
        let detail = json!({ "client": self.name }).to_string();
        tx.audit(&self.by, "access.client_revoked", &detail, now)
    }
}

impl Work for FindClient {
    type Output = Option<oauth::StoredClient>;
    fn run(self, tx: &mut Tx<'_>) -> Result<Self::Output, JournalError> {
        store::client(tx, &self.name)
    }
}

impl Work for IssueToken {
    type Output = bool;
    fn run(self, tx: &mut Tx<'_>) -> Result<bool, JournalError> {
        let now = tx.now();
        if !store::use_jti(tx, &self.client, &self.jti, self.jti_expires_at, now)? {
            return Ok(false);
        }
        store::add_token(
            tx,
            &self.token_hash,
            &self.client,
            &self.scopes,
            self.expires_at,
            now,
        )?;
        let detail = json!({
            "scope": self.scopes.to_string(),
            "expires_at": self.expires_at,
            "peer": self.peer,
        });
        tx.audit(
            &client_actor(&self.client),
            "access.token_issued",
            &detail.to_string(),
            now,
        )?;
        Ok(true)
    }
}

impl Work for CheckToken {
    type Output = Option<SmartClient>;
    fn run(self, tx: &mut Tx<'_>) -> Result<Self::Output, JournalError> {
        let now = tx.now();
        let found = store::token(tx, &self.hash, now)?;
        Ok(found.map(|(name, scopes)| SmartClient { name, scopes }))
    }
}

impl AddUser {
    /// Adds the account at `now`, audited; the CLI runs this on the journal file itself.
    pub fn apply(&self, tx: &mut Tx<'_>, now: i64) -> Result<(), JournalError> {
        store::add_user(
            tx,
            &self.name,
            self.role,
            &self.password_hash,
            &self.totp_secret,
            now,
        )?;
        let detail = json!({ "user": self.name, "role": self.role }).to_string();
        tx.audit(&self.by, "access.user_added", &detail, now)
    }
}

impl Work for ListUsers {
    type Output = Vec<UserSummary>;
    fn run(self, tx: &mut Tx<'_>) -> Result<Self::Output, JournalError> {
        store::users(tx)
    }
}

impl DisableUser {
    /// Disables the account at `now`, audited; the CLI runs this on the journal file itself.
    pub fn apply(&self, tx: &mut Tx<'_>, now: i64) -> Result<(), JournalError> {
        store::disable(tx, &self.name)?;
        let detail = json!({ "user": self.name }).to_string();
        tx.audit(&self.by, "access.user_disabled", &detail, now)
    }
}

impl Work for ResetUser {
    type Output = ();
    fn run(self, tx: &mut Tx<'_>) -> Result<(), JournalError> {
        let now = tx.now();
        store::reset(tx, &self.name, &self.password_hash, &self.totp_secret)?;
        let detail = json!({ "user": self.name }).to_string();
        tx.audit(&self.by, "access.user_reset", &detail, now)
    }
}

impl Work for AddPasskey {
    type Output = ();
    fn run(self, tx: &mut Tx<'_>) -> Result<(), JournalError> {
        let now = tx.now();
        store::add_passkey(tx, &self.user, &self.key, now)?;
        let detail = json!({ "credential": webauthn::b64(&self.key.credential_id) });
        tx.audit(
            &actor(&self.user),
            "access.passkey_added",
            &detail.to_string(),
            now,
        )
    }
}

impl Work for FindPasskeys {
    type Output = Vec<Passkey>;
    fn run(self, tx: &mut Tx<'_>) -> Result<Self::Output, JournalError> {
        store::passkeys(tx, &self.user)
    }
}

impl Work for FindCredentials {
    type Output = Option<Credentials>;
    fn run(self, tx: &mut Tx<'_>) -> Result<Self::Output, JournalError> {
        store::credentials(tx, &self.name)
    }
}

impl Work for FinishLogin {
    type Output = Option<Role>;
    fn run(self, tx: &mut Tx<'_>) -> Result<Self::Output, JournalError> {
        let now = tx.now();
        let refused = |tx: &mut Tx<'_>, who: &str, reason: &str, failures: Option<u32>| {
            let detail = json!({ "reason": reason, "failures": failures, "peer": self.peer });
            tx.audit(who, "access.login_refused", &detail.to_string(), now)
        };
        let l = self.lockout;
        let lock_ms = |n| (policy::lock_secs(n, l.after, l.initial_secs, l.max_secs) * 1000) as i64;
        // Re-read: another attempt may have locked the account or used the code meanwhile.
        let Some(creds) = store::credentials(tx, &self.name)? else {
            // An unknown name is not audited as typed: it may be a password in the wrong field.
            refused(tx, "anonymous", "no_account", None)?;
            return Ok(None);
        };
        let who = actor(&self.name);
        if !creds.enabled || self.proof == Proof::NoAccount {
            refused(tx, &who, "disabled", None)?;
            return Ok(None);
        }
        if self.proof == Proof::Locked || creds.locked_until.is_some_and(|t| t > now) {
            refused(tx, &who, "locked", None)?;
            return Ok(None);
        }
        let reason = match self.proof {
            Proof::Verified { step } => {
                if store::record_success(tx, &self.name, step)? {
                    let (id, csrf) = (&self.id_hash, &self.csrf);
                    store::open_session(tx, id, &self.name, csrf, self.limits, now)?;
                    let detail = json!({ "role": creds.role, "peer": self.peer }).to_string();
                    tx.audit(&who, "access.login", &detail, now)?;
                    return Ok(Some(creds.role));
                }
                "replayed_code"
            }
            Proof::PasskeyVerified { id, count } => {
                if store::record_passkey(tx, &self.name, id, count)? {
                    let (id, csrf) = (&self.id_hash, &self.csrf);
                    store::open_session(tx, id, &self.name, csrf, self.limits, now)?;
                    let detail =
                        json!({ "role": creds.role, "peer": self.peer, "factor": "passkey" });
                    tx.audit(&who, "access.login", &detail.to_string(), now)?;
                    return Ok(Some(creds.role));
                }
                "replayed_passkey"
            }
            Proof::BadCode => "bad_code",
            _ => "bad_password",
        };
        let failures = store::record_failure(tx, &self.name, lock_ms, now)?;
        refused(tx, &who, reason, Some(failures))?;
        Ok(None)
    }
}

/// How long a session's last use may lag: a busy session writes at most this often.
const TOUCH_MS: i64 = 30_000;

impl Work for CheckSession {
    type Output = Option<Staff>;
    fn run(self, tx: &mut Tx<'_>) -> Result<Self::Output, JournalError> {
        let now = tx.now();
        let (idle_ms, absolute_ms) = self.limits;
        let touch = TOUCH_MS.min(idle_ms / 4);
        let found = store::session(tx, &self.id_hash, (idle_ms, absolute_ms, touch), now)?;
        Ok(found.map(|(user, role, csrf)| Staff { user, role, csrf }))
    }
}

impl Work for Logout {
    type Output = ();
    fn run(self, tx: &mut Tx<'_>) -> Result<(), JournalError> {
        let now = tx.now();
        if let Some(user) = store::end_session(tx, &self.id_hash)? {
            tx.audit(&actor(&user), "access.logout", "{}", now)?;
        }
        Ok(())
    }
}

impl AddKey {
    /// Adds the key at `now`, audited; the CLI runs this on the journal file itself.
    pub fn apply(&self, tx: &mut Tx<'_>, now: i64) -> Result<(), JournalError> {
        let k = &self.key;
        store::add_key(tx, k, &self.by, now)?;
        let detail = json!({
            "key": k.id,
            "name": k.name,
            "scope": k.scope.to_string(),
            "expires_at": k.expires_at,
            "certificate": k.certificate,
        });
        tx.audit(&self.by, "access.key_added", &detail.to_string(), now)
    }
}

impl Work for ListKeys {
    type Output = Vec<KeySummary>;
    fn run(self, tx: &mut Tx<'_>) -> Result<Self::Output, JournalError> {
        store::keys(tx)
    }
}

impl RevokeKey {
    /// Revokes the key at `now`, audited; the CLI runs this on the journal file itself.
    pub fn apply(&self, tx: &mut Tx<'_>, now: i64) -> Result<(), JournalError> {
        let id = store::revoke_key(tx, &self.name, now)?;
        let detail = json!({ "key": id, "name": self.name }).to_string();
        tx.audit(&self.by, "access.key_revoked", &detail, now)
    }
}

impl Work for FindKey {
    type Output = Option<keys::StoredKey>;
    fn run(self, tx: &mut Tx<'_>) -> Result<Self::Output, JournalError> {
        store::key(tx, &self.id)
    }
}

impl Work for FindBoundKey {
    type Output = Option<keys::StoredKey>;
    fn run(self, tx: &mut Tx<'_>) -> Result<Self::Output, JournalError> {
        store::bound_key(tx, &self.fingerprint)
    }
}
