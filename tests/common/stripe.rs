//! A payment processor: `localstripe` (PyPI, pinned in tests/peers/requirements.txt), a
//! stateful Stripe API with PaymentIntents and signed webhooks, on its own port; killed on
//! drop. The test plays the patient at the hosted page or terminal through its API.

use super::{free_port, wait_for};
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The secret key the gateway and the test use (localstripe takes any `sk_…`).
pub const KEY: &str = "sk_test_clinic";

pub struct Stripe {
    pub port: u16,
    child: Option<Child>,
    /// What it logged (its access log, and each webhook delivery's outcome).
    log: Arc<Mutex<Vec<String>>>,
}

impl Stripe {
    pub fn start() -> Stripe {
        let port = free_port();
        // `--from-scratch`: nothing of another instance's state (it keeps one file in /tmp).
        let mut child = Command::new("python3")
            .args([
                "-m",
                "localstripe",
                "--port",
                &port.to_string(),
                "--from-scratch",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 with localstripe (scripts/test-deps.sh)");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr");
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                lines.lock().expect("log").push(line);
            }
        });
        let mut s = Stripe {
            port,
            child: Some(child),
            log,
        };
        let c = s.child.as_mut().expect("child");
        wait_for("localstripe", Duration::from_secs(20), || {
            if let Ok(Some(status)) = c.try_wait() {
                panic!("localstripe exited with {status} (scripts/test-deps.sh)");
            }
            TcpStream::connect(("127.0.0.1", port)).ok()
        });
        s
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into()
    }

    /// A form POST with the secret key; the status and the JSON answer.
    pub fn post(&self, path: &str, form: &[(&str, &str)]) -> (u16, serde_json::Value) {
        let mut r = Self::agent()
            .post(&format!("{}{path}", self.url()))
            .header("Authorization", &format!("Bearer {KEY}"))
            .send_form(form.iter().copied())
            .unwrap_or_else(|e| panic!("POST {path} to localstripe: {e}"));
        let status = r.status().as_u16();
        (
            status,
            r.body_mut().read_json().unwrap_or(serde_json::Value::Null),
        )
    }

    pub fn get(&self, path: &str) -> serde_json::Value {
        Self::agent()
            .get(&format!("{}{path}", self.url()))
            .header("Authorization", &format!("Bearer {KEY}"))
            .call()
            .unwrap_or_else(|e| panic!("GET {path} from localstripe: {e}"))
            .body_mut()
            .read_json()
            .expect("json")
    }

    /// Sends its events to `url`, signed with `secret`, under the webhook id `id` (a second
    /// id to the same URL delivers every event twice).
    pub fn webhook(&self, id: &str, url: &str, secret: &str) {
        let (status, _) = self.post(
            &format!("/_config/webhooks/{id}"),
            &[("url", url), ("secret", secret)],
        );
        assert_eq!(status, 200, "webhook configured");
    }

    /// The patient pays intent `intent` with card `number`: the payment method the hosted
    /// page or terminal makes, attached to the intent, confirmed. Answers the confirm's
    /// status (402 when declined).
    pub fn pay(&self, intent: &str, number: &str) -> u16 {
        let (status, pm) = self.post(
            "/v1/payment_methods",
            &[
                ("type", "card"),
                ("card[number]", number),
                ("card[exp_month]", "12"),
                ("card[exp_year]", "2030"),
                ("card[cvc]", "123"),
            ],
        );
        assert_eq!(status, 200, "{pm}");
        let pm = pm["id"].as_str().expect("payment method id");
        let (status, i) = self.post(
            &format!("/v1/payment_intents/{intent}"),
            &[("payment_method", pm)],
        );
        assert_eq!(status, 200, "{i}");
        self.post(&format!("/v1/payment_intents/{intent}/confirm"), &[])
            .0
    }

    /// How many times it logged `text`.
    pub fn logged(&self, text: &str) -> usize {
        self.log
            .lock()
            .expect("log")
            .iter()
            .filter(|l| l.contains(text))
            .count()
    }

    /// Freezes it (SIGSTOP): connections are accepted by the kernel, nothing answers.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// Thaws it (SIGCONT); what it was asked meanwhile is answered now.
    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .expect("kill");
        assert!(ok.success());
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Stripe {
    fn drop(&mut self) {
        self.kill();
    }
}
