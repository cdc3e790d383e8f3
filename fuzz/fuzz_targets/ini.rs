//! The oslo-style INI loader (nova.conf shape).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match driver::Config::from_ini_str(text, std::path::Path::new("fuzz.conf")) {
        Ok(cfg) => {
            let _ = cfg.notification_options();
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
