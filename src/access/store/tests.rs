use super::*;
use crate::journal::{Extensions, Store};

fn open(dir: &std::path::Path) -> Store {
    Store::scratch(dir, &[&SCHEMA])
}

/// Runs `f` in one transaction of `store`.
fn check<T>(store: &mut Store, f: impl FnOnce(&mut Tx<'_>) -> Result<T, JournalError>) -> T {
    store
        .with_batch(|b| f(&mut b.work(&Extensions::default())))
        .expect("transaction")
}

const MIN: i64 = 60_000;
/// Idle 15 min, absolute 60 min, last use moved after 1 min.
const LIMITS: (i64, i64, i64) = (15 * MIN, 60 * MIN, MIN);

#[test]
fn a_session_ends_when_idle_too_long_or_too_old() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = open(dir.path());
    check(&mut s, |tx| {
        add_user(tx, "ann", Role::Clinical, "h", b"k", 0)
    });
    let open_at = |s: &mut Store, id: &[u8], at: i64| {
        check(s, |tx| {
            open_session(tx, id, "ann", "csrf", (LIMITS.0, LIMITS.1), at)
        })
    };
    let found = |s: &mut Store, id: &[u8], at: i64| check(s, |tx| session(tx, id, LIMITS, at));

    open_at(&mut s, b"idle", 0);
    assert_eq!(
        found(&mut s, b"idle", 14 * MIN),
        Some(("ann".into(), Role::Clinical, "csrf".into()))
    );
    // Used at 14 min, so still alive 14 min later; then idle past 15 min.
    assert!(found(&mut s, b"idle", 28 * MIN).is_some());
    assert!(found(&mut s, b"idle", 44 * MIN).is_none());
    assert!(
        found(&mut s, b"idle", 45 * MIN).is_none(),
        "deleted, not revived"
    );

    open_at(&mut s, b"busy", 0);
    for minute in (10..=60).step_by(10) {
        assert!(found(&mut s, b"busy", minute * MIN).is_some(), "{minute}");
    }
    assert!(
        found(&mut s, b"busy", 61 * MIN).is_none(),
        "past the absolute limit"
    );
}

#[test]
fn a_new_login_deletes_expired_sessions_and_disabling_ends_them_all() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = open(dir.path());
    check(&mut s, |tx| add_user(tx, "ann", Role::Admin, "h", b"k", 0));
    let limits = (LIMITS.0, LIMITS.1);
    check(&mut s, |tx| open_session(tx, b"old", "ann", "c", limits, 0));
    check(&mut s, |tx| {
        open_session(tx, b"new", "ann", "c", limits, 20 * MIN)
    });
    let count = |s: &mut Store| {
        check(s, |tx| {
            Ok(tx
                .sql()
                .query_row("SELECT count(*) FROM access_session", [], |r| {
                    r.get::<_, i64>(0)
                })?)
        })
    };
    assert_eq!(count(&mut s), 1, "the idle one went with the next login");
    check(&mut s, |tx| disable(tx, "ann"));
    assert_eq!(count(&mut s), 0);
    let err = s
        .with_batch(|b| disable(&mut b.work(&Extensions::default()), "bob"))
        .expect_err("no such user");
    assert!(matches!(err, JournalError::NotFound(_)), "{err}");
}

#[test]
fn a_single_sign_on_session_keeps_its_role_without_an_account_and_still_expires() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = open(dir.path());
    let limits = (LIMITS.0, LIMITS.1);
    check(&mut s, |tx| {
        open_sso_session(
            tx,
            b"sso",
            ("oidc:248289", Role::Facilities),
            "c",
            limits,
            0,
        )
    });
    let found = |s: &mut Store, id: &[u8], at: i64| check(s, |tx| session(tx, id, LIMITS, at));
    assert_eq!(
        found(&mut s, b"sso", MIN),
        Some(("oidc:248289".into(), Role::Facilities, "c".into()))
    );
    assert!(found(&mut s, b"sso", 20 * MIN).is_none(), "idle too long");
    // A local session whose account is gone has no role to fall back on.
    check(&mut s, |tx| {
        open_session(tx, b"orphan", "nobody", "c", limits, 0)
    });
    assert!(found(&mut s, b"orphan", MIN).is_none());
}

#[test]
fn a_totp_step_is_accepted_once_and_failures_lock() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = open(dir.path());
    check(&mut s, |tx| {
        add_user(tx, "ann", Role::FrontDesk, "h", b"k", 0)
    });
    let again = s.with_batch(|b| {
        add_user(
            &mut b.work(&Extensions::default()),
            "ann",
            Role::Admin,
            "h",
            b"k",
            0,
        )
    });
    assert!(matches!(again, Err(JournalError::Rejected(_))), "{again:?}");

    assert!(check(&mut s, |tx| record_success(tx, "ann", 100)));
    assert!(
        !check(&mut s, |tx| record_success(tx, "ann", 100)),
        "replayed"
    );
    assert!(!check(&mut s, |tx| record_success(tx, "ann", 99)), "older");

    let lock = |n: u32| if n >= 2 { 1000 * i64::from(n) } else { 0 };
    assert_eq!(check(&mut s, |tx| record_failure(tx, "ann", lock, 5)), 1);
    let creds = check(&mut s, |tx| credentials(tx, "ann")).expect("ann");
    assert_eq!(creds.locked_until, None);
    assert_eq!(check(&mut s, |tx| record_failure(tx, "ann", lock, 5)), 2);
    let creds = check(&mut s, |tx| credentials(tx, "ann")).expect("ann");
    assert_eq!(
        (creds.locked_until, creds.last_totp_step),
        (Some(2005), Some(100))
    );

    // Success clears failures and the lock.
    assert!(check(&mut s, |tx| record_success(tx, "ann", 101)));
    let users = check(&mut s, users);
    assert_eq!((users[0].failed_attempts, users[0].locked_until), (0, None));
}

#[test]
fn a_key_is_found_by_id_revoked_once_and_its_name_never_reused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = open(dir.path());
    let key = StoredKey {
        id: "0123456789abcdef".into(),
        name: "scraper".into(),
        scope: Scope::parse("metrics,operations").expect("scope"),
        secret_hash: vec![7; 32],
        expires_at: Some(5 * MIN),
        revoked_at: None,
        certificate: None,
    };
    check(&mut s, |tx| add_key(tx, &key, "cli:root", 0));
    assert_eq!(
        check(&mut s, |tx| self::key(tx, &key.id)),
        Some(key.clone())
    );
    assert_eq!(check(&mut s, |tx| self::key(tx, "fedcba9876543210")), None);

    assert_eq!(check(&mut s, |tx| revoke_key(tx, "scraper", MIN)), key.id);
    let revoked = check(&mut s, |tx| self::key(tx, &key.id)).expect("kept");
    assert_eq!(revoked.revoked_at, Some(MIN));
    let again = s.with_batch(|b| revoke_key(&mut b.work(&Extensions::default()), "scraper", MIN));
    assert!(again.is_err(), "revoked once");

    let renamed = StoredKey {
        id: "1111111111111111".into(),
        ..key
    };
    let reused = s.with_batch(|b| add_key(&mut b.work(&Extensions::default()), &renamed, "x", 0));
    assert!(reused.is_err(), "a name is never reused");
    let listed = check(&mut s, keys);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].scope, "operations,metrics");
    assert_eq!(listed[0].created_by, "cli:root");
}

#[test]
fn a_journal_from_before_keys_gains_their_table_and_keeps_its_accounts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let before = Schema {
        domain: "access",
        steps: &SCHEMA.steps[..1],
        legacy: &[],
    };
    let mut old = Store::scratch(dir.path(), &[&before]);
    check(&mut old, |tx| {
        add_user(tx, "ann", Role::Admin, "h", b"k", 0)
    });
    drop(old);

    let mut s = open(dir.path());
    assert_eq!(check(&mut s, users).len(), 1);
    let key = StoredKey {
        id: "0123456789abcdef".into(),
        name: "scraper".into(),
        scope: Scope::Role(Role::Facilities),
        secret_hash: vec![7; 32],
        expires_at: None,
        revoked_at: None,
        certificate: None,
    };
    check(&mut s, |tx| add_key(tx, &key, "cli:root", 0));
    assert_eq!(check(&mut s, |tx| self::key(tx, &key.id)), Some(key));
}

#[test]
fn a_certificate_names_its_unrevoked_key_before_a_revoked_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = open(dir.path());
    let old = StoredKey {
        id: "0123456789abcdef".into(),
        name: "lab-old".into(),
        scope: Scope::Role(Role::FrontDesk),
        secret_hash: vec![7; 32],
        expires_at: None,
        revoked_at: None,
        certificate: Some("AB:CD".into()),
    };
    check(&mut s, |tx| add_key(tx, &old, "cli:root", 0));
    assert_eq!(
        check(&mut s, |tx| bound_key(tx, "AB:CD")).map(|k| k.name),
        Some("lab-old".into())
    );
    assert_eq!(check(&mut s, |tx| bound_key(tx, "AB:CE")), None);
    check(&mut s, |tx| revoke_key(tx, "lab-old", MIN));
    let new = StoredKey {
        id: "1111111111111111".into(),
        name: "lab".into(),
        ..old
    };
    check(&mut s, |tx| add_key(tx, &new, "cli:root", 2 * MIN));
    assert_eq!(check(&mut s, |tx| bound_key(tx, "AB:CD")), Some(new));
    let listed = check(&mut s, keys);
    assert_eq!(listed[0].certificate.as_deref(), Some("AB:CD"));
}

#[test]
fn a_jti_is_used_once_until_it_expires_and_tokens_end_with_their_client() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = open(dir.path());
    let scopes = Scopes::parse("system/Encounter.rs").expect("scopes");
    let ehr = StoredClient {
        name: "ehr".into(),
        key: ClientKey::Pem("pem".into()),
        scopes: scopes.clone(),
        revoked_at: None,
    };
    check(&mut s, |tx| add_client(tx, &ehr, "staff:ann", 0));
    assert!(check(&mut s, |tx| use_jti(tx, "ehr", "j1", 100, 10)));
    assert!(!check(&mut s, |tx| use_jti(tx, "ehr", "j1", 100, 50)));
    assert!(check(&mut s, |tx| use_jti(tx, "other", "j1", 100, 50)));
    assert!(check(&mut s, |tx| use_jti(tx, "ehr", "j1", 300, 100)));

    check(&mut s, |tx| add_token(tx, b"h1", "ehr", &scopes, 200, 0));
    let found = |s: &mut Store, at| check(s, |tx| token(tx, b"h1", at));
    assert_eq!(
        found(&mut s, 199),
        Some(("ehr".to_string(), scopes.clone()))
    );
    assert_eq!(found(&mut s, 200), None);
    check(&mut s, |tx| add_token(tx, b"h1", "ehr", &scopes, 900, 300));
    check(&mut s, |tx| revoke_client(tx, "ehr", 400));
    assert_eq!(found(&mut s, 500), None);
    assert_eq!(
        check(&mut s, |tx| client(tx, "ehr")).map(|c| c.revoked_at),
        Some(Some(400))
    );
}
