//! How long pulling a real image takes, for measuring changes to the pull
//! path by hand (ignored: it needs a registry holding the image):
//!
//! ```text
//! RUNS=9 cargo test -p kiln-registry --test pull_timing -- --ignored --nocapture
//! ```
//!
//! `KILN_PULL_TIMING_REF` names the image (default:
//! `127.0.0.1:5000/debian:bookworm-slim`). Each run pulls into a fresh
//! store; the times are printed sorted, with their median.

mod common;

use std::time::Instant;

use common::*;
use kiln_registry::{Client, ClientConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a registry holding the image; run by hand"]
async fn pull_time() {
    let image = std::env::var("KILN_PULL_TIMING_REF")
        .unwrap_or_else(|_| "127.0.0.1:5000/debian:bookworm-slim".to_owned());
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5)
        .max(1);
    let mut times = Vec::new();
    for _ in 0..runs {
        let (_dir, store) = temp_store();
        let client = Client::new(ClientConfig::default(), None).unwrap();
        let start = Instant::now();
        pull(&client, &store, &image).await.unwrap();
        times.push(start.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    eprintln!(
        "pull {image}: {times:.3?} s, median {:.3} s",
        times[times.len() / 2]
    );
}
