//! SASL PLAIN (success, failure, default realm) and TLS with generated certificates.

use std::time::Duration;

use broker::{Broker, BrokerConfig, Flavour, TlsConfig};
use driver::{ConnectErrorKind, RpcClient, Target, Transport};
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn sasl_plain_success_and_failure() {
    init_logs();
    let b = Broker::start(
        BrokerConfig::for_flavour(Flavour::Qpidd).with_user("stackqpid@QPID", "secret/qpid"),
    )
    .await
    .expect("broker");
    let port = b.local_addr().port();
    // percent-encoded password, realm appended by sasl_default_realm
    let ok = config(&format!(
        "amqp://stackqpid:secret%2Fqpid@127.0.0.1:{port}/?sasl_default_realm=QPID"
    ));
    let t = bounded("connect", Transport::connect(ok))
        .await
        .expect("authenticated");
    let _s = server(&t, Target::topic("sasl").with_server("s1"), "s1").await;
    let c = RpcClient::new(&t, Target::topic("sasl")).timeout(Duration::from_secs(15));
    assert_eq!(
        bounded(
            "call",
            c.call(Default::default(), "echo", args(json!({"a": 1})))
        )
        .await
        .expect("call"),
        json!({"a": 1})
    );
    t.close().await;

    let bad = config(&format!("amqp://stackqpid@QPID:wrong@127.0.0.1:{port}/"));
    let e = bounded("bad password", Transport::connect(bad))
        .await
        .expect_err("wrong password");
    assert_eq!(e.kind(), ConnectErrorKind::Auth, "{e}");
    assert!(!e.to_string().contains("wrong"), "password leaked: {e}");
    b.shutdown().await;
}

fn certs() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca =
        CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("ca key")).expect("ca");
    let leaf_key = KeyPair::generate().expect("leaf key");
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .expect("leaf params")
        .signed_by(&leaf_key, &ca)
        .expect("leaf");
    (ca.pem(), leaf.pem(), leaf_key.serialize_pem())
}

#[tokio::test]
async fn tls_with_generated_ca() {
    init_logs();
    let (ca_pem, cert_pem, key_pem) = certs();
    let b = Broker::start(
        BrokerConfig::for_flavour(Flavour::Qpidd).with_tls(TlsConfig::from_pem(cert_pem, key_pem)),
    )
    .await
    .expect("tls broker");
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca_pem).expect("write ca");
    let port = b.local_addr().port();
    let mut cfg = config(&format!("amqp://127.0.0.1:{port}/"));
    cfg.amqp.ssl = true;
    cfg.amqp.ssl_ca_file = ca_file.to_string_lossy().into_owned();
    let t = bounded("connect", Transport::connect(cfg))
        .await
        .expect("tls connect");
    let _s = server(&t, Target::topic("tls").with_server("s1"), "s1").await;
    let c = RpcClient::new(&t, Target::topic("tls")).timeout(Duration::from_secs(15));
    assert_eq!(
        bounded(
            "call",
            c.call(Default::default(), "echo", args(json!({"tls": true})))
        )
        .await
        .expect("call"),
        json!({"tls": true})
    );
    t.close().await;

    // A CA that did not sign the server certificate is refused with a TLS error.
    let (other_ca, _, _) = certs();
    let other = dir.path().join("other.pem");
    std::fs::write(&other, other_ca).expect("write other ca");
    let mut cfg = config(&format!("amqp://127.0.0.1:{port}/"));
    cfg.amqp.ssl_ca_file = other.to_string_lossy().into_owned();
    let e = bounded("bad ca", Transport::connect(cfg))
        .await
        .expect_err("untrusted server");
    assert_eq!(e.kind(), ConnectErrorKind::Tls, "{e}");
    b.shutdown().await;
}

/// A throwaway P-256 key encrypted with the password `testpass`, as PKCS#8
/// and in the traditional OpenSSL format (made with `openssl pkcs8 -topk8`
/// and `openssl ec -aes256`).
const ENCRYPTED_PKCS8: &str = "-----BEGIN ENCRYPTED PRIVATE KEY-----
MIHsMFcGCSqGSIb3DQEFDTBKMCkGCSqGSIb3DQEFDDAcBAgKrBUMIIiHfwICCAAw
DAYIKoZIhvcNAgkFADAdBglghkgBZQMEASoEEDvYmdr/oAi09FiLElYxjckEgZA8
SWFeQSmzNV8s4QbANrJ0C90BtwX7hTHnnchVs2ATwOIiDqQuxjo2ywepQWfOvGTJ
AXUzx5P3q5mO3mSh3wdLqgZQohgXXaW5tIYeUCwYc02M0nZ+qtluL1JZ/fKkSBNR
xiEgE6C2ULF3oNTTx6bxOVHRsrhNbq5Y3QmqIZHxZwdFICbWqt/AejfVyu1vvXA=
-----END ENCRYPTED PRIVATE KEY-----
";
const ENCRYPTED_TRADITIONAL: &str = "-----BEGIN EC PRIVATE KEY-----
Proc-Type: 4,ENCRYPTED
DEK-Info: AES-256-CBC,19F3A04F2BE36A0B623EF20521F40298

DBrd+2u/HqTySF4JwUROEs309fvPcL5TGOun08EPEJ+PhGQn1dYkEeNlZg26BIMJ
6TE2NFIAsrSQSsdI6+EwsuWT3HuV9Al8mUjbiu/0T724aQ1Z2Emq3f4vHvMb28N/
iTfNK2NMYlZFFJ7vppJcvvc7T/VmmZ7bcKPV8t7/69w=
-----END EC PRIVATE KEY-----
";

#[tokio::test]
async fn encrypted_client_key_is_a_clear_tls_error() {
    init_logs();
    let (ca_pem, cert_pem, key_pem) = certs();
    let b = Broker::start(
        BrokerConfig::for_flavour(Flavour::Qpidd)
            .with_tls(TlsConfig::from_pem(cert_pem.clone(), key_pem)),
    )
    .await
    .expect("tls broker");
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca_pem).expect("write ca");
    let cert_file = dir.path().join("client.pem");
    std::fs::write(&cert_file, cert_pem).expect("write cert");
    let port = b.local_addr().port();
    for (name, pem) in [
        ("pkcs8.pem", ENCRYPTED_PKCS8),
        ("traditional.pem", ENCRYPTED_TRADITIONAL),
    ] {
        let key_file = dir.path().join(name);
        std::fs::write(&key_file, pem).expect("write key");
        for password in [Some("testpass"), None] {
            let mut cfg = config(&format!("amqp://127.0.0.1:{port}/"));
            cfg.amqp.ssl_ca_file = ca_file.to_string_lossy().into_owned();
            cfg.amqp.ssl_cert_file = cert_file.to_string_lossy().into_owned();
            cfg.amqp.ssl_key_file = key_file.to_string_lossy().into_owned();
            if let Some(p) = password {
                cfg.amqp
                    .set("ssl_key_password", p)
                    .expect("ssl_key_password");
            }
            let e = bounded("encrypted key", Transport::connect(cfg))
                .await
                .expect_err("encrypted keys are refused");
            assert_eq!(e.kind(), ConnectErrorKind::Tls, "{name}: {e}");
            let text = e.to_string();
            assert!(
                text.contains("encrypted keys are not supported") && text.contains(name),
                "{name}: unclear error: {text}"
            );
            assert!(!text.contains("testpass"), "password leaked: {text}");
            if password.is_some() {
                assert!(text.contains("ssl_key_password"), "{name}: {text}");
            }
        }
    }
    b.shutdown().await;
}
