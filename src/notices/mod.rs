//! Staff notices: what staff should see on the status page (a priority an EHR flag changed, a
//! queue running past its slots, refused EHR credentials) until someone acknowledges it.
//!
//! **Invariant:** a notice names tickets and queues only, never patient data.

pub mod store;

use crate::journal::{JournalError, Tx, Work};
use serde::Serialize;

/// One notice as staff see it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Notice {
    pub id: i64,
    pub at: i64,
    pub kind: String,
    pub text: String,
    pub acknowledged_at: Option<i64>,
    pub acknowledged_by: Option<String>,
}

/// Staff notices, newest first: the open ones, or `all`.
#[derive(Debug)]
pub struct ListNotices {
    pub all: bool,
    pub limit: usize,
}

/// Marks a notice seen, audited with `by`.
#[derive(Debug)]
pub struct AckNotice {
    pub id: i64,
    pub by: String,
}

crate::journal_work!(ListNotices, AckNotice);

impl Work for ListNotices {
    type Output = Vec<Notice>;
    const READ_ONLY: bool = true;
    fn run(self, tx: &mut Tx<'_>) -> Result<Self::Output, JournalError> {
        store::notices(tx, self.all, self.limit)
    }
}

impl Work for AckNotice {
    type Output = ();
    fn run(self, tx: &mut Tx<'_>) -> Result<Self::Output, JournalError> {
        let now = tx.now();
        store::acknowledge(tx, self.id, &self.by, now)
    }
}
