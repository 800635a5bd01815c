//! The lab's table: the reportable results received per patient (codes and status, never
//! values: the journal keeps the message itself). Functions run inside the journal writer's
//! transaction ([`Tx`]); nothing here opens SQLite.

use super::protocol::{LabResult, Subject};
use crate::journal::{JournalError, NewItem, Schema, Tx};
use rusqlite::params;

/// The lab's migrations.
pub const SCHEMA: Schema = Schema {
    domain: "lab",
    steps: &[r#"
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
"#],
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
