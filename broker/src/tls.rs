//! rustls server configuration (ring provider) from PEM material.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::{BrokerError, TlsConfig};

fn certs(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, BrokerError> {
    let certs: Result<Vec<_>, _> = rustls_pemfile::certs(&mut pem.as_bytes()).collect();
    let certs = certs.map_err(|e| BrokerError::Tls(format!("{what}: invalid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(BrokerError::Tls(format!(
            "{what}: no certificate found in PEM"
        )));
    }
    Ok(certs)
}

fn key(pem: &str) -> Result<PrivateKeyDer<'static>, BrokerError> {
    rustls_pemfile::private_key(&mut pem.as_bytes())
        .map_err(|e| BrokerError::Tls(format!("private key: invalid PEM: {e}")))?
        .ok_or_else(|| BrokerError::Tls("private key: no key found in PEM".to_string()))
}

pub(crate) fn acceptor(tls: &TlsConfig) -> Result<tokio_rustls::TlsAcceptor, BrokerError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| BrokerError::Tls(format!("protocol versions: {e}")))?;
    let builder = match &tls.client_ca_pem {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certs(ca, "client CA")? {
                roots
                    .add(c)
                    .map_err(|e| BrokerError::Tls(format!("client CA: {e}")))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| BrokerError::Tls(format!("client CA: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(
            certs(&tls.cert_pem, "server certificate")?,
            key(&tls.key_pem)?,
        )
        .map_err(|e| BrokerError::Tls(format!("server certificate/key: {e}")))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
