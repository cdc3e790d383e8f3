//! The one AMQP readiness probe: a broker is ready when an AMQP Open (SASL PLAIN with the client's
//! credentials, when it has users) succeeds. Every backend and `--url` use it.

use std::time::Duration;

use driver::url::TransportUrl;

use super::User;

/// Where to probe.
#[derive(Debug, Clone)]
pub struct Probe {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// SASL PLAIN credentials (raw: no URL parsing, so any password works).
    pub user: Option<User>,
    /// The port speaks TLS: only check that it accepts TCP connections (the TLS setup is the
    /// backend's business).
    pub tls: bool,
}

impl Probe {
    /// `127.0.0.1:port` with `user`.
    pub fn local(port: u16, user: Option<&User>) -> Probe {
        Probe {
            host: "127.0.0.1".into(),
            port,
            user: user.cloned(),
            tls: false,
        }
    }

    /// The first host of `url`, with its credentials.
    pub fn first_host(url: &TransportUrl, tls: bool) -> Option<Probe> {
        let h = url.hosts.first()?;
        Some(Probe {
            host: h.host.clone(),
            port: h.port,
            user: h.username.clone().map(|name| User {
                name,
                password: h.password.clone().unwrap_or_default(),
            }),
            tls,
        })
    }
}

enum Failure {
    /// Worth retrying (not listening yet, AMQP not up yet).
    Retry(String),
    /// Retrying cannot help (SASL refused the credentials).
    Fatal(String),
}

/// One AMQP Open; without a user, with no SASL layer first and then SASL ANONYMOUS (RabbitMQ 4.x
/// requires a SASL layer, where qpidd, the router and RabbitMQ 3.x also accept none).
async fn probe_once(p: &Probe) -> Result<(), Failure> {
    match open_once(p, false).await {
        Err(Failure::Retry(e)) if p.user.is_none() && !p.tls && !e.starts_with("connect ") => {
            open_once(p, true).await.map_err(|_| Failure::Retry(e))
        }
        r => r,
    }
}

async fn open_once(p: &Probe, anonymous: bool) -> Result<(), Failure> {
    let stream = tokio::net::TcpStream::connect((p.host.as_str(), p.port))
        .await
        .map_err(|e| Failure::Retry(format!("connect {}:{}: {e}", p.host, p.port)))?;
    let _ = stream.set_nodelay(true);
    if p.tls {
        return Ok(());
    }
    let builder = fe2o3_amqp::Connection::builder()
        .container_id(format!("harness-probe-{}", uuid::Uuid::new_v4()))
        .hostname(Some(p.host.as_str()));
    let builder = match &p.user {
        Some(u) => builder.sasl_profile(fe2o3_amqp::sasl_profile::SaslProfile::Plain {
            username: u.name.clone(),
            password: u.password.expose().to_string(),
        }),
        None if anonymous => builder.sasl_profile(fe2o3_amqp::sasl_profile::SaslProfile::Anonymous),
        None => builder,
    };
    match builder.open_with_stream(stream).await {
        Ok(mut conn) => {
            let _ = conn.close().await;
            Ok(())
        }
        Err(e @ fe2o3_amqp::connection::OpenError::SaslError { .. }) => {
            Err(Failure::Fatal(format!(
                "SASL refused the credentials of user '{}': {e}",
                p.user.as_ref().map(|u| u.name.as_str()).unwrap_or("")
            )))
        }
        Err(e) => Err(Failure::Retry(format!("AMQP open: {e}"))),
    }
}

/// Polls until an AMQP Open succeeds, fails for good, or `timeout` passes. Errors name host and
/// port, never credentials.
pub async fn wait_ready(p: &Probe, timeout: Duration) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut delay = Duration::from_millis(10);
    let mut last = "no attempt made".to_string();
    loop {
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Err(format!("timed out after {timeout:?}: {last}"));
        }
        match tokio::time::timeout(deadline - now, probe_once(p)).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(Failure::Fatal(e))) => return Err(e),
            Ok(Err(Failure::Retry(e))) => last = e,
            Err(_) => last = "probe timed out".to_string(),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(250));
    }
}
