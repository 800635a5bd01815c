//! `[connectors.pharmacy]`: tracking the prescriptions of queued patients, and which HL7 v2
//! segments carry the pharmacy's alerts.

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PharmacyConfig {
    /// Minutes the pickup counter takes per prescription waiting there: a ready prescription
    /// without the pharmacy's own estimate is expected after those ready before it × this.
    #[serde(default = "default_minutes_per_prescription")]
    pub minutes_per_prescription: u32,
    /// Where an RDE^O11 carries an interaction or allergy the pharmacy detected (a ZAL
    /// segment, an NTE comment): each rule that matches raises a clinical alert.
    #[serde(default)]
    pub alert_rules: Vec<AlertRule>,
}

/// `[[connectors.pharmacy.alert_rules]]`: a segment's field whose value says the order
/// carries an alert.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AlertRule {
    /// The segment id (`ZAL`, `NTE`), any of its occurrences.
    pub segment: String,
    /// The field's number (NTE-3 is `3`).
    pub field: usize,
    /// Text the field must contain, case-insensitively; empty: any non-empty value.
    #[serde(default, rename = "match")]
    pub matches: String,
}

impl Default for PharmacyConfig {
    fn default() -> Self {
        PharmacyConfig {
            minutes_per_prescription: default_minutes_per_prescription(),
            alert_rules: Vec::new(),
        }
    }
}

fn default_minutes_per_prescription() -> u32 {
    5
}

impl PharmacyConfig {
    /// Reports every problem under `connectors.pharmacy`.
    pub fn validate(&self, bad: &mut dyn FnMut(&str, String)) {
        if self.minutes_per_prescription > 240 {
            bad(
                "connectors.pharmacy.minutes_per_prescription",
                "at most 240".into(),
            );
        }
        for (i, rule) in self.alert_rules.iter().enumerate() {
            let key = |k: &str| format!("connectors.pharmacy.alert_rules[{i}].{k}");
            let id_like = rule.segment.len() == 3
                && rule
                    .segment
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
            // MSH counts its fields from the separator itself; no alert lives there.
            if !id_like || rule.segment == "MSH" {
                bad(
                    &key("segment"),
                    "a segment id of 3 capitals or digits, not MSH (e.g. \"ZAL\", \"NTE\")".into(),
                );
            }
            if !(1..=999).contains(&rule.field) {
                bad(&key("field"), "a field number, 1 to 999".into());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Vec<String> {
        let c: PharmacyConfig = toml::from_str(text).expect("parses");
        let mut keys = Vec::new();
        c.validate(&mut |k, _| keys.push(k.to_string()));
        keys
    }

    #[test]
    fn alert_rules_name_a_segment_and_a_field() {
        assert!(check("[[alert_rules]]\nsegment = \"ZAL\"\nfield = 2\n").is_empty());
        assert!(
            check("[[alert_rules]]\nsegment = \"NTE\"\nfield = 3\nmatch = \"interaction\"\n")
                .is_empty()
        );
        assert_eq!(
            check("[[alert_rules]]\nsegment = \"msh\"\nfield = 0\n"),
            [
                "connectors.pharmacy.alert_rules[0].segment",
                "connectors.pharmacy.alert_rules[0].field"
            ]
        );
    }
}
