//! The daemon's life and faults: journal full, corrupt journal, config mistakes, sd_notify,
//! reload, shutdown, and the status page.

mod common;

use common::*;
use serde_json::json;
use std::collections::BTreeSet;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Configures a relay to a fresh broker, restarts the gateway, and waits until a consumer has
/// seen every `payload.n` in `acked`.
fn deliver_all_through_a_new_relay(gw: &mut Gateway, dir: &std::path::Path, acked: &BTreeSet<u64>) {
    let broker = Broker::start(&dir.join("broker"));
    let consumer = Consumer::start(&broker, "clinic/test-clinic/events/#");
    let text = std::fs::read_to_string(&gw.config).expect("config") + &relay_table(&broker);
    std::fs::write(&gw.config, text).expect("config");
    gw.start();
    wait_for(
        "every acknowledged item at the consumer",
        Duration::from_secs(60),
        || {
            let seen: BTreeSet<u64> = consumer
                .events()
                .iter()
                .filter_map(|e| e["payload"]["n"].as_u64())
                .collect();
            acked.is_subset(&seen).then_some(())
        },
    );
}

#[test]
fn full_journal_refuses_inbound_and_keeps_everything_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut gw = Gateway::new(dir.path(), "[journal]\nmax_bytes = 1048576\n");
    gw.start();
    let mut acked = BTreeSet::new();
    let refusal = (0..2000)
        .find_map(|i| {
            let body = json!({ "source": "kiosk-1", "id": format!("f{i}"), "kind": "test.fill", "key": format!("k{}", i % 5), "payload": { "n": i, "pad": "p".repeat(3000) } });
            let (status, reply) = gw.post_event(&body);
            match status {
                202 => {
                    acked.insert(i as u64);
                    None
                }
                _ => Some((status, reply)),
            }
        })
        .expect("the journal fills up");
    assert_eq!(refusal.0, 507, "{}", refusal.1);
    let message = refusal.1["error"].as_str().unwrap_or("");
    assert!(
        message.contains("journal full") && message.contains("not accepted"),
        "{message}"
    );
    assert_eq!(refusal.1["retryable"], true);
    let metrics = gw.get_text("/metrics");
    assert!(
        metrics.contains("clinic_gateway_inbound_refused_total 1"),
        "{metrics}"
    );
    gw.signal("TERM");
    assert_eq!(gw.wait(Duration::from_secs(10)), Some(0));

    // Everything acknowledged is still there: a relay configured later delivers all of it.
    deliver_all_through_a_new_relay(&mut gw, dir.path(), &acked);
}

#[test]
fn corrupt_or_truncated_journal_is_refused_at_start_and_left_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut gw = Gateway::new(dir.path(), "");
    gw.start();
    for i in 0..200 {
        let body = json!({ "source": "kiosk-1", "id": format!("c{i}"), "kind": "test.x", "key": "k", "payload": { "pad": "p".repeat(1000) } });
        assert_eq!(gw.post_event(&body).0, 202);
    }
    gw.signal("TERM");
    assert_eq!(gw.wait(Duration::from_secs(10)), Some(0));
    let journal = dir.path().join("data/journal.db");
    let good = std::fs::read(&journal).expect("journal");

    let truncated = good[..good.len() / 2].to_vec();
    let mut garbage = good.clone();
    for b in garbage[4096..].iter_mut().step_by(7) {
        *b ^= 0x5a;
    }
    for (what, bytes) in [("truncated", truncated), ("corrupted", garbage)] {
        std::fs::write(&journal, &bytes).expect("damage");
        gw.spawn();
        let code = gw.wait(Duration::from_secs(20));
        assert_ne!(code, Some(0), "a {what} journal must not be accepted");
        let log = gw.log_text();
        assert!(log.contains("left untouched"), "{what}: {log}");
        assert!(
            log.contains("journal.db"),
            "the message names the file: {log}"
        );
        assert_eq!(
            std::fs::read(&journal).expect("journal"),
            bytes,
            "the {what} file was modified"
        );
    }
}

#[test]
fn config_mistakes_are_reported_by_file_line_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        (
            "unknown.toml",
            "[gateway]\nfacility_id = \"c\"\n\n[web]\nbindd = \"127.0.0.1:1\"\n",
            ":5: web.bindd: unknown field",
        ),
        (
            "type.toml",
            "[gateway]\nfacility_id = \"c\"\n[journal]\nmax_bytes = \"lots\"\n",
            ":4: journal.max_bytes: invalid type",
        ),
        (
            "tls.toml",
            "[gateway]\nfacility_id = \"c\"\n[relay]\nhost = \"h\"\n[relay.tls]\nca_file = \"missing-ca.pem\"\n",
            ":6: relay.tls.ca_file: cannot read",
        ),
        (
            "value.toml",
            "[gateway]\nfacility_id = \"has space\"\n",
            ":2: gateway.facility_id: must be",
        ),
    ];
    for (name, text, expected) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        let (code, stderr) = check_config(&path);
        assert_eq!(code, Some(2), "{name}");
        assert!(
            stderr.contains(&format!("{}{expected}", path.display())),
            "{name}: {stderr}"
        );
    }
    let missing = dir.path().join("nope.toml");
    let (code, stderr) = check_config(&missing);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("nope.toml:0: (file): cannot read the file"),
        "{stderr}"
    );
    // The daemon refuses to start on it, with the same message.
    let out = Command::new(bin())
        .args(["run", "--config"])
        .arg(dir.path().join("type.toml"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("journal.max_bytes"));
    let demo = concat!(env!("CARGO_MANIFEST_DIR"), "/firmware-config/demo.toml");
    let prod = concat!(env!("CARGO_MANIFEST_DIR"), "/firmware-config/gateway.toml");
    for shipped in [demo, prod] {
        let (code, stderr) = check_config(Path::new(shipped));
        assert_eq!(code, Some(0), "{shipped}: {stderr}");
    }
}

#[test]
fn check_config_lists_every_problem_of_the_file_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("many.toml");
    std::fs::write(
        &path,
        "[gateway]\nfacility_id = \"has space\"\n\
         [journal]\nmax_bytes = \"lots\"\n\
         [web]\nbind = 8088\n\
         [relay]\nhost = \"h\"\nhots = \"h\"\ninflight_window = 0\n",
    )
    .expect("write");
    let (code, stderr) = check_config(&path);
    assert_eq!(code, Some(2));
    let expected = [
        ":2: gateway.facility_id: must be",
        ":4: journal.max_bytes: invalid type",
        ":6: web.bind: invalid type",
        ":9: relay.hots: unknown field",
        ":10: relay.inflight_window: must be at least 1",
    ];
    for line in expected {
        assert!(
            stderr.contains(&format!("{}{line}", path.display())),
            "{line}: {stderr}"
        );
    }
    assert_eq!(stderr.lines().count(), expected.len(), "{stderr}");
}

/// Collects sd_notify datagrams until `until` appears.
fn notifications_until(sock: &UnixDatagram, seen: &mut Vec<String>, until: &str) {
    let mut buf = [0u8; 4096];
    wait_for(until, Duration::from_secs(20), || {
        if let Ok(n) = sock.recv(&mut buf) {
            seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        seen.iter()
            .any(|m| m.lines().any(|l| l == until))
            .then_some(())
    });
}

#[test]
fn sd_notify_ready_watchdog_reload_and_stopping_then_exit_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind notify socket");
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let mut gw = Gateway::new(dir.path(), "")
        .env("NOTIFY_SOCKET", &sock_path.display().to_string())
        .env("WATCHDOG_USEC", "400000");
    gw.spawn();
    let mut seen = Vec::new();
    notifications_until(&sock, &mut seen, "READY=1");
    assert!(
        seen.iter().any(|m| m.contains("STATUS=running")),
        "{seen:?}"
    );
    // The API answers once READY=1 was sent: all actors are started.
    assert_eq!(gw.get_json("/api/v1/health")["status"], "ok");
    seen.clear();
    notifications_until(&sock, &mut seen, "WATCHDOG=1");

    // An invalid new config is refused and the old one keeps running.
    let good = std::fs::read_to_string(&gw.config).expect("config");
    std::fs::write(&gw.config, format!("{good}\n[bogus]\nx = 1\n")).expect("write");
    seen.clear();
    gw.signal("HUP");
    notifications_until(&sock, &mut seen, "RELOADING=1");
    notifications_until(&sock, &mut seen, "READY=1");
    assert!(
        seen.iter().any(|m| m.contains("new configuration refused")),
        "{seen:?}"
    );
    assert_eq!(gw.get_json("/api/v1/health")["status"], "ok");
    std::fs::write(&gw.config, &good).expect("write");
    seen.clear();
    gw.signal("HUP");
    notifications_until(&sock, &mut seen, "READY=1");
    assert!(
        seen.iter().any(|m| m.contains("configuration reloaded")),
        "{seen:?}"
    );
    let audit = audit_log(&gw);
    let recorded = |action: &str| audit.iter().any(|(a, _, _)| a == action);
    assert!(
        recorded("config-reload") && recorded("config-reload-refused"),
        "{audit:?}"
    );

    seen.clear();
    gw.signal("TERM");
    notifications_until(&sock, &mut seen, "STOPPING=1");
    assert_eq!(
        gw.wait(Duration::from_secs(10)),
        Some(0),
        "exit 0 within 10 s"
    );
}

#[test]
fn status_page_api_metrics_and_cli_agree() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut gw = Gateway::new(dir.path(), "");
    gw.start();
    let body = json!({ "source": "kiosk-1", "id": "s1", "kind": "test.status", "key": "patient-secret-42", "payload": { "name": "Jane Roe" } });
    assert_eq!(gw.post_event(&body).0, 202);
    for (bad, field) in [
        (
            json!({ "source": "kiosk-1", "kind": "a/b", "key": "k", "payload": {} }),
            "kind",
        ),
        (
            json!({ "source": "", "kind": "a", "key": "k", "payload": {} }),
            "source",
        ),
        (
            json!({ "source": "s", "kind": "a", "key": "k", "payload": {}, "occurred_at": "yesterday" }),
            "occurred_at",
        ),
        (json!({ "source": "s", "kind": "a", "key": "k" }), "payload"),
    ] {
        let (status, reply) = gw.post_event(&bad);
        assert_eq!(status, 400, "{bad}");
        assert!(
            reply["error"].as_str().unwrap_or("").contains(field),
            "{reply}"
        );
    }
    let page = gw.get_text("/");
    assert!(page.contains("Outbound backlog") && page.contains("Dead letters"));
    assert!(
        !page.contains("patient-secret-42") && !page.contains("Jane Roe"),
        "no patient data on the page"
    );
    let backlog = gw.get_json("/api/v1/backlog");
    assert!(
        backlog["destinations"]["cloud"]["pending"]
            .as_u64()
            .unwrap_or(0)
            >= 2,
        "{backlog}"
    );
    let metrics = gw.get_text("/metrics");
    for name in [
        "clinic_gateway_journal_appends_total",
        "clinic_gateway_journal_commit_seconds_bucket{le=\"+Inf\"}",
        "clinic_gateway_deliveries_total",
        "clinic_gateway_retries_total",
        "clinic_gateway_dead_letters_total",
        "clinic_gateway_actor_restarts_total",
        "clinic_gateway_backlog_rows{destination=\"cloud\",state=\"pending\"}",
    ] {
        assert!(metrics.contains(name), "{name} missing:\n{metrics}");
    }
    let out = gw.cli(&["status", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(status["facility"], "test-clinic");
    let out = gw.cli(&["journal", "stats", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        stats["schema_version"],
        clinic_gateway::journal::store::SCHEMA_VERSION
    );
    // Cross-site form posts are refused.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let r = agent
        .post(&gw.url("/api/v1/dlq/replay"))
        .header("origin", "http://evil.example")
        .send_json(json!({ "destination": "cloud", "all": true }))
        .expect("post");
    assert_eq!(r.status().as_u16(), 403);
}

/// A small tmpfs standing in for a filling disk; unmounted on drop.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(dir: &std::path::Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(dir).expect("mkdir");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("mount");
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs to fill a disk and needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk(dir.to_path_buf())
    }

    fn grow(&self, size: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .expect("remount")
            .success();
        assert!(ok, "remount");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn full_disk_refuses_inbound_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Room for the journal with every domain's tables and some items, then full.
    let disk = SmallDisk::mount(&dir.path().join("data"), "3m");
    let mut gw = Gateway::new(dir.path(), "");
    gw.start();
    let mut acked = BTreeSet::new();
    let refusal = (0..5000)
        .find_map(|i| {
            let body = json!({ "source": "kiosk-1", "id": format!("d{i}"), "kind": "test.disk", "key": format!("k{}", i % 3), "payload": { "n": i, "pad": "p".repeat(4000) } });
            match gw.post_event(&body) {
                (202, _) => {
                    acked.insert(i as u64);
                    None
                }
                other => Some(other),
            }
        })
        .expect("the disk fills up");
    assert_eq!(refusal.0, 507, "{}", refusal.1);
    assert!(
        refusal.1["error"]
            .as_str()
            .unwrap_or("")
            .contains("disk full"),
        "{}",
        refusal.1
    );
    assert!(acked.len() > 50, "some items were accepted first");
    // Still alive and answering while the disk is full.
    assert_eq!(gw.get_json("/api/v1/health")["journal"], "ok");
    gw.signal("TERM");
    assert_eq!(gw.wait(Duration::from_secs(10)), Some(0));

    // Room is made; every acknowledged item is still there and goes out.
    disk.grow("64m");
    deliver_all_through_a_new_relay(&mut gw, dir.path(), &acked);
}
