//! Harvesting from one key of a genuine chat app that carries none of the other tells: plain
//! questions (no reasoning request, no rubric, no logprobs, no `n`, no template over unrelated
//! topics), one temperature. What gives it away is how it differs from the rest of the same
//! account: single-turn where the app converses, around the clock where the app follows its
//! users' day, answers several times as long as the app's. The segment's contrast with the
//! rest of its account (`segment_contrast`) flags it; a batch key of the same app that is
//! single-turn and runs at night but answers briefly, or a key whose users simply get longer
//! answers, is not flagged.

#![allow(clippy::unwrap_used)] // tests may unwrap

use time::{Duration, macros::datetime};
use tollgate_guard::{Assessment, Detector};

#[path = "common/app.rs"]
mod app;
use app::{BACKENDS, KEYS, detector, send};

/// Content words over unrelated domains: the app's users ask about anything, so its traffic is
/// not one narrow product template (which would explain it).
const WORDS: &[&str] = &[
    "photosynthesis",
    "empire",
    "interest",
    "tunneling",
    "sourdough",
    "contract",
    "tectonics",
    "jazz",
    "marathon",
    "narrator",
    "garbage",
    "antibiotic",
    "fifths",
    "glacier",
    "offside",
    "habeas",
    "volcano",
    "mortgage",
    "sonnet",
    "enzyme",
    "cricket",
    "origami",
    "satellite",
    "tariff",
    "migraine",
    "baroque",
    "compiler",
    "monsoon",
    "sculpture",
    "vaccine",
    "chess",
    "inflation",
    "telescope",
    "pottery",
    "election",
    "cartilage",
    "bitcoin",
    "opera",
    "reef",
    "turbine",
    "dialect",
    "falcon",
    "yoga",
    "magnet",
    "pension",
    "fresco",
    "algae",
    "rugby",
];

/// Three words drawn by a multiplicative hash of `i`.
fn topic(i: usize) -> String {
    let h = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let w = |shift: u32| WORDS[((h >> shift) % WORDS.len() as u64) as usize];
    format!("{} {} {}", w(11), w(27), w(43))
}

/// How the fourth key behaves.
struct Fourth {
    /// Multi-turn (with history) rather than single-turn.
    converses: bool,
    /// Only during the app's waking hours rather than around the clock.
    daytime: bool,
    /// Output tokens per answer (the app's own answers get 150).
    answer: u64,
}

const SYSTEM: &str = "You are Juniper, the assistant in our app. Be brief and kind.";

/// Four days of a chat app (three product keys, four backends, named users, conversations in
/// the users' waking hours, 07:00–23:00 UTC, brief answers) and a fourth key on one backend
/// sending about a fifth of the traffic as `fourth` says.
fn run(fourth: &Fourth) -> (Assessment, Detector) {
    let d = detector();
    let t0 = datetime!(2025-03-03 00:00 UTC);
    let keys = KEYS;
    let backends = BACKENDS;
    let question =
        |i: usize, who: &str| format!("{who} wonders: {}, what is that? ({i})", topic(i));
    for minute in (0..4 * 24 * 60i64).step_by(4) {
        let t = t0 + Duration::minutes(minute);
        let hour = (minute / 60) % 24;
        let i = minute as usize;
        if (7..23).contains(&hour) {
            // One conversation turn of the app: the third message of a session.
            let body = serde_json::json!({"model": "m", "user": format!("user-{}", i % 90),
                "temperature": 0.7, "stream": true, "messages": [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": question(i, "my friend")},
                {"role": "assistant", "content": "Happy to help."},
                {"role": "user", "content": format!("thanks! and {}?", topic(i * 3 + 1))}]});
            send(&d, t, keys[i % 3], backends[(i / 3) % 4], body, 150);
        }
        let awake = (7..23).contains(&hour);
        // The fourth key: a request every 16 minutes around the clock, or every 12 minutes in
        // the waking hours: about a fifth of the app's traffic either way.
        let due = if fourth.daytime {
            awake && minute % 12 == 0
        } else {
            minute % 16 == 0
        };
        if due {
            let mut messages = vec![serde_json::json!({"role": "system", "content": SYSTEM})];
            if fourth.converses {
                messages.push(serde_json::json!({"role": "user", "content": "hi"}));
                messages.push(serde_json::json!({"role": "assistant", "content": "Hello!"}));
            }
            messages
                .push(serde_json::json!({"role": "user", "content": question(i, "a colleague")}));
            let body = serde_json::json!({"model": "m", "temperature": 0.7, "messages": messages});
            send(
                &d,
                t + Duration::seconds(30),
                "app-backend",
                backends[0],
                body,
                fourth.answer,
            );
        }
    }
    d.flags();
    (d.assessment("app").unwrap(), d)
}

fn contrast(a: &Assessment) -> f64 {
    a.segment_signals
        .iter()
        .find(|s| s.name == "segment_contrast")
        .map_or(0.0, |s| s.value)
}

#[test]
fn a_key_harvesting_long_answers_around_the_clock_is_flagged_on_its_contrast() {
    let (a, d) = run(&Fourth {
        converses: false,
        daytime: false,
        answer: 700,
    });
    assert_eq!(a.segment.as_deref(), Some("key app-backend"), "{a:?}");
    assert!(a.flagged, "{a:?}");
    // The contrast carries the score; the explanation states the three departures.
    let top = &a.segment_signals[0];
    assert_eq!(top.name, "segment_contrast", "{a:?}");
    assert!(top.value > 0.9, "{top:?}");
    assert!(
        top.explanation.contains("100% single-turn against 0%"),
        "{top:?}"
    );
    assert!(top.explanation.contains("answers 4.7× as long"), "{top:?}");
    // The account as a whole has no contrast, and its own signals do not flag it.
    assert!(
        a.signals
            .iter()
            .all(|s| s.name != "segment_contrast" || s.value == 0.0)
    );
    let ev = d
        .evidence("app", None, datetime!(2025-03-07 00:00 UTC))
        .unwrap();
    for k in ["app-web", "app-ios", "app-android"] {
        let s = ev
            .segments
            .iter()
            .find(|s| s.segment == format!("key {k}"))
            .unwrap();
        assert!(s.score < 0.05, "{s:?}");
    }
}

#[test]
fn a_night_batch_key_with_brief_answers_is_not_flagged() {
    let (a, _) = run(&Fourth {
        converses: false,
        daytime: false,
        answer: 80,
    });
    assert!(!a.flagged, "{a:?}");
    assert_eq!(contrast(&a), 0.0, "{a:?}");
}

#[test]
fn users_who_get_longer_answers_in_conversations_by_day_are_not_flagged() {
    let (a, _) = run(&Fourth {
        converses: true,
        daytime: true,
        answer: 700,
    });
    assert!(!a.flagged, "{a:?}");
    assert!(contrast(&a) < 0.05, "{a:?}");
}

#[test]
fn each_departure_alone_is_not_enough() {
    // Long answers around the clock, but conversational: no single-turn departure.
    let (a, _) = run(&Fourth {
        converses: true,
        daytime: false,
        answer: 700,
    });
    assert!(!a.flagged, "{a:?}");
    // Single-turn long answers, but in the app's waking hours: no rhythm departure.
    let (a, _) = run(&Fourth {
        converses: false,
        daytime: true,
        answer: 700,
    });
    assert!(!a.flagged, "{a:?}");
}
