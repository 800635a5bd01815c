//! What the benches that run the daemon itself share: free loopback ports and a started daemon.

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A loopback port free at the time of asking.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Runs the gateway on `config` and returns once every one of `ports` takes connections.
pub fn start(config: &Path, ports: &[u16]) -> Child {
    let child = Command::new(env!("CARGO_BIN_EXE_clinic-gateway"))
        .args(["run", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("gateway");
    let start = Instant::now();
    while ports
        .iter()
        .any(|port| TcpStream::connect(("127.0.0.1", *port)).is_err())
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the gateway did not open {ports:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}
