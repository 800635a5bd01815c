//! The one place where actors are wired: which children a configuration has, the journal's
//! domain schemas and the writer's settings. A new family adds its lines here and nowhere
//! else in the daemon.

use crate::config::Config;
use crate::connectors::{fhir, hl7v2, lab, payments, pharmacy, practice};
use crate::credentials;
use crate::devices::{Handles, bacnet, modbus, occupancy, printer};
use crate::facility::{self, FacilitySlot};
use crate::journal::{Extensions, JournalWriter, Schema, Settings};
use crate::messaging;
use crate::relay::RelaySpawn;
use crate::reload::ReloadConfig;
use crate::supervisor::Spawn;
use actix::{Addr, Recipient};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The supervisor's name for the cloud relay.
pub const RELAY: &str = "cloud-relay";

/// A supervised child: its name and how to start it.
pub type Child = (String, Box<dyn Spawn>);

/// Every domain's tables in the journal, migrated when it is opened.
pub fn schemas() -> [&'static Schema; 15] {
    [
        &crate::queue::store::SCHEMA,
        &crate::notices::store::SCHEMA,
        &crate::facility::store::SCHEMA,
        &crate::devices::store::SCHEMA,
        &crate::connectors::fhir::store::SCHEMA,
        &crate::access::store::SCHEMA,
        &crate::credentials::store::SCHEMA,
        &crate::suspension::store::SCHEMA,
        &crate::connectors::practice::store::SCHEMA,
        &crate::connectors::lab::store::SCHEMA,
        &crate::alerts::store::SCHEMA,
        &crate::messaging::store::SCHEMA,
        &crate::connectors::pharmacy::store::SCHEMA,
        &crate::connectors::payments::store::SCHEMA,
        &crate::relay::store::SCHEMA,
    ]
}

/// The journal writer's settings from the config, with the domains' own (the queue's zone and
/// the hooks by which the EHR connectors add to a queue change), and the clinic's time zone.
pub fn journal_settings(c: &Config) -> (Settings, jiff::tz::TimeZone) {
    let zone = crate::clock::zone(c.gateway.timezone.as_deref()).unwrap_or(jiff::tz::TimeZone::UTC);
    let facility = &c.gateway.facility_id;
    let mut hooks: Vec<Arc<dyn crate::queue::Hook>> = Vec::new();
    if let Some(trigger) = c.connectors.hl7v2_out.as_ref().and_then(|o| o.on_call) {
        hooks.push(Arc::new(hl7v2::notice::CallNotice {
            trigger,
            facility: facility.clone(),
        }));
    }
    if let Some(f) = &c.connectors.fhir {
        if f.on_call.is_some() {
            hooks.push(Arc::new(fhir::encounter::VisitNotice {
                facility: facility.clone(),
            }));
        }
        if let Some(r) = &f.registration {
            hooks.push(Arc::new(fhir::registration::Policy::new(facility, r)));
        }
    }
    let mut inbound: Vec<Arc<dyn crate::queue::Inbound>> = Vec::new();
    if let Some(l) = &c.connectors.lab {
        inbound.push(Arc::new(lab::Results { config: l.clone() }));
        if let Some(s) = &l.specimens {
            inbound.push(Arc::new(lab::tracking::Specimens { config: s.clone() }));
        }
    }
    if let Some(p) = &c.connectors.pharmacy {
        inbound.push(Arc::new(pharmacy::Prescriptions { config: p.clone() }));
    }
    let mut tx_hooks: Vec<Arc<dyn crate::queue::TxHook>> = Vec::new();
    if let Some(m) = &c.messaging {
        tx_hooks.push(Arc::new(messaging::Notifier {
            config: Arc::new(m.clone()),
            zone: zone.clone(),
            facility: facility.clone(),
        }));
    }
    if let Some(b) = billing(c) {
        tx_hooks.push(b);
    }
    let mut extensions = Extensions::default();
    extensions.insert(crate::queue::Settings {
        zone: zone.clone(),
        hooks,
        inbound,
        tx_hooks,
    });
    let settings = Settings {
        max_bytes: c.journal.max_bytes,
        retention: Duration::from_secs(c.journal.retention_hours * 3600),
        max_batch: c.journal.max_batch,
        policies: c
            .destinations
            .iter()
            .map(|(k, v)| (k.clone(), v.into()))
            .collect(),
        extensions,
    };
    (settings, zone)
}

/// The relay child for a configuration, if it has a `[relay]` table. Cloud commands that
/// reload the configuration reach the daemon through `control`.
pub fn relay(
    c: &Config,
    journal: &Addr<JournalWriter>,
    control: Recipient<ReloadConfig>,
    rooms: &FacilitySlot,
) -> Result<Option<RelaySpawn>, String> {
    let Some(relay) = &c.relay else {
        return Ok(None);
    };
    let tls = match &relay.tls {
        Some(t) => {
            Some(crate::relay::tls::client_config(t, |p| c.resolve(p)).map_err(|e| e.to_string())?)
        }
        None => None,
    };
    let password = match &relay.password_file {
        Some(p) => Some(
            std::fs::read_to_string(c.resolve(p))
                .map_err(|e| format!("relay.password_file: {e}"))?
                .trim_end_matches(['\r', '\n'])
                .to_string(),
        ),
        None => None,
    };
    // The relay watches its client certificate for a renewal, so it gets the file's path as
    // the TLS configuration read it.
    let mut config = relay.clone();
    if let Some(t) = &mut config.tls {
        t.ca_file = c.resolve(&t.ca_file);
        for p in [&mut t.client_cert_file, &mut t.client_key_file]
            .into_iter()
            .flatten()
        {
            *p = c.resolve(p);
        }
    }
    Ok(Some(RelaySpawn {
        config,
        facility: c.gateway.facility_id.clone(),
        tls,
        password,
        journal: journal.clone(),
        control: Some(control),
        rooms: rooms.clone(),
    }))
}

/// One supervised child per configured device, and the facility rules over them (which reach
/// the devices through their slots, and are reached through `rooms`).
pub fn devices(
    config: &Config,
    journal: &Addr<JournalWriter>,
    rooms: &FacilitySlot,
) -> Result<Vec<Child>, String> {
    let mut children: Vec<Child> = Vec::new();
    let mut handles = Handles::default();
    if let Some(o) = &config.devices.occupancy {
        let spawn =
            occupancy::OccupancySpawn::new(config, o, journal).map_err(|e| e.to_string())?;
        handles.occupancy = Some(spawn.handle.clone());
        children.push((occupancy::NAME.into(), Box::new(spawn)));
    }
    for device in &config.devices.modbus {
        let spawn = modbus::ModbusSpawn::new(device.clone(), journal.clone());
        handles.modbus.insert(device.name.clone(), spawn.slot());
        children.push((format!("modbus:{}", device.name), Box::new(spawn)));
    }
    for p in &config.devices.printer {
        let spawn = printer::PrinterSpawn::new(p.clone(), journal.clone());
        children.push((printer::destination(&p.name), Box::new(spawn)));
    }
    for device in &config.devices.bacnet {
        let spawn = bacnet::BacnetSpawn::new(device.clone(), journal.clone());
        handles.bacnet.insert(device.name.clone(), spawn.slot());
        children.push((format!("bacnet:{}", device.name), Box::new(spawn)));
    }
    if !config.facility.is_empty() {
        let spawn = facility::FacilitySpawn::new(
            config.facility.clone(),
            handles,
            journal.clone(),
            rooms.clone(),
        );
        children.push((facility::NAME.into(), Box::new(spawn)));
    }
    Ok(children)
}

/// One supervised child per configured connector.
/// The FHIR connector is reached through `fhir`.
pub fn connectors(
    config: &Config,
    journal: &Addr<JournalWriter>,
    fhir: &fhir::FhirSlot,
) -> Vec<Child> {
    let mut children: Vec<Child> = Vec::new();
    if let Some(h) = &config.connectors.hl7v2 {
        children.push((
            hl7v2::NAME.into(),
            Box::new(hl7v2::Hl7Spawn {
                config: h.resolved(|p| config.resolve(p)),
                journal: journal.clone(),
            }),
        ));
    }
    if let Some(s) = &config.connectors.hl7v2_out {
        children.push((
            hl7v2::sender::NAME.into(),
            Box::new(hl7v2::sender::SenderSpawn {
                config: s.clone(),
                journal: journal.clone(),
            }),
        ));
    }
    if let Some(f) = &config.connectors.fhir {
        children.push((
            fhir::NAME.into(),
            Box::new(fhir::FhirSpawn {
                config: f.resolved(|p| config.resolve(p)),
                facility: config.gateway.facility_id.clone(),
                journal: journal.clone(),
                slot: fhir.clone(),
            }),
        ));
    }
    if let Some(e) = &config.connectors.eligibility {
        children.push((
            practice::NAME.into(),
            Box::new(practice::EligibilitySpawn {
                config: e.resolved(|p| config.resolve(p)),
                journal: journal.clone(),
            }),
        ));
    }
    if let Some(s) = config
        .connectors
        .lab
        .as_ref()
        .and_then(|l| l.specimens.as_ref())
    {
        children.push((
            lab::tracking::NAME.into(),
            Box::new(lab::tracking::WatchSpawn {
                config: s.clone(),
                journal: journal.clone(),
            }),
        ));
    }
    if let Some(p) = &config.connectors.payments {
        children.push((
            payments::NAME.into(),
            Box::new(payments::PaymentsSpawn {
                config: p.resolved(|p| config.resolve(p)),
                effects: payment_effects(config, p),
                journal: journal.clone(),
            }),
        ));
    }
    children
}

/// What a settled payment does beyond its row: where the PMS is told, and who the facility and
/// the patient are in that message.
pub fn payment_effects(config: &Config, p: &payments::config::PaymentsConfig) -> payments::Effects {
    payments::Effects {
        facility: config.gateway.facility_id.clone(),
        pms: p.pms,
        patient_system: config
            .connectors
            .fhir
            .as_ref()
            .map(|f| f.identifier_system.clone()),
    }
}

/// What the web layer reads of the practice connectors' configuration.
pub fn practice(config: &Config) -> crate::web::Practice {
    let payments = config.connectors.payments.as_ref();
    crate::web::Practice {
        eligibility: config.connectors.eligibility.clone(),
        payments: payments.map(|p| p.resolved(|f| config.resolve(f))),
        payment_effects: payments.map(|p| payment_effects(config, p)),
        billing: billing(config),
    }
}

/// Billing code suggestions, when `[connectors.billing]` is configured: the queue's hook at a
/// visit's completion and the API's recording of its facts share it.
pub fn billing(config: &Config) -> Option<Arc<practice::billing::Billing>> {
    let b = config.connectors.billing.as_ref()?;
    Some(Arc::new(practice::billing::Billing {
        config: b.clone(),
        facility: config.gateway.facility_id.clone(),
        patient_system: config
            .connectors
            .fhir
            .as_ref()
            .map(|f| f.identifier_system.clone()),
    }))
}

/// The escalation watch of clinical alerts: cheap, and its times are in the journal, so it is
/// started again on every reload.
pub fn alerts(config: &Config, journal: &Addr<JournalWriter>) -> Child {
    let spawn = crate::alerts::EscalateSpawn {
        config: config.alerts.clone(),
        journal: journal.clone(),
    };
    (crate::alerts::NAME.into(), Box::new(spawn))
}

/// The deliverer of patient messages, if `[messaging]` is configured.
pub fn messaging(config: &Config, journal: &Addr<JournalWriter>) -> Option<Child> {
    let m = config.messaging.as_ref()?;
    let spawn = messaging::DelivererSpawn {
        config: Arc::new(m.clone()),
        folder: config.folder().to_path_buf(),
        journal: journal.clone(),
    };
    Some((messaging::NAME.into(), Box::new(spawn)))
}

/// The credential watcher over every certificate file the configuration names and the EHR's
/// credentials (the API keys' expiries it reads from the journal).
pub fn credentials(config: &Config, journal: &Addr<JournalWriter>) -> Child {
    let mut files = Vec::new();
    let mut watched = |name: &str, source: credentials::Source| {
        files.push(credentials::Watched {
            name: name.into(),
            source,
        })
    };
    let mut watch =
        |name: &str, path: PathBuf| watched(name, credentials::Source::Certificate(path));
    if let Some(tls) = &config.web.tls {
        watch(
            "web.tls.cert_file",
            tls.files(config.folder(), &config.data_dir()).0,
        );
        if let Some(ca) = tls.client_ca(config.folder()) {
            watch("web.tls.client_ca_file", ca);
        }
    }
    if let Some(tls) = config
        .connectors
        .hl7v2
        .as_ref()
        .and_then(|h| h.tls.as_ref())
    {
        watch(
            "connectors.hl7v2.tls.cert_file",
            config.resolve(&tls.cert_file),
        );
        if let Some(ca) = &tls.client_ca_file {
            watch("connectors.hl7v2.tls.client_ca_file", config.resolve(ca));
        }
    }
    if let Some(tls) = config.relay.as_ref().and_then(|r| r.tls.as_ref()) {
        watch("relay.tls.ca_file", config.resolve(&tls.ca_file));
        if let Some(cert) = &tls.client_cert_file {
            watch("relay.tls.client_cert_file", config.resolve(cert));
        }
    }
    // The EHR's credentials, and a FHIR PMS's that eligibility inquiries go to.
    let servers = [
        config
            .connectors
            .fhir
            .as_ref()
            .map(|f| ("connectors.fhir", &f.auth)),
        config
            .connectors
            .eligibility
            .as_ref()
            .and_then(|e| e.auth.as_ref())
            .map(|a| ("connectors.eligibility", a)),
    ];
    for (table, auth) in servers.into_iter().flatten() {
        match auth {
            fhir::config::Auth::Bearer { token_file } => watched(
                &format!("{table}.auth.token_file"),
                credentials::Source::Token(config.resolve(token_file)),
            ),
            auth => {
                if let Some(Ok(at)) = auth.secret_expiry_ms() {
                    watched(
                        &format!("{table}.auth.client_secret_file"),
                        credentials::Source::Secret(at),
                    );
                }
            }
        }
    }
    let spawn = credentials::WatchSpawn {
        files,
        warning_days: config.access.credential_warning_days,
        journal: journal.clone(),
    };
    (credentials::NAME.into(), Box::new(spawn))
}

#[cfg(test)]
mod tests {
    use super::{fhir, hl7v2};

    #[test]
    fn every_suspendable_integration_is_a_connector_by_its_supervisor_name() {
        let names = [hl7v2::NAME, hl7v2::sender::NAME, fhir::NAME];
        assert_eq!(crate::suspension::INTEGRATIONS, names);
    }
}
