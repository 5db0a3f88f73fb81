//! E-mails: rendered from the templates in `jobs/templates/` (a plain-text and an HTML part
//! each), and sent through lettre — SMTP when `SMTP_URL` is set, otherwise written as
//! `.eml` files under `MAIL_DIR`.

use std::path::PathBuf;

use lettre::message::{Mailbox, MultiPart, header};
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use minijinja::Environment;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("no template for job `{0}`")]
    UnknownJob(String),
    #[error("template: {0}")]
    Template(#[from] minijinja::Error),
    #[error("address `{0}`: {1}")]
    Address(String, lettre::address::AddressError),
    #[error("message: {0}")]
    Message(#[from] lettre::error::Error),
    #[error("SMTP: {0}")]
    Smtp(#[from] lettre::transport::smtp::Error),
    #[error("writing the .eml file: {0}")]
    File(#[from] lettre::transport::file::Error),
    #[error("SMTP_URL: {0}")]
    Url(String),
}

macro_rules! templates {
    ($($name:literal),* $(,)?) => {
        &[$(
            (concat!($name, ".txt"), include_str!(concat!("../templates/", $name, ".txt"))),
            (concat!($name, ".html"), include_str!(concat!("../templates/", $name, ".html"))),
        )*]
    };
}

const TEMPLATES: &[(&str, &str)] = templates![
    "welcome_email",
    "password_changed_email",
    "allocation_confirmation_email",
    "payment_received_email",
    "quota_warning",
    "payment_failed_email",
];

/// The subject line of each job's e-mail.
fn subject(job: &str) -> Option<&'static str> {
    Some(match job {
        "welcome_email" => "Welcome to Estate API",
        "password_changed_email" => "Your password was changed",
        "allocation_confirmation_email" => "Your plot allocation",
        "payment_received_email" => "Payment received",
        "quota_warning" => "You are close to your hourly API quota",
        "payment_failed_email" => "Your subscription payment failed",
        _ => return None,
    })
}

/// Whether `s` is an address lettre accepts, e.g. `Estate <no-reply@example.com>`.
pub fn is_mailbox(s: &str) -> bool {
    s.parse::<Mailbox>().is_ok()
}

/// An e-mail ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

pub struct Templates(Environment<'static>);

impl Templates {
    pub fn load() -> Result<Self, MailError> {
        let mut env = Environment::new();
        env.add_template("base.html", include_str!("../templates/base.html"))?;
        for (name, source) in TEMPLATES {
            env.add_template(name, source)?;
        }
        Ok(Templates(env))
    }

    /// Renders `job`'s e-mail from its payload (HTML parts are escaped).
    pub fn render(&self, job: &str, payload: &Value) -> Result<Rendered, MailError> {
        let subject = subject(job).ok_or_else(|| MailError::UnknownJob(job.into()))?;
        let mut context = payload.clone();
        if let Value::Object(map) = &mut context {
            map.insert("subject".into(), subject.into());
        }
        let text = self
            .0
            .get_template(&format!("{job}.txt"))?
            .render(&context)?;
        let html = self
            .0
            .get_template(&format!("{job}.html"))?
            .render(&context)?;
        Ok(Rendered {
            subject: subject.into(),
            text,
            html,
        })
    }
}

/// Where mail goes.
pub enum Mailer {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Files(AsyncFileTransport<Tokio1Executor>, PathBuf),
}

impl Mailer {
    /// SMTP when `smtp_url` is given (`smtp://host:port` plain, `smtps://` TLS, or with
    /// `?tls=required`), otherwise `.eml` files in `mail_dir`.
    pub fn new(smtp_url: Option<&str>, mail_dir: PathBuf) -> Result<Self, MailError> {
        match smtp_url {
            Some(url) => Ok(Mailer::Smtp(
                AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
                    .map_err(|e| MailError::Url(e.to_string()))?
                    .build(),
            )),
            None => {
                std::fs::create_dir_all(&mail_dir)
                    .map_err(|e| MailError::Url(format!("MAIL_DIR {}: {e}", mail_dir.display())))?;
                Ok(Mailer::Files(AsyncFileTransport::new(&mail_dir), mail_dir))
            }
        }
    }

    /// Sends one message with both parts. `message_id` is derived from the job's
    /// idempotency key, so a receiver can tell a resend of the same e-mail.
    pub async fn send(
        &self,
        from: &str,
        to: &str,
        message_id: &str,
        mail: &Rendered,
    ) -> Result<(), MailError> {
        let parse = |a: &str| {
            a.parse::<Mailbox>()
                .map_err(|e| MailError::Address(a.to_string(), e))
        };
        let message = Message::builder()
            .from(parse(from)?)
            .to(parse(to)?)
            .subject(&mail.subject)
            .message_id(Some(message_id.to_string()))
            .header(header::MIME_VERSION_1_0)
            .multipart(MultiPart::alternative_plain_html(
                mail.text.clone(),
                mail.html.clone(),
            ))?;
        match self {
            Mailer::Smtp(smtp) => {
                smtp.send(message).await?;
            }
            Mailer::Files(files, _) => {
                files.send(message).await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_email_job_renders_both_parts_and_escapes_html() {
        let templates = Templates::load().unwrap();
        let payloads = [
            (
                "welcome_email",
                json!({"email": "a@b.example", "full_name": "<Ada>"}),
            ),
            ("password_changed_email", json!({"email": "a@b.example"})),
            (
                "allocation_confirmation_email",
                json!({"client_name": "Bola", "plot_number": "P-1", "total_price": "2500000.00", "allocation_id": "x"}),
            ),
            (
                "payment_received_email",
                json!({"client_name": "Bola", "amount": "100.00", "balance": "0.00", "allocation_id": "x"}),
            ),
            (
                "quota_warning",
                json!({"threshold_percent": 80, "limit": 100}),
            ),
            (
                "payment_failed_email",
                json!({"invoice_id": "in_1", "amount_due": "99.00", "currency": "usd"}),
            ),
        ];
        for (job, payload) in payloads {
            let mail = templates.render(job, &payload).unwrap();
            assert!(!mail.text.is_empty() && !mail.html.is_empty(), "{job}");
            assert!(mail.html.contains("<html>"), "{job}");
        }
        let welcome = templates
            .render(
                "welcome_email",
                &json!({"email": "a@b.example", "full_name": "<Ada>"}),
            )
            .unwrap();
        assert!(welcome.text.contains("Hello <Ada>,"));
        assert!(welcome.html.contains("Hello &lt;Ada&gt;,"));
        let failed = templates
            .render(
                "payment_failed_email",
                &json!({"invoice_id": "in_1", "amount_due": "99.00", "currency": "usd"}),
            )
            .unwrap();
        assert!(failed.text.contains("99.00 USD"));
        assert!(templates.render("nope", &json!({})).is_err());
    }
}
