//! What a visit's coding is made of: the facts staff record about it and the codes of the
//! clinic's table. Plain data shared by the billing table (`billing.rs`) and the store.

use crate::settings;
use serde::{Deserialize, Serialize};

/// A code system of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum System {
    Hcpcs,
    Cpt,
    Icd10,
}

impl System {
    /// HL7 table 0396's name of the system.
    pub(super) fn hl7(self) -> &'static str {
        match self {
            System::Hcpcs => "HCPCS",
            System::Cpt => "C4",
            System::Icd10 => "I10",
        }
    }

    pub(super) fn uri(self) -> &'static str {
        match self {
            System::Hcpcs => "urn:oid:2.16.840.1.113883.6.285",
            System::Cpt => "http://www.ama-assn.org/go/cpt",
            System::Icd10 => "http://hl7.org/fhir/sid/icd-10-cm",
        }
    }
}

/// A code of the table: `HCPCS:G0008`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Code {
    pub system: System,
    pub code: String,
}

impl Code {
    pub fn parse(s: &str) -> Option<Code> {
        let (system, code) = s.split_once(':')?;
        let system = match system {
            "HCPCS" => System::Hcpcs,
            "CPT" => System::Cpt,
            "ICD10" => System::Icd10,
            _ => return None,
        };
        let ok = !code.is_empty()
            && code.len() <= 10
            && code.chars().all(|c| c.is_ascii_alphanumeric() || c == '.');
        ok.then(|| Code {
            system,
            code: code.to_string(),
        })
    }

    pub(super) fn is_procedure(&self) -> bool {
        self.system != System::Icd10
    }
}

/// What staff record about a visit for its coding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Facts {
    pub appointment_type: String,
    #[serde(default)]
    pub new_patient: bool,
    /// Procedures done (the table's `procedure` names).
    #[serde(default)]
    pub procedures: Vec<String>,
}

impl Facts {
    /// Checks the sizes; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        if !settings::is_identifier(&self.appointment_type) {
            return Err("\"appointment_type\": letters, digits, '-' and '_' only".into());
        }
        if self.procedures.len() > 32 || !self.procedures.iter().all(|p| settings::is_identifier(p))
        {
            return Err("\"procedures\": at most 32, letters, digits, '-' and '_' only".into());
        }
        Ok(())
    }
}
