//! The `clinic-gateway` command: the daemon and its operator tools.

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use clinic_gateway::access::{self, Role, Scope};
use clinic_gateway::config::{self, Config};
use clinic_gateway::daemon::wiring::schemas;
use clinic_gateway::journal::chain::Walk;
use clinic_gateway::journal::{
    Extensions, JournalError, OpenOptions, Stats, Store, Tx, Work, now_ms,
};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const DEFAULT_CONFIG: &str = "/etc/clinic-gateway/gateway.toml";

#[derive(Parser)]
#[command(
    name = "clinic-gateway",
    version,
    about = "Clinic edge gateway daemon and tools"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the daemon.
    Run {
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Check a configuration file; prints every problem as file:line: key: message (exit 2).
    CheckConfig { path: PathBuf },
    /// Ask the running daemon how it is.
    Status {
        #[arg(long)]
        json: bool,
        /// A file holding an API key (scope `operations` or `facilities`), needed once logins
        /// are on; read from a file so that the key stays out of the process list.
        #[arg(long)]
        key_file: Option<PathBuf>,
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Dead letters: list or replay.
    Dlq {
        #[command(subcommand)]
        action: DlqCmd,
    },
    /// The journal file.
    Journal {
        #[command(subcommand)]
        action: JournalCmd,
    },
    /// The hash-chained audit log.
    Audit {
        #[command(subcommand)]
        action: AuditCmd,
    },
    /// Staff accounts for the page and API (`[access]`).
    User {
        #[command(subcommand)]
        action: UserCmd,
    },
    /// API keys for systems calling the API (`[access]`).
    Key {
        #[command(subcommand)]
        action: KeyCmd,
    },
    /// SMART Backend Services clients of the FHIR API (`[access]`).
    Client {
        #[command(subcommand)]
        action: ClientCmd,
    },
    /// Integrations suspended for a security problem.
    Integration {
        #[command(subcommand)]
        action: IntegrationCmd,
    },
}

#[derive(Subcommand)]
enum ClientCmd {
    /// Register the client NAME (its `iss`/`sub`) with its public key and the SMART system
    /// scopes it may be granted (audited).
    Add {
        name: String,
        /// A JSON Web Key Set file holding the client's public key(s).
        #[arg(
            long,
            required_unless_present = "public_key",
            conflicts_with = "public_key"
        )]
        jwks: Option<PathBuf>,
        /// A PEM public key file (RSA or EC P-256/P-384).
        #[arg(long)]
        public_key: Option<PathBuf>,
        /// Space-separated SMART system scopes, e.g. "system/Encounter.rs system/Patient.rs".
        #[arg(long, value_parser = parse_smart_scopes)]
        scope: access::smart::Scopes,
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// List the clients, never their keys.
    List {
        #[arg(long)]
        json: bool,
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Revoke a client: its tokens stop working and it gets no more (audited).
    Revoke {
        name: String,
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum IntegrationCmd {
    /// Re-authorize the suspended integration NAME (hl7v2-mllp, hl7v2-sender, fhir): it sends and
    /// receives again, starting with what it kept queued (audited).
    Resume {
        name: String,
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
}

fn parse_smart_scopes(text: &str) -> Result<access::smart::Scopes, String> {
    access::smart::Scopes::parse(text).ok_or_else(|| {
        format!("{text:?} is not a list of SMART system scopes (system/Encounter.rs ...)")
    })
}

#[derive(Subcommand)]
enum KeyCmd {
    /// Add a key for the client NAME; prints the key, which is shown this once (audited).
    Add {
        name: String,
        /// A role (front_desk, clinical, facilities, manager, admin), or route groups separated by
        /// commas: queue, rooms_list, rooms, notices, ehr, operations, metrics, integration, reports,
        /// administration.
        #[arg(long, value_parser = parse_scope)]
        scope: Scope,
        /// Days until the key expires; without it or --expires-at it does not expire.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=3650), conflicts_with = "expires_at")]
        expires_days: Option<u32>,
        /// When the key expires (RFC 3339, e.g. 2027-06-30T23:59:59Z); an instant already
        /// past makes a key that is refused from the start.
        #[arg(long, value_parser = parse_instant)]
        expires_at: Option<i64>,
        /// Bind the key to the client certificate in this PEM file: a request over HTTPS
        /// presenting it (`[web.tls] client_ca_file`) is the key's client without any header,
        /// and the key's text is refused without it. The key expires with the certificate at
        /// the latest.
        #[arg(long)]
        certificate: Option<PathBuf>,
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// List the keys, never their secrets.
    List {
        #[arg(long)]
        json: bool,
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Revoke a key: it is refused from now on (audited).
    Revoke {
        name: String,
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
}

fn parse_scope(text: &str) -> Result<Scope, String> {
    Scope::parse(text)
        .ok_or_else(|| format!("{text:?} is neither a role nor a list of route groups"))
}

/// An RFC 3339 instant as ms since the epoch.
fn parse_instant(text: &str) -> Result<i64, String> {
    text.parse::<jiff::Timestamp>()
        .map(|t| t.as_millisecond())
        .map_err(|e| format!("{text:?} is not an RFC 3339 instant: {e}"))
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Walk the chain from the first record; names the first broken one (exit 1).
    Verify {
        /// A head published earlier (`LAST_ID:HASH`, from an `audit.head` event) that the log
        /// must still hold unchanged: catches a truncated tail.
        #[arg(long, value_parser = parse_head)]
        head: Option<(i64, String)>,
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Records oldest first, one JSON object a line, with their hashes.
    Export {
        /// Only records with an id above this one (the last id of an earlier export).
        #[arg(long, default_value_t = 0)]
        since: i64,
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum UserCmd {
    /// Add an account; prints its one-time password and TOTP enrolment URI (audited).
    Add {
        name: String,
        /// front_desk, clinical, facilities or admin.
        #[arg(long, value_parser = parse_role)]
        role: Role,
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// List the accounts.
    List {
        #[arg(long)]
        json: bool,
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Disable an account and end its sessions (audited).
    Disable {
        name: String,
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
}

fn parse_head(text: &str) -> Result<(i64, String), String> {
    let (id, hash) = text.split_once(':').ok_or("expected LAST_ID:HASH")?;
    let id = id
        .parse()
        .map_err(|_| format!("{id:?} is not a record id"))?;
    Ok((id, hash.to_ascii_lowercase()))
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s).ok_or_else(|| "one of front_desk, clinical, facilities, admin".to_string())
}

#[derive(Subcommand)]
enum DlqCmd {
    /// List dead letters, newest first.
    List {
        #[arg(long)]
        destination: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[arg(long)]
        json: bool,
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Put dead letters back in line (audited).
    Replay {
        #[arg(long)]
        destination: String,
        /// One dead letter, by row id.
        #[arg(long, conflicts_with = "all", required_unless_present = "all")]
        id: Option<i64>,
        /// Every dead letter of the destination.
        #[arg(long)]
        all: bool,
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum JournalCmd {
    /// Sizes and backlog per destination.
    Stats {
        #[arg(long)]
        json: bool,
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Committed inbound items, oldest first, one JSON object a line (payloads may hold
    /// patient data: for support on the box only).
    Items {
        #[arg(long)]
        kind: Option<String>,
        #[arg(long)]
        source_id: Option<String>,
        #[arg(long, default_value_t = 1000)]
        limit: usize,
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
}

/// Exit status for an invalid configuration.
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("clinic-gateway: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // Under systemd the journal timestamps every line already.
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.without_time().init();
    } else {
        builder.init();
    }
}

fn load(path: &Path) -> Result<Config, ExitCode> {
    config::load(path).map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(EXIT_CONFIG)
    })
}

fn dispatch(cmd: Cmd) -> anyhow::Result<ExitCode> {
    match cmd {
        Cmd::User { action } => user(action),
        Cmd::Key { action } => key(action),
        Cmd::Client { action } => client(action),
        Cmd::Integration { action } => integration(action),
        Cmd::Run { config } => {
            if let Err(code) = load(&config) {
                return Ok(code);
            }
            clinic_gateway::daemon::run(&config)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::CheckConfig { path } => Ok(match load(&path) {
            Ok(_) => {
                println!("{}: ok", path.display());
                ExitCode::SUCCESS
            }
            Err(code) => code,
        }),
        Cmd::Status {
            json,
            key_file,
            config,
        } => {
            let c = match load(&config) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            let key = match key_file {
                Some(p) => Some(
                    std::fs::read_to_string(&p)
                        .with_context(|| format!("cannot read the key file {}", p.display()))?
                        .trim()
                        .to_string(),
                ),
                None => None,
            };
            status(&c, json, key.as_deref())
        }
        Cmd::Dlq {
            action:
                DlqCmd::List {
                    destination,
                    limit,
                    json,
                    config,
                },
        } => {
            let Some(mut store) = open(&config)? else {
                return Ok(ExitCode::from(EXIT_CONFIG));
            };
            let rows = store.with_batch(|b| b.dead_letters(destination.as_deref(), limit))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else if rows.is_empty() {
                println!("no dead letters");
            } else {
                println!(
                    "{:>8}  {:<14} {:<28} {:>8}  last error",
                    "row", "destination", "kind", "attempts"
                );
                for r in rows {
                    println!(
                        "{:>8}  {:<14} {:<28} {:>8}  {}",
                        r.id, r.destination, r.kind, r.attempts, r.last_error
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Dlq {
            action:
                DlqCmd::Replay {
                    destination,
                    id,
                    all,
                    config,
                },
        } => {
            let Some(mut store) = open(&config)? else {
                return Ok(ExitCode::from(EXIT_CONFIG));
            };
            let who = operator();
            let id = if all { None } else { id };
            let n = store.with_batch(|b| b.replay(&destination, id, &who, now_ms()))?;
            println!("replayed {n} dead letter(s) of {destination}");
            if n == 0 && id.is_some() {
                bail!("no dead letter with that row id for {destination}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Journal {
            action: JournalCmd::Stats { json, config },
        } => {
            let c = match load(&config) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            let mut store = Store::open(&c.journal_path(), &options(&c)?, &schemas())?;
            let stats = store.with_batch(|b| b.stats(c.journal.max_bytes, &Default::default()))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&stats)?);
            } else {
                print_stats(&c.journal_path(), &stats);
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Journal {
            action:
                JournalCmd::Items {
                    kind,
                    source_id,
                    limit,
                    config,
                },
        } => {
            let Some(mut store) = open(&config)? else {
                return Ok(ExitCode::from(EXIT_CONFIG));
            };
            let items =
                store.with_batch(|b| b.items(kind.as_deref(), source_id.as_deref(), limit))?;
            for i in items {
                let payload = serde_json::from_slice::<serde_json::Value>(&i.payload)
                    .unwrap_or_else(|_| String::from_utf8_lossy(&i.payload).into());
                let line = serde_json::json!({
                    "id": i.id,
                    "event_id": i.event_id,
                    "source": i.source,
                    "source_id": i.source_id,
                    "kind": i.kind,
                    "key": i.key,
                    "received_at": i.received_at,
                    "payload": payload,
                });
                println!("{line}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Audit {
            action: AuditCmd::Verify { head, config },
        } => {
            let Some(mut store) = open(&config)? else {
                return Ok(ExitCode::from(EXIT_CONFIG));
            };
            // One read transaction: records appended by the running daemon meanwhile are simply
            // not part of this walk.
            let outcome = store.with_batch(|b| {
                let mut walk = Walk::new(head);
                let mut after = 0;
                loop {
                    let rows = b.audit_rows(after, AUDIT_PAGE)?;
                    let Some(last) = rows.last() else { break };
                    after = last.id;
                    for row in &rows {
                        if let Err(broken) = walk.step(row) {
                            return Ok(Err(broken));
                        }
                    }
                }
                Ok(walk.finish())
            })?;
            Ok(match outcome {
                Ok(head) => {
                    println!(
                        "audit chain intact: {} records, head {} {}",
                        head.count, head.last_id, head.hash
                    );
                    ExitCode::SUCCESS
                }
                Err(broken) => {
                    eprintln!("{broken}");
                    ExitCode::FAILURE
                }
            })
        }
        Cmd::Audit {
            action: AuditCmd::Export { since, config },
        } => {
            let Some(mut store) = open(&config)? else {
                return Ok(ExitCode::from(EXIT_CONFIG));
            };
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let mut after = since;
            loop {
                // A page per transaction: the log only grows, so pages never overlap or skip.
                let rows = store.with_batch(|b| b.audit_rows(after, AUDIT_PAGE))?;
                let Some(last) = rows.last() else { break };
                after = last.id;
                for row in &rows {
                    writeln!(out, "{}", serde_json::to_string(row)?)?;
                }
            }
            out.flush()?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Audit records read per query: bounds the CLI's memory on a long log.
const AUDIT_PAGE: usize = 10_000;

/// Who runs the command, for the audit.
fn operator() -> String {
    let who = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "unknown".into());
    format!("cli:{who}")
}

/// Runs `f` on the journal file in one transaction, as a domain's work runs in the daemon.
fn in_tx<T>(
    store: &mut Store,
    f: impl FnOnce(&mut Tx<'_>) -> Result<T, JournalError>,
) -> anyhow::Result<T> {
    let extensions = Extensions::default();
    Ok(store.with_batch(|b| f(&mut b.work(&extensions)))?)
}

fn user(action: UserCmd) -> anyhow::Result<ExitCode> {
    let config = match &action {
        UserCmd::Add { config, .. }
        | UserCmd::List { config, .. }
        | UserCmd::Disable { config, .. } => config,
    };
    let Some(mut store) = open(config)? else {
        return Ok(ExitCode::from(EXIT_CONFIG));
    };
    match action {
        UserCmd::Add { name, role, .. } => {
            let account = access::new_account(&name, role, &operator())?;
            in_tx(&mut store, |tx| account.request.apply(tx, now_ms()))?;
            println!("added {name} ({})", role.as_str());
            println!("one-time password: {}", account.password);
            println!(
                "TOTP enrolment URI (add it to an authenticator app): {}",
                account.enrolment_uri
            );
            if let Some(qr) = access::totp::qr_text(&account.enrolment_uri) {
                println!("or scan it:\n{qr}");
            }
        }
        UserCmd::List { json, .. } => {
            let users = in_tx(&mut store, |tx| access::ListUsers.run(tx))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&users)?);
            } else if users.is_empty() {
                println!("no users");
            } else {
                for u in users {
                    let state = match (u.enabled, u.locked_until) {
                        (false, _) => "disabled",
                        (true, Some(t)) if t > now_ms() => "locked",
                        _ => "enabled",
                    };
                    println!("{:<24} {:<11} {state}", u.name, u.role.as_str());
                }
            }
        }
        UserCmd::Disable { name, .. } => {
            let disable = access::DisableUser {
                name: name.clone(),
                by: operator(),
            };
            in_tx(&mut store, |tx| disable.apply(tx, now_ms()))?;
            println!("disabled {name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn integration(action: IntegrationCmd) -> anyhow::Result<ExitCode> {
    let IntegrationCmd::Resume { name, config } = action;
    let Some(mut store) = open(&config)? else {
        return Ok(ExitCode::from(EXIT_CONFIG));
    };
    let resume = clinic_gateway::suspension::Resume {
        name: name.clone(),
        by: operator(),
    };
    in_tx(&mut store, |tx| resume.apply(tx, now_ms()))?;
    println!("resumed integration {name}");
    Ok(ExitCode::SUCCESS)
}

fn key(action: KeyCmd) -> anyhow::Result<ExitCode> {
    let config = match &action {
        KeyCmd::Add { config, .. }
        | KeyCmd::List { config, .. }
        | KeyCmd::Revoke { config, .. } => config,
    };
    let Some(mut store) = open(config)? else {
        return Ok(ExitCode::from(EXIT_CONFIG));
    };
    match action {
        KeyCmd::Add {
            name,
            scope,
            expires_days,
            expires_at,
            certificate,
            ..
        } => {
            let now = now_ms();
            let expires_at =
                expires_at.or_else(|| expires_days.map(|d| now + i64::from(d) * 86_400_000));
            let binding = certificate
                .as_deref()
                .map(access::mtls::binding)
                .transpose()?;
            let key = access::new_key(&name, scope, expires_at, binding, &operator())?;
            in_tx(&mut store, |tx| key.request.apply(tx, now))?;
            println!("added key {name} ({})", key.request.key.scope);
            if let Some(c) = &key.request.key.certificate {
                println!("bound to the client certificate {c}");
                if let Some(t) = key.request.key.expires_at {
                    println!("expires {}", instant(t));
                }
            }
            println!("key (shown once; give it to the client): {}", key.text);
        }
        KeyCmd::List { json, .. } => {
            let keys = in_tx(&mut store, |tx| access::ListKeys.run(tx))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&keys)?);
            } else if keys.is_empty() {
                println!("no keys");
            } else {
                let now = now_ms();
                for k in keys {
                    let state = match (k.revoked_at, k.expires_at) {
                        (Some(_), _) => "revoked".to_string(),
                        (None, Some(t)) if t <= now => "expired".into(),
                        (None, Some(t)) => format!("expires {}", instant(t)),
                        (None, None) => "valid".into(),
                    };
                    let bound = k
                        .certificate
                        .as_deref()
                        .map(|c| format!(" certificate {}", access::mtls::prefix(c)))
                        .unwrap_or_default();
                    println!("{:<24} {:<16} {:<32} {state}{bound}", k.name, k.id, k.scope);
                }
            }
        }
        KeyCmd::Revoke { name, .. } => {
            let revoke = access::RevokeKey {
                name: name.clone(),
                by: operator(),
            };
            in_tx(&mut store, |tx| revoke.apply(tx, now_ms()))?;
            println!("revoked key {name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn client(action: ClientCmd) -> anyhow::Result<ExitCode> {
    let config = match &action {
        ClientCmd::Add { config, .. }
        | ClientCmd::List { config, .. }
        | ClientCmd::Revoke { config, .. } => config,
    };
    let Some(mut store) = open(config)? else {
        return Ok(ExitCode::from(EXIT_CONFIG));
    };
    match action {
        ClientCmd::Add {
            name,
            jwks,
            public_key,
            scope,
            ..
        } => {
            let read = |p: &Path| {
                std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))
            };
            let key = match (jwks, public_key) {
                (Some(p), _) => access::oauth::ClientKey::Jwks(read(&p)?),
                (None, Some(p)) => access::oauth::ClientKey::Pem(read(&p)?),
                (None, None) => bail!("give --jwks or --public-key"),
            };
            let add = access::new_client(&name, key, scope, &operator())?;
            in_tx(&mut store, |tx| add.apply(tx, now_ms()))?;
            println!("added client {name} ({})", add.client.scopes);
        }
        ClientCmd::List { json, .. } => {
            let clients = in_tx(&mut store, |tx| access::ListClients.run(tx))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&clients)?);
            } else if clients.is_empty() {
                println!("no clients");
            } else {
                for c in clients {
                    let state = if c.revoked_at.is_some() {
                        "revoked"
                    } else {
                        "valid"
                    };
                    println!("{:<24} {:<5} {:<48} {state}", c.name, c.key_kind, c.scope);
                }
            }
        }
        ClientCmd::Revoke { name, .. } => {
            let revoke = access::RevokeClient {
                name: name.clone(),
                by: operator(),
            };
            in_tx(&mut store, |tx| revoke.apply(tx, now_ms()))?;
            println!("revoked client {name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn instant(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map_or_else(|_| ms.to_string(), |t| t.to_string())
}

fn options(c: &Config) -> anyhow::Result<OpenOptions> {
    let key = match &c.journal.key_file {
        Some(p) => Some(
            std::fs::read_to_string(c.resolve(p))?
                .trim_end()
                .to_string(),
        ),
        None => None,
    };
    Ok(OpenOptions {
        key,
        verify: false,
        create: false,
    })
}

fn open(config: &Path) -> anyhow::Result<Option<Store>> {
    let Ok(c) = load(config) else { return Ok(None) };
    Ok(Some(Store::open(
        &c.journal_path(),
        &options(&c)?,
        &schemas(),
    )?))
}

fn print_stats(path: &Path, s: &Stats) {
    println!("journal {}", path.display());
    println!("  schema version {}", s.schema_version);
    println!(
        "  {} MiB used of {} MiB allowed (file {} MiB)",
        s.used_bytes >> 20,
        s.max_bytes >> 20,
        s.file_bytes >> 20
    );
    println!("  {} inbound items kept", s.inbound_items);
    for (dest, d) in &s.destinations {
        println!(
            "  {dest}: {} pending, {} in flight, {} dead",
            d.pending, d.in_flight, d.dead
        );
    }
}

fn status(c: &Config, json: bool, key: Option<&str>) -> anyhow::Result<ExitCode> {
    let (agent, url) = status_client(c, json)?;
    let mut request = agent.get(&url);
    if let Some(key) = key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    let mut answer = match request.call() {
        Err(ureq::Error::StatusCode(code @ (401 | 403))) => bail!(
            "the daemon refused the request ({code}): with logins on, give --key-file with a \
             valid key of scope operations or facilities"
        ),
        other => other.with_context(|| format!("the daemon does not answer at {url}"))?,
    };
    let body: serde_json::Value = answer
        .body_mut()
        .read_json()
        .context("the daemon's answer is not JSON")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&body)?);
    } else {
        let s = |v: &serde_json::Value| v.as_str().unwrap_or("").to_string();
        println!(
            "{} ({}), version {}, up {} s",
            s(&body["status"]),
            s(&body["facility"]),
            s(&body["version"]),
            body["uptime_s"]
        );
        for a in body["actors"].as_array().into_iter().flatten() {
            println!(
                "  {:<16} {:<10} restarts {:<3} {}",
                s(&a["name"]),
                s(&a["state"]),
                a["restarts"],
                s(&a["last_error"])
            );
        }
        if let Ok(stats) = serde_json::from_value::<Stats>(body["journal"].clone()) {
            print_stats(Path::new("(daemon)"), &stats);
        }
    }
    Ok(if body["status"] == "ok" {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

/// The client and URL that reach the daemon's status. With HTTPS, the certificate served is read
/// from its file first and its fingerprint printed (unless `json`), so staff can compare it
/// with their browser's even when the daemon does not answer; the client then trusts exactly
/// that certificate.
fn status_client(c: &Config, json: bool) -> anyhow::Result<(ureq::Agent, String)> {
    use clinic_gateway::web::tls;
    use ureq::tls::{Certificate, RootCerts, TlsConfig, TlsProvider};
    let bind = c.web.bind;
    // A wildcard bind is reached on this box through loopback.
    let ip = match bind.ip() {
        std::net::IpAddr::V4(v4) if v4.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(v6) if v6.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    let address = std::net::SocketAddr::new(ip, bind.port());
    let Some(web_tls) = &c.web.tls else {
        return Ok((
            ureq::Agent::new_with_defaults(),
            format!("http://{address}/api/v1/status"),
        ));
    };
    let (cert_path, _) = web_tls.files(c.folder(), &c.data_dir());
    let certs = clinic_gateway::pem::certificates(&cert_path).context("web.tls")?;
    if !json {
        println!(
            "https certificate {} SHA-256 {}",
            cert_path.display(),
            tls::fingerprint(&certs[0])
        );
    }
    let roots: Vec<Certificate<'static>> = certs
        .iter()
        .map(|der| Certificate::from_der(der.as_ref()).to_owned())
        .collect();
    let config = ureq::Agent::config_builder()
        .tls_config(
            TlsConfig::builder()
                .provider(TlsProvider::Rustls)
                .root_certs(RootCerts::new_with_certs(&roots))
                .unversioned_rustls_crypto_provider(std::sync::Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .build(),
        )
        .build();
    Ok((
        ureq::Agent::new_with_config(config),
        format!("https://{address}/api/v1/status"),
    ))
}
