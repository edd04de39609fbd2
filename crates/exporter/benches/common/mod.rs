//! Shared by the exporter's benchmarks: a generated layer tar.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::Path;

use kiln_oci::Digest;
use kiln_oci::digest::Sha256Writer;

/// Writes a layer tar of `files` files of `file_size` bytes to `path`
/// (streaming) and returns its digest. `content(seed, len)` gives each
/// file's bytes.
pub fn write_layer<R: Read>(
    path: &Path,
    files: u64,
    file_size: u64,
    content: impl Fn(u64, u64) -> R,
) -> Digest {
    let file = File::create(path).unwrap();
    let mut hashing = Sha256Writer::new(BufWriter::with_capacity(1 << 20, file));
    {
        let mut builder = tar::Builder::new(&mut hashing);
        for i in 0..files {
            let mut header = tar::Header::new_ustar();
            header.set_size(file_size);
            header.set_mode(0o644);
            header.set_mtime(0);
            header.set_entry_type(tar::EntryType::Regular);
            let data = content(0x9e37_79b9_7f4a_7c15 ^ (i + 1), file_size);
            builder
                .append_data(&mut header, format!("data/file-{i:04}"), data)
                .unwrap();
        }
        builder.finish().unwrap();
    }
    hashing.flush().unwrap();
    hashing.finish().0
}
