//! Fixed-work driver for instruction counts of the request path (deterministic, unlike the
//! criterion timings): `Detector::observe` on the `observe` bench's ~1 KB chat bodies over 1,000
//! organizations, benchmark filter loaded. Run under callgrind, collecting only inside `measure`:
//!
//! ```sh
//! cargo build --release -p tollgate-guard --example observe_count
//! valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*measure*' \
//!     target/release/examples/observe_count 20000
//! ```
//!
//! Instructions per request = the total reported by callgrind / the count (20,000 here); the
//! first 5,000 requests (every account created, templates filled) run before collection starts.
//! (Callgrind lists the warm-up calls too, but counts no instructions for them.) The optional
//! second argument: `plain` runs without a benchmark filter (the gateway default), `tiny` sends
//! a two-word body (what a request costs besides the text), `extract` times feature extraction
//! alone from bytes (no benchmark filter), `view` the gateway's path (`ApiRequest::parse`, then
//! the features read from the view), `parse` the view's parse alone. Without valgrind it prints the wall time per request, which on a shared machine is
//! only good for comparing builds run alternately.

use std::hint::black_box;
use time::{Duration, macros::datetime};
use tollgate_guard::corpus::public_prompts;
use tollgate_guard::{Detector, DetectorSettings, Endpoint, Observation};

fn chat_body_1kb(i: usize) -> Vec<u8> {
    let mut user = format!(
        "Request {i}: please summarize the following notes and explain each point clearly.\n"
    );
    while user.len() < 850 {
        user.push_str("The quarterly review covered revenue growth in the northern region, supplier delays, and a plan to hire two engineers. ");
    }
    serde_json::to_vec(&serde_json::json!({
        "model": "acme-large",
        "messages": [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": user}],
        "temperature": 0.7, "max_tokens": 512
    }))
    .unwrap_or_default()
}

struct Load {
    bodies: Vec<Vec<u8>>,
    orgs: Vec<String>,
}

fn run(d: &Detector, load: &Load, from: usize, n: usize) -> f64 {
    let t0 = datetime!(2025-03-03 00:00 UTC);
    let mut acc = 0.0;
    for i in from..from + n {
        let o = d.observe(&Observation {
            time: t0 + Duration::seconds(i as i64),
            organization: &load.orgs[i % load.orgs.len()],
            key: "k",
            client_ip: None,
            endpoint: Endpoint::Chat,
            body: &load.bodies[i % load.bodies.len()],
            model_owner: Some("acme-labs"),
        });
        acc += black_box(o).score;
    }
    acc
}

#[inline(never)]
fn measure(d: &Detector, load: &Load, n: usize) -> f64 {
    run(d, load, 5_000, n)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let mode = args.next().unwrap_or_default();
    let plain = mode == "plain";
    if matches!(mode.as_str(), "extract" | "view" | "parse") {
        let bodies: Vec<Vec<u8>> = (0..64).map(chat_body_1kb).collect();
        let start = std::time::Instant::now();
        let mut acc = 0u64;
        let api = tollgate_wire::Endpoint::ChatCompletions;
        for i in 0..n {
            let body = &bodies[i % 64];
            acc ^= match mode.as_str() {
                // The gateway's path: its one parse, then the features read from the view.
                "view" => tollgate_wire::ApiRequest::parse(body, api, false).map_or(0, |v| {
                    tollgate_guard::features::extract_request(&v, 4000, false)
                        .0
                        .prompt_hash
                }),
                "parse" => tollgate_wire::ApiRequest::parse(body, api, false)
                    .map_or(0, |v| v.prompt_bytes as u64),
                _ => {
                    tollgate_guard::features::extract_with(Endpoint::Chat, body, 4000, false)
                        .0
                        .prompt_hash
                }
            };
            black_box(acc);
        }
        eprintln!(
            "{n} extracts: {:.3} µs each (checksum {acc})",
            start.elapsed().as_secs_f64() * 1e6 / n as f64
        );
        return;
    }
    let load = Load {
        bodies: if mode == "tiny" {
            vec![br#"{"messages":[{"role":"user","content":"hi"}]}"#.to_vec()]
        } else {
            (0..64).map(chat_body_1kb).collect()
        },
        orgs: (0..1000).map(|i| format!("org-{i}")).collect(),
    };
    let d = if plain {
        Detector::new(DetectorSettings::default())
    } else {
        Detector::with_benchmark_prompts(DetectorSettings::default(), &public_prompts())
    }
    .unwrap_or_else(|_| std::process::exit(1));
    black_box(run(&d, &load, 0, 5_000));
    let start = std::time::Instant::now();
    let s = measure(&d, &load, n);
    let el = start.elapsed();
    eprintln!(
        "{n} observes: {:.3} µs each (checksum {s:.3})",
        el.as_secs_f64() * 1e6 / n as f64
    );
}
