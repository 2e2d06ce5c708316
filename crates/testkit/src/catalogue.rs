//! Pieces of gateway configuration (TOML) that test suites of more than one crate start from.

/// The model "northwind-7b" on the provider "sim", owned by "northwind" (a `[[models]]` table;
/// the suite declares the owner).
pub const NORTHWIND_MODEL: &str = r#"
[[models]]
name = "northwind-7b"
provider = "sim"
input_price = "0.10"
output_price = "0.40"
owner = "northwind"
"#;
