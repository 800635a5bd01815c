//! The FHIR R4 test server (@medplum/fhir-router in node, `tests/peers/fhir`, installed by
//! scripts/test-deps.sh), started from the repository on a loopback port.

use super::{free_port, wait_for};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The identifier system of the test patients' MRNs.
pub const MRN: &str = "urn:oid:1.2.3.4.5";

/// The FHIR server on a loopback port; its data survives a restart through a state file.
pub struct FhirServer {
    pub port: u16,
    state: PathBuf,
    env: Vec<(String, String)>,
    child: Option<Child>,
    log: Arc<Mutex<Vec<String>>>,
}

impl FhirServer {
    pub fn start(dir: &Path, env: &[(&str, &str)]) -> FhirServer {
        let mut s = FhirServer {
            port: free_port(),
            state: dir.join("fhir-state.json"),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            child: None,
            log: Arc::default(),
        };
        s.restart();
        s
    }

    pub fn restart(&mut self) {
        let peer = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/fhir");
        assert!(
            peer.join("node_modules/@medplum/fhir-router").is_dir(),
            "the FHIR test server's packages are missing: run scripts/test-deps.sh"
        );
        let mut child = Command::new("node")
            .arg(peer.join("server.js"))
            .arg(self.port.to_string())
            .env("FHIR_STATE_FILE", &self.state)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("node must be installed (scripts/test-deps.sh)");
        let err = child.stderr.take().expect("stderr");
        let log = self.log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                log.lock().expect("lock").push(line);
            }
        });
        let port = self.port;
        let log = self.log.clone();
        wait_for("the FHIR server to listen", Duration::from_secs(60), || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "the FHIR server exited with {status}: {}",
                    log.lock().expect("lock").join("\n")
                );
            }
            let listening = log
                .lock()
                .expect("lock")
                .iter()
                .any(|l| l.starts_with("listening") && l.contains(&format!(":{port}/")));
            listening.then_some(())
        });
        self.child = Some(child);
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.log.lock().expect("lock").clear();
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}/fhir/R4", self.port)
    }

    pub fn log(&self) -> Vec<String> {
        self.log.lock().expect("lock").clone()
    }

    fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into()
    }

    /// A request to the server as the EHR's other users make it.
    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base());
        let auth = self
            .env
            .iter()
            .find(|(k, _)| k == "FHIR_BEARER_TOKEN")
            .map(|(_, t)| format!("Bearer {t}"))
            .unwrap_or_default();
        let agent = Self::agent();
        let mut resp = match (method, body) {
            ("GET", _) => agent.get(&url).header("Authorization", &auth).call(),
            ("POST", Some(b)) => agent
                .post(&url)
                .header("Authorization", &auth)
                .header("Content-Type", "application/fhir+json")
                .send(b.to_string()),
            ("PUT", Some(b)) => agent
                .put(&url)
                .header("Authorization", &auth)
                .header("Content-Type", "application/fhir+json")
                .send(b.to_string()),
            ("DELETE", None) => agent.delete(&url).header("Authorization", &auth).call(),
            _ => panic!("unsupported {method}"),
        }
        .expect("FHIR request");
        let status = resp.status().as_u16();
        let v: Value = resp.body_mut().read_json().expect("FHIR JSON");
        assert!(status < 300, "{method} {path}: {status} {v}");
        v
    }

    pub fn create_patient(&self, mrn: &str, family: &str, given: &str, birth: &str) -> Value {
        self.call(
            "POST",
            "/Patient",
            Some(json!({
                "resourceType": "Patient",
                "identifier": [{ "system": MRN, "value": mrn }],
                "name": [{ "use": "official", "family": family, "given": [given] }],
                "birthDate": birth,
                "extension": [{ "url": "urn:ehr:ext", "valueString": "kept" }]
            })),
        )
    }

    pub fn stats(&self) -> Value {
        let mut resp = Self::agent()
            .get(&format!("http://127.0.0.1:{}/_peer/stats", self.port))
            .call()
            .expect("stats");
        resp.body_mut().read_json().expect("stats JSON")
    }
}

impl Drop for FhirServer {
    fn drop(&mut self) {
        self.kill();
    }
}
