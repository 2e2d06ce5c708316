//! Request-path cost: `Detector::observe` on a ~1 KB chat body (parse, features, sketch update,
//! score), spread over 1,000 organizations, with and without a benchmark filter, and feature
//! extraction alone (from bytes: `ApiRequest::read`, then the features), and the gateway's path
//! (`parse_view_and_extract_1kb_chat`: its one parse into the wire view, then the features read
//! from it). `scan_text_1kb` measures the vector-based `Scan` (benchmark-file loading); the
//! request path uses the streaming scan inside `extract`. `observe_sparse_bursts_*` is the
//! worst case of the synchronized-activity index: every request is a burst start of a sparse,
//! bursty account (1,000 accounts, 2 s apart, so each account returns every 33 minutes and 30
//! accounts start within the same minute), with the index on and off.

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use time::{Duration, macros::datetime};
use tollgate_guard::corpus::public_prompts;
use tollgate_guard::{Detector, DetectorSettings, Endpoint, Observation, features};

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

fn bench(c: &mut Criterion) {
    let bodies: Vec<Vec<u8>> = (0..64).map(chat_body_1kb).collect();
    let orgs: Vec<String> = (0..1000).map(|i| format!("org-{i}")).collect();
    let d = Detector::with_benchmark_prompts(DetectorSettings::default(), &public_prompts())
        .unwrap_or_else(|_| std::process::exit(1));
    let t0 = datetime!(2025-03-03 00:00 UTC);
    let mut i = 0usize;
    c.bench_function("observe_1kb_chat", |b| {
        b.iter(|| {
            i += 1;
            let o = d.observe(&Observation {
                time: t0 + Duration::seconds(i as i64),
                organization: &orgs[i % orgs.len()],
                key: "k",
                client_ip: None,
                endpoint: Endpoint::Chat,
                body: &bodies[i % bodies.len()],
                model_owner: Some("acme-labs"),
            });
            black_box(o)
        })
    });
    // The gateway's default: no benchmark files, so no overlap features.
    let plain =
        Detector::new(DetectorSettings::default()).unwrap_or_else(|_| std::process::exit(1));
    c.bench_function("observe_1kb_chat_no_benchmarks", |b| {
        b.iter(|| {
            i += 1;
            let o = plain.observe(&Observation {
                time: t0 + Duration::seconds(i as i64),
                organization: &orgs[i % orgs.len()],
                key: "k",
                client_ip: None,
                endpoint: Endpoint::Chat,
                body: &bodies[i % bodies.len()],
                model_owner: Some("acme-labs"),
            });
            black_box(o)
        })
    });
    for (name, sync_links) in [
        ("observe_sparse_bursts_sync_on", true),
        ("observe_sparse_bursts_sync_off", false),
    ] {
        let d = Detector::new(DetectorSettings {
            sync_links,
            ..Default::default()
        })
        .unwrap_or_else(|_| std::process::exit(1));
        let mut j = 0usize;
        c.bench_function(name, |b| {
            b.iter(|| {
                j += 1;
                let o = d.observe(&Observation {
                    time: t0 + Duration::seconds(2 * j as i64),
                    organization: &orgs[j % orgs.len()],
                    key: "k",
                    client_ip: None,
                    endpoint: Endpoint::Chat,
                    body: &bodies[j % bodies.len()],
                    model_owner: Some("acme-labs"),
                });
                black_box(o)
            })
        });
    }
    // Segments in use: a client address and an end user on every request.
    let seg = Detector::new(DetectorSettings::default()).unwrap_or_else(|_| std::process::exit(1));
    let ips: Vec<std::net::IpAddr> = (0..200u32)
        .map(|k| std::net::IpAddr::from([10, 1, (k / 50) as u8, (k % 50) as u8]))
        .collect();
    // Request `i` of the 1,000 organizations, from one of the 200 addresses.
    let with_ip = |i: usize| Observation {
        time: t0 + Duration::seconds(i as i64),
        organization: &orgs[i % orgs.len()],
        key: "k",
        client_ip: Some(ips[(i / 7) % ips.len()]),
        endpoint: Endpoint::Chat,
        body: &bodies[i % bodies.len()],
        model_owner: Some("acme-labs"),
    };
    c.bench_function("observe_1kb_chat_ip_and_user", |b| {
        b.iter(|| {
            i += 1;
            let o = seg.observe(&with_ip(i));
            black_box(o)
        })
    });
    // The same traffic on the offline schedule (`observe_and_recluster`: re-clusters inline
    // every `cluster_interval` = 1,000 observations), which is what `observe` cost on the
    // request path before re-clustering moved to a background task.
    let inline =
        Detector::new(DetectorSettings::default()).unwrap_or_else(|_| std::process::exit(1));
    let mut k = 0usize;
    c.bench_function("observe_1kb_chat_ip_and_user_inline_recluster", |b| {
        b.iter(|| {
            k += 1;
            let o = inline.observe_and_recluster(&with_ip(k));
            black_box(o)
        })
    });
    // Cross-account work (address pools, corroboration, union-find, cluster scores) over the
    // 1,000 accounts above, which share 200 addresses: run by the gateway's background task
    // every `cluster_interval` observations, never by `observe`.
    c.bench_function("recluster_1000_accounts_200_shared_ips", |b| {
        b.iter(|| seg.recluster())
    });
    c.bench_function("extract_features_1kb_chat", |b| {
        b.iter(|| {
            i += 1;
            black_box(
                features::extract(Endpoint::Chat, &bodies[i % bodies.len()], 4000)
                    .0
                    .prompt_hash,
            )
        })
    });
    // The gateway's path: its one parse into the wire view, then the features read from it.
    c.bench_function("parse_view_and_extract_1kb_chat", |b| {
        b.iter(|| {
            i += 1;
            let body = &bodies[i % bodies.len()];
            let view = tollgate_wire::ApiRequest::parse(
                body,
                tollgate_wire::Endpoint::ChatCompletions,
                false,
            );
            black_box(view.map(|v| features::extract_request(&v, 4000, true).0.prompt_hash))
        })
    });
    let text: String = String::from_utf8_lossy(&bodies[0]).into_owned();
    c.bench_function("scan_text_1kb", |b| {
        b.iter(|| {
            let mut s = features::Scan::default();
            s.push_text(black_box(&text));
            black_box((s.topic(), s.elicitation()))
        })
    });
    c.bench_function("parse_json_value_1kb", |b| {
        b.iter(|| {
            black_box(serde_json::from_slice::<serde_json::Value>(black_box(&bodies[0])).is_ok())
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
