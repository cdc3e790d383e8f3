//! TLS client configuration (rustls, ring provider) built from the `ssl_*` options.
//!
//! Mirrors the Python driver: TLS is on when `ssl` is true or `ssl_ca_file` /
//! `ssl_cert_file` is set; `ssl=true` without a CA file uses the system CA
//! bundle; the server name checked (and sent as SNI) is the URL host, or the
//! virtual host when `ssl_verify_vhost` is set; the client identity is
//! `ssl_cert_file` + `ssl_key_file`.

use std::io::BufReader;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

/// The TLS settings the engine needs, extracted from the options.
#[derive(Clone, Debug, Default)]
pub(crate) struct TlsSettings {
    pub enabled: bool,
    pub ca_file: Option<String>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    /// Whether `ssl_key_password` is set (the secret itself is not kept here:
    /// encrypted keys are not supported, see [`read_key`]).
    pub key_password_set: bool,
    pub verify_vhost: bool,
}

impl TlsSettings {
    /// Builds the rustls connector (ring provider). Errors name the file at fault.
    pub(crate) fn connector(&self) -> Result<TlsConnector, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("tls protocol versions: {e}"))?;
        let mut roots = RootCertStore::empty();
        match &self.ca_file {
            Some(path) => {
                for cert in read_certs(path)? {
                    roots
                        .add(cert)
                        .map_err(|e| format!("ssl_ca_file {path}: {e}"))?;
                }
            }
            None => {
                let native = rustls_native_certs::load_native_certs();
                for cert in native.certs {
                    let _ = roots.add(cert);
                }
                if roots.is_empty() {
                    return Err("ssl=true but no ssl_ca_file and no system CA bundle".into());
                }
            }
        }
        let builder = builder.with_root_certificates(roots);
        let config = match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => {
                let chain = read_certs(cert)?;
                let key = read_key(key, self.key_password_set)?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("ssl_cert_file/ssl_key_file: {e}"))?
            }
            (Some(cert), None) => {
                // The key may be in the same PEM file as the certificate.
                let chain = read_certs(cert)?;
                let key = read_key(cert, self.key_password_set)?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("ssl_cert_file: {e}"))?
            }
            _ => builder.with_no_client_auth(),
        };
        Ok(TlsConnector::from(Arc::new(config)))
    }

    /// The name to verify and send as SNI.
    pub(crate) fn server_name(
        &self,
        host: &str,
        vhost: Option<&str>,
    ) -> Result<ServerName<'static>, String> {
        let name = match vhost {
            Some(v) if self.verify_vhost && !v.is_empty() => v,
            _ => host,
        };
        let name = name.trim_start_matches('[').trim_end_matches(']');
        ServerName::try_from(name.to_string()).map_err(|e| format!("tls server name {name:?}: {e}"))
    }
}

fn read_certs(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{path}: {e}"))?;
    let certs: Result<Vec<_>, _> = rustls_pemfile::certs(&mut BufReader::new(file)).collect();
    let certs = certs.map_err(|e| format!("{path}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{path}: no PEM certificate found"));
    }
    Ok(certs)
}

/// Reads the first PEM private key of `path`.
///
/// Encrypted keys (PKCS#8 `ENCRYPTED PRIVATE KEY`, or a traditional key with
/// `Proc-Type: 4,ENCRYPTED`) are refused with a clear error whether or not
/// `ssl_key_password` is set: rustls has no decryption, and the driver does
/// not carry its own PEM decryption.
fn read_key(path: &str, password_set: bool) -> Result<PrivateKeyDer<'static>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
    if is_encrypted_pem(&bytes) {
        return Err(if password_set {
            format!(
                "{path}: the private key is encrypted; encrypted keys are not supported, so \
                 ssl_key_password cannot be used (decrypt the key first, e.g. \
                 `openssl pkey -in KEY -out PLAIN_KEY`, and unset ssl_key_password)"
            )
        } else {
            format!(
                "{path}: the private key is encrypted; encrypted keys are not supported \
                 (decrypt the key first, e.g. `openssl pkey -in KEY -out PLAIN_KEY`)"
            )
        });
    }
    let key = rustls_pemfile::private_key(&mut BufReader::new(bytes.as_slice()))
        .map_err(|e| format!("{path}: {e}"))?
        .ok_or_else(|| format!("{path}: no PEM private key found"))?;
    if password_set {
        tracing::debug!(key = %path, "ssl_key_password is set but the key is not encrypted; ignored");
    }
    Ok(key)
}

/// Whether a PEM file holds an encrypted private key.
fn is_encrypted_pem(bytes: &[u8]) -> bool {
    let text = String::from_utf8_lossy(bytes);
    text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----")
        || text
            .lines()
            .any(|l| l.trim().starts_with("Proc-Type:") && l.contains("ENCRYPTED"))
}

#[cfg(test)]
mod tests {
    use super::is_encrypted_pem;

    #[test]
    fn encrypted_pem_detection() {
        assert!(is_encrypted_pem(
            b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIHs\n-----END ENCRYPTED PRIVATE KEY-----\n"
        ));
        assert!(is_encrypted_pem(
            b"-----BEGIN EC PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-256-CBC,19F3\n\nDBrd\n-----END EC PRIVATE KEY-----\n"
        ));
        assert!(!is_encrypted_pem(
            b"-----BEGIN PRIVATE KEY-----\nMIGH\n-----END PRIVATE KEY-----\n"
        ));
    }
}
