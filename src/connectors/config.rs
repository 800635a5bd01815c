//! `[connectors]`: a table per healthcare connector, each validated by its own config.

use super::fhir::config::FhirConfig;
use super::hl7v2::config::Hl7Config;
use super::hl7v2::sender::SenderConfig;
use super::lab::config::LabConfig;
use super::payments::config::PaymentsConfig;
use super::pharmacy::config::PharmacyConfig;
use super::practice::billing::BillingConfig;
use super::practice::config::EligibilityConfig;
use crate::settings::{self, Problem};
use serde::Deserialize;

/// Every `[connectors.<kind>]` table of the configuration.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConnectorsConfig {
    /// The HL7 v2 MLLP listener.
    #[serde(default)]
    pub hl7v2: Option<Hl7Config>,
    /// Where outbound HL7 v2 messages (destination `ehr-mllp`) are delivered.
    #[serde(default)]
    pub hl7v2_out: Option<SenderConfig>,
    /// The EHR's FHIR R4 REST API (patient lookup, demographic sync).
    #[serde(default)]
    pub fhir: Option<FhirConfig>,
    /// The payer or clearinghouse answering eligibility inquiries (X12 270/271, CAQH CORE).
    #[serde(default)]
    pub eligibility: Option<EligibilityConfig>,
    /// What laboratory results (ORU^R01 through the MLLP listener) do to the queue; absent:
    /// results are journaled only.
    #[serde(default)]
    pub lab: Option<LabConfig>,
    /// Prescriptions (RDE^O11 / RDS^O13 through the MLLP listener) tracked on the patient's
    /// entry; absent: pharmacy messages are journaled only.
    #[serde(default)]
    pub pharmacy: Option<PharmacyConfig>,
    /// The payment processors taking co-pays and balances (a Stripe-style API), in order.
    #[serde(default)]
    pub payments: Option<PaymentsConfig>,
    /// Billing code suggestions (a code table per appointment type) and the fee schedule.
    #[serde(default)]
    pub billing: Option<BillingConfig>,
}

impl ConnectorsConfig {
    /// Every problem of `[connectors]`.
    /// `base` is the config file's folder, against which file paths are resolved.
    pub fn validate(&self, base: &std::path::Path) -> Vec<Problem> {
        settings::collect(|bad| {
            if let Some(h) = &self.hl7v2 {
                h.validate(base, bad);
            }
            if let Some(s) = &self.hl7v2_out {
                s.validate(bad);
            }
            if let Some(f) = &self.fhir {
                f.validate(bad);
                // What these poll is acted on only by their family's hook.
                if f.results.is_some() && self.lab.is_none() {
                    bad(
                        "connectors.fhir.results",
                        "polls results for [connectors.lab], which is not configured".into(),
                    );
                }
                if f.pharmacy.is_some() && self.pharmacy.is_none() {
                    bad(
                        "connectors.fhir.pharmacy",
                        "polls prescriptions, allergies and detected issues for [connectors.pharmacy], which is not configured".into(),
                    );
                }
            }
            if let Some(e) = &self.eligibility {
                e.validate(base, bad);
            }
            if let Some(l) = &self.lab {
                l.validate(bad);
            }
            if let Some(p) = &self.pharmacy {
                p.validate(bad);
            }
            if let Some(p) = &self.payments {
                p.validate(base, self.hl7v2_out.is_some(), self.fhir.is_some(), bad);
            }
            if let Some(b) = &self.billing {
                b.validate(self.hl7v2_out.is_some(), self.fhir.is_some(), bad);
            }
        })
    }
}
