//! save/load throughput on a generated single-layer image (~200 MB;
//! `KILN_BENCH_MB` changes it). Plain timing, no harness: prints MB/s and
//! the peak resident set size (`VmHWM`) after each phase, which shows
//! whether anything holds a layer in memory.
//!
//! Run with `cargo bench -p kiln-exporter --bench saveload`.

use std::fs::File;
use std::io::{self, Read};
use std::time::Instant;

mod common;

use kiln_exporter::{ImageSelector, SaveFormat, load, save};
use kiln_store::{ImageRecord, Store};

/// Incompressible bytes (xorshift), generated on the fly.
struct Noise {
    state: u64,
    left: u64,
}

impl Read for Noise {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.left as usize) / 8 * 8;
        let n = if n == 0 {
            buf.len().min(self.left as usize)
        } else {
            n
        };
        for chunk in buf[..n].chunks_mut(8) {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            let bytes = self.state.to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        self.left -= n as u64;
        Ok(n)
    }
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn put_image(store: &Store, layer_path: &std::path::Path) -> ImageRecord {
    let (layer, size) = store
        .write_blob(File::open(layer_path).unwrap(), None, None)
        .unwrap();
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [layer.to_string()]},
    });
    let config_bytes = serde_json::to_vec(&config).unwrap();
    let config_digest = store.write_blob_bytes(&config_bytes).unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest.to_string(), "size": config_bytes.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer.to_string(), "size": size}],
    });
    let manifest_digest = store
        .write_blob_bytes(&serde_json::to_vec(&manifest).unwrap())
        .unwrap();
    let mut record = ImageRecord::new(manifest_digest, config_digest);
    record.tags = vec![kiln_oci::Reference::parse_docker_ref("bench/big:1").unwrap()];
    store.put_image(record).unwrap()
}

fn report(what: &str, bytes: u64, start: Instant) {
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{what:<28} {:>8.1} MB in {secs:>6.2} s = {:>7.1} MB/s   peak RSS {:>7} KiB",
        bytes as f64 / 1e6,
        bytes as f64 / 1e6 / secs,
        peak_rss_kib()
    );
}

fn main() {
    let mb: u64 = std::env::var("KILN_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let file_size = 4 << 20;
    let files = (mb << 20).div_ceil(file_size);
    let dir = tempfile::tempdir().unwrap();
    let src = Store::open(dir.path().join("src")).unwrap();

    let start = Instant::now();
    let layer_path = dir.path().join("layer.tar");
    common::write_layer(&layer_path, files, file_size, |state, left| Noise {
        state,
        left,
    });
    let layer_size = std::fs::metadata(&layer_path).unwrap().len();
    let record = put_image(&src, &layer_path);
    std::fs::remove_file(&layer_path).unwrap();
    report("generate + store layer", layer_size, start);

    let selectors = [ImageSelector::Id(record.id.clone())];
    for (format, name) in [(SaveFormat::Docker, "docker"), (SaveFormat::Oci, "oci")] {
        let archive = dir.path().join(format!("{name}.tar"));
        let start = Instant::now();
        save(
            &src,
            &selectors,
            File::create(&archive).unwrap(),
            format,
            |_| {},
        )
        .unwrap();
        let size = std::fs::metadata(&archive).unwrap().len();
        report(&format!("save --format {name}"), size, start);

        let dst = Store::open(dir.path().join(format!("dst-{name}"))).unwrap();
        let start = Instant::now();
        let loaded = load(&dst, File::open(&archive).unwrap(), |_| {}).unwrap();
        assert_eq!(loaded[0].id, record.id);
        report(&format!("load {name} (new store)"), size, start);

        let start = Instant::now();
        load(&dst, File::open(&archive).unwrap(), |_| {}).unwrap();
        report(&format!("load {name} (blobs present)"), size, start);
        std::fs::remove_file(&archive).unwrap();
    }
}
