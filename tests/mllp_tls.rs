//! MLLP over TLS with client certificates (IHE ATNA) and the listener's allow-list, against
//! the Python `hl7` package's MLLP client wrapped in Python's `ssl`.

mod common;

use common::hl7_peer::hl7_gateway_with;
use common::*;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// `[connectors.hl7v2.tls]` requiring client certificates from the test CA.
fn tls_table(certs: &Certs) -> String {
    format!(
        "[connectors.hl7v2.tls]\ncert_file = {:?}\nkey_file = {:?}\nclient_ca_file = {:?}\n",
        certs.path("server.crt"),
        certs.path("server.key"),
        certs.path("ca.crt"),
    )
}

/// The client certificate the test CA signed, CN `gateway`.
const TRUSTED: Option<(&str, &str)> = Some(("client.crt", "client.key"));

/// An ADT^A04 from `application` at `facility` with control id `control`.
fn a04(application: &str, facility: &str, control: &str) -> String {
    format!(
        "MSH|^~\\&|{application}|{facility}|EDGE|CLINIC|20261124140500||ADT^A04|{control}|P|2.5\n\
         PID|1||901^^^CLINIC^MR||SECRET^PATIENT||19700101|F\n"
    )
}

/// Sends `messages` over TLS, with the client certificate and key files `identity` (in
/// `certs`) if any; one line per message: `ACK ...`, or `NONE ...` once nothing came back.
fn tls_send(
    certs: &Certs,
    port: u16,
    identity: Option<(&str, &str)>,
    messages: &[String],
) -> Vec<String> {
    let file = certs.path(&format!("messages-{}.hl7", free_port()));
    std::fs::write(&file, messages.join("\n")).expect("message file");
    let mut cmd = peer_script("mllp_tls_send.py");
    cmd.arg(port.to_string())
        .arg(certs.path("ca.crt"))
        .arg(&file);
    if let Some((cert, key)) = identity {
        cmd.arg(certs.path(cert)).arg(certs.path(key));
    }
    let out = cmd
        .output()
        .expect("python3 with the hl7 package (scripts/test-deps.sh)");
    assert!(
        out.status.success(),
        "mllp_tls_send.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// How many inbound items from an HL7 sender the journal holds for a control id.
fn committed(gw: &Gateway, control_id: &str) -> usize {
    journal_items(gw, &["--source-id", control_id])
        .iter()
        .filter(|i| i["source"].as_str().is_some_and(|s| s.starts_with("hl7:")))
        .count()
}

/// Waits for the audit record of the refusal of `control_id` and returns its detail.
fn refusal_audited(gw: &Gateway, control_id: &str) -> serde_json::Value {
    wait_for(
        "the refusal's audit record",
        Duration::from_secs(20),
        || {
            audit_log(gw)
                .into_iter()
                .filter(|(action, actor, _)| {
                    action == "hl7v2.sender_refused" && actor == "hl7v2-mllp"
                })
                .filter_map(|(_, _, detail)| {
                    serde_json::from_str::<serde_json::Value>(&detail).ok()
                })
                .find(|d| d["control_id"] == control_id)
        },
    )
}

#[test]
fn a_trusted_client_is_acked_and_an_untrusted_one_cannot_connect() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = Certs::generate(dir.path());
    let (gw, port) = hl7_gateway_with(dir.path(), &tls_table(&certs));

    let acks = tls_send(&certs, port, TRUSTED, &[a04("HIS", "HOSP", "TLS-1")]);
    assert_eq!(acks.len(), 1, "{acks:?}");
    assert!(
        acks[0].starts_with("ACK ") && acks[0].contains("MSA|AA|TLS-1"),
        "{acks:?}"
    );
    assert_eq!(committed(&gw, "TLS-1"), 1);

    let without = tls_send(&certs, port, None, &[a04("HIS", "HOSP", "TLS-2")]);
    assert!(without.iter().all(|l| l.starts_with("NONE")), "{without:?}");
    let foreign = tls_send(
        &certs,
        port,
        Some(("other-ca.crt", "other.key")),
        &[a04("HIS", "HOSP", "TLS-3")],
    );
    assert!(foreign.iter().all(|l| l.starts_with("NONE")), "{foreign:?}");
    wait_for(
        "the refused handshakes logged",
        Duration::from_secs(10),
        || (gw.log_text().matches("MLLP TLS handshake refused").count() >= 2).then_some(()),
    );
    assert_eq!(committed(&gw, "TLS-2") + committed(&gw, "TLS-3"), 0);
}

#[test]
fn a_revoked_client_certificate_cannot_connect_and_a_new_list_counts_without_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = Certs::generate(dir.path());
    certs.client("lab-2", Certs::CA);
    let crl = certs.crl(&["lab-2.crt"]);
    let table = format!("{}client_crl_file = {crl:?}\n", tls_table(&certs));
    let (gw, port) = hl7_gateway_with(dir.path(), &table);
    let lab2 = Some(("lab-2.crt", "lab-2.key"));

    let acks = tls_send(&certs, port, TRUSTED, &[a04("HIS", "HOSP", "CRL-1")]);
    assert!(acks[0].contains("MSA|AA|CRL-1"), "{acks:?}");
    let revoked = tls_send(&certs, port, lab2, &[a04("LAB", "HOSP", "CRL-2")]);
    assert!(revoked.iter().all(|l| l.starts_with("NONE")), "{revoked:?}");
    wait_for(
        "the revoked certificate's handshake refused",
        Duration::from_secs(10),
        || {
            gw.log_text()
                .lines()
                .any(|l| {
                    l.contains("MLLP TLS handshake refused") && l.to_lowercase().contains("revoked")
                })
                .then_some(())
        },
    );

    // The CA lifts lab-2's revocation and revokes the first client's: the listener reads the
    // new list at the next handshake.
    certs.crl(&["client.crt"]);
    let now_allowed = tls_send(&certs, port, lab2, &[a04("LAB", "HOSP", "CRL-3")]);
    assert!(now_allowed[0].contains("MSA|AA|CRL-3"), "{now_allowed:?}");
    let now_revoked = tls_send(&certs, port, TRUSTED, &[a04("HIS", "HOSP", "CRL-4")]);
    assert!(
        now_revoked.iter().all(|l| l.starts_with("NONE")),
        "{now_revoked:?}"
    );

    // A list that cannot be read leaves the last good one in place.
    std::fs::write(
        &crl,
        "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
    )
    .expect("crl");
    let still_revoked = tls_send(&certs, port, TRUSTED, &[a04("HIS", "HOSP", "CRL-5")]);
    assert!(
        still_revoked.iter().all(|l| l.starts_with("NONE")),
        "{still_revoked:?}"
    );
    wait_for(
        "the unusable list reported",
        Duration::from_secs(10),
        || {
            gw.log_text()
                .contains("certificate revocation list not usable")
                .then_some(())
        },
    );
    let still_allowed = tls_send(&certs, port, lab2, &[a04("LAB", "HOSP", "CRL-6")]);
    assert!(
        still_allowed[0].contains("MSA|AA|CRL-6"),
        "{still_allowed:?}"
    );
    // The CLI reading the journal checks the config, which would name the broken list.
    certs.crl(&["client.crt"]);
    for (control, want) in [
        ("CRL-1", 1),
        ("CRL-2", 0),
        ("CRL-3", 1),
        ("CRL-4", 0),
        ("CRL-5", 0),
        ("CRL-6", 1),
    ] {
        assert_eq!(committed(&gw, control), want, "{control}");
    }
}

#[test]
fn an_allowed_certificate_with_a_disallowed_msh3_is_not_acked_and_is_audited() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = Certs::generate(dir.path());
    let allow =
        "[[connectors.hl7v2.allow]]\nsubject = \"gateway\"\nsending_application = \"HIS\"\n";
    let (gw, port) = hl7_gateway_with(dir.path(), &format!("{}{allow}", tls_table(&certs)));

    let replies = tls_send(
        &certs,
        port,
        TRUSTED,
        &[
            a04("HIS", "HOSP", "OK-1"),
            a04("LAB", "HOSP", "NO-1"),
            a04("HIS", "HOSP", "OK-2"),
        ],
    );
    assert_eq!(
        replies.len(),
        2,
        "the connection ends at the refusal: {replies:?}"
    );
    assert!(replies[0].contains("MSA|AA|OK-1"), "{replies:?}");
    assert!(replies[1].starts_with("NONE"), "{replies:?}");

    let detail = refusal_audited(&gw, "NO-1");
    assert_eq!(detail["subject"], "gateway", "{detail}");
    assert_eq!(detail["sending_application"], "LAB", "{detail}");
    assert_eq!(detail["sending_facility"], "HOSP", "{detail}");
    assert_eq!(committed(&gw, "OK-1"), 1);
    assert_eq!(committed(&gw, "NO-1"), 0);
    let log = gw.log_text();
    assert!(log.contains("not on the allow-list"), "{log}");
    assert!(!log.contains("SECRET"), "no PHI in the log");
}

/// Sends `message` in an MLLP frame on a plain connection; what came back until the gateway
/// closed it.
fn send_raw(port: u16, message: &str) -> Vec<u8> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let message = message.replace('\n', "\r");
    // The gateway may close before reading everything: only the reply matters.
    let _ = stream.write_all(&[b"\x0b", message.as_bytes(), b"\x1c\r"].concat());
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    reply
}

#[test]
fn a_connection_from_an_unlisted_network_is_closed_unanswered_and_audited() {
    let dir = tempfile::tempdir().expect("tempdir");
    let allow = "[[connectors.hl7v2.allow]]\naddress = \"10.0.0.0/8\"\n";
    let (gw, port) = hl7_gateway_with(dir.path(), &format!("max_frame_bytes = 1024\n{allow}"));
    let oversized = format!(
        "{}NTE|1||{}\n",
        a04("HIS", "HOSP", "BIG-1"),
        "x".repeat(2000)
    );
    assert!(send_raw(port, &oversized).is_empty(), "not even an AR");
    let detail = refusal_audited(&gw, "");
    assert!(
        detail["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with("127.0.0.1:")),
        "{detail}"
    );
    assert_eq!(committed(&gw, "BIG-1"), 0);
}

#[test]
fn the_source_address_allow_list_takes_only_its_networks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let allow = "[[connectors.hl7v2.allow]]\naddress = \"10.0.0.0/8\"\n\n\
                 [[connectors.hl7v2.allow]]\naddress = \"127.0.0.0/8\"\nsending_facility = \"HOSP\"\n";
    let (gw, port) = hl7_gateway_with(dir.path(), allow);

    let acks = hl7_peer::mllp_send(dir.path(), port, &a04("HIS", "HOSP", "NET-1"));
    assert!(
        acks.len() == 1 && acks[0].contains("MSA|AA|NET-1"),
        "{acks:?}"
    );

    let reply = send_raw(port, &a04("HIS", "ELSEWHERE", "NET-2"));
    assert!(
        reply.is_empty(),
        "no answer: {:?}",
        String::from_utf8_lossy(&reply)
    );
    let detail = refusal_audited(&gw, "NET-2");
    assert!(
        detail["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with("127.0.0.1:")),
        "{detail}"
    );
    assert_eq!(committed(&gw, "NET-2"), 0);
}

#[test]
fn listener_tls_and_allow_list_problems_name_file_line_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gateway.toml");
    std::fs::write(
        &path,
        "[gateway]\nfacility_id = \"c\"\n\n[connectors.hl7v2]\nlisten = \"127.0.0.1:2575\"\n\n\
         [connectors.hl7v2.tls]\ncert_file = \"missing.crt\"\nkey_file = \"missing.key\"\n\n\
         [[connectors.hl7v2.allow]]\nsending_application = \"HIS\"\n\n\
         [[connectors.hl7v2.allow]]\nsubject = \"ehr\"\n",
    )
    .expect("write");
    let (code, stderr) = check_config(&path);
    assert_eq!(code, Some(2), "{stderr}");
    let file = path.display();
    for expected in [
        format!("{file}:8: connectors.hl7v2.tls.cert_file: cannot read"),
        format!("{file}:9: connectors.hl7v2.tls.key_file: cannot read"),
        format!(
            "{file}:15: connectors.hl7v2.allow[1].subject: needs connectors.hl7v2.tls.client_ca_file"
        ),
    ] {
        assert!(stderr.contains(&expected), "{expected}\n{stderr}");
    }
}
