//! Email over SMTP (lettre): STARTTLS or implicit TLS on rustls, AUTH with the password from
//! the provider's own file. A message's `Message-ID` is made from the notification's id, so a
//! receiving system can tell a resend after a crash from a new message.

use super::SendError;
use super::config::{SmtpConfig, SmtpSecurity};
use super::protocol::Route;
use lettre::message::{Mailbox, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::path::Path;
use std::time::Duration;

/// One SMTP provider's transport (it keeps a pool of connections).
pub struct Smtp {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// The domain of `Message-ID`s.
    domain: String,
}

impl Smtp {
    /// The transport for `config`; `resolve` turns the file's paths into real ones.
    pub fn new(
        config: &SmtpConfig,
        timeout: Duration,
        resolve: impl Fn(&Path) -> std::path::PathBuf,
    ) -> Result<Smtp, String> {
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.host)
            .port(config.port)
            .timeout(Some(timeout));
        if config.security != SmtpSecurity::None {
            let mut params = TlsParameters::builder(config.host.clone());
            if let Some(ca) = &config.ca_file {
                let path = resolve(ca);
                let pem = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                let cert =
                    Certificate::from_pem(&pem).map_err(|e| format!("{}: {e}", path.display()))?;
                params = params.add_root_certificate(cert);
            }
            let params = params.build_rustls().map_err(|e| e.to_string())?;
            builder = builder.tls(match config.security {
                SmtpSecurity::Tls => Tls::Wrapper(params),
                _ => Tls::Required(params),
            });
        }
        if let (Some(user), Some(file)) = (&config.username, &config.password_file) {
            let path = resolve(file);
            let password = std::fs::read_to_string(&path)
                .map_err(|e| format!("{}: {e}", path.display()))?
                .trim_end_matches(['\r', '\n'])
                .to_string();
            builder = builder.credentials(Credentials::new(user.clone(), password));
        }
        let from: Mailbox = config
            .from
            .parse()
            .map_err(|e| format!("from {:?}: {e}", config.from))?;
        let domain = from.email.domain().to_string();
        Ok(Smtp {
            transport: builder.build(),
            from,
            domain,
        })
    }

    /// Sends `route` for notification `id`; answers the `Message-ID`.
    pub async fn send(&self, id: i64, route: &Route) -> Result<Option<String>, SendError> {
        let to: Mailbox = route
            .address
            .parse()
            .map_err(|e| SendError::Refused(format!("address refused: {e}")))?;
        let message_id = format!("<notification-{id}@{}>", self.domain);
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(route.subject.clone().unwrap_or_default())
            .message_id(Some(message_id.clone()))
            .header(ContentType::TEXT_PLAIN)
            .body(route.body.clone())
            .map_err(|e| SendError::Refused(format!("message not built: {e}")))?;
        match self.transport.send(message).await {
            Ok(_) => Ok(Some(message_id)),
            // A 5xx answer refuses this message (its recipient, its content): retrying the
            // same server cannot help, another route may.
            Err(e) if e.is_permanent() => Err(SendError::Refused(format!("SMTP: {e}"))),
            Err(e) => Err(SendError::Unavailable(format!("SMTP: {e}"))),
        }
    }
}
