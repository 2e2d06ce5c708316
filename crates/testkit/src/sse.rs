//! Assertions on server-sent event streams that carry named events (the Responses API's and the
//! Messages API's), shared by the mock's tests and the translators' tests, which check the same
//! event sequences from both ends.

use serde_json::Value;

/// Asserts the events' names, in order, against `expected` (the names separated by white space).
pub fn assert_names(events: &[(String, Value)], expected: &str) {
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    let expected: Vec<&str> = expected.split_whitespace().collect();
    assert_eq!(names, expected);
}

/// Asserts a Responses API stream: the events' names as [`assert_names`], and every event's
/// `sequence_number` counting from 0.
pub fn assert_responses_events(events: &[(String, Value)], expected: &str) {
    assert_names(events, expected);
    for (i, (_, d)) in events.iter().enumerate() {
        assert_eq!(d["sequence_number"], i as u64);
    }
}
