//! Test peers on loopback: a real Mosquitto broker (NATS in `nats.rs`), a `mosquitto_sub` consumer, socat pty
//! pairs, the Python peer scripts of `tests/peers` (started here, waited on until ready, in the
//! submodules), and the gateway binary itself. Each is killed when dropped. A peer that cannot
//! start fails the test.
#![allow(dead_code)]

pub mod bacnet_sim;
pub mod fhir_server;
pub mod hl7_peer;
pub mod https;
pub mod modbus_sim;
pub mod nats;
pub mod oidc_provider;
pub mod printer;
pub mod rabbit;
pub mod sipp;
pub mod smsc;
pub mod smtp;
pub mod spine;
pub mod stripe;
pub mod voice;
pub mod x12;

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// A loopback port nobody listens on, never the same twice in one test process: tests run in
/// parallel, and two of them given the same port would talk to each other's peers.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// Polls `f` until it returns `Some`, or panics with `what` after `limit`.
pub fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `socat` joining two ptys, the way a serial cable joins a device and the gateway; killed on
/// drop.
pub struct PtyPair {
    child: Child,
    /// The end the simulated device opens.
    pub device: PathBuf,
    /// The end the gateway opens, for its serial port setting.
    pub gateway: PathBuf,
}

impl PtyPair {
    /// Starts socat with the two ends linked in `dir` under `name` (one pair per name in a
    /// directory), and waits until both links exist.
    pub fn start(dir: &Path, name: &str) -> PtyPair {
        let (device, gateway) = (
            dir.join(format!("{name}-device-tty")),
            dir.join(format!("{name}-gateway-tty")),
        );
        let child = Command::new("socat")
            .arg(format!("pty,raw,echo=0,link={}", device.display()))
            .arg(format!("pty,raw,echo=0,link={}", gateway.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("socat must be installed (scripts/test-deps.sh)");
        wait_for("socat's pty links", Duration::from_secs(10), || {
            (device.exists() && gateway.exists()).then_some(())
        });
        PtyPair {
            child,
            device,
            gateway,
        }
    }
}

impl Drop for PtyPair {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `python3` command running the repository's peer script `tests/peers/{script}`.
pub fn peer_script(script: &str) -> Command {
    let mut cmd = Command::new("python3");
    cmd.arg(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/peers")
            .join(script),
    );
    cmd
}

/// Starts `peer` and waits for a line on its stderr starting with `ready`; returns the child and
/// the lines it writes after that one. Its stderr is drained for its whole life so that a
/// chatty peer never blocks on a full pipe. A peer not ready within 60 s (Node peers take
/// seconds to start on a loaded 2-core machine) is killed and started once more, what it
/// printed going to the test's output: the OpenID provider (oidc-provider 9 on Node 20) was
/// seen, once in several runs of the suite, to stop inside its constructor for good. A peer
/// that exits, or stalls twice, fails the test with what it printed.
pub fn start_until_ready(
    peer: &mut Command,
    what: &str,
    ready: &str,
) -> (Child, mpsc::Receiver<String>) {
    match attempt(peer, what, ready) {
        Ok(started) => started,
        Err(Failed::Stalled(printed)) => {
            eprintln!("{what} stalled; starting it once more. Its output:\n{printed}");
            attempt(peer, what, ready).unwrap_or_else(|failed| failed.fail(what))
        }
        Err(failed) => failed.fail(what),
    }
}

/// Why a peer did not become ready, with what it printed.
enum Failed {
    Stalled(String),
    Exited(String),
}

impl Failed {
    fn fail(self, what: &str) -> ! {
        let (why, printed) = match self {
            Failed::Stalled(printed) => ("nothing said it was ready within 60 s", printed),
            Failed::Exited(printed) => ("its output ended", printed),
        };
        panic!(
            "{what} did not become ready: {why} (scripts/test-deps.sh installs the test peers); its output:\n{printed}"
        );
    }
}

fn attempt(
    peer: &mut Command,
    what: &str,
    ready: &str,
) -> Result<(Child, mpsc::Receiver<String>), Failed> {
    let mut child = peer
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what} did not start (scripts/test-deps.sh): {e}"));
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // Each line seen is kept with when it came, so that a peer that stalls shows where.
    let mut seen = Vec::new();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(60);
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) if line.starts_with(ready) => return Ok((child, rx)),
            Ok(line) => seen.push(format!("{:>6} ms  {line}", started.elapsed().as_millis())),
            Err(e) => {
                // Killed and reaped: a peer that had exited keeps its own status, one still
                // running shows the kill.
                let _ = child.kill();
                let status = child
                    .wait()
                    .map_or_else(|e| format!("unknown: {e}"), |s| s.to_string());
                seen.push(format!("({status})"));
                let printed = seen.join("\n");
                return Err(match e {
                    mpsc::RecvTimeoutError::Timeout => Failed::Stalled(printed),
                    mpsc::RecvTimeoutError::Disconnected => Failed::Exited(printed),
                });
            }
        }
    }
}

/// The items the gateway's journal holds (events it sent or will send), oldest first, as the
/// `journal items` command prints them, while the gateway runs.
pub fn journal_items(gw: &Gateway, filter: &[&str]) -> Vec<serde_json::Value> {
    let out = std::process::Command::new(bin())
        .args(["journal", "items", "--config"])
        .arg(&gw.config)
        .args(filter)
        .output()
        .expect("run journal items");
    assert!(
        out.status.success(),
        "journal items: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("an item as JSON"))
        .collect()
}

/// The payloads of the items of one kind the gateway's journal holds, oldest first.
pub fn journal_events(gw: &Gateway, kind: &str) -> Vec<serde_json::Value> {
    journal_items(gw, &["--kind", kind])
        .into_iter()
        .map(|i| i["payload"].clone())
        .collect()
}

/// A gateway audit record: action, actor, detail.
pub type Audited = (String, String, String);

/// The gateway's most recent audit records, newest first.
pub fn audit_log(gw: &Gateway) -> Vec<Audited> {
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    gw.get_json("/api/v1/audit?limit=200")
        .as_array()
        .expect("audit")
        .iter()
        .map(|a| (text(&a["action"]), text(&a["actor"]), text(&a["detail"])))
        .collect()
}

/// The texts of the open notices for staff, newest first.
pub fn notice_texts(gw: &Gateway) -> Vec<String> {
    gw.get_json("/api/v1/notices")
        .as_array()
        .expect("notices")
        .iter()
        .filter_map(|n| n["text"].as_str().map(str::to_string))
        .collect()
}

fn port_open(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// Certificates for a TLS broker and a gateway client, made with openssl.
pub struct Certs {
    pub dir: PathBuf,
}

impl Certs {
    /// The test CA's certificate and key files, which every listener trusts.
    pub const CA: (&str, &str) = ("ca.crt", "ca.key");
    /// Another CA's, which none trusts.
    pub const OTHER_CA: (&str, &str) = ("other-ca.crt", "other.key");

    pub fn generate(dir: &Path) -> Certs {
        let certs = Certs {
            dir: dir.to_path_buf(),
        };
        let run = |args: &str| certs.openssl(args);
        run(
            "openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=test-ca -keyout ca.key -out ca.crt",
        );
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .expect("ext");
        run(
            "openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout server.key -out server.csr",
        );
        run(
            "openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 -extfile server.ext -out server.crt",
        );
        std::fs::write(
            dir.join("client.ext"),
            "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
        )
        .expect("ext");
        run(
            "openssl req -newkey rsa:2048 -nodes -subj /CN=gateway -keyout client.key -out client.csr",
        );
        run(
            "openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 -extfile client.ext -out client.crt",
        );
        run(
            "openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=other-ca -keyout other.key -out other-ca.crt",
        );
        certs
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Another client certificate, CN `name`, `{name}.crt` and `{name}.key`, issued by the CA
    /// whose certificate and key files are `issuer` ([`Certs::CA`] or [`Certs::OTHER_CA`]).
    pub fn client(&self, name: &str, (ca, ca_key): (&str, &str)) {
        self.openssl(&format!(
            "openssl req -newkey rsa:2048 -nodes -subj /CN={name} -keyout {name}.key -out {name}.csr"
        ));
        self.openssl(&format!(
            "openssl x509 -req -in {name}.csr -CA {ca} -CAkey {ca_key} -CAcreateserial -days 30 -extfile client.ext -out {name}.crt"
        ));
    }

    /// Writes `ca.crl`, the test CA's revocation list (v2, with a CRL number, as `openssl ca`
    /// issues it) naming the certificates in the files `revoked` of this folder, and returns
    /// its path. Each call writes a whole new list in its place.
    pub fn crl(&self, revoked: &[&str]) -> PathBuf {
        std::fs::write(
            self.path("crl.cnf"),
            "[ca]\ndefault_ca = test\n[test]\ndatabase = crl-index.txt\ncrlnumber = crl-number\n\
             default_md = sha256\ndefault_crl_days = 30\n",
        )
        .expect("crl.cnf");
        std::fs::write(self.path("crl-index.txt"), "").expect("index");
        if !self.path("crl-number").exists() {
            std::fs::write(self.path("crl-number"), "01\n").expect("crl number");
        }
        for cert in revoked {
            self.openssl(&format!(
                "openssl ca -config crl.cnf -keyfile ca.key -cert ca.crt -revoke {cert}"
            ));
        }
        self.openssl(
            "openssl ca -config crl.cnf -keyfile ca.key -cert ca.crt -gencrl -out ca.crl.new",
        );
        // Replaced in one step, as a CA's publishing script would, so that a listener never
        // reads half a list.
        std::fs::rename(self.path("ca.crl.new"), self.path("ca.crl")).expect("ca.crl");
        self.path("ca.crl")
    }

    fn openssl(&self, args: &str) {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("cd {} && {args}", self.dir.display()))
            .output()
            .expect("openssl must be installed (scripts/test-deps.sh)");
        assert!(
            out.status.success(),
            "openssl failed: {args}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A Mosquitto broker on a loopback port, persisting sessions so that a restart keeps the
/// consumer's subscription and queued messages.
pub struct Broker {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
    tls: Option<(PathBuf, bool)>,
    /// Further lines of its config (an `acl_file`, ...).
    extra: String,
}

impl Broker {
    pub fn start(dir: &Path) -> Broker {
        Self::launch(dir, None)
    }

    /// A TLS-only broker; with `require_client_cert`, mutual TLS.
    pub fn start_tls(dir: &Path, certs: &Certs, require_client_cert: bool) -> Broker {
        Self::launch(dir, Some((certs.dir.clone(), require_client_cert)))
    }

    /// A plain broker with `extra` lines added to its config.
    pub fn start_with(dir: &Path, extra: &str) -> Broker {
        Self::launch_with(dir, None, extra)
    }

    fn launch(dir: &Path, tls: Option<(PathBuf, bool)>) -> Broker {
        Self::launch_with(dir, tls, "")
    }

    fn launch_with(dir: &Path, tls: Option<(PathBuf, bool)>, extra: &str) -> Broker {
        std::fs::create_dir_all(dir).expect("the broker's directory");
        let mut b = Broker {
            port: free_port(),
            dir: dir.to_path_buf(),
            child: None,
            tls,
            extra: extra.to_string(),
        };
        b.restart();
        b
    }

    pub fn restart(&mut self) {
        let mut conf = format!(
            "per_listener_settings false\nallow_anonymous true\npersistence true\npersistence_location {dir}/\n\
             autosave_interval 0\nmax_queued_messages 0\nmax_inflight_messages 0\nlog_dest file {dir}/mosquitto.log\n\
             log_type error\nlog_type warning\nlog_type notice\nlistener {port} 127.0.0.1\n",
            dir = self.dir.display(),
            port = self.port,
        );
        if unsafe_is_root() {
            conf.push_str("user root\n");
        }
        if let Some((certs, require)) = &self.tls {
            conf.push_str(&format!(
                "cafile {c}/ca.crt\ncertfile {c}/server.crt\nkeyfile {c}/server.key\nrequire_certificate {require}\n",
                c = certs.display()
            ));
        }
        conf.push_str(&self.extra);
        let path = self.dir.join("mosquitto.conf");
        std::fs::write(&path, conf).expect("write mosquitto.conf");
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto must be installed (scripts/test-deps.sh)");
        self.child = Some(child);
        let port = self.port;
        wait_for("mosquitto to listen", Duration::from_secs(10), || {
            port_open(port).then_some(())
        });
    }

    /// Asks the broker to read its ACL and password files again (SIGHUP).
    pub fn reload(&self) {
        self.send("-HUP");
    }

    /// Freezes the broker (SIGSTOP): connections stay open, nothing is answered.
    pub fn freeze(&self) {
        self.send("-STOP");
    }

    /// Lets a frozen broker go on (SIGCONT).
    pub fn thaw(&self) {
        self.send("-CONT");
    }

    fn send(&self, signal: &str) {
        let c = self.child.as_ref().expect("a running broker");
        assert!(kill(signal, &c.id().to_string()), "{signal} to mosquitto");
    }

    /// Stops the broker the way an operator would (SIGTERM: it saves its sessions).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let _ = c.wait();
        }
    }
}

fn unsafe_is_root() -> bool {
    std::env::var("USER").map(|u| u == "root").unwrap_or(false)
        || Command::new("id")
            .arg("-u")
            .output()
            .map(|o| o.stdout.starts_with(b"0"))
            .unwrap_or(false)
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A broker with its files in `dir/broker`, a consumer of `filter` on it, and a gateway started
/// with its `[relay]` table pointing there, `relay_extra` added to that table.
pub fn relayed_gateway(dir: &Path, filter: &str, relay_extra: &str) -> (Broker, Consumer, Gateway) {
    let broker = Broker::start(&dir.join("broker"));
    let consumer = Consumer::start(&broker, filter);
    let mut gw = Gateway::new(dir, &format!("{}{relay_extra}", relay_table(&broker)));
    gw.start();
    (broker, consumer, gw)
}

/// One message seen by the consumer.
#[derive(Debug, Clone)]
pub struct Received {
    pub topic: String,
    pub payload: String,
}

/// A `mosquitto_sub` consumer with a persistent QoS 1 session, collecting every message.
pub struct Consumer {
    child: Child,
    pub messages: Arc<Mutex<Vec<Received>>>,
}

impl Consumer {
    pub fn start(broker: &Broker, filter: &str) -> Consumer {
        Self::start_with(broker, filter, &[])
    }

    pub fn start_with(broker: &Broker, filter: &str, extra: &[&str]) -> Consumer {
        Self::on_port(broker.port, filter, extra)
    }

    /// A consumer of any MQTT broker listening on `port`; `extra` (TLS files, a login) is given
    /// to `mosquitto_sub` and to the probe's `mosquitto_pub` alike.
    pub fn on_port(port: u16, filter: &str, extra: &[&str]) -> Consumer {
        let probe = format!("probe/{}", free_port());
        let port = port.to_string();
        let mut child = Command::new("mosquitto_sub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-t",
                filter,
                "-t",
                &probe,
                "-q",
                "1",
                "-v",
            ])
            .args(["-c", "-i", &format!("consumer-{}", free_port())])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto_sub must be installed (scripts/test-deps.sh)");
        let out = child.stdout.take().expect("stdout");
        let messages = Arc::new(Mutex::new(Vec::new()));
        let sink = messages.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let (topic, payload) = line.split_once(' ').unwrap_or((line.as_str(), ""));
                sink.lock().expect("lock").push(Received {
                    topic: topic.into(),
                    payload: payload.into(),
                });
            }
        });
        let c = Consumer { child, messages };
        // Subscribed once a probe published after start comes back.
        wait_for(
            "the consumer's subscription",
            Duration::from_secs(10),
            || {
                let _ = Command::new("mosquitto_pub")
                    .args([
                        "-h",
                        "127.0.0.1",
                        "-p",
                        &port,
                        "-t",
                        &probe,
                        "-m",
                        "probe",
                        "-q",
                        "1",
                    ])
                    .args(extra)
                    .stderr(Stdio::null())
                    .status();
                c.snapshot().iter().any(|m| m.topic == probe).then_some(())
            },
        );
        c
    }

    pub fn snapshot(&self) -> Vec<Received> {
        self.messages.lock().expect("lock").clone()
    }

    /// Event envelopes received so far, parsed.
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.snapshot()
            .into_iter()
            .filter(|m| m.topic.contains("/events/"))
            .map(|m| serde_json::from_str(&m.payload).expect("envelope is JSON"))
            .collect()
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One message seen by an MQTT 5 consumer, with its properties.
#[derive(Debug, Clone)]
pub struct Received5 {
    pub topic: String,
    pub payload: String,
    pub user_properties: Vec<(String, String)>,
    pub message_expiry: Option<u32>,
}

/// An MQTT 5 consumer (rumqttc v5) with a persistent session kept an hour by the broker:
/// dropped, it disconnects and the broker queues what arrives for it; started again with the
/// same id, it gets what was queued (unless it expired).
pub struct Consumer5 {
    client: rumqttc::v5::Client,
    thread: Option<std::thread::JoinHandle<()>>,
    pub messages: Arc<Mutex<Vec<Received5>>>,
}

impl Consumer5 {
    pub fn start(port: u16, id: &str, filter: &str) -> Consumer5 {
        use rumqttc::v5::mqttbytes::QoS;
        use rumqttc::v5::mqttbytes::v5::Packet;
        use rumqttc::v5::{Client, Event, MqttOptions};
        let mut options = MqttOptions::new(id, "127.0.0.1", port);
        options
            .set_clean_start(false)
            .set_session_expiry_interval(Some(3600));
        let (client, mut connection) = Client::new(options, 100);
        let probe = format!("probe/{}", free_port());
        client
            .subscribe(filter, QoS::AtLeastOnce)
            .expect("subscribe");
        client
            .subscribe(probe.as_str(), QoS::AtLeastOnce)
            .expect("subscribe");
        let messages = Arc::new(Mutex::new(Vec::new()));
        let sink = messages.clone();
        let thread = std::thread::spawn(move || {
            for event in connection.iter() {
                match event {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let props = p.properties.unwrap_or_default();
                        sink.lock().expect("lock").push(Received5 {
                            topic: String::from_utf8_lossy(&p.topic).into_owned(),
                            payload: String::from_utf8_lossy(&p.payload).into_owned(),
                            user_properties: props.user_properties,
                            message_expiry: props.message_expiry_interval,
                        });
                    }
                    Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        });
        let c = Consumer5 {
            client,
            thread: Some(thread),
            messages,
        };
        // Subscribed once its own probe, published after the subscriptions, comes back.
        c.client
            .publish(probe.as_str(), QoS::AtLeastOnce, false, "probe")
            .expect("probe");
        wait_for(
            "the MQTT 5 consumer's subscription",
            Duration::from_secs(10),
            || c.snapshot().iter().any(|m| m.topic == probe).then_some(()),
        );
        c
    }

    pub fn snapshot(&self) -> Vec<Received5> {
        self.messages.lock().expect("lock").clone()
    }
}

impl Drop for Consumer5 {
    fn drop(&mut self) {
        let _ = self.client.disconnect();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The gateway binary running on a config written into a temporary directory.
pub struct Gateway {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub web: u16,
    child: Option<Child>,
    pub log: PathBuf,
    env: Vec<(String, String)>,
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_clinic-gateway")
}

/// A config for a test: `extra` is appended (relay, destinations, ...).
pub fn config_text(dir: &Path, web: u16, extra: &str) -> String {
    format!(
        "[gateway]\nfacility_id = \"test-clinic\"\ndata_dir = \"{}\"\nheartbeat_ms = 200\ntimezone = \"UTC\"\n\n[web]\nbind = \"127.0.0.1:{web}\"\n\n{extra}",
        dir.join("data").display()
    )
}

/// The `[relay]` table for a plain broker, with fast reconnects.
pub fn relay_table(broker: &Broker) -> String {
    relay_table_on(broker.port)
}

/// The `[relay]` table for a plain broker reached on `port`, with fast reconnects.
pub fn relay_table_on(port: u16) -> String {
    format!(
        "[relay]\nhost = \"127.0.0.1\"\nport = {port}\nreconnect_initial_ms = 100\nreconnect_max_ms = 500\nkeep_alive_secs = 5\n"
    )
}

/// `socat` forwarding a loopback port to another, as a site's uplink joins the gateway to its
/// broker: cutting it drops every connection through it at once, neither end told first.
pub struct Uplink {
    pub port: u16,
    to: u16,
    child: Option<Child>,
}

impl Uplink {
    pub fn start(to: u16) -> Uplink {
        let mut link = Uplink {
            port: free_port(),
            to,
            child: None,
        };
        link.restore();
        link
    }

    /// Listens again on the same port.
    pub fn restore(&mut self) {
        use std::os::unix::process::CommandExt;
        // Its own process group: each connection is a forked child, cut with the listener.
        let child = Command::new("socat")
            .arg(format!(
                "TCP-LISTEN:{},bind=127.0.0.1,reuseaddr,fork",
                self.port
            ))
            .arg(format!("TCP:127.0.0.1:{}", self.to))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("socat must be installed (scripts/test-deps.sh)");
        self.child = Some(child);
        let port = self.port;
        wait_for("socat to listen", Duration::from_secs(10), || {
            port_open(port).then_some(())
        });
    }

    /// Freezes it (SIGSTOP): connections stay open, nothing crosses.
    pub fn freeze(&self) {
        let c = self.child.as_ref().expect("a running uplink");
        assert!(kill("-STOP", &format!("-{}", c.id())), "SIGSTOP to socat");
    }

    /// Drops every connection through it and stops listening.
    pub fn cut(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill("-KILL", &format!("-{}", c.id()));
            let _ = c.wait();
        }
    }
}

/// Sends `signal` to `target` (a pid, or `-pgid` for a process group); whether it went.
fn kill(signal: &str, target: &str) -> bool {
    Command::new("kill")
        .args([signal, "--", target])
        .status()
        .expect("kill")
        .success()
}

impl Drop for Uplink {
    fn drop(&mut self) {
        self.cut();
    }
}

impl Gateway {
    pub fn new(dir: &Path, extra: &str) -> Gateway {
        let web = free_port();
        let config = dir.join("gateway.toml");
        std::fs::write(&config, config_text(dir, web, extra)).expect("write config");
        Gateway {
            dir: dir.to_path_buf(),
            config,
            web,
            child: None,
            log: dir.join("gateway.log"),
            env: Vec::new(),
        }
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    /// Starts the daemon and waits until its API answers.
    pub fn start(&mut self) {
        self.spawn();
        let port = self.web;
        let log = self.log.clone();
        let child = self.child.as_mut().expect("child");
        wait_for("the gateway's API", Duration::from_secs(20), || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "gateway exited with {status}: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            ureq::get(&format!("http://127.0.0.1:{port}/api/v1/health"))
                .call()
                .ok()
                .map(|_| ())
        });
    }

    /// Starts the daemon without waiting.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log");
        let mut cmd = Command::new(bin());
        cmd.args(["run", "--config"])
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(log);
        cmd.env("RUST_LOG", "info");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("spawn gateway"));
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill");
        assert!(ok.success());
    }

    /// Waits for the process to end; returns its exit code.
    pub fn wait(&mut self, limit: Duration) -> Option<i32> {
        let child = self.child.as_mut().expect("running");
        let status = wait_for("the gateway to exit", limit, || {
            child.try_wait().ok().flatten()
        });
        self.child = None;
        status.code()
    }

    pub fn kill9(&mut self) {
        self.signal("KILL");
        self.wait(Duration::from_secs(10));
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.web)
    }

    pub fn get_json(&self, path: &str) -> serde_json::Value {
        ureq::get(&self.url(path))
            .call()
            .expect("GET")
            .body_mut()
            .read_json()
            .expect("json")
    }

    /// The body of a page (the status page, metrics, a ticket preview) as text.
    pub fn get_text(&self, path: &str) -> String {
        ureq::get(&self.url(path))
            .call()
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
            .body_mut()
            .read_to_string()
            .expect("text")
    }

    /// Posts an inbound item; returns the HTTP status and body.
    pub fn post_event(&self, body: &serde_json::Value) -> (u16, serde_json::Value) {
        post(&self.url("/api/v1/events"), body)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs the CLI against this gateway's config.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(bin())
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .output()
            .expect("cli")
    }
}

/// Runs `check-config` on the file at `path`; returns its exit code and what it wrote on stderr.
pub fn check_config(path: &Path) -> (Option<i32>, String) {
    let out = Command::new(bin())
        .arg("check-config")
        .arg(path)
        .output()
        .expect("run check-config");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn post(url: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    match agent.post(url).send_json(body) {
        Ok(mut r) => {
            let status = r.status().as_u16();
            let v = r.body_mut().read_json().unwrap_or(serde_json::Value::Null);
            (status, v)
        }
        Err(e) => (0, serde_json::json!({ "transport_error": e.to_string() })),
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A numbered test event of `kind` for `key` (`payload.n` is `i`), as `POST /api/v1/events`
/// takes it: the relay tests count and order these at the consumer.
pub fn numbered_event(i: usize, kind: &str, key: &str) -> serde_json::Value {
    serde_json::json!({ "source": "kiosk-1", "id": format!("e{i}"), "kind": kind, "key": key, "payload": { "n": i } })
}

/// The number of a [`numbered_event`] as it arrived.
pub fn n_of(e: &serde_json::Value) -> Option<u64> {
    e["payload"]["n"].as_u64()
}

/// Every event at the consumer, once every number of `expected` has arrived.
pub fn wait_all(
    consumer: &Consumer,
    expected: &std::collections::BTreeSet<u64>,
    limit: Duration,
) -> Vec<serde_json::Value> {
    wait_for("every event at the consumer", limit, || {
        let events = consumer.events();
        let seen: std::collections::BTreeSet<u64> = events.iter().filter_map(n_of).collect();
        expected.is_subset(&seen).then_some(events)
    })
}

/// The `nth` (0: the first) command reply carrying `request_id` (none: a command sent without
/// one) on any replies topic, with that topic.
pub fn wait_reply(
    consumer: &Consumer,
    request_id: Option<&str>,
    nth: usize,
    limit: Duration,
) -> (String, serde_json::Value) {
    wait_for("a command reply", limit, || {
        consumer
            .snapshot()
            .into_iter()
            .filter(|m| m.topic.contains("/replies/"))
            .map(|m| {
                let reply = serde_json::from_str::<serde_json::Value>(&m.payload);
                (m.topic, reply.expect("reply JSON"))
            })
            .filter(|(_, r)| r["request_id"].as_str() == request_id)
            .nth(nth)
    })
}
