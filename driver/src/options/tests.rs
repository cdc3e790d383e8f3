//! Unit tests for options and the INI loader.
use super::*;

fn ini(text: &str) -> Result<Config, ConfigError> {
    Config::from_ini_str(text, Path::new("nova.conf"))
}

#[test]
fn oslo_defaults() {
    let o = AmqpOptions::default();
    assert_eq!(o.container_name, None);
    assert_eq!(o.idle_timeout, 0);
    assert!(!o.trace);
    assert!(!o.ssl);
    assert_eq!(o.ssl_ca_file, "");
    assert_eq!(o.ssl_cert_file, "");
    assert_eq!(o.ssl_key_file, "");
    assert_eq!(o.ssl_key_password, None);
    assert!(!o.ssl_verify_vhost);
    assert_eq!(o.sasl_mechanisms, "");
    assert_eq!(o.sasl_config_dir, "");
    assert_eq!(o.sasl_config_name, "");
    assert_eq!(o.sasl_default_realm, "");
    assert_eq!(o.connection_retry_interval, 1);
    assert_eq!(o.connection_retry_backoff, 2);
    assert_eq!(o.connection_retry_interval_max, 30);
    assert_eq!(o.link_retry_delay, 10);
    assert_eq!(o.default_reply_retry, 0);
    assert_eq!(o.default_reply_timeout, 30);
    assert_eq!(o.default_send_timeout, 30);
    assert_eq!(o.default_notify_timeout, 30);
    assert_eq!(o.default_sender_link_timeout, 600);
    assert_eq!(o.addressing_mode, AddressingMode::Dynamic);
    assert!(o.pseudo_vhost);
    assert_eq!(o.server_request_prefix, "exclusive");
    assert_eq!(o.broadcast_prefix, "broadcast");
    assert_eq!(o.group_request_prefix, "unicast");
    assert_eq!(o.rpc_address_prefix, "openstack.org/om/rpc");
    assert_eq!(o.notify_address_prefix, "openstack.org/om/notify");
    assert_eq!(o.multicast_address, "multicast");
    assert_eq!(o.unicast_address, "unicast");
    assert_eq!(o.anycast_address, "anycast");
    assert_eq!(o.default_notification_exchange, None);
    assert_eq!(o.default_rpc_exchange, None);
    assert_eq!(o.reply_link_credit, 200);
    assert_eq!(o.rpc_server_credit, 100);
    assert_eq!(o.notify_server_credit, 100);
    assert_eq!(
        o.pre_settled,
        vec![PreSettled::RpcCast, PreSettled::RpcReply]
    );
    assert_eq!(o.reply_mode, ReplyMode::Auto);
    assert_eq!(o.connect_timeout, 30);
    assert!(o.is_pre_settled(PreSettled::RpcCast));
    assert!(!o.is_pre_settled(PreSettled::RpcCall));

    let c = Config::default();
    assert_eq!(c.control_exchange, "openstack");
    assert_eq!(c.rpc_response_timeout, 60);
    assert_eq!(c.notifications.topics, vec!["notifications".to_string()]);
    assert_eq!(c.notifications.retry, -1);
    assert!(c.notifications.driver.is_empty());
    assert_eq!(c.notifications.transport_url, None);
    assert_eq!(c.transport_url.to_string(), "amqp://localhost:5672/");
}

#[test]
fn every_option_name_is_settable_and_listed_once() {
    assert_eq!(OSLO_OPTION_NAMES.len(), 38);
    let mut names: Vec<&str> = OSLO_OPTION_NAMES.to_vec();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), 38);
    for n in AMQP1_GROUP_OPTIONS {
        assert!(OSLO_OPTION_NAMES.contains(&n), "{n}");
    }
    // Setting each option to its default's textual form leaves the defaults unchanged.
    let defaults: &[(&str, &str)] = &[
        ("container_name", ""),
        ("idle_timeout", "0"),
        ("trace", "false"),
        ("ssl", "false"),
        ("ssl_ca_file", ""),
        ("ssl_cert_file", ""),
        ("ssl_key_file", ""),
        ("ssl_key_password", ""),
        ("ssl_verify_vhost", "false"),
        ("sasl_mechanisms", ""),
        ("sasl_config_dir", ""),
        ("sasl_config_name", ""),
        ("sasl_default_realm", ""),
        ("connection_retry_interval", "1"),
        ("connection_retry_backoff", "2"),
        ("connection_retry_interval_max", "30"),
        ("link_retry_delay", "10"),
        ("default_reply_retry", "0"),
        ("default_reply_timeout", "30"),
        ("default_send_timeout", "30"),
        ("default_notify_timeout", "30"),
        ("default_sender_link_timeout", "600"),
        ("addressing_mode", "dynamic"),
        ("pseudo_vhost", "true"),
        ("server_request_prefix", "exclusive"),
        ("broadcast_prefix", "broadcast"),
        ("group_request_prefix", "unicast"),
        ("rpc_address_prefix", "openstack.org/om/rpc"),
        ("notify_address_prefix", "openstack.org/om/notify"),
        ("multicast_address", "multicast"),
        ("unicast_address", "unicast"),
        ("anycast_address", "anycast"),
        ("default_notification_exchange", ""),
        ("default_rpc_exchange", ""),
        ("reply_link_credit", "200"),
        ("rpc_server_credit", "100"),
        ("notify_server_credit", "100"),
        ("pre_settled", "rpc-cast,rpc-reply"),
        ("reply_mode", "auto"),
        ("connect_timeout", "30"),
    ];
    assert_eq!(defaults.len(), 40);
    let mut o = AmqpOptions::default();
    for (n, v) in defaults {
        o.set(n, v).unwrap_or_else(|e| panic!("{n}: {e}"));
        assert!(AmqpOptions::is_option(n));
    }
    assert_eq!(o, AmqpOptions::default());
}

#[test]
fn integer_bounds() {
    let cases: &[(&str, i64)] = &[
        ("idle_timeout", 0),
        ("connection_retry_interval", 1),
        ("connection_retry_backoff", 0),
        ("connection_retry_interval_max", 1),
        ("link_retry_delay", 1),
        ("default_reply_retry", -1),
        ("default_reply_timeout", 5),
        ("default_send_timeout", 5),
        ("default_notify_timeout", 5),
        ("default_sender_link_timeout", 1),
        ("reply_link_credit", 1),
        ("rpc_server_credit", 1),
        ("notify_server_credit", 1),
        ("connect_timeout", 1),
    ];
    for (name, min) in cases {
        let mut o = AmqpOptions::default();
        o.set(name, &min.to_string()).unwrap();
        o.set(name, &format!(" {} ", min + 1000)).unwrap();
        let err = o.set(name, &(min - 1).to_string()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{name}: invalid value \"{}\": expected an integer {}",
                min - 1,
                if name.ends_with("_credit") {
                    format!("from {min} to {}", u32::MAX)
                } else if ["connection_retry_backoff", "default_reply_retry"].contains(name) {
                    format!(">= {min}")
                } else {
                    format!("from {min} to {}", crate::MAX_TIMEOUT_SECS)
                }
            )
        );
        if !name.ends_with("_credit")
            && !["connection_retry_backoff", "default_reply_retry"].contains(name)
        {
            // Durations are capped: one second more than the cap is refused.
            let over = (crate::MAX_TIMEOUT_SECS + 1).to_string();
            assert!(o.set(name, &over).is_err(), "{name} accepted {over}");
            o.set(name, &crate::MAX_TIMEOUT_SECS.to_string()).unwrap();
        }
        assert!(o.set(name, "abc").is_err());
        assert!(o.set(name, "1.5").is_err());
        assert!(o.set(name, "").is_err());
    }
    let mut o = AmqpOptions::default();
    o.set("default_reply_retry", "-1").unwrap();
    assert_eq!(o.default_reply_retry, -1);
    o.set("rpc_server_credit", "5").unwrap();
    assert_eq!(o.rpc_server_credit, 5);
    assert!(o.set("rpc_server_credit", "4294967296").is_err());
    o.set("idle_timeout", "10").unwrap();
    assert_eq!(o.idle_timeout, 10);
}

#[test]
fn booleans_accept_oslo_spellings() {
    let mut o = AmqpOptions::default();
    for t in ["true", "True", "TRUE", "1", "yes", "Yes", "on", "ON"] {
        o.trace = false;
        o.set("trace", t).unwrap();
        assert!(o.trace, "{t}");
    }
    for f in ["false", "False", "0", "no", "NO", "off", "Off"] {
        o.pseudo_vhost = true;
        o.set("pseudo_vhost", f).unwrap();
        assert!(!o.pseudo_vhost, "{f}");
    }
    let e = o.set("ssl", "maybe").unwrap_err();
    assert_eq!(
        e.to_string(),
        "ssl: invalid value \"maybe\": expected a boolean (true/false, yes/no, on/off, 1/0)"
    );
}

#[test]
fn enums_and_strings() {
    let mut o = AmqpOptions::default();
    for (v, m) in [
        ("legacy", AddressingMode::Legacy),
        ("routable", AddressingMode::Routable),
        ("rabbitmq", AddressingMode::Rabbitmq),
        ("rabbitmq4", AddressingMode::Rabbitmq4),
        ("dynamic", AddressingMode::Dynamic),
    ] {
        o.set("addressing_mode", v).unwrap();
        assert_eq!(o.addressing_mode, m);
        assert_eq!(m.to_string(), v);
    }
    assert!(o
        .set("addressing_mode", "Legacy2")
        .unwrap_err()
        .to_string()
        .contains("one of dynamic, legacy, routable, rabbitmq, rabbitmq4"));
    for (v, m) in [
        ("auto", ReplyMode::Auto),
        ("dynamic", ReplyMode::Dynamic),
        ("named", ReplyMode::Named),
        ("rabbitmq-direct-reply", ReplyMode::RabbitmqDirectReply),
        ("temporary-queue", ReplyMode::TemporaryQueue),
    ] {
        o.set("reply_mode", v).unwrap();
        assert_eq!(o.reply_mode, m);
        assert_eq!(m.as_str(), v);
    }
    assert!(o.set("reply_mode", "x").is_err());
    o.set("default_rpc_exchange", "rx").unwrap();
    assert_eq!(o.default_rpc_exchange.as_deref(), Some("rx"));
    o.set("default_rpc_exchange", "").unwrap();
    assert_eq!(o.default_rpc_exchange, None);
    o.set("container_name", "c1").unwrap();
    assert_eq!(o.container_name.as_deref(), Some("c1"));
    o.set("sasl_mechanisms", "PLAIN ANONYMOUS").unwrap();
    assert_eq!(o.sasl_mechanisms, "PLAIN ANONYMOUS");
}

#[test]
fn secret_option_is_redacted() {
    let mut o = AmqpOptions::default();
    o.set("ssl_key_password", "hunter2").unwrap();
    assert_eq!(
        o.ssl_key_password.as_ref().map(Secret::expose),
        Some("hunter2")
    );
    assert!(!format!("{o:?}").contains("hunter2"));
}

#[test]
fn unknown_option_suggests_closest() {
    let mut o = AmqpOptions::default();
    let e = o.set("idel_timeout", "1").unwrap_err();
    assert_eq!(
        e,
        OptionError::Unknown {
            name: "idel_timeout".into(),
            suggestion: Some("idle_timeout".into())
        }
    );
    assert_eq!(
        e.to_string(),
        "unknown option \"idel_timeout\" (did you mean \"idle_timeout\"?)"
    );
    assert_eq!(suggest_option("presettled").as_deref(), Some("pre_settled"));
    assert_eq!(suggest_option("Trace").as_deref(), Some("trace"));
    assert_eq!(suggest_option("completely_unrelated_thing"), None);
    assert_eq!(
        o.set("zzz", "1").unwrap_err().to_string(),
        "unknown option \"zzz\""
    );
    assert!(o.set_multi("nosuch", &[]).is_err());
}

#[test]
fn pre_settled_values() {
    let mut o = AmqpOptions::default();
    o.set_multi("pre_settled", &["rpc-call", "notify", "bogus", "rpc-call"])
        .unwrap();
    assert_eq!(o.pre_settled, vec![PreSettled::RpcCall, PreSettled::Notify]);
    o.set("pre_settled", "rpc-reply, rpc-cast").unwrap();
    assert_eq!(
        o.pre_settled,
        vec![PreSettled::RpcReply, PreSettled::RpcCast]
    );
    o.set("pre_settled", "").unwrap();
    assert!(o.pre_settled.is_empty());
    for p in [
        PreSettled::RpcCall,
        PreSettled::RpcReply,
        PreSettled::RpcCast,
        PreSettled::Notify,
    ] {
        assert_eq!(p.as_str().parse::<PreSettled>(), Ok(p));
    }
}

#[test]
fn from_url_applies_query() {
    let c = Config::from_url(
        "amqp://u:pw@h1,h2:5673/vh?idle_timeout=10&ssl=1&addressing_mode=legacy&trace=true&pre_settled=notify&pre_settled=rpc-call",
    )
    .unwrap();
    assert_eq!(c.transport_url.hosts.len(), 2);
    assert_eq!(c.amqp.idle_timeout, 10);
    assert!(c.amqp.ssl);
    assert!(c.amqp.trace);
    assert_eq!(c.amqp.addressing_mode, AddressingMode::Legacy);
    assert_eq!(
        c.amqp.pre_settled,
        vec![PreSettled::Notify, PreSettled::RpcCall]
    );
    assert_eq!(c.control_exchange, "openstack");
    assert!(!format!("{c:?}").contains("pw"));

    let e = Config::from_url("amqp://h/?nosuch=1").unwrap_err();
    assert_eq!(e.to_string(), "transport_url: unknown option \"nosuch\"");
    let e = Config::from_url("amqp://h/?idle_timeout=abc").unwrap_err();
    assert_eq!(
        e.to_string(),
        "transport_url: idle_timeout: invalid value \"abc\": expected an integer from 0 to 31536000"
    );
    let e = Config::from_url("amqp://h:x/").unwrap_err();
    assert!(matches!(
        *e.kind,
        ConfigErrorKind::Url(UrlError::BadPort { .. })
    ));
    assert!(e.to_string().starts_with("transport_url: invalid port"));
}

#[test]
fn ini_error_message_format() {
    let text = "[DEFAULT]\n\n\n\n\n\n\n\n\n\n[oslo_messaging_amqp]\nidle_timeout = abc\n";
    let e = ini(text).unwrap_err();
    assert_eq!(
        e.to_string(),
        "nova.conf:12: [oslo_messaging_amqp] idle_timeout: invalid value \"abc\": expected an integer from 0 to 31536000"
    );
    assert_eq!(e.line, Some(12));
    assert_eq!(e.section.as_deref(), Some("oslo_messaging_amqp"));
    assert_eq!(e.option.as_deref(), Some("idle_timeout"));
}

#[test]
fn ini_unknown_key_in_amqp_section_is_an_error() {
    let e = ini("[oslo_messaging_amqp]\n# c\nidle_timout = 5\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "nova.conf:3: [oslo_messaging_amqp] unknown option \"idle_timout\" (did you mean \"idle_timeout\"?)"
    );
    // unknown keys elsewhere are ignored
    let c =
        ini("[DEFAULT]\nfoo = 1\n[oslo_messaging_notifications]\nformat = x\n[x]\ny=z\n").unwrap();
    assert_eq!(c, Config::default());
}

#[test]
fn ini_deprecated_amqp1_group() {
    let c = ini("[amqp1]\nidle_timeout = 4\ntrace = yes\n").unwrap();
    assert_eq!(c.amqp.idle_timeout, 4);
    assert!(c.amqp.trace);
    // [oslo_messaging_amqp] wins even when it comes first in the file
    let c = ini("[oslo_messaging_amqp]\nidle_timeout = 9\n[amqp1]\nidle_timeout = 4\n").unwrap();
    assert_eq!(c.amqp.idle_timeout, 9);
    // options without the deprecated group are refused there, with a hint
    let e = ini("[amqp1]\n\nssl = true\n").unwrap_err();
    assert_eq!(e.line, Some(3));
    assert!(
        e.to_string()
            .contains("cannot be set in the deprecated group [amqp1]"),
        "{e}"
    );
}

#[test]
fn ini_syntax_errors() {
    let e = ini("[DEFAULT]\ntransport_url\n").unwrap_err();
    assert!(
        e.to_string()
            .starts_with("nova.conf:2: expected \"key = value\""),
        "{e}"
    );
    let e = ini("[DEFAULT\n").unwrap_err();
    assert_eq!(e.line, Some(1));
    let e = ini("[DEFAULT]\ntransport_url = rabbit://h/\n").unwrap_err();
    assert!(e
        .to_string()
        .starts_with("nova.conf:2: [DEFAULT] transport_url: unsupported scheme \"rabbit\""));
    let e = ini("[DEFAULT]\nrpc_response_timeout = soon\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "nova.conf:2: [DEFAULT] rpc_response_timeout: invalid value \"soon\": expected an integer from 0 to 31536000"
    );
    let e = ini("[oslo_messaging_notifications]\nretry = -2\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "nova.conf:2: [oslo_messaging_notifications] retry: invalid value \"-2\": expected an integer >= -1"
    );
}

#[test]
fn url_query_overrides_ini() {
    let c = ini(
        "[DEFAULT]\ntransport_url = amqp://h/?idle_timeout=3\n[oslo_messaging_amqp]\nidle_timeout = 50\ntrace = true\n",
    )
    .unwrap();
    assert_eq!(c.amqp.idle_timeout, 3);
    assert!(c.amqp.trace);
    let e =
        ini("[oslo_messaging_amqp]\n[DEFAULT]\ntransport_url = amqp://h/?bogus=1\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "nova.conf:3: [DEFAULT] transport_url: unknown option \"bogus\""
    );
}

#[test]
fn nova_conf_fixture() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/nova.conf");
    let c = Config::from_ini_file(&path).unwrap();
    let u = &c.transport_url;
    assert_eq!(u.hosts.len(), 2);
    assert_eq!(u.hosts[0].host, "ctl1");
    assert_eq!(u.hosts[1].port, 5673);
    assert_eq!(
        u.hosts[0].password.as_ref().map(Secret::expose),
        Some("s3cr@t")
    );
    assert_eq!(u.virtual_host.as_deref(), Some("nova"));
    assert_eq!(c.control_exchange, "nova");
    assert_eq!(c.rpc_response_timeout, 120);
    // the URL query (idle_timeout=7) overrides [oslo_messaging_amqp] idle_timeout = 30
    assert_eq!(c.amqp.idle_timeout, 7);
    // [oslo_messaging_amqp] wins over [amqp1]; [amqp1]-only values are used
    assert_eq!(c.amqp.container_name.as_deref(), Some("compute-1"));
    assert_eq!(c.amqp.broadcast_prefix, "legacy-bcast");
    assert_eq!(c.amqp.addressing_mode, AddressingMode::Routable);
    assert_eq!(
        c.amqp.pre_settled,
        vec![PreSettled::RpcCast, PreSettled::Notify]
    );
    assert_eq!(
        c.amqp.default_notification_exchange.as_deref(),
        Some("notify-x")
    );
    assert_eq!(
        c.amqp.ssl_key_password.as_ref().map(Secret::expose),
        Some("keypass")
    );
    assert_eq!(
        c.notifications.driver,
        vec![NotifyDriver::MessagingV2, NotifyDriver::Other("log".into())]
    );
    assert_eq!(
        c.notifications.topics,
        vec![
            "notifications".to_string(),
            "versioned_notifications".to_string()
        ]
    );
    assert_eq!(c.notifications.retry, 3);
    let nurl = c.notification_url();
    assert_eq!(nurl.hosts[0].host, "notify-host");
    let nopts = c.notification_options().unwrap();
    assert!(nopts.trace);
    assert!(!c.amqp.trace);
    // no secret in Debug output
    let dbg = format!("{c:?}");
    for secret in ["s3cr@t", "s3cr%40t", "keypass", "pw@"] {
        assert!(!dbg.contains(secret), "{secret} leaked");
    }
}

#[test]
fn missing_file_error_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("missing.conf");
    let e = Config::from_ini_file(&p).unwrap_err();
    assert!(matches!(*e.kind, ConfigErrorKind::Io(_)));
    assert!(e
        .to_string()
        .starts_with(&format!("{}: cannot read file", p.display())));
}

#[test]
fn notification_url_defaults_to_rpc_url() {
    let c = Config::from_url("amqp://h/").unwrap();
    assert_eq!(c.notification_url(), &c.transport_url);
    assert_eq!(c.notification_options().unwrap(), c.amqp);
    let e = ini("[oslo_messaging_notifications]\ntransport_url = amqp://h/?nope=1\n").unwrap_err();
    assert_eq!(e.line, Some(2));
    assert!(e.to_string().contains("unknown option \"nope\""), "{e}");
}

#[test]
fn notify_driver_names() {
    for n in ["messaging", "messagingv2", "noop", "log"] {
        assert_eq!(NotifyDriver::parse(n).as_str(), n);
    }
    assert_eq!(
        NotifyDriver::parse("messagingv2"),
        NotifyDriver::MessagingV2
    );
}

#[test]
fn deprecated_notification_names() {
    let c = ini(
        "[DEFAULT]\nnotification_driver = messaging\nnotification_topics = a,b\nnotification_transport_url = amqp://n/\n",
    )
    .unwrap();
    assert_eq!(c.notifications.driver, vec![NotifyDriver::Messaging]);
    assert_eq!(
        c.notifications.topics,
        vec!["a".to_string(), "b".to_string()]
    );
    assert_eq!(c.notification_url().hosts[0].host, "n");
    // the current names win
    let c = ini(
        "[oslo_messaging_notifications]\ndriver = messagingv2\ntopics = x\ntransport_url = amqp://new/\n[DEFAULT]\nnotification_driver = messaging\nnotification_topics = a\nnotification_transport_url = amqp://old/\n[rpc_notifier2]\ntopics = z\n",
    )
    .unwrap();
    assert_eq!(c.notifications.driver, vec![NotifyDriver::MessagingV2]);
    assert_eq!(c.notifications.topics, vec!["x".to_string()]);
    assert_eq!(c.notification_url().hosts[0].host, "new");
    let e = ini("[DEFAULT]\nnotification_transport_url = amqp://h/?bad=1\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "nova.conf:2: [DEFAULT] notification_transport_url: unknown option \"bad\""
    );
}

#[test]
fn secrets_never_print_in_clear() {
    let mut cfg = Config::from_url("amqp://joe:Pw%2Fd7q@h1,ann:Pw%23e8r@h2/").unwrap();
    cfg.amqp.set("ssl_key_password", "KeyPw55").unwrap();
    let shown = format!(
        "{cfg:?} {} {:?} {}",
        cfg.transport_url, cfg.amqp, cfg.transport_url.hosts[1]
    );
    for secret in ["Pw/d7q", "Pw%2Fd7q", "Pw#e8r", "Pw%23e8r", "KeyPw55"] {
        assert!(!shown.contains(secret), "{secret} shown in {shown}");
    }
    assert!(shown.contains("***"));
    // Errors about options never echo a secret either (the secret option takes any text).
    let e = Config::from_url("amqp://joe:Pw@h/?ssl_key_pasword=KeyPw55").unwrap_err();
    assert!(!e.to_string().contains("Pw@"), "{e}");
}
