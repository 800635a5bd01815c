//! A RabbitMQ node of the test's own (Debian's `rabbitmq-server` with its MQTT plugin) on
//! loopback ports, its database, logs and plugin list in the test's directory, killed with its
//! epmd when dropped.
//!
//! A node takes about 10 s to start (the Erlang boot, then the MQTT plugin waits 3 to 6 s for
//! cluster peers before electing itself), so tests that do not stop the broker share one node
//! per test binary ([`Rabbit::shared`]) and keep apart in a virtual host each ([`Rabbit::vhost`]).

use super::{Certs, free_port, port_open, wait_for};
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Debian's scripts; `/usr/sbin/rabbitmq-server` would switch to the `rabbitmq` user and the
/// system's directories.
const BIN: &str = "/usr/lib/rabbitmq/bin";

/// Runs epmd and the node in one process group under a shell that lives as long as its stdin:
/// when the test drops the node, or its process ends in any way (a panic, a kill), the pipe
/// closes and the shell kills both and removes `$DISCARD` (the shared node's directory, which
/// nothing drops).
const SUPERVISE: &str = r#"
epmd -port "$ERL_EPMD_PORT" &
epmd=$!
"$RABBIT_BIN/rabbitmq-server" >"$RABBITMQ_LOG_BASE/console.log" 2>&1 &
server=$!
cat >/dev/null
kill -KILL $(cat "$RABBITMQ_PID_FILE" 2>/dev/null) "$server" "$epmd" 2>/dev/null
wait
[ -n "$DISCARD" ] && rm -rf "$DISCARD"
"#;

/// A virtual host of a node, with the user the tests connect as.
#[derive(Debug, Clone)]
pub struct Vhost {
    pub name: String,
    /// The MQTT user name: RabbitMQ reads `vhost:user` as that user in that virtual host.
    pub username: String,
    pub password: String,
}

impl Vhost {
    /// `mosquitto_sub` / `mosquitto_pub` arguments to log in to this virtual host.
    pub fn login(&self) -> [&str; 4] {
        ["-u", &self.username, "-P", &self.password]
    }
}

/// TLS listener settings: the certificates, and whether a client certificate is required.
struct Tls {
    certs: PathBuf,
    require_client_cert: bool,
}

pub struct Rabbit {
    /// The plain MQTT listener.
    pub port: u16,
    /// The MQTT over TLS listener, when started with TLS.
    pub tls_port: Option<u16>,
    /// How long the last start took, until the MQTT listener accepted.
    pub started_in: Duration,
    node: String,
    amqp_port: u16,
    dist_port: u16,
    epmd_port: u16,
    dir: PathBuf,
    tls: Option<Tls>,
    discard: bool,
    shell: Option<(Child, ChildStdin)>,
    vhosts: AtomicUsize,
}

impl Rabbit {
    pub fn start(dir: &Path) -> Rabbit {
        Self::launch(dir, None, false)
    }

    /// A node with a TLS listener beside the plain one; with `require_client_cert`, mutual TLS.
    pub fn start_tls(dir: &Path, certs: &Certs, require_client_cert: bool) -> Rabbit {
        let tls = Tls {
            certs: certs.dir.clone(),
            require_client_cert,
        };
        Self::launch(dir, Some(tls), false)
    }

    /// The node this test binary's tests share, with mutual TLS on [`Rabbit::tls_port`] from the
    /// certificates of [`Rabbit::shared_certs`]. Never stopped by a test; it ends with the
    /// test process.
    pub fn shared() -> &'static Rabbit {
        static SHARED: OnceLock<Rabbit> = OnceLock::new();
        SHARED.get_or_init(|| {
            let dir = tempfile::tempdir().expect("tempdir").keep();
            let certs_dir = dir.join("certs");
            std::fs::create_dir_all(&certs_dir).expect("mkdir");
            let certs = Certs::generate(&certs_dir);
            let tls = Tls {
                certs: certs.dir,
                require_client_cert: true,
            };
            Self::launch(&dir.join("node"), Some(tls), true)
        })
    }

    /// The certificates the shared node's TLS listener was made with.
    pub fn shared_certs() -> Certs {
        let node = Self::shared();
        Certs {
            dir: node
                .tls
                .as_ref()
                .expect("the shared node has TLS")
                .certs
                .clone(),
        }
    }

    fn launch(dir: &Path, tls: Option<Tls>, discard: bool) -> Rabbit {
        std::fs::create_dir_all(dir).expect("the node's directory");
        let tls_port = tls.as_ref().map(|_| free_port());
        let port = free_port();
        let mut node = Rabbit {
            port,
            tls_port,
            started_in: Duration::ZERO,
            node: format!("rabbit-test-{port}@localhost"),
            amqp_port: free_port(),
            dist_port: free_port(),
            epmd_port: free_port(),
            dir: dir.to_path_buf(),
            tls,
            discard,
            shell: None,
            vhosts: AtomicUsize::new(0),
        };
        node.write_config();
        node.restart();
        node
    }

    fn write_config(&self) {
        // The MQTT plugin keeps QoS 1 subscriptions of persistent sessions in quorum queues
        // (replicated when the node is in a cluster); a lone test node has a quorum of one.
        let mut conf = format!(
            "listeners.tcp.1 = 127.0.0.1:{amqp}\n\
             mqtt.listeners.tcp.1 = 127.0.0.1:{mqtt}\n\
             mqtt.allow_anonymous = false\n\
             mqtt.vhost = /\n\
             mqtt.exchange = amq.topic\n\
             mqtt.durable_queue_type = quorum\n\
             disk_free_limit.absolute = 1MB\n\
             log.console = false\n\
             log.file.level = info\n",
            amqp = self.amqp_port,
            mqtt = self.port,
        );
        if let (Some(tls), Some(tls_port)) = (&self.tls, self.tls_port) {
            conf.push_str(&format!(
                "mqtt.listeners.ssl.1 = 127.0.0.1:{tls_port}\n\
                 ssl_options.cacertfile = {c}/ca.crt\n\
                 ssl_options.certfile = {c}/server.crt\n\
                 ssl_options.keyfile = {c}/server.key\n\
                 ssl_options.verify = verify_peer\n\
                 ssl_options.fail_if_no_peer_cert = {require}\n",
                c = tls.certs.display(),
                require = tls.require_client_cert,
            ));
        }
        std::fs::write(self.dir.join("rabbitmq.conf"), conf).expect("write rabbitmq.conf");
        std::fs::write(self.dir.join("enabled_plugins"), "[rabbitmq_mqtt].\n")
            .expect("write enabled_plugins");
        std::fs::create_dir_all(self.dir.join("log")).expect("mkdir log");
    }

    /// The environment that makes a server or CLI process this node's: its name, ports and
    /// directories, and `HOME` for the Erlang cookie the two share.
    fn env(&self, cmd: &mut Command) {
        let d = |name: &str| self.dir.join(name);
        cmd.env("HOME", &self.dir)
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.amqp_port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("ERL_EPMD_PORT", self.epmd_port.to_string())
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .env(
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                "-kernel inet_dist_use_interface {127,0,0,1}",
            )
            .env("RABBITMQ_CONFIG_FILE", d("rabbitmq.conf"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d("enabled_plugins"))
            .env("RABBITMQ_MNESIA_BASE", d("mnesia"))
            .env("RABBITMQ_LOG_BASE", d("log"))
            .env("RABBITMQ_PLUGINS_EXPAND_DIR", d("plugins-expand"))
            .env("RABBITMQ_PID_FILE", d("rabbit.pid"));
    }

    /// Starts the node (again, with the same name, ports and database) and waits until its MQTT
    /// listeners accept connections: the plugin opens them last, once its own Raft cluster has
    /// a leader.
    pub fn restart(&mut self) {
        assert!(self.shell.is_none(), "the node is running");
        let _ = std::fs::remove_file(self.dir.join("rabbit.pid"));
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(SUPERVISE).env("RABBIT_BIN", BIN);
        if self.discard {
            cmd.env("DISCARD", self.dir.parent().unwrap_or(&self.dir));
        }
        self.env(&mut cmd);
        let started = Instant::now();
        let mut child = cmd
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sh");
        let stdin = child.stdin.take().expect("stdin");
        self.shell = Some((child, stdin));
        let ports: Vec<u16> = [Some(self.port), self.tls_port]
            .into_iter()
            .flatten()
            .collect();
        let log = self.dir.join("log").join("console.log");
        wait_for(
            "RabbitMQ's MQTT listeners (rabbitmq-server is installed by scripts/test-deps.sh)",
            Duration::from_secs(90),
            || {
                if let Some((child, _)) = &mut self.shell
                    && let Ok(Some(status)) = child.try_wait()
                {
                    panic!(
                        "rabbitmq-server exited with {status}: {}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
                ports.iter().all(|&p| port_open(p)).then_some(())
            },
        );
        self.started_in = started.elapsed();
        eprintln!(
            "RabbitMQ node {} started in {:.1} s",
            self.node,
            self.started_in.as_secs_f64()
        );
    }

    /// Stops the node the way an operator would (SIGTERM: it closes its queues and sessions
    /// cleanly), then its epmd.
    pub fn stop(&mut self) {
        let Some((mut child, stdin)) = self.shell.take() else {
            return;
        };
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("rabbit.pid")) {
            let _ = Command::new("kill").arg("-TERM").arg(pid.trim()).status();
            let mqtt = self.port;
            wait_for("RabbitMQ to stop", Duration::from_secs(60), || {
                (!port_open(mqtt)).then_some(())
            });
        }
        drop(stdin);
        let _ = child.wait();
    }

    /// Runs `rabbitmqctl` against this node; panics with its output when it fails.
    pub fn ctl(&self, args: &[&str]) -> String {
        let mut cmd = Command::new(format!("{BIN}/rabbitmqctl"));
        self.env(&mut cmd);
        let out = cmd
            .arg("-n")
            .arg(&self.node)
            .args(args)
            .output()
            .expect("rabbitmqctl");
        assert!(
            out.status.success(),
            "rabbitmqctl {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A new virtual host on this node, with a user allowed everything in it, so that tests on
    /// one node see neither each other's topics nor each other's client ids.
    pub fn vhost(&self) -> Vhost {
        let n = self.vhosts.fetch_add(1, Ordering::SeqCst);
        let name = format!("test-{n}");
        let user = format!("user-{n}");
        let password = format!("secret-{n}");
        self.ctl(&["add_vhost", &name]);
        self.ctl(&["add_user", &user, &password]);
        self.ctl(&["set_permissions", "-p", &name, &user, ".*", ".*", ".*"]);
        Vhost {
            username: format!("{name}:{user}"),
            name,
            password,
        }
    }

    /// The `[relay]` table for this node's plain listener, logged in to `vhost`, with fast
    /// reconnects; the password goes to a file in `dir`.
    pub fn relay_table(&self, dir: &Path, vhost: &Vhost) -> String {
        format!(
            "[relay]\nhost = \"127.0.0.1\"\nport = {}\nreconnect_initial_ms = 100\nreconnect_max_ms = 500\nkeep_alive_secs = 5\n{}",
            self.port,
            credentials(dir, vhost)
        )
    }
}

/// `username`, `password_file` and `client_id` lines of a `[relay]` table for `vhost`, the
/// password written to a file in `dir`. RabbitMQ 3.10 keeps MQTT client ids unique across the
/// whole node, not per virtual host: gateways of two tests with the default id (from the same
/// facility id) would close each other's connections.
pub fn credentials(dir: &Path, vhost: &Vhost) -> String {
    let path = dir.join(format!("{}.password", vhost.name));
    let mut file = std::fs::File::create(&path).expect("password file");
    file.write_all(vhost.password.as_bytes())
        .expect("write password");
    format!(
        "username = \"{}\"\npassword_file = \"{}\"\nclient_id = \"clinic-gateway-{}\"\n",
        vhost.username,
        path.display(),
        vhost.name
    )
}

impl Drop for Rabbit {
    /// Kills the whole process group at once: the shell, epmd, the node and the helpers it
    /// spawned.
    fn drop(&mut self) {
        if let Some((mut child, stdin)) = self.shell.take() {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            drop(stdin);
            let _ = child.wait();
        }
    }
}
