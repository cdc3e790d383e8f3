//! The transport-URL parser, its display (never the password) and its query options.
#![no_main]

use driver::url::TransportUrl;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match TransportUrl::parse(text) {
        Ok(url) => {
            let shown = url.to_string();
            for h in &url.hosts {
                if let Some(p) = &h.password {
                    let p = p.expose();
                    assert!(
                        p.len() < 4 || !shown.contains(p),
                        "the password is displayed: {shown}"
                    );
                }
            }
            // The URL with its passwords parses back to the same URL.
            let again = TransportUrl::parse(url.expose().expose()).expect("round trip parses");
            assert_eq!(again, url, "round trip");
            let _ = driver::AmqpOptions::default().apply_query(&url);
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
