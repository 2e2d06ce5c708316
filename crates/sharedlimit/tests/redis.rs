//! The shared buckets against a throwaway Redis: two clients (two "instances") never admit more
//! than the limit together, refusals take nothing, settle and release give back, and a stopped
//! Redis is an error (the gateway then applies its failure mode).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use tollgate_sharedlimit::{Bucket, Reserve, SharedLimits};

fn bucket(entity: &str, tokens: bool, limit: u64) -> Bucket {
    Bucket {
        entity: entity.into(),
        tokens,
        limit,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_clients_never_admit_more_than_the_limit() {
    let redis = tollgate_testkit::Redis::start().unwrap();
    let a = Arc::new(SharedLimits::new(&redis.url(), Duration::from_secs(2)).unwrap());
    let b = Arc::new(SharedLimits::new(&redis.url(), Duration::from_secs(2)).unwrap());
    let buckets = vec![
        bucket("key:k", false, 50),
        bucket("project:p", true, 1_000_000),
    ];
    let mut tasks = Vec::new();
    for i in 0..200 {
        let c = if i % 2 == 0 { a.clone() } else { b.clone() };
        let buckets = buckets.clone();
        tasks.push(tokio::spawn(async move {
            c.reserve(&buckets, 10).await.unwrap()
        }));
    }
    let mut admitted = 0;
    for t in tasks {
        match t.await.unwrap() {
            Reserve::Admitted(_) => admitted += 1,
            Reserve::Refused {
                index, retry_after, ..
            } => {
                assert_eq!(index, 0, "the request bucket is the short one");
                assert!(retry_after > Duration::ZERO);
            }
        }
    }
    // 50 per minute refills less than one request during the burst (under a second or so).
    assert!((50..=51).contains(&admitted), "admitted {admitted}");
}

#[tokio::test]
async fn refusals_take_nothing_and_settle_gives_back() {
    let redis = tollgate_testkit::Redis::start().unwrap();
    let s = SharedLimits::new(&redis.url(), Duration::from_secs(2)).unwrap();
    let b = vec![bucket("key:t", true, 1000), bucket("key:t", false, 100)];
    let Reserve::Admitted(levels) = s.reserve(&b, 600).await.unwrap() else {
        panic!("first reservation refused")
    };
    assert_eq!(levels[0].remaining, 400);
    assert_eq!(levels[1].remaining, 99);
    // Refused on tokens: the request bucket is not charged either.
    let Reserve::Refused { index, levels, .. } = s.reserve(&b, 500).await.unwrap() else {
        panic!("over-limit reservation admitted")
    };
    assert_eq!(index, 0);
    assert_eq!(levels[1].remaining, 99);
    // Settling 600 reserved down to 100 used gives 500 back.
    s.settle(&b, 600, 100).await.unwrap();
    let Reserve::Admitted(levels) = s.reserve(&b, 500).await.unwrap() else {
        panic!("refused after settle")
    };
    assert!((400..=401).contains(&levels[0].remaining));
    s.release(&b, 500).await.unwrap();
    let Reserve::Admitted(levels) = s.reserve(&b, 0).await.unwrap() else {
        panic!("refused after release")
    };
    // 100 - 1 - 1 (settled reservation) + 1 (released) - 1, plus any refill meanwhile.
    assert!((98..=99).contains(&levels[1].remaining));

    redis.stop().unwrap();
    assert!(s.reserve(&b, 1).await.is_err());
}
