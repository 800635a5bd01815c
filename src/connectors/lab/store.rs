//! The lab's table: the reportable results received per patient (codes and status, never
//! values: the journal keeps the message itself). Functions run inside the journal writer's
//! transaction ([`Tx`]); nothing here opens SQLite.

use super::protocol::{LabResult, Subject};
use crate::journal::{JournalError, NewItem, Schema, Tx};
use crate::journal::{from_json, to_json};
use rusqlite::{OptionalExtension, params};

/// The lab's migrations.
pub const SCHEMA: Schema = Schema {
    domain: "lab",
    steps: &[
        r#"
CREATE TABLE lab_result (
    id          INTEGER PRIMARY KEY,
    source      TEXT    NOT NULL,
    source_id   TEXT,
    patient_ref TEXT,
    patient_id  TEXT,
    code        TEXT    NOT NULL,
    status      TEXT    NOT NULL,
    received_at INTEGER NOT NULL
);
CREATE INDEX lab_result_patient_ref ON lab_result(patient_ref, code) WHERE patient_ref IS NOT NULL;
CREATE INDEX lab_result_patient_id ON lab_result(patient_id, code) WHERE patient_id IS NOT NULL;
"#,
        r#"
CREATE TABLE lab_appointment_type (
    appointment_ref TEXT    PRIMARY KEY,
    types           TEXT    NOT NULL,
    updated_at      INTEGER NOT NULL
);
"#,
    ],
    legacy: &[],
};

/// Records the reportable results of one item for a patient: which tests, in which status,
/// from which message.
pub fn record_results(
    tx: &mut Tx<'_>,
    item: &NewItem,
    subject: &Subject,
    results: &[LabResult],
    now: i64,
) -> Result<(), JournalError> {
    for r in results.iter().filter(|r| r.status.is_reportable()) {
        tx.sql()
            .prepare_cached(
                "INSERT INTO lab_result (source, source_id, patient_ref, patient_id, code, status, received_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                item.source,
                item.source_id,
                subject.patient_ref,
                subject.patient_id,
                r.code,
                r.status.as_str(),
                now
            ])?;
    }
    Ok(())
}

/// Remembers an appointment's type codes under each of its ids (a later message replaces
/// them), so that an entry carrying any of them can be checked for the results it requires.
pub fn remember_types(
    tx: &mut Tx<'_>,
    refs: &[String],
    types: &[String],
    now: i64,
) -> Result<(), JournalError> {
    let types = to_json(&types)?;
    for r in refs {
        tx.sql()
            .prepare_cached(
                "INSERT INTO lab_appointment_type (appointment_ref, types, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (appointment_ref) DO UPDATE SET types = ?2, updated_at = ?3",
            )?
            .execute(params![r, types, now])?;
    }
    Ok(())
}

/// The type codes remembered for an appointment id.
pub fn types_of(tx: &mut Tx<'_>, appointment_ref: &str) -> Result<Vec<String>, JournalError> {
    let text: Option<String> = tx
        .sql()
        .prepare_cached("SELECT types FROM lab_appointment_type WHERE appointment_ref = ?1")?
        .query_row([appointment_ref], |r| r.get(0))
        .optional()?;
    text.map(|t| from_json(0, &t).map_err(JournalError::from))
        .transpose()
        .map(Option::unwrap_or_default)
}

/// The tests with a reportable result for a patient received since `since` (Unix ms).
pub fn received_codes(
    tx: &mut Tx<'_>,
    patient_ref: Option<&str>,
    patient_id: Option<&str>,
    since: i64,
) -> Result<Vec<String>, JournalError> {
    let rows = tx
        .sql()
        .prepare_cached(
            "SELECT DISTINCT code FROM lab_result
              WHERE received_at >= ?3
                AND ((?1 IS NOT NULL AND patient_ref = ?1) OR (?2 IS NOT NULL AND patient_id = ?2))",
        )?
        .query_map(params![patient_ref, patient_id, since], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}
