//! `[devices]`: a table or table array per device family, each validated by its family's own
//! `config.rs`.

use super::bacnet::config::{self as bacnet, BacnetDevice};
use super::modbus::config::{self as modbus, ModbusDevice};
use super::occupancy::config::OccupancyConfig;
use super::printer::config::{self as printer, PrinterConfig};
use crate::settings::{self, Problem};
use serde::Deserialize;
use std::path::Path;

/// Every `[[devices.<kind>]]` table of the configuration.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DevicesConfig {
    /// Room occupancy sensors on a local MQTT broker (`[devices.occupancy]`).
    #[serde(default)]
    pub occupancy: Option<OccupancyConfig>,
    /// Modbus TCP and RTU sensors, one `[[devices.modbus]]` table each.
    #[serde(default)]
    pub modbus: Vec<ModbusDevice>,
    /// ESC/POS kiosk ticket printers on serial ports, one `[[devices.printer]]` table each.
    #[serde(default)]
    pub printer: Vec<PrinterConfig>,
    /// BACnet/IP devices (HVAC controllers), one `[[devices.bacnet]]` table each.
    #[serde(default)]
    pub bacnet: Vec<BacnetDevice>,
}

impl DevicesConfig {
    /// Every problem of `[devices]`; relative paths are resolved against `base`.
    pub fn validate(&self, base: &Path) -> Vec<Problem> {
        settings::collect(|bad| {
            if let Some(o) = &self.occupancy {
                o.validate(base, bad);
            }
            modbus::validate(&self.modbus, bad);
            printer::validate(&self.printer, bad);
            bacnet::validate(&self.bacnet, bad);
        })
    }
}
