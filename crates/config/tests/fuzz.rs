//! Fuzzing of the config loader: arbitrary text, and valid configs with values replaced by
//! arbitrary ones, go through parsing, environment overrides and validation without a panic;
//! whatever validates names no setting that the server cannot start with.
//!
//! Cases per property: `TOLLGATE_FUZZ_CASES` (default 256); see SECURITY.md for the long run.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use proptest::prelude::*;
use tollgate_config::Config;

fn config() -> ProptestConfig {
    tollgate_testkit::fuzz::config(256)
}

/// The embedded default, written out as an operator would.
fn base_text() -> String {
    r#"
[server]
listen = "127.0.0.1:8080"
admin_token = "secret"
max_body_bytes = 8388608
header_read_timeout_ms = 10000
body_read_timeout_ms = 30000
keep_alive_timeout_ms = 75000
max_connections = 16384
max_requests_per_connection = 1000
threads = 0

[storage]
url = "sqlite:///tmp/tollgate-fuzz/ledger.db"

[[providers]]
name = "openai"
kind = "openai"
base_url = "https://api.openai.com/v1"
api_key = "sk-x"

[[providers]]
name = "sim"
kind = "simulated"
ttft_ms = 20

[[models]]
name = "gpt-4o-mini"
provider = "openai"
input_price = "0.15"
output_price = "0.60"

[[models]]
name = "sim-model"
provider = "sim"
input_price = "1"
output_price = "2"
"#
    .to_owned()
}

/// A TOML value of any type, some of them hostile.
fn toml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        any::<bool>().prop_map(|b| b.to_string()),
        "\\PC{0,24}".prop_map(|s| format!("{s:?}")),
        Just("\"79228162514264337593543950335\"".to_owned()),
        Just("\"-0.5\"".to_owned()),
        Just("\"1e5\"".to_owned()),
        Just("[]".to_owned()),
        Just("{}".to_owned()),
        Just("\"\"".to_owned()),
    ]
}

/// Runs everything the loader runs on `text`; nothing may panic.
fn load(text: &str) {
    if let Ok(mut c) = Config::from_toml(text) {
        c.apply_env(|k| (k == "TOLLGATE_ADMIN_TOKEN").then(|| "from-env".to_owned()));
        if c.validate().is_ok() {
            // What validates is usable: the values the server derives from it exist.
            assert!(c.server.serving_threads() >= 1);
            assert!(c.server.max_connections >= 1);
            assert!(c.server.header_read_timeout_ms >= 1);
        }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
        load(&text);
    }

    #[test]
    fn a_value_replaced_by_anything_never_panics(line in 0usize..64, value in toml_value()) {
        let base = base_text();
        let lines: Vec<&str> = base.lines().collect();
        let i = line % lines.len();
        let mut edited: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
        if let Some((key, _)) = lines[i].split_once(" = ") {
            edited[i] = format!("{key} = {value}");
        }
        load(&edited.join("\n"));
    }

    #[test]
    fn a_line_dropped_or_doubled_never_panics(line in 0usize..64, double in any::<bool>()) {
        let base = base_text();
        let mut lines: Vec<&str> = base.lines().collect();
        let i = line % lines.len();
        if double {
            lines.insert(i, lines[i]);
        } else {
            lines.remove(i);
        }
        load(&lines.join("\n"));
    }
}

#[test]
fn the_base_text_and_the_embedded_default_validate() {
    Config::from_toml(&base_text()).unwrap().validate().unwrap();
    Config::embedded(Path::new("/tmp/tg")).validate().unwrap();
}
