//! The access tables and every SQL statement on them: staff accounts and their sessions, and
//! the API keys of systems. Each function runs inside the journal writer's transaction
//! ([`Tx`]); nothing here opens SQLite. A session's id and a key's secret are stored only as
//! their SHA-256, so a copy of the journal logs no one in.

use super::keys::StoredKey;
use super::oauth::{ClientKey, StoredClient};
use super::policy::Scope;
use super::smart::Scopes;
use super::webauthn::NewPasskey;
use super::{ClientSummary, Credentials, KeySummary, Passkey, Role, UserSummary};
use crate::journal::{JournalError, Schema, Tx};
use rusqlite::{OptionalExtension, params};

/// The access tables' migrations.
pub const SCHEMA: Schema = Schema {
    domain: "access",
    steps: &[
        r#"
CREATE TABLE access_user (
    name            TEXT    PRIMARY KEY,
    role            TEXT    NOT NULL,
    password_hash   TEXT    NOT NULL,
    totp_secret     BLOB    NOT NULL,
    enabled         INTEGER NOT NULL DEFAULT 1,
    failed_attempts INTEGER NOT NULL DEFAULT 0,
    locked_until    INTEGER,
    last_totp_step  INTEGER,
    created_at      INTEGER NOT NULL
);
CREATE TABLE access_session (
    id_hash    BLOB    PRIMARY KEY,
    user       TEXT    NOT NULL,
    csrf       TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    last_seen  INTEGER NOT NULL
);
CREATE INDEX access_session_user ON access_session(user);
"#,
        // A key's name is never reused, revoked or not, so `key:<name>` in the audit names
        // one key for good.
        r#"
CREATE TABLE access_key (
    id          TEXT    PRIMARY KEY,
    name        TEXT    NOT NULL UNIQUE,
    scope       TEXT    NOT NULL,
    secret_hash BLOB    NOT NULL,
    created_at  INTEGER NOT NULL,
    created_by  TEXT    NOT NULL,
    expires_at  INTEGER,
    revoked_at  INTEGER
);
"#,
        // A single sign-on session has no local account: it keeps the role the provider's
        // claim mapped to at sign-in. Local sessions leave it empty and take their account's.
        r#"
ALTER TABLE access_session ADD COLUMN role TEXT;
"#,
        // SMART Backend Services clients, the tokens issued to them (only their SHA-256) and
        // the assertion ids seen, each kept until it could no longer be accepted anyway.
        r#"
CREATE TABLE access_client (
    name       TEXT    PRIMARY KEY,
    key_kind   TEXT    NOT NULL,
    key        TEXT    NOT NULL,
    scope      TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    created_by TEXT    NOT NULL,
    revoked_at INTEGER
);
CREATE TABLE access_token (
    hash       BLOB    PRIMARY KEY,
    client     TEXT    NOT NULL,
    scope      TEXT    NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX access_token_expiry ON access_token(expires_at);
CREATE TABLE access_jti (
    client     TEXT    NOT NULL,
    jti        TEXT    NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (client, jti)
);
CREATE INDEX access_jti_expiry ON access_jti(expires_at);
"#,
        // Passkeys: a second factor in place of the TOTP code, several per account.
        r#"
CREATE TABLE access_passkey (
    id            INTEGER PRIMARY KEY,
    user          TEXT    NOT NULL,
    credential_id BLOB    NOT NULL UNIQUE,
    public_key    BLOB    NOT NULL,
    sign_count    INTEGER NOT NULL,
    created_at    INTEGER NOT NULL
);
CREATE INDEX access_passkey_user ON access_passkey(user);
"#,
        // A key bound to a client certificate keeps the certificate's SHA-256 fingerprint;
        // a request over a connection presenting that certificate is the key's client.
        r#"
ALTER TABLE access_key ADD COLUMN certificate TEXT;
CREATE INDEX access_key_certificate ON access_key(certificate);
"#,
    ],
    legacy: &[],
};

/// A text column this domain cannot read back; `what` says what it held.
fn unreadable(column: usize, what: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(column, rusqlite::types::Type::Text, what.into())
}

fn role_of(column: usize, text: String) -> rusqlite::Result<Role> {
    Role::parse(&text).ok_or_else(|| unreadable(column, format!("unknown role {text:?}")))
}

/// Adds an enabled account; a name already taken is refused.
pub fn add_user(
    tx: &mut Tx<'_>,
    name: &str,
    role: Role,
    password_hash: &str,
    totp_secret: &[u8],
    now: i64,
) -> Result<(), JournalError> {
    let added = tx
        .sql()
        .prepare_cached(
            "INSERT INTO access_user (name, role, password_hash, totp_secret, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (name) DO NOTHING",
        )?
        .execute(params![
            name,
            role.as_str(),
            password_hash,
            totp_secret,
            now
        ])?;
    if added == 0 {
        return Err(JournalError::Rejected(format!(
            "user {name} exists already"
        )));
    }
    Ok(())
}

/// Every account, by name, without its secrets.
pub fn users(tx: &mut Tx<'_>) -> Result<Vec<UserSummary>, JournalError> {
    let rows = tx
        .sql()
        .prepare_cached(
            "SELECT name, role, enabled, failed_attempts, locked_until FROM access_user ORDER BY name",
        )?
        .query_map([], |r| {
            Ok(UserSummary {
                name: r.get(0)?,
                role: role_of(1, r.get(1)?)?,
                enabled: r.get(2)?,
                failed_attempts: r.get(3)?,
                locked_until: r.get(4)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// Disables an account and ends its sessions.
pub fn disable(tx: &mut Tx<'_>, name: &str) -> Result<(), JournalError> {
    let changed = tx
        .sql()
        .prepare_cached("UPDATE access_user SET enabled = 0 WHERE name = ?1")?
        .execute([name])?;
    if changed == 0 {
        return Err(JournalError::NotFound(format!("no user {name}")));
    }
    tx.sql()
        .prepare_cached("DELETE FROM access_session WHERE user = ?1")?
        .execute([name])?;
    Ok(())
}

/// Replaces an account's password hash and TOTP secret, forgets its last code and failures,
/// and ends its sessions.
pub fn reset(
    tx: &mut Tx<'_>,
    name: &str,
    password_hash: &str,
    totp_secret: &[u8],
) -> Result<(), JournalError> {
    let changed = tx
        .sql()
        .prepare_cached(
            "UPDATE access_user SET password_hash = ?2, totp_secret = ?3, last_totp_step = NULL,
             failed_attempts = 0, locked_until = NULL WHERE name = ?1",
        )?
        .execute(params![name, password_hash, totp_secret])?;
    if changed == 0 {
        return Err(JournalError::NotFound(format!("no user {name}")));
    }
    tx.sql()
        .prepare_cached("DELETE FROM access_session WHERE user = ?1")?
        .execute([name])?;
    Ok(())
}

/// What a login is checked against.
pub fn credentials(tx: &mut Tx<'_>, name: &str) -> Result<Option<Credentials>, JournalError> {
    Ok(tx
        .sql()
        .prepare_cached(
            "SELECT role, password_hash, totp_secret, enabled, locked_until, last_totp_step
               FROM access_user WHERE name = ?1",
        )?
        .query_row([name], |r| {
            Ok(Credentials {
                role: role_of(0, r.get(0)?)?,
                password_hash: r.get(1)?,
                totp_secret: r.get(2)?,
                enabled: r.get(3)?,
                locked_until: r.get(4)?,
                last_totp_step: r.get(5)?,
            })
        })
        .optional()?)
}

/// Counts a failed login; returns the failures in a row and, when `lock_ms` of them is above
/// zero, locks the account until then.
pub fn record_failure(
    tx: &mut Tx<'_>,
    name: &str,
    lock_ms: impl Fn(u32) -> i64,
    now: i64,
) -> Result<u32, JournalError> {
    let failures: u32 = tx
        .sql()
        .prepare_cached(
            "UPDATE access_user SET failed_attempts = failed_attempts + 1 WHERE name = ?1
             RETURNING failed_attempts",
        )?
        .query_row([name], |r| r.get(0))?;
    let lock = lock_ms(failures);
    if lock > 0 {
        tx.sql()
            .prepare_cached("UPDATE access_user SET locked_until = ?2 WHERE name = ?1")?
            .execute(params![name, now.saturating_add(lock)])?;
    }
    Ok(failures)
}

/// Records a successful login whose TOTP code was for `step`: the failures are forgotten and
/// no code of that step or an earlier one is accepted again. False, changing nothing, when a
/// code of `step` or a later one was used already (a replay).
pub fn record_success(tx: &mut Tx<'_>, name: &str, step: u64) -> Result<bool, JournalError> {
    let changed = tx
        .sql()
        .prepare_cached(
            "UPDATE access_user SET failed_attempts = 0, locked_until = NULL, last_totp_step = ?2
              WHERE name = ?1 AND (last_totp_step IS NULL OR last_totp_step < ?2)",
        )?
        .execute(params![name, step as i64])?;
    Ok(changed == 1)
}

/// Opens a session, and deletes every session past its idle or absolute limit: one never
/// presented again would otherwise stay for good.
pub fn open_session(
    tx: &mut Tx<'_>,
    id_hash: &[u8],
    user: &str,
    csrf: &str,
    (idle_ms, absolute_ms): (i64, i64),
    now: i64,
) -> Result<(), JournalError> {
    tx.sql()
        .prepare_cached("DELETE FROM access_session WHERE last_seen < ?1 OR created_at < ?2")?
        .execute(params![now - idle_ms, now - absolute_ms])?;
    tx.sql()
        .prepare_cached(
            "INSERT INTO access_session (id_hash, user, csrf, created_at, last_seen)
             VALUES (?1, ?2, ?3, ?4, ?4)",
        )?
        .execute(params![id_hash, user, csrf, now])?;
    Ok(())
}

/// Opens a single sign-on session for `user` with `role`, like [`open_session`].
pub fn open_sso_session(
    tx: &mut Tx<'_>,
    id_hash: &[u8],
    (user, role): (&str, Role),
    csrf: &str,
    limits: (i64, i64),
    now: i64,
) -> Result<(), JournalError> {
    open_session(tx, id_hash, user, csrf, limits, now)?;
    tx.sql()
        .prepare_cached("UPDATE access_session SET role = ?2 WHERE id_hash = ?1")?
        .execute(params![id_hash, role.as_str()])?;
    Ok(())
}

/// A session that is still valid at `now`: its user, role and CSRF token. A session past its
/// idle or absolute limit, or of a disabled account, is deleted and not returned; a valid one
/// has its last use moved to `now` once `touch_ms` have passed since it was last moved.
pub fn session(
    tx: &mut Tx<'_>,
    id_hash: &[u8],
    (idle_ms, absolute_ms, touch_ms): (i64, i64, i64),
    now: i64,
) -> Result<Option<(String, Role, String)>, JournalError> {
    // A single sign-on session carries its role and has no account to be disabled; a local
    // one whose account is gone has neither and is ended.
    let found = tx
        .sql()
        .prepare_cached(
            "SELECT s.user, COALESCE(s.role, u.role), s.csrf, s.created_at, s.last_seen,
                    CASE WHEN s.role IS NULL THEN COALESCE(u.enabled, 0) ELSE 1 END
               FROM access_session s LEFT JOIN access_user u ON u.name = s.user
              WHERE s.id_hash = ?1",
        )?
        .query_row([id_hash], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, bool>(5)?,
            ))
        })
        .optional()?;
    let Some((user, role, csrf, created, seen, enabled)) = found else {
        return Ok(None);
    };
    let role = match role {
        Some(text) => Some(role_of(1, text)?),
        None => None,
    };
    let Some(role) = role.filter(|_| enabled) else {
        end_session(tx, id_hash)?;
        return Ok(None);
    };
    if now - seen > idle_ms || now - created > absolute_ms {
        end_session(tx, id_hash)?;
        return Ok(None);
    }
    if now - seen >= touch_ms {
        tx.sql()
            .prepare_cached("UPDATE access_session SET last_seen = ?2 WHERE id_hash = ?1")?
            .execute(params![id_hash, now])?;
    }
    Ok(Some((user, role, csrf)))
}

/// Ends a session; the user it was of, if it existed.
pub fn end_session(tx: &mut Tx<'_>, id_hash: &[u8]) -> Result<Option<String>, JournalError> {
    Ok(tx
        .sql()
        .prepare_cached("DELETE FROM access_session WHERE id_hash = ?1 RETURNING user")?
        .query_row([id_hash], |r| r.get(0))
        .optional()?)
}

fn scope_of(column: usize, text: String) -> rusqlite::Result<Scope> {
    Scope::parse(&text).ok_or_else(|| unreadable(column, format!("unknown scope {text:?}")))
}

/// Adds a key; a name used before, by a revoked key too, is refused.
pub fn add_key(
    tx: &mut Tx<'_>,
    key: &StoredKey,
    created_by: &str,
    now: i64,
) -> Result<(), JournalError> {
    let added = tx
        .sql()
        .prepare_cached(
            "INSERT INTO access_key
                    (id, name, scope, secret_hash, created_at, created_by, expires_at, certificate)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT DO NOTHING",
        )?
        .execute(params![
            key.id,
            key.name,
            key.scope.to_string(),
            key.secret_hash,
            now,
            created_by,
            key.expires_at,
            key.certificate
        ])?;
    if added == 0 {
        return Err(JournalError::Rejected(format!(
            "key {} exists already",
            key.name
        )));
    }
    Ok(())
}

/// Every key, by name, without its secret's hash.
pub fn keys(tx: &mut Tx<'_>) -> Result<Vec<KeySummary>, JournalError> {
    let rows = tx
        .sql()
        .prepare_cached(
            "SELECT id, name, scope, created_at, created_by, expires_at, revoked_at, certificate
               FROM access_key ORDER BY name",
        )?
        .query_map([], |r| {
            Ok(KeySummary {
                id: r.get(0)?,
                name: r.get(1)?,
                scope: scope_of(2, r.get(2)?)?.to_string(),
                created_at: r.get(3)?,
                created_by: r.get(4)?,
                expires_at: r.get(5)?,
                revoked_at: r.get(6)?,
                certificate: r.get(7)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

fn stored_key(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredKey> {
    Ok(StoredKey {
        id: r.get(0)?,
        name: r.get(1)?,
        scope: scope_of(2, r.get(2)?)?,
        secret_hash: r.get(3)?,
        expires_at: r.get(4)?,
        revoked_at: r.get(5)?,
        certificate: r.get(6)?,
    })
}

/// The key with this id, if there is one.
pub fn key(tx: &mut Tx<'_>, id: &str) -> Result<Option<StoredKey>, JournalError> {
    Ok(tx
        .sql()
        .prepare_cached(
            "SELECT id, name, scope, secret_hash, expires_at, revoked_at, certificate
               FROM access_key WHERE id = ?1",
        )?
        .query_row([id], stored_key)
        .optional()?)
}

/// The key bound to the client certificate with this fingerprint, if there is one. A
/// certificate whose key was revoked and then bound to a new one names the new one: an
/// unrevoked key comes first, then the newest.
pub fn bound_key(tx: &mut Tx<'_>, fingerprint: &str) -> Result<Option<StoredKey>, JournalError> {
    Ok(tx
        .sql()
        .prepare_cached(
            "SELECT id, name, scope, secret_hash, expires_at, revoked_at, certificate
               FROM access_key WHERE certificate = ?1
              ORDER BY revoked_at IS NOT NULL, created_at DESC LIMIT 1",
        )?
        .query_row([fingerprint], stored_key)
        .optional()?)
}

/// Revokes the key `name` at `now`; its id. A key revoked already, or none, is refused.
pub fn revoke_key(tx: &mut Tx<'_>, name: &str, now: i64) -> Result<String, JournalError> {
    tx.sql()
        .prepare_cached(
            "UPDATE access_key SET revoked_at = ?2 WHERE name = ?1 AND revoked_at IS NULL
             RETURNING id",
        )?
        .query_row(params![name, now], |r| r.get(0))
        .optional()?
        .ok_or_else(|| JournalError::NotFound(format!("no unrevoked key {name}")))
}

fn scopes_of(column: usize, text: String) -> rusqlite::Result<Scopes> {
    Scopes::parse(&text).ok_or_else(|| unreadable(column, format!("unknown SMART scopes {text:?}")))
}

/// Adds a client; a name used before, by a revoked client too, is refused.
pub fn add_client(
    tx: &mut Tx<'_>,
    client: &StoredClient,
    created_by: &str,
    now: i64,
) -> Result<(), JournalError> {
    let added = tx
        .sql()
        .prepare_cached(
            "INSERT INTO access_client (name, key_kind, key, scope, created_at, created_by)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
        )?
        .execute(params![
            client.name,
            client.key.kind(),
            client.key.text(),
            client.scopes.to_string(),
            now,
            created_by
        ])?;
    if added == 0 {
        return Err(JournalError::Rejected(format!(
            "client {} exists already",
            client.name
        )));
    }
    Ok(())
}

/// Every client, by name, without its key.
pub fn clients(tx: &mut Tx<'_>) -> Result<Vec<ClientSummary>, JournalError> {
    let rows = tx
        .sql()
        .prepare_cached(
            "SELECT name, key_kind, scope, created_at, created_by, revoked_at
               FROM access_client ORDER BY name",
        )?
        .query_map([], |r| {
            Ok(ClientSummary {
                name: r.get(0)?,
                key_kind: r.get(1)?,
                scope: r.get(2)?,
                created_at: r.get(3)?,
                created_by: r.get(4)?,
                revoked_at: r.get(5)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// The client `name`, if there is one.
pub fn client(tx: &mut Tx<'_>, name: &str) -> Result<Option<StoredClient>, JournalError> {
    Ok(tx
        .sql()
        .prepare_cached(
            "SELECT name, key_kind, key, scope, revoked_at FROM access_client WHERE name = ?1",
        )?
        .query_row([name], |r| {
            let kind: String = r.get(1)?;
            let key = ClientKey::from_stored(&kind, r.get(2)?)
                .ok_or_else(|| unreadable(1, format!("unknown key kind {kind:?}")))?;
            Ok(StoredClient {
                name: r.get(0)?,
                key,
                scopes: scopes_of(3, r.get(3)?)?,
                revoked_at: r.get(4)?,
            })
        })
        .optional()?)
}

/// Revokes the client `name` at `now` and deletes its tokens. A client revoked already, or
/// none, is refused.
pub fn revoke_client(tx: &mut Tx<'_>, name: &str, now: i64) -> Result<(), JournalError> {
    let changed = tx
        .sql()
        .prepare_cached(
            "UPDATE access_client SET revoked_at = ?2 WHERE name = ?1 AND revoked_at IS NULL",
        )?
        .execute(params![name, now])?;
    if changed == 0 {
        return Err(JournalError::NotFound(format!(
            "no unrevoked client {name}"
        )));
    }
    tx.sql()
        .prepare_cached("DELETE FROM access_token WHERE client = ?1")?
        .execute([name])?;
    Ok(())
}

/// Records the assertion id `jti` of `client`, kept until `expires_at` (ms); false, changing
/// nothing, when it was seen before (a replay). Ids past their expiry are forgotten first: an
/// assertion that old is refused for its `exp` anyway.
pub fn use_jti(
    tx: &mut Tx<'_>,
    client: &str,
    jti: &str,
    expires_at: i64,
    now: i64,
) -> Result<bool, JournalError> {
    tx.sql()
        .prepare_cached("DELETE FROM access_jti WHERE expires_at <= ?1")?
        .execute([now])?;
    let added = tx
        .sql()
        .prepare_cached(
            "INSERT INTO access_jti (client, jti, expires_at) VALUES (?1, ?2, ?3)
             ON CONFLICT DO NOTHING",
        )?
        .execute(params![client, jti, expires_at])?;
    Ok(added == 1)
}

/// Keeps a token issued to `client`, and forgets every token past its expiry.
pub fn add_token(
    tx: &mut Tx<'_>,
    hash: &[u8],
    client: &str,
    scopes: &Scopes,
    expires_at: i64,
    now: i64,
) -> Result<(), JournalError> {
    tx.sql()
        .prepare_cached("DELETE FROM access_token WHERE expires_at <= ?1")?
        .execute([now])?;
    tx.sql()
        .prepare_cached(
            "INSERT INTO access_token (hash, client, scope, expires_at) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![hash, client, scopes.to_string(), expires_at])?;
    Ok(())
}

/// The client and scopes of the token with this hash, if it is valid at `now` and its client
/// is not revoked.
pub fn token(
    tx: &mut Tx<'_>,
    hash: &[u8],
    now: i64,
) -> Result<Option<(String, Scopes)>, JournalError> {
    Ok(tx
        .sql()
        .prepare_cached(
            "SELECT t.client, t.scope FROM access_token t
               JOIN access_client c ON c.name = t.client
              WHERE t.hash = ?1 AND t.expires_at > ?2 AND c.revoked_at IS NULL",
        )?
        .query_row(params![hash, now], |r| {
            Ok((r.get(0)?, scopes_of(1, r.get(1)?)?))
        })
        .optional()?)
}

#[cfg(test)]
mod tests;

/// Adds a passkey to `user`'s account; a credential registered already is refused.
pub fn add_passkey(
    tx: &mut Tx<'_>,
    user: &str,
    key: &NewPasskey,
    now: i64,
) -> Result<(), JournalError> {
    let added = tx
        .sql()
        .prepare_cached(
            "INSERT INTO access_passkey (user, credential_id, public_key, sign_count, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (credential_id) DO NOTHING",
        )?
        .execute(params![
            user,
            key.credential_id,
            key.public_key,
            key.sign_count,
            now
        ])?;
    if added == 0 {
        return Err(JournalError::Rejected("passkey registered already".into()));
    }
    Ok(())
}

/// The passkeys of `user`'s account.
pub fn passkeys(tx: &mut Tx<'_>, user: &str) -> Result<Vec<Passkey>, JournalError> {
    let mut stmt = tx.sql().prepare_cached(
        "SELECT id, credential_id, public_key, sign_count FROM access_passkey WHERE user = ?1
          ORDER BY id",
    )?;
    let rows = stmt.query_map([user], |r| {
        Ok(Passkey {
            id: r.get(0)?,
            credential_id: r.get(1)?,
            public_key: r.get(2)?,
            sign_count: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Records a login by the passkey `id` of `name` whose counter now reads `count`: clears the
/// failures. False when another login raced it to that counter (a replayed assertion).
pub fn record_passkey(
    tx: &mut Tx<'_>,
    name: &str,
    id: i64,
    count: u32,
) -> Result<bool, JournalError> {
    let changed = tx
        .sql()
        .prepare_cached(
            "UPDATE access_passkey SET sign_count = ?3
              WHERE id = ?2 AND user = ?1 AND (sign_count < ?3 OR (sign_count = 0 AND ?3 = 0))",
        )?
        .execute(params![name, id, count])?;
    if changed == 0 {
        return Ok(false);
    }
    tx.sql()
        .prepare_cached(
            "UPDATE access_user SET failed_attempts = 0, locked_until = NULL WHERE name = ?1",
        )?
        .execute([name])?;
    Ok(true)
}
