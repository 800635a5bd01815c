//! SMS (or voice) through an HTTP API, one code path for Kannel's `sendsms` (`GET` with a
//! `dlr-url` back to the gateway) and Twilio-style JSON APIs (`POST` of a form, the message id
//! read from the answer, a status callback): the request is the provider's `params`, each a
//! template over `{to}`, `{text}`, `{dlr_url}`, `{password}` and `{message}`.

use super::SendError;
use super::config::{HttpConfig, HttpMethod};
use super::protocol::Route;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One HTTP provider.
pub struct HttpApi {
    http: reqwest::Client,
    config: HttpConfig,
    password: Option<String>,
    /// The receipt URL of this provider, without the message's part.
    receipts: Option<String>,
}

impl HttpApi {
    /// The client for `config`; `receipt_base`: the gateway's URL as providers reach it.
    pub fn new(
        name: &str,
        config: &HttpConfig,
        timeout: Duration,
        receipt_base: Option<&str>,
        resolve: impl Fn(&Path) -> PathBuf,
    ) -> Result<HttpApi, String> {
        // reqwest is built without a default crypto provider: ring is the project's provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("clinic-gateway/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| e.to_string())?;
        let password = match &config.password_file {
            Some(f) => {
                let path = resolve(f);
                Some(
                    std::fs::read_to_string(&path)
                        .map_err(|e| format!("{}: {e}", path.display()))?
                        .trim_end_matches(['\r', '\n'])
                        .to_string(),
                )
            }
            None => None,
        };
        Ok(HttpApi {
            http,
            config: config.clone(),
            password,
            receipts: receipt_base.map(|b| {
                format!(
                    "{}/api/v1/messaging/receipts/{name}",
                    b.trim_end_matches('/')
                )
            }),
        })
    }

    /// How long (ms) a message it took may wait for its receipt: the validity it was told,
    /// when its receipts reach the gateway.
    pub fn validity_ms(&self) -> Option<i64> {
        let told_receipts =
            self.receipts.is_some() && self.config.params.values().any(|v| v.contains("{dlr_url}"));
        if !told_receipts || self.config.channel != super::config::Channel::Sms {
            return None;
        }
        self.config.validity_ms()
    }

    /// The value of one parameter template.
    fn fill(&self, template: &str, id: i64, route: &Route) -> String {
        // Kannel replaces `%d` with the receipt's type and `%A` with the SMSC's receipt text
        // when it calls the URL; other providers name the message by our id.
        let dlr = self
            .receipts
            .as_ref()
            .map(|r| format!("{r}?message={id}&status=%d&answer=%A"))
            .unwrap_or_default();
        let mut out = String::with_capacity(template.len() + route.body.len());
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            let Some(close) = after.find('}') else {
                // Validation refused such a template; the text is kept as it is.
                out.push_str(&rest[open..]);
                return out;
            };
            match &after[..close] {
                "to" => out.push_str(&route.address),
                "text" => out.push_str(&route.body),
                "dlr_url" => out.push_str(&dlr),
                "password" => out.push_str(self.password.as_deref().unwrap_or_default()),
                "message" => out.push_str(&id.to_string()),
                "validity_s" => {
                    out.push_str(&self.config.validity_s.unwrap_or_default().to_string());
                }
                "validity_min" => {
                    let seconds = self.config.validity_s.unwrap_or_default();
                    out.push_str(&seconds.div_ceil(60).to_string());
                }
                other => {
                    out.push('{');
                    out.push_str(other);
                    out.push('}');
                }
            }
            rest = &after[close + 1..];
        }
        out.push_str(rest);
        out
    }

    /// Asks the API to send `route` for notification `id`; answers the provider's id for it
    /// when `id_pointer` finds one in a JSON answer.
    pub async fn send(&self, id: i64, route: &Route) -> Result<Option<String>, SendError> {
        let params: Vec<(&str, String)> = self
            .config
            .params
            .iter()
            .map(|(k, v)| (k.as_str(), self.fill(v, id, route)))
            .collect();
        let mut request = match self.config.method {
            HttpMethod::Get => self.http.get(&self.config.url).query(&params),
            HttpMethod::PostForm => self.http.post(&self.config.url).form(&params),
            HttpMethod::PostJson => {
                let body: serde_json::Map<String, serde_json::Value> = params
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), serde_json::Value::String(v)))
                    .collect();
                self.http
                    .post(&self.config.url)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(serde_json::Value::Object(body).to_string())
            }
        };
        if let Some(user) = &self.config.username {
            request = request.basic_auth(user, self.password.as_deref());
        }
        let answer = request
            .send()
            .await
            // reqwest's error names the URL, which holds the number and text for a GET: only
            // its kind is kept.
            .map_err(|e| SendError::Unavailable(format!("HTTP request failed ({})", kind(&e))))?;
        let status = answer.status();
        if status.is_success() {
            let Some(pointer) = &self.config.id_pointer else {
                return Ok(None);
            };
            // The provider took the message whatever its answer's body: sending it again
            // would send it twice, so an unreadable id only costs its receipt.
            let bytes = answer.bytes().await.unwrap_or_default();
            let Ok(body) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
                tracing::warn!("provider's answer is not JSON: its receipt cannot be matched");
                return Ok(None);
            };
            return Ok(body.pointer(pointer).and_then(|v| match v {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Number(n) => Some(n.to_string()),
                _ => None,
            }));
        }
        // The answer's body may repeat the number or the text: only the status is kept.
        let why = format!("HTTP {status}");
        if status.is_client_error() && !matches!(status.as_u16(), 408 | 429) {
            Err(SendError::Refused(why))
        } else {
            Err(SendError::Unavailable(why))
        }
    }
}

fn kind(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "transport error"
    }
}
