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
