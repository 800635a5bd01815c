//! The pharmacy's tables: each tracked prescription, by order id, with the queue entry it
//! belongs to, its state and its medication's codes (never the drug's name), and the queued
//! patients' allergies as codes (never their text or reactions). Functions run inside the
//! journal writer's transaction ([`Tx`]); nothing here opens SQLite.

use super::protocol::{Allergy, Code, Patient, RxState, V2_ORIGIN};
use crate::journal::{JournalError, Schema, Tx};
use rusqlite::{OptionalExtension, params};

/// The pharmacy's migrations.
pub const SCHEMA: Schema = Schema {
    domain: "pharmacy",
    steps: &[
        r#"
CREATE TABLE prescription (
    order_id    TEXT    PRIMARY KEY,
    entry_id    INTEGER NOT NULL,
    state       TEXT    NOT NULL,
    pickup_at   INTEGER,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX prescription_entry ON prescription(entry_id);
CREATE INDEX prescription_ready ON prescription(state) WHERE state = 'ready';
"#,
        r#"
ALTER TABLE prescription ADD COLUMN codes TEXT NOT NULL DEFAULT '[]';
CREATE TABLE allergy (
    origin      TEXT    PRIMARY KEY,
    patient_id  TEXT    NOT NULL,
    active      INTEGER NOT NULL,
    codes       TEXT    NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX allergy_patient ON allergy(patient_id) WHERE active;
"#,
        // An allergy's `patient_id` is now a patient key (`Allergy::patient`): a FHIR id, or
        // `ref:` and an HL7 v2 identifier; allergies not read again for a year are forgotten.
        r#"
CREATE INDEX allergy_by_patient ON allergy(patient_id, origin);
CREATE INDEX allergy_updated ON allergy(updated_at);
"#,
    ],
    legacy: &[],
};

/// A tracked prescription's entry and state.
pub fn prescription(tx: &mut Tx<'_>, order: &str) -> Result<Option<(i64, RxState)>, JournalError> {
    let found: Option<(i64, String)> = tx
        .sql()
        .prepare_cached("SELECT entry_id, state FROM prescription WHERE order_id = ?1")?
        .query_row([order], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(found.and_then(|(entry, s)| RxState::parse(&s).map(|state| (entry, state))))
}

/// Starts tracking a prescription on an entry.
pub fn track(
    tx: &mut Tx<'_>,
    order: &str,
    entry: i64,
    state: RxState,
    now: i64,
) -> Result<(), JournalError> {
    tx.sql()
        .prepare_cached(
            "INSERT INTO prescription (order_id, entry_id, state, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?4)",
        )?
        .execute(params![order, entry, state.as_str(), now])?;
    Ok(())
}

/// Moves a tracked prescription to `state`, with its pickup time once ready.
pub fn move_to(
    tx: &mut Tx<'_>,
    order: &str,
    state: RxState,
    pickup_at: Option<i64>,
    now: i64,
) -> Result<(), JournalError> {
    tx.sql()
        .prepare_cached(
            "UPDATE prescription SET state = ?2, pickup_at = COALESCE(?3, pickup_at), updated_at = ?4
              WHERE order_id = ?1",
        )?
        .execute(params![order, state.as_str(), pickup_at, now])?;
    Ok(())
}

/// How many prescriptions wait at the pickup counter (ready, not picked up), other than
/// `order`.
pub fn ready_waiting(tx: &mut Tx<'_>, order: &str) -> Result<u32, JournalError> {
    let n: i64 = tx
        .sql()
        .prepare_cached(
            "SELECT COUNT(*) FROM prescription WHERE state = 'ready' AND order_id != ?1",
        )?
        .query_row([order], |r| r.get(0))?;
    Ok(u32::try_from(n).unwrap_or(u32::MAX))
}

/// The state of every prescription of the open queue entries, by entry, oldest first: what
/// the board shows (no drugs).
pub fn on_open_entries(tx: &mut Tx<'_>) -> Result<Vec<(i64, String)>, JournalError> {
    let rows = tx
        .sql()
        .prepare_cached(
            "SELECT p.entry_id, p.state FROM prescription p JOIN queue_entry e ON e.id = p.entry_id
              WHERE e.state IN ('waiting', 'called', 'in_room')
              ORDER BY p.entry_id, p.created_at, p.order_id",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

fn codes_text(codes: &[Code]) -> Result<String, JournalError> {
    crate::journal::to_json(&codes)
}

fn codes_of(text: String) -> Vec<Code> {
    // Written by `codes_text` only; a row that no longer reads matches nothing.
    serde_json::from_str(&text).unwrap_or_default()
}

/// Keeps a tracked prescription's medication codes, for the allergies read after it.
pub fn set_codes(tx: &mut Tx<'_>, order: &str, codes: &[Code]) -> Result<(), JournalError> {
    let text = codes_text(codes)?;
    tx.sql()
        .prepare_cached("UPDATE prescription SET codes = ?2 WHERE order_id = ?1")?
        .execute(params![order, text])?;
    Ok(())
}

/// The medication codes of each prescription tracked on an entry: (order id, codes).
pub fn codes_on_entry(
    tx: &mut Tx<'_>,
    entry: i64,
) -> Result<Vec<(String, Vec<Code>)>, JournalError> {
    let rows: Vec<(String, String)> = tx
        .sql()
        .prepare_cached(
            "SELECT order_id, codes FROM prescription WHERE entry_id = ?1 ORDER BY created_at, order_id",
        )?
        .query_map([entry], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    Ok(rows.into_iter().map(|(o, c)| (o, codes_of(c))).collect())
}

/// Keeps an allergy as read last (a later version replaces it, an inactive one stops
/// matching).
pub fn remember_allergy(tx: &mut Tx<'_>, a: &Allergy, now: i64) -> Result<(), JournalError> {
    let text = codes_text(&a.codes)?;
    tx.sql()
        .prepare_cached(
            "INSERT INTO allergy (origin, patient_id, active, codes, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(origin) DO UPDATE SET patient_id = ?2, active = ?3, codes = ?4, updated_at = ?5",
        )?
        .execute(params![a.origin, a.patient.key(), a.active, text, now])?;
    Ok(())
}

/// Stops matching every allergy an HL7 v2 message listed for `patient` before: a message's AL1s
/// are the patient's whole list, and the ones it still lists are remembered again after this.
pub fn retire_v2_allergies(
    tx: &mut Tx<'_>,
    patient: &Patient,
    now: i64,
) -> Result<(), JournalError> {
    tx.sql()
        .prepare_cached(
            "UPDATE allergy SET active = 0, updated_at = ?3
              WHERE patient_id = ?1 AND origin >= ?2 AND origin < ?2 || x'ff' AND active",
        )?
        .execute(params![patient.key(), V2_ORIGIN, now])?;
    Ok(())
}

/// Forgets up to `limit` allergies not read again since `before`: a patient not seen for that
/// long has theirs read afresh at their next visit.
pub fn forget_allergies(tx: &mut Tx<'_>, before: i64, limit: usize) -> Result<(), JournalError> {
    tx.sql()
        .prepare_cached(
            "DELETE FROM allergy WHERE origin IN
               (SELECT origin FROM allergy WHERE updated_at < ?1 ORDER BY updated_at LIMIT ?2)",
        )?
        .execute(params![before, limit as i64])?;
    Ok(())
}

/// A patient's active allergies: (origin, codes).
pub fn active_allergies(
    tx: &mut Tx<'_>,
    patient: &Patient,
) -> Result<Vec<(String, Vec<Code>)>, JournalError> {
    let rows: Vec<(String, String)> = tx
        .sql()
        .prepare_cached(
            "SELECT origin, codes FROM allergy WHERE patient_id = ?1 AND active ORDER BY origin",
        )?
        .query_map([patient.key()], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    Ok(rows.into_iter().map(|(o, c)| (o, codes_of(c))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{Extensions, Store};

    fn allergy(origin: &str, patient: Patient) -> Allergy {
        Allergy {
            origin: origin.into(),
            patient,
            active: true,
            codes: vec![Code {
                system: None,
                code: origin.rsplit('|').next().unwrap_or(origin).into(),
            }],
        }
    }

    #[test]
    fn a_v2_list_retires_only_that_patients_v2_allergies_and_old_ones_are_forgotten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::scratch(dir.path(), &[&SCHEMA]);
        let mrn = Patient::Ref("MRN-1".into());
        let other = Patient::Ref("MRN-10".into());
        let (kept, others, left) = store
            .with_batch(|b| {
                let extensions = Extensions::default();
                let tx = &mut b.work(&extensions);
                remember_allergy(tx, &allergy("AL1/MRN-1/|1", mrn.clone()), 1_000)?;
                remember_allergy(tx, &allergy("AL1/MRN-10/|2", other.clone()), 1_000)?;
                remember_allergy(tx, &allergy("AllergyIntolerance/a", mrn.clone()), 1_000)?;
                retire_v2_allergies(tx, &mrn, 2_000)?;
                let kept = active_allergies(tx, &mrn)?;
                let others = active_allergies(tx, &other)?;
                forget_allergies(tx, 1_500, 10)?;
                let left: i64 = tx
                    .sql()
                    .query_row("SELECT count(*) FROM allergy", [], |r| r.get(0))?;
                Ok((kept, others, left))
            })
            .expect("batch");
        assert_eq!(
            kept.iter().map(|(o, _)| o.as_str()).collect::<Vec<_>>(),
            ["AllergyIntolerance/a"],
            "the FHIR allergy stays"
        );
        assert_eq!(others.len(), 1, "another patient's list is not touched");
        assert_eq!(left, 1, "only the retired one was updated since 1 500");
    }
}
