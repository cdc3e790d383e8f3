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
            // The display does not depend on the passwords: with other passwords it is the same
            // text. (Searching the text for the password gives false alarms when the scheme or a
            // user name happens to hold the same characters.)
            let shown = url.to_string();
            let mut other = url.clone();
            for h in &mut other.hosts {
                if h.password.is_some() {
                    h.password = Some(driver::url::Secret::new("a-different-password"));
                }
            }
            assert_eq!(other.to_string(), shown, "the display depends on a password");
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
