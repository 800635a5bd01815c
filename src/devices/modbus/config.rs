//! `[[devices.modbus]]`: one Modbus TCP or RTU device per table, with its register map.
//!
//! Parsed by serde and checked once by [`validate`]; the actor only ever sees a device that
//! passed it.

use super::protocol::{DataType, Decoding, Order};
use crate::settings::check_name;
use serde::Deserialize;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

/// One Modbus device: where it is, how often to poll it, and what to read.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModbusDevice {
    /// Unique device name: the supervisor names the actor `modbus:<name>` and every event
    /// carries it. Letters, digits, `-` and `_`.
    pub name: String,
    /// Modbus TCP: host name or address of the device (or of its TCP gateway).
    #[serde(default)]
    pub host: Option<String>,
    /// Modbus TCP port (with `host`).
    #[serde(default = "default_port")]
    pub port: u16,
    /// Modbus RTU: the serial port (e.g. `/dev/ttyUSB0`). Exactly one of `host` and `serial`.
    #[serde(default)]
    pub serial: Option<PathBuf>,
    /// RTU baud rate.
    #[serde(default = "default_baud")]
    pub baud: u32,
    /// RTU parity: `none`, `even` or `odd`.
    #[serde(default)]
    pub parity: Parity,
    /// RTU data bits, 5 to 8 (Modbus RTU itself uses 8).
    #[serde(default = "default_data_bits")]
    pub data_bits: u8,
    /// RTU stop bits, 1 or 2.
    #[serde(default = "default_stop_bits")]
    pub stop_bits: u8,
    /// Unit (slave) id the requests are addressed to: 1 to 247 on a serial line; on TCP also
    /// 0 or 255, which many TCP-only devices expect.
    #[serde(default = "default_unit_id")]
    pub unit_id: u8,
    /// Time between the starts of two polls, at least 100.
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// How long one request may wait for its answer before the link is considered lost (and
    /// reopened); also bounds opening a TCP connection.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// First delay before reconnecting after a lost link; doubles up to `reconnect_max_ms`.
    #[serde(default = "default_reconnect_initial_ms")]
    pub reconnect_initial_ms: u64,
    /// Cap of the reconnect delay.
    #[serde(default = "default_reconnect_max_ms")]
    pub reconnect_max_ms: u64,
    /// A poll whose values equal the last event's is journaled only when this many seconds
    /// passed since that event; 0 journals every poll.
    #[serde(default = "default_heartbeat_s")]
    pub heartbeat_s: u64,
    /// What to read, one entry per value.
    pub registers: Vec<Register>,
}

/// One value read from the device.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Register {
    /// Name of the reading in events and `GetReadings` (e.g. `co2`); unique per device.
    pub name: String,
    /// Which table: `holding`, `input`, `coil` or `discrete_input`.
    pub function: Function,
    /// 0-based protocol address (what goes on the wire, not the 40001-style number).
    pub address: u32,
    /// Registers (or bits) read; must match `type` (1 for 16-bit and bool, 2 for 32-bit).
    /// Default: what `type` needs.
    #[serde(default)]
    pub count: Option<u16>,
    /// `u16`, `i16`, `u32`, `i32`, `f32` or `bool`. Default: `bool` for coils and discrete
    /// inputs, `u16` for registers.
    #[serde(default, rename = "type")]
    pub data_type: Option<DataType>,
    /// Order of the two registers of a 32-bit value: `big` (high word first, the Modbus
    /// convention) or `little`.
    #[serde(default)]
    pub word_order: Order,
    /// Order of the two bytes in each register: `big` (the Modbus convention) or `little`.
    #[serde(default)]
    pub byte_order: Order,
    /// Engineering value = raw × scale + offset (e.g. 0.1 for tenths of a degree).
    #[serde(default = "default_scale")]
    pub scale: f64,
    /// Added after scaling.
    #[serde(default)]
    pub offset: f64,
    /// Unit carried in events (e.g. `ppm`, `°C`); empty for none.
    #[serde(default)]
    pub unit: String,
}

/// A Modbus data table, and with it the read function code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Function {
    /// Holding registers, FC 03.
    Holding,
    /// Input registers, FC 04.
    Input,
    /// Coils, FC 01.
    Coil,
    /// Discrete inputs, FC 02.
    DiscreteInput,
}

impl Function {
    pub fn as_str(self) -> &'static str {
        match self {
            Function::Holding => "holding register",
            Function::Input => "input register",
            Function::Coil => "coil",
            Function::DiscreteInput => "discrete input",
        }
    }

    fn is_bit(self) -> bool {
        matches!(self, Function::Coil | Function::DiscreteInput)
    }
}

/// Serial parity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Parity {
    /// No parity bit (8N1 or 8N2).
    #[default]
    None,
    /// Even parity (8E1, the Modbus RTU default in the specification).
    Even,
    /// Odd parity.
    Odd,
}

fn default_port() -> u16 {
    502
}
fn default_baud() -> u32 {
    9600
}
fn default_data_bits() -> u8 {
    8
}
fn default_stop_bits() -> u8 {
    1
}
fn default_unit_id() -> u8 {
    1
}
fn default_poll_interval_ms() -> u64 {
    5_000
}
fn default_timeout_ms() -> u64 {
    1_000
}
fn default_reconnect_initial_ms() -> u64 {
    500
}
fn default_reconnect_max_ms() -> u64 {
    30_000
}
fn default_heartbeat_s() -> u64 {
    300
}
fn default_scale() -> f64 {
    1.0
}

/// Where a validated device is reached.
#[derive(Debug, Clone, PartialEq)]
pub enum Link {
    Tcp { host: String, port: u16 },
    Rtu { path: PathBuf },
}

impl ModbusDevice {
    /// The link; `None` only for a device that `validate` refused.
    pub fn link(&self) -> Option<Link> {
        match (&self.host, &self.serial) {
            (Some(host), None) => Some(Link::Tcp {
                host: host.clone(),
                port: self.port,
            }),
            (None, Some(path)) => Some(Link::Rtu { path: path.clone() }),
            _ => None,
        }
    }

    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// Reconnect delay after `failures` consecutive failed links: doubling, capped.
    pub fn reconnect_delay(&self, failures: u32) -> Duration {
        crate::supervisor::link::backoff(
            Duration::from_millis(self.reconnect_initial_ms),
            Duration::from_millis(self.reconnect_max_ms),
            failures,
        )
    }
}

/// Registers of one table read with one request: their addresses are contiguous (or overlap)
/// and the span fits the protocol's limit for one read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub function: Function,
    pub start: u16,
    pub count: u16,
    /// Indexes into the device's `registers`, with where each starts in the block.
    pub members: Vec<(usize, u16)>,
}

/// Most registers (FC 03/04) and bits (FC 01/02) one read may ask for (Modbus application
/// protocol 1.1b3, §6.1–6.4).
const MAX_READ_REGISTERS: u32 = 125;
const MAX_READ_BITS: u32 = 2000;

/// Groups the registers into as few reads as the map allows. Only adjacent addresses are
/// joined: reading across a gap could touch an address the device does not have and turn a
/// good read into an "illegal data address" for all of them.
pub fn plan_reads(registers: &[Register]) -> Vec<Block> {
    let mut order: Vec<usize> = (0..registers.len()).collect();
    order.sort_by_key(|&i| (registers[i].function.as_str(), registers[i].address));
    let mut blocks: Vec<Block> = Vec::new();
    for i in order {
        let r = &registers[i];
        let Ok(start) = u16::try_from(r.address) else {
            continue;
        };
        let end = r.address + u32::from(r.count());
        let limit = if r.function.is_bit() {
            MAX_READ_BITS
        } else {
            MAX_READ_REGISTERS
        };
        if let Some(b) = blocks.last_mut()
            && b.function == r.function
            && r.address <= u32::from(b.start) + u32::from(b.count)
            && end - u32::from(b.start) <= limit
        {
            let span = (end - u32::from(b.start)) as u16;
            b.count = b.count.max(span);
            b.members.push((i, start - b.start));
            continue;
        }
        blocks.push(Block {
            function: r.function,
            start,
            count: r.count(),
            members: vec![(i, 0)],
        });
    }
    blocks
}

impl Register {
    /// The type, with the default for its table.
    pub fn data_type(&self) -> DataType {
        self.data_type.unwrap_or(if self.function.is_bit() {
            DataType::Bool
        } else {
            DataType::U16
        })
    }

    /// Registers or bits to read.
    pub fn count(&self) -> u16 {
        self.data_type().registers()
    }

    pub fn decoding(&self) -> Decoding {
        Decoding {
            data_type: self.data_type(),
            word_order: self.word_order,
            byte_order: self.byte_order,
            scale: self.scale,
            offset: self.offset,
        }
    }
}

/// Reports every problem of the `[[devices.modbus]]` tables as (key, message).
pub fn validate(devices: &[ModbusDevice], bad: &mut dyn FnMut(&str, String)) {
    let mut names = BTreeSet::new();
    for (i, d) in devices.iter().enumerate() {
        let key = |field: &str| format!("devices.modbus[{i}].{field}");
        check_name(&d.name, &key("name"), &mut names, "Modbus device", bad);
        match (&d.host, &d.serial) {
            (Some(_), Some(_)) => bad(
                &key("serial"),
                "set either host (Modbus TCP) or serial (Modbus RTU), not both".into(),
            ),
            (None, None) => bad(
                &key("host"),
                "set host (Modbus TCP) or serial (Modbus RTU)".into(),
            ),
            (Some(h), None) if h.trim().is_empty() => bad(&key("host"), "must not be empty".into()),
            (None, Some(p)) if p.as_os_str().is_empty() => {
                bad(&key("serial"), "must not be empty".into())
            }
            _ => {}
        }
        if d.host.is_some() && d.port == 0 {
            bad(&key("port"), "must be 1 to 65535".into());
        }
        if d.serial.is_some() {
            if !(50..=4_000_000).contains(&d.baud) {
                bad(&key("baud"), "must be between 50 and 4000000".into());
            }
            if !(5..=8).contains(&d.data_bits) {
                bad(&key("data_bits"), "must be 5, 6, 7 or 8".into());
            }
            if !(1..=2).contains(&d.stop_bits) {
                bad(&key("stop_bits"), "must be 1 or 2".into());
            }
            // 0 is broadcast (no answer comes back) and 248..=255 are reserved on a serial line.
            if !(1..=247).contains(&d.unit_id) {
                bad(&key("unit_id"), "must be 1 to 247 on a serial line".into());
            }
        }
        if d.poll_interval_ms < 100 {
            bad(&key("poll_interval_ms"), "must be at least 100".into());
        }
        if d.timeout_ms == 0 {
            bad(&key("timeout_ms"), "must be at least 1".into());
        }
        if d.reconnect_initial_ms == 0 || d.reconnect_initial_ms > d.reconnect_max_ms {
            bad(
                &key("reconnect_initial_ms"),
                "must be above 0 and at most reconnect_max_ms".into(),
            );
        }
        if d.registers.is_empty() {
            bad(&key("registers"), "needs at least one register".into());
        }
        let mut register_names = BTreeSet::new();
        for (j, r) in d.registers.iter().enumerate() {
            let key = |field: &str| format!("devices.modbus[{i}].registers[{j}].{field}");
            validate_register(r, &key, &mut register_names, bad);
        }
    }
}

fn validate_register<'a>(
    r: &'a Register,
    key: &dyn Fn(&str) -> String,
    names: &mut BTreeSet<&'a str>,
    bad: &mut dyn FnMut(&str, String),
) {
    check_name(&r.name, &key("name"), names, "register of this device", bad);
    let data_type = r.data_type();
    let count = data_type.registers();
    if r.function.is_bit() && data_type != DataType::Bool {
        bad(
            &key("type"),
            format!(
                "a {} holds one bit: its type must be bool",
                r.function.as_str()
            ),
        );
    }
    if let Some(c) = r.count
        && c != count
    {
        bad(
            &key("count"),
            format!("{data_type:?} takes {count} register(s), not {c}").to_lowercase(),
        );
    }
    if r.address > 65535 {
        bad(&key("address"), "must be 0 to 65535".into());
    } else if r.address + u32::from(count) > 65536 {
        bad(
            &key("address"),
            format!("{count} registers from {} run past 65535", r.address),
        );
    }
    if count == 1 && r.word_order != Order::Big {
        bad(
            &key("word_order"),
            "only 32-bit types have a word order".into(),
        );
    }
    if r.function.is_bit() && r.byte_order != Order::Big {
        bad(&key("byte_order"), "a bit has no byte order".into());
    }
    if data_type == DataType::Bool && (r.scale != 1.0 || r.offset != 0.0) {
        bad(
            &key("scale"),
            "scale and offset do not apply to bool".into(),
        );
    }
    if !r.scale.is_finite() || r.scale == 0.0 || !r.offset.is_finite() {
        bad(
            &key("scale"),
            "scale must be a finite non-zero number and offset finite".into(),
        );
    }
}

#[cfg(test)]
mod plan_tests {
    use super::*;

    fn reg(function: &str, address: u32, data_type: &str) -> Register {
        let text = format!(
            "name = \"r{address}\"\nfunction = \"{function}\"\naddress = {address}\ntype = \"{data_type}\"\n"
        );
        toml::from_str(&text).expect("register")
    }

    #[test]
    fn adjacent_registers_of_a_table_are_read_together_and_gaps_split() {
        let regs = [
            reg("input", 2, "f32"),
            reg("input", 0, "u16"),
            reg("input", 1, "i16"),
            reg("input", 5, "u16"),
            reg("holding", 0, "u16"),
            reg("coil", 0, "bool"),
            reg("coil", 1, "bool"),
        ];
        let block = |function, start, count, members: &[(usize, u16)]| Block {
            function,
            start,
            count,
            members: members.to_vec(),
        };
        assert_eq!(
            plan_reads(&regs),
            [
                block(Function::Coil, 0, 2, &[(5, 0), (6, 1)]),
                block(Function::Holding, 0, 1, &[(4, 0)]),
                block(Function::Input, 0, 4, &[(1, 0), (2, 1), (0, 2)]),
                block(Function::Input, 5, 1, &[(3, 0)]),
            ]
        );
    }

    #[test]
    fn a_block_never_exceeds_125_registers() {
        let regs: Vec<Register> = (0..130).map(|a| reg("holding", a, "u16")).collect();
        let plan = plan_reads(&regs);
        assert_eq!(plan.len(), 2);
        assert_eq!((plan[0].start, plan[0].count), (0, 125));
        assert_eq!((plan[1].start, plan[1].count), (125, 5));
    }
}

#[cfg(test)]
mod tests {
    use super::ModbusDevice;
    use crate::settings;

    /// The `[[devices.modbus]]` tables of `devices`, checked; their problems as `key: message`.
    fn check(devices: &str) -> Vec<String> {
        match settings::section::<Vec<ModbusDevice>>(devices, "devices.modbus") {
            Ok(d) => settings::keyed(settings::collect(|bad| super::validate(&d, bad))),
            Err(e) => vec![e],
        }
    }

    fn read(devices: &str) -> Vec<ModbusDevice> {
        settings::section(devices, "devices.modbus").expect("valid")
    }

    const TCP: &str = "[[devices.modbus]]\nname = \"env\"\nhost = \"127.0.0.1\"\n";

    #[test]
    fn a_valid_device_gets_defaults() {
        let devices = read(&format!(
            "{TCP}[[devices.modbus.registers]]\nname = \"co2\"\nfunction = \"input\"\naddress = 0\nunit = \"ppm\"\n"
        ));
        let d = &devices[0];
        assert_eq!(d.port, 502);
        assert_eq!(d.unit_id, 1);
        assert_eq!(d.registers[0].data_type(), super::DataType::U16);
        assert_eq!(d.registers[0].count(), 1);
    }

    #[test]
    fn every_register_problem_is_named_by_its_key() {
        let problems = check(&format!(
            "{TCP}poll_interval_ms = 50\n\
             [[devices.modbus.registers]]\nname = \"a\"\nfunction = \"holding\"\naddress = 65535\ntype = \"f32\"\n\
             [[devices.modbus.registers]]\nname = \"a\"\nfunction = \"coil\"\naddress = 70000\ntype = \"u16\"\n\
             [[devices.modbus.registers]]\nname = \"b\"\nfunction = \"input\"\naddress = 1\ntype = \"i32\"\ncount = 1\n\
             [[devices.modbus.registers]]\nname = \"c\"\nfunction = \"input\"\naddress = 1\nword_order = \"little\"\n"
        ));
        let expected = [
            "devices.modbus[0].poll_interval_ms: must be at least 100",
            "devices.modbus[0].registers[0].address: 2 registers from 65535 run past 65535",
            "devices.modbus[0].registers[1].name: another register of this device is already named \"a\"",
            "devices.modbus[0].registers[1].type: a coil holds one bit: its type must be bool",
            "devices.modbus[0].registers[1].address: must be 0 to 65535",
            "devices.modbus[0].registers[2].count: i32 takes 2 register(s), not 1",
            "devices.modbus[0].registers[3].word_order: only 32-bit types have a word order",
        ];
        assert_eq!(problems, expected);
    }

    #[test]
    fn link_and_serial_problems_are_refused() {
        let reg = "[[devices.modbus.registers]]\nname = \"a\"\nfunction = \"input\"\naddress = 0\n";
        let problems = check(&format!(
            "[[devices.modbus]]\nname = \"x\"\n{reg}\
             [[devices.modbus]]\nname = \"x\"\nhost = \"h\"\nserial = \"/dev/ttyS0\"\n{reg}\
             [[devices.modbus]]\nname = \"y\"\nserial = \"/dev/ttyS0\"\nbaud = 10\nstop_bits = 3\ndata_bits = 9\nunit_id = 0\n{reg}"
        ));
        let expected = [
            "devices.modbus[0].host: set host (Modbus TCP) or serial (Modbus RTU)",
            "devices.modbus[1].name: another Modbus device is already named \"x\"",
            "devices.modbus[1].serial: set either host (Modbus TCP) or serial (Modbus RTU), not both",
            "devices.modbus[2].baud: must be between 50 and 4000000",
            "devices.modbus[2].data_bits: must be 5, 6, 7 or 8",
            "devices.modbus[2].stop_bits: must be 1 or 2",
            "devices.modbus[2].unit_id: must be 1 to 247 on a serial line",
        ];
        assert_eq!(problems, expected);
        let unknown = check(&format!("{TCP}parity = \"mark\"\n{reg}"));
        assert!(unknown[0].contains("unknown variant `mark`"), "{unknown:?}");
    }
}
