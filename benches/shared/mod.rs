//! What the journal benches share: the events they append and the journal's settings.

use clinic_gateway::journal::{NewItem, Settings};
use std::collections::BTreeMap;
use std::time::Duration;

/// The `i`-th event for the cloud, of one of 64 keys, the size of a queue event.
pub fn item(i: usize) -> NewItem {
    NewItem {
        source: "bench".into(),
        source_id: Some(format!("{i:012}")),
        kind: "bench.event".into(),
        key: format!("patient-{}", i % 64),
        schema: "bench.event@1".into(),
        payload: format!(
            r#"{{"n":{i},"ticket":"A{i}","queue":"general","room":"12b","wait_min":14}}"#
        )
        .into_bytes(),
        reply: None,
        occurred_at: None,
        destinations: vec!["cloud".into()],
    }
}

/// Settings that never trim the journal during a run.
pub fn settings() -> Settings {
    Settings {
        max_bytes: 64 << 30,
        retention: Duration::from_secs(3600),
        max_batch: 4096,
        policies: BTreeMap::new(),
        extensions: Default::default(),
    }
}
