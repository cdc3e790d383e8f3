//! The scenario loader: variables, both YAML passes, validation and the rendering of diagnostics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let vars = [("pw".to_string(), "s3cr3t-pw".to_string())];
    match harness::scenario::parse_str("fuzz.yaml", "fuzz", text, &[], &vars) {
        Ok(loaded) => {
            let _ = loaded.scenario.steps.len();
        }
        Err(invalid) => {
            let out = invalid.render();
            assert!(!out.contains("s3cr3t-pw"), "a --var password is shown:\n{out}");
        }
    }
});
