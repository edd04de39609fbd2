//! Any bytes as a layer tar (plain, gzip or zstd): extraction must never
//! panic, and nothing may appear outside the destination.
#![no_main]

use kiln_store::{ExtractMode, ExtractOptions, decompress, extract_layer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("root");
    std::fs::create_dir(&dest).unwrap();
    for mode in [ExtractMode::Overlay, ExtractMode::Flatten] {
        let Ok((_, reader)) = decompress(data) else { return };
        let mut options = ExtractOptions::new(mode);
        // Small budgets: a fuzzer must not fill the disk.
        options.max_bytes = Some(16 << 20);
        options.max_entries = Some(10_000);
        let _ = extract_layer(reader, &dest, &options);
        let outside: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .filter(|n| n != "root")
            .collect();
        assert!(outside.is_empty(), "written outside the root: {outside:?}");
    }
});
