//! The FHIR connector's tables and every SQL statement on them: the Patient cache with each
//! patient's local (undelivered) version, conflicts kept until staff choose, and the
//! connector's persistent state (cursors, raised overruns).
//!
//! Each function runs inside the journal writer's transaction ([`Tx`]). Nothing here opens
//! SQLite.

use super::model::Patient;
use super::protocol::{self as fhir, CachedPatient, Conflict, Fields, Seen, Side};
use crate::journal::{JournalError, NewItem, Schema, Tx, from_json, to_json};
use rusqlite::{OptionalExtension, params};
use std::collections::BTreeMap;
use std::ops::Range;

/// The connector's migrations. Step 1 was part of the journal's schema version 5 before each
/// domain owned its tables.
pub const SCHEMA: Schema = Schema {
    domain: "fhir",
    steps: &[r#"
CREATE TABLE fhir_patient (
    id          TEXT    PRIMARY KEY,
    identifier  TEXT,
    family_key  TEXT,
    birth_date  TEXT,
    version_id  TEXT,
    synced      TEXT    NOT NULL,
    local       TEXT,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX fhir_patient_identifier ON fhir_patient(identifier);
CREATE INDEX fhir_patient_name ON fhir_patient(family_key, birth_date);
CREATE TABLE fhir_conflict (
    id          INTEGER PRIMARY KEY,
    patient_id  TEXT    NOT NULL,
    local       TEXT    NOT NULL,
    remote      TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    resolved_at INTEGER,
    resolution  TEXT
);
CREATE UNIQUE INDEX fhir_conflict_open ON fhir_conflict(patient_id) WHERE resolved_at IS NULL;
CREATE TABLE fhir_state (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"#],
    legacy: &[(5, 1)],
};

/// One cached Patient by its EHR id.
pub fn fhir_patient(tx: &mut Tx<'_>, id: &str) -> Result<Option<CachedPatient>, JournalError> {
    Ok(tx
        .sql()
        .prepare_cached(&format!(
            "SELECT {PATIENT_COLUMNS} FROM fhir_patient WHERE id = ?1"
        ))?
        .query_row([id], cached_from_row)
        .optional()?)
}

/// A cached Patient as last synced with the EHR, for readers outside the connector (the
/// FHIR API): never the local version still to be written back.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncedPatient {
    pub id: String,
    /// The EHR's copy, as JSON.
    pub synced: serde_json::Value,
    pub updated_at: i64,
}

/// Which cached Patients [`synced_patients`] reads; [`PatientFilter::ALL`] admits every one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatientFilter<'a> {
    pub id: Option<&'a str>,
    /// Last changed within this range (ms).
    pub updated_at: Range<i64>,
}

impl PatientFilter<'_> {
    pub const ALL: PatientFilter<'static> = PatientFilter {
        id: None,
        updated_at: i64::MIN..i64::MAX,
    };
}

/// The cached Patients `filter` admits as last synced, by id; a row whose copy is not JSON is
/// left out, as [`fhir_patient`] refuses it.
pub fn synced_patients(
    tx: &mut Tx<'_>,
    filter: &PatientFilter<'_>,
) -> Result<Vec<SyncedPatient>, JournalError> {
    let rows: Vec<(String, String, i64)> = tx
        .sql()
        .prepare_cached(
            "SELECT id, synced, updated_at FROM fhir_patient
              WHERE (?1 IS NULL OR id = ?1) AND updated_at >= ?2 AND updated_at < ?3
              ORDER BY id",
        )?
        .query_map(
            params![filter.id, filter.updated_at.start, filter.updated_at.end],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?
        .collect::<Result<_, _>>()?;
    Ok(rows
        .into_iter()
        .filter_map(|(id, synced, updated_at)| {
            let synced = serde_json::from_str(&synced).ok()?;
            Some(SyncedPatient {
                id,
                synced,
                updated_at,
            })
        })
        .collect())
}

/// Cached Patients with this identifier value, or else with this family name (any case)
/// and birth date: the offline lookup of a check-in.
pub fn fhir_find(
    tx: &mut Tx<'_>,
    identifier: Option<&str>,
    family: Option<&str>,
    birth_date: Option<&str>,
) -> Result<Vec<CachedPatient>, JournalError> {
    let rows = tx
        .sql()
        .prepare_cached(&format!(
            "SELECT {PATIENT_COLUMNS} FROM fhir_patient
              WHERE (?1 IS NOT NULL AND identifier = ?1)
                 OR (?1 IS NULL AND family_key = lower(?2) AND birth_date = ?3)
              ORDER BY id LIMIT 10"
        ))?
        .query_map(params![identifier, family, birth_date], cached_from_row)?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

pub(crate) fn fhir_store(
    tx: &mut Tx<'_>,
    id: &str,
    identifier: Option<&str>,
    synced: &Patient,
    local: Option<&Patient>,
    now: i64,
) -> Result<(), JournalError> {
    let shown = local.unwrap_or(synced);
    let f = fhir::fields(shown);
    let family = f.get("family").cloned().flatten().map(|v| v.to_lowercase());
    tx.sql()
        .prepare_cached(
            "INSERT INTO fhir_patient (id, identifier, family_key, birth_date, version_id, synced, local, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (id) DO UPDATE SET identifier = ?2, family_key = ?3, birth_date = ?4,
                version_id = ?5, synced = ?6, local = ?7, updated_at = ?8",
        )?
        .execute(params![
            id,
            identifier,
            family,
            f.get("birth_date").cloned().flatten(),
            synced.version_id(),
            to_json(synced)?,
            local.map(to_json).transpose()?,
            now
        ])?;
    Ok(())
}

/// Takes in a version read from the EHR. A patient not cached is added only with `insert`
/// (lookups add, polls only follow known patients). A newer version replaces the synced
/// one; if a local change is still undelivered and differs from it, both are kept as a
/// conflict (audited) and the local change leaves the delivery path until resolved.
pub fn fhir_seen(
    tx: &mut Tx<'_>,
    remote: &Patient,
    identifier: Option<&str>,
    insert: bool,
    now: i64,
) -> Result<Seen, JournalError> {
    let id = remote.id.as_deref().unwrap_or_default();
    let Some(cached) = fhir_patient(tx, id)? else {
        if !insert {
            return Ok(Seen::Ignored);
        }
        fhir_store(tx, id, identifier, remote, None, now)?;
        return Ok(Seen::New);
    };
    if cached.version_id.is_some() && cached.version_id.as_deref() == remote.version_id() {
        return Ok(Seen::Unchanged);
    }
    let identifier = identifier.map(str::to_string).or(cached.identifier.clone());
    match cached.local {
        Some(local) if !fhir::same_content(&local, remote) => {
            let open: Option<i64> = tx
                .sql()
                .prepare_cached(
                    "SELECT id FROM fhir_conflict WHERE patient_id = ?1 AND resolved_at IS NULL",
                )?
                .query_row([id], |r| r.get(0))
                .optional()?;
            let conflict = match open {
                Some(c) => {
                    tx.sql()
                        .prepare_cached("UPDATE fhir_conflict SET remote = ?2 WHERE id = ?1")?
                        .execute(params![c, to_json(remote)?])?;
                    c
                }
                None => {
                    tx.sql()
                        .prepare_cached(
                            "INSERT INTO fhir_conflict (patient_id, local, remote, created_at) VALUES (?1, ?2, ?3, ?4)",
                        )?
                        .execute(params![id, to_json(&local)?, to_json(remote)?, now])?;
                    tx.sql().last_insert_rowid()
                }
            };
            fhir_store(tx, id, identifier.as_deref(), remote, None, now)?;
            let detail = serde_json::json!({
                "patient_id": id,
                "conflict": conflict,
                "fields": fhir::differing_fields(&local, remote),
            });
            tx.audit("fhir", "fhir.conflict", &detail.to_string(), now)?;
            Ok(Seen::Conflict(conflict))
        }
        _ => {
            fhir_store(tx, id, identifier.as_deref(), remote, None, now)?;
            Ok(Seen::Updated)
        }
    }
}

/// A local demographic change: kept as the patient's local version and handed to the
/// `ehr-fhir` outbox (keyed by patient, so changes to one patient go in order), audited with
/// `by` and the field names. A change that leaves the data as it is sends nothing (`false`).
/// Refused while the patient has an open conflict.
pub fn fhir_edit(
    tx: &mut Tx<'_>,
    id: &str,
    changes: &Fields,
    by: &str,
    now: i64,
) -> Result<bool, JournalError> {
    let cached = fhir_patient(tx, id)?
        .ok_or_else(|| JournalError::NotFound(format!("no cached Patient {id}")))?;
    let open: i64 = tx.sql().query_row(
        "SELECT count(*) FROM fhir_conflict WHERE patient_id = ?1 AND resolved_at IS NULL",
        [id],
        |r| r.get(0),
    )?;
    if open > 0 {
        return Err(JournalError::Rejected(format!(
            "Patient {id} has an open conflict; resolve it first"
        )));
    }
    fhir_change(tx, &cached, changes, by, "fhir.local_change", now)
}

pub(crate) fn fhir_change(
    tx: &mut Tx<'_>,
    cached: &CachedPatient,
    changes: &Fields,
    by: &str,
    action: &str,
    now: i64,
) -> Result<bool, JournalError> {
    let changed = fhir::apply(cached.current(), changes);
    if fhir::same_content(&changed, cached.current()) {
        return Ok(false);
    }
    let local = (!fhir::same_content(&changed, &cached.synced)).then_some(&changed);
    fhir_store(
        tx,
        &cached.id,
        cached.identifier.as_deref(),
        &cached.synced,
        local,
        now,
    )?;
    let detail = serde_json::json!({
        "patient_id": cached.id,
        "fields": changes.keys().collect::<Vec<_>>(),
    });
    tx.audit(by, action, &detail.to_string(), now)?;
    let event = NewItem::event(
        "fhir",
        "fhir.patient_update",
        format!("fhir:Patient/{}", cached.id),
        &serde_json::json!({ "patient_id": cached.id }),
        &[crate::connectors::fhir::DESTINATION],
    );
    tx.raise(event, now)?;
    Ok(true)
}

/// The EHR stored `stored` for our update `sent`: it becomes the synced version, and the
/// local change is settled unless a newer one was made meanwhile.
pub fn fhir_written(
    tx: &mut Tx<'_>,
    sent: &Patient,
    stored: &Patient,
    now: i64,
) -> Result<(), JournalError> {
    let id = stored.id.as_deref().unwrap_or_default();
    let Some(cached) = fhir_patient(tx, id)? else {
        return Ok(());
    };
    let local = cached
        .local
        .as_ref()
        .filter(|l| !fhir::same_content(l, sent) && !fhir::same_content(l, stored));
    fhir_store(tx, id, cached.identifier.as_deref(), stored, local, now)
}

/// Conflicts, newest first: open ones only, or all.
pub fn fhir_conflicts(tx: &mut Tx<'_>, all: bool) -> Result<Vec<Conflict>, JournalError> {
    let rows = tx
        .sql()
        .prepare_cached(&format!(
            "SELECT {CONFLICT_COLUMNS} FROM fhir_conflict
              WHERE ?1 OR resolved_at IS NULL ORDER BY id DESC LIMIT 500"
        ))?
        .query_map([all], conflict_from_row)?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// Resolves an open conflict with a choice per differing field. The chosen values are
/// applied to the patient's synced version and sent like a local change (unless that
/// changes nothing); the choice is recorded and audited.
pub fn fhir_resolve(
    tx: &mut Tx<'_>,
    id: i64,
    choices: &BTreeMap<String, Side>,
    by: &str,
    now: i64,
) -> Result<(Conflict, bool), JournalError> {
    let conflict = tx
        .sql()
        .prepare_cached(&format!(
            "SELECT {CONFLICT_COLUMNS} FROM fhir_conflict WHERE id = ?1"
        ))?
        .query_row([id], conflict_from_row)
        .optional()?
        .ok_or_else(|| JournalError::NotFound(format!("no conflict {id}")))?;
    if conflict.resolved_at.is_some() {
        return Err(JournalError::Rejected(format!(
            "conflict {id} is already resolved"
        )));
    }
    let values = fhir::resolution(&conflict.local, &conflict.remote, choices)
        .map_err(|e| JournalError::Rejected(e.to_string()))?;
    tx.sql()
        .prepare_cached("UPDATE fhir_conflict SET resolved_at = ?2, resolution = ?3 WHERE id = ?1")?
        .execute(params![id, now, to_json(choices)?])?;
    let cached = fhir_patient(tx, &conflict.patient_id)?.ok_or_else(|| {
        JournalError::NotFound(format!("no cached Patient {}", conflict.patient_id))
    })?;
    let detail = serde_json::json!({ "conflict": id, "patient_id": conflict.patient_id, "choices": choices });
    tx.audit(by, "fhir.conflict_resolved", &detail.to_string(), now)?;
    let sent =
        !values.is_empty() && fhir_change(tx, &cached, &values, by, "fhir.resolution_write", now)?;
    let mut conflict = conflict;
    conflict.resolved_at = Some(now);
    conflict.resolution = Some(choices.clone());
    Ok((conflict, sent))
}

/// A small persistent value of the FHIR connector (e.g. its poll cursor).
pub fn fhir_state(tx: &mut Tx<'_>, key: &str) -> Result<Option<String>, JournalError> {
    Ok(tx
        .sql()
        .prepare_cached("SELECT value FROM fhir_state WHERE key = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()?)
}

pub fn set_fhir_state(tx: &mut Tx<'_>, key: &str, value: &str) -> Result<(), JournalError> {
    tx.sql()
        .prepare_cached(
            "INSERT INTO fhir_state (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = ?2",
        )?
        .execute(params![key, value])?;
    Ok(())
}

/// Columns read by [`cached_from_row`], in its order.
const PATIENT_COLUMNS: &str = "id, version_id, synced, local, identifier";

fn cached_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CachedPatient> {
    Ok(CachedPatient {
        id: r.get(0)?,
        version_id: r.get(1)?,
        synced: from_json(2, &r.get::<_, String>(2)?)?,
        local: r
            .get::<_, Option<String>>(3)?
            .map(|t| from_json(3, &t))
            .transpose()?,
        identifier: r.get(4)?,
    })
}

/// Columns read by [`conflict_from_row`], in its order.
const CONFLICT_COLUMNS: &str = "id, patient_id, local, remote, created_at, resolved_at, resolution";

fn conflict_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Conflict> {
    let local: Patient = from_json(2, &r.get::<_, String>(2)?)?;
    let remote: Patient = from_json(3, &r.get::<_, String>(3)?)?;
    Ok(Conflict {
        id: r.get(0)?,
        patient_id: r.get(1)?,
        fields: fhir::differing_fields(&local, &remote),
        local,
        remote,
        created_at: r.get(4)?,
        resolved_at: r.get(5)?,
        resolution: r
            .get::<_, Option<String>>(6)?
            .map(|t| from_json(6, &t))
            .transpose()?,
    })
}

#[cfg(test)]
mod tests;
