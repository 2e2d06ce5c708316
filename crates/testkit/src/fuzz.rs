//! Shared pieces of the fuzz tests (property tests on arbitrary inputs): how many cases a run
//! takes, and arbitrary JSON biased towards the words a parser reads.

use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::Value;

/// Cases per property: `TOLLGATE_FUZZ_CASES`, else `default` (the long run sets it, see
/// SECURITY.md).
pub fn cases(default: u32) -> u32 {
    std::env::var("TOLLGATE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A runner configuration with [`cases`] and no failure persistence.
pub fn config(default: u32) -> Config {
    Config {
        cases: cases(default),
        failure_persistence: None,
        ..Config::default()
    }
}

/// How deep and wide [`json`] nests.
#[derive(Clone, Copy)]
pub struct Nesting {
    pub depth: u32,
    pub size: u32,
    pub branch: u32,
    /// Elements of an array: `0..arrays`.
    pub arrays: usize,
    /// Fields of an object: `0..objects`.
    pub objects: usize,
}

/// Arbitrary JSON: null, booleans, integers, finite floats, strings and `words`, nested in
/// arrays and in objects whose keys come from `key`.
pub fn json<K>(words: Vec<&'static str>, key: K, nesting: Nesting) -> BoxedStrategy<Value>
where
    K: Strategy<Value = String> + Clone + 'static,
{
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "\\PC{0,16}".prop_map(Value::String),
        prop::sample::select(words).prop_map(Value::from),
    ];
    let Nesting {
        depth,
        size,
        branch,
        arrays,
        objects,
    } = nesting;
    leaf.prop_recursive(depth, size, branch, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..arrays).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..objects)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
    .boxed()
}
