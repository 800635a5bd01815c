//! A NATS server (Debian's `nats-server` 2.9) with JetStream and its MQTT listener on loopback,
//! the way a clinic group's cloud runs it; killed on drop.

use super::{Certs, free_port, wait_for};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// One `nats-server` process; its JetStream store is in its directory, so a restart keeps the
/// MQTT sessions, their subscriptions and the messages queued for them.
pub struct Nats {
    /// The MQTT listener's port.
    pub port: u16,
    dir: PathBuf,
    name: String,
    client_port: u16,
    tls: Option<PathBuf>,
    /// In a cluster: this node's route port and its peer's.
    routes: Option<(u16, u16)>,
    child: Option<Child>,
}

impl Nats {
    pub fn start(dir: &Path) -> Nats {
        Self::launch(dir, None)
    }

    /// The MQTT listener over mutual TLS only, with the test's server certificate.
    pub fn start_tls(dir: &Path, certs: &Certs) -> Nats {
        Self::launch(dir, Some(certs.dir.clone()))
    }

    fn launch(dir: &Path, tls: Option<PathBuf>) -> Nats {
        let mut n = Self::node(dir, tls, None);
        n.restart();
        n
    }

    fn node(dir: &Path, tls: Option<PathBuf>, routes: Option<(u16, u16)>) -> Nats {
        std::fs::create_dir_all(dir).expect("the server's directory");
        Nats {
            port: free_port(),
            dir: dir.to_path_buf(),
            name: format!("n{}", free_port()),
            client_port: free_port(),
            tls,
            routes,
            child: None,
        }
    }

    /// A two-node cluster (`a` and `b` under `dir`), routed on loopback, whose MQTT streams
    /// keep two replicas (`mqtt { stream_replicas: 2 }`): a message either node acknowledged is
    /// on both. Returns once the nodes elected their JetStream metadata leader.
    pub fn cluster(dir: &Path) -> (Nats, Nats) {
        let (ra, rb) = (free_port(), free_port());
        let mut a = Self::node(&dir.join("a"), None, Some((ra, rb)));
        let mut b = Self::node(&dir.join("b"), None, Some((rb, ra)));
        a.restart();
        b.restart();
        wait_for(
            "the cluster's JetStream metadata leader",
            Duration::from_secs(60),
            || {
                (a.log().contains("metadata leader") || b.log().contains("metadata leader"))
                    .then_some(())
            },
        );
        (a, b)
    }

    pub fn restart(&mut self) {
        let tls = match &self.tls {
            Some(c) => format!(
                "  tls {{ cert_file: \"{c}/server.crt\", key_file: \"{c}/server.key\", ca_file: \"{c}/ca.crt\", verify: true }}\n",
                c = c.display()
            ),
            None => String::new(),
        };
        let (cluster, replicas) = match self.routes {
            Some((own, peer)) => (
                format!(
                    "cluster {{ name: relay-test, listen: 127.0.0.1:{own}, routes: [\"nats-route://127.0.0.1:{peer}\"] }}\n"
                ),
                "  stream_replicas: 2\n",
            ),
            None => (String::new(), ""),
        };
        let conf = format!(
            "server_name: {name}\nlisten: 127.0.0.1:{client}\njetstream {{ store_dir: \"{dir}/js\" }}\n{cluster}\
             mqtt {{\n  host: 127.0.0.1\n  port: {port}\n{replicas}{tls}}}\n",
            name = self.name,
            client = self.client_port,
            dir = self.dir.display(),
            port = self.port,
        );
        let path = self.dir.join("nats.conf");
        std::fs::write(&path, conf).expect("write nats.conf");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("nats.log"))
            .expect("log");
        let child = Command::new("nats-server")
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("nats-server must be installed (scripts/test-deps.sh)");
        self.child = Some(child);
        let port = self.port;
        wait_for(
            "nats-server's MQTT listener",
            Duration::from_secs(20),
            || TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ()),
        );
    }

    /// Stops the server the way an operator would (SIGTERM: it flushes its store).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let _ = c.wait();
        }
    }

    /// Kills the server at once (SIGKILL), as a crashed node.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// What the server logged, for a test's failure message and its waits.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("nats.log")).unwrap_or_default()
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
