//! Layer compression throughput of `commit_image`: a generated ~200 MB
//! layer (`KILN_BENCH_MB` changes it) committed with gzip (default level,
//! every core), zstd (default level, every core) and uncompressed, each
//! into a fresh store. Plain timing, no harness: prints MB/s of
//! uncompressed input and the compression ratio.
//!
//! Run with `cargo bench -p kiln-exporter --bench compress`.

use std::io::{self, Read};
use std::time::Instant;

mod common;

use kiln_exporter::{CommitOptions, Compression, LayerInput, commit_image};
use kiln_oci::config::ImageConfig;
use kiln_store::Store;

/// Partly compressible content: runs of text-like bytes mixed with noise,
/// closer to real layers than either pure noise or zeros.
struct Mixed {
    state: u64,
    left: u64,
}

impl Read for Mixed {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.left as usize);
        for (i, byte) in buf[..n].iter_mut().enumerate() {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            *byte = if (self.state >> 60) < 10 {
                // ~60 %: a small alphabet, compresses well.
                b"abcdefgh ijk\n"[(i + (self.state as usize & 3)) % 13]
            } else {
                self.state as u8
            };
        }
        self.left -= n as u64;
        Ok(n)
    }
}

fn main() {
    let mb: u64 = std::env::var("KILN_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let dir = tempfile::tempdir().unwrap();
    let layer_path = dir.path().join("layer.tar");
    let files = mb.max(1);
    let diff_id = common::write_layer(&layer_path, files, 1 << 20, |state, left| Mixed {
        state,
        left,
    });
    let size = std::fs::metadata(&layer_path).unwrap().len();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "layer: {:.1} MB uncompressed, {threads} threads",
        size as f64 / 1e6
    );
    let config = ImageConfig {
        architecture: "amd64".into(),
        os: "linux".into(),
        ..Default::default()
    };
    for compression in [
        Compression::Gzip,
        Compression::Zstd,
        Compression::Uncompressed,
    ] {
        let store = Store::open(dir.path().join(format!("store-{compression:?}"))).unwrap();
        let opts = CommitOptions {
            compression,
            source_date_epoch: Some(0),
            ..Default::default()
        };
        let start = Instant::now();
        let image = commit_image(
            &store,
            &[LayerInput::path(diff_id.clone(), &layer_path)],
            config.clone(),
            &opts,
        )
        .unwrap();
        let secs = start.elapsed().as_secs_f64();
        let stored = image.layers[0].size;
        println!(
            "{:<13} {:>8.1} MB/s  {:>6.2}s  ratio {:.3}",
            format!("{compression:?}:"),
            size as f64 / 1e6 / secs,
            secs,
            stored as f64 / size as f64
        );
        // A second commit reuses the compressed copy.
        let start = Instant::now();
        let again = commit_image(
            &store,
            &[LayerInput::path(diff_id.clone(), &layer_path)],
            config.clone(),
            &opts,
        )
        .unwrap();
        assert_eq!(again.manifest_digest, image.manifest_digest);
        println!(
            "{:<13} {:>8.3}s  (second commit, reused {} layer)",
            "",
            start.elapsed().as_secs_f64(),
            again.stats.reused
        );
    }
}
