//! Fuzzes config parsing (interpolation, TOML, validation, error locating): any text must
//! give a config or errors that name a key, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match holdfast_core::config::parse(text, "fuzz.toml", |name| {
        (name.len() < 8).then(|| "x".to_string())
    }) {
        Ok(config) => {
            let _ = holdfast_core::config::warnings(&config);
        }
        Err(errors) => {
            let _ = errors.to_string();
        }
    }
});
