//! Harvesting on a fourth key of a genuine chat app whose three product keys (web, iOS,
//! Android) arrived first. With three key segments per account the fourth key shared the last
//! slot with the product's smallest key: each took the slot from the other on every switch,
//! starting from zero, so the harvesting key never reached `min_requests` and was never
//! scored, and the account was judged on its whole traffic, in which a fifth of harvesting is
//! diluted by the product's conversations.

#![allow(clippy::unwrap_used)] // tests may unwrap

use time::{Duration, macros::datetime};

#[path = "common/app.rs"]
mod app;
use app::{BACKENDS, KEYS, detector, send};

#[path = "common/topics.rs"]
mod topics;
use topics::TOPICS;

fn question(i: usize) -> String {
    static SET: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let set = SET.get_or_init(tollgate_guard::corpus::public_prompts);
    set[(i * 37) % set.len()].clone()
}

#[test]
fn a_fourth_key_harvesting_a_fifth_of_a_chat_app_is_scored_and_named() {
    let d = detector();
    let t0 = datetime!(2025-03-03 08:00 UTC);
    let keys = KEYS;
    let backends = BACKENDS;
    let mut n_product = 0u32;
    let mut n_harvest = 0u32;
    for i in 0..1200usize {
        let t = t0 + Duration::minutes(i as i64);
        let topic = TOPICS[(i * 5) % TOPICS.len()];
        let user = format!("user-{}", i % 60);
        let body = serde_json::json!({"model": "m", "user": user, "temperature": 0.7,
            "stream": true, "messages": [
            {"role": "system", "content": "You are Juniper, the assistant in our app."},
            {"role": "user", "content": format!("hey, what is {topic} about?")},
            {"role": "assistant", "content": "Happy to help."},
            {"role": "user", "content": "can you give me a short example?"}]});
        send(&d, t, keys[i % 3], backends[(i / 3) % 4], body, 120);
        n_product += 1;
        // From the second fifth on, a fourth key on one of the backends harvests
        // step-by-step answers over every topic: a fifth of the app's traffic overall.
        if i >= 240 && i % 4 == 0 {
            let q = format!(
                "{}\nThink step by step and show your reasoning.",
                question(i)
            );
            let body = serde_json::json!({"model": "m", "max_tokens": 2048, "messages": [
                {"role": "system", "content": "You are Juniper, the assistant in our app."},
                {"role": "user", "content": q}]});
            send(
                &d,
                t + Duration::seconds(20),
                "app-internal-eval",
                backends[0],
                body,
                900,
            );
            n_harvest += 1;
        }
    }
    let share = f64::from(n_harvest) / f64::from(n_harvest + n_product);
    assert!((0.15..0.25).contains(&share), "{share}");
    d.flags();
    let a = d.assessment("app").unwrap();
    assert_eq!(a.segment.as_deref(), Some("key app-internal-eval"), "{a:?}");
    assert!(a.flagged, "{a:?}");
    // The assessment (and so `guard replay`) carries the segment's own signals; the account's
    // are those of all its traffic.
    let elicitation = |sigs: &[tollgate_guard::score::Signal]| {
        sigs.iter()
            .find(|s| s.name == "elicitation")
            .map(|s| s.value)
            .unwrap()
    };
    assert!(elicitation(&a.segment_signals) > 0.9, "{a:?}");
    assert!(elicitation(&a.signals) < 0.25, "{a:?}");
    // Every product key still has its own segment, scored low.
    let ev = d.evidence("app", None, t0 + Duration::days(1)).unwrap();
    for k in keys {
        let s = ev
            .segments
            .iter()
            .find(|s| s.segment == format!("key {k}"))
            .unwrap();
        assert!(s.score < 0.2 && s.requests >= 390, "{s:?}");
    }
}
