//! Compressing uncompressed layer tars into the store, and the index of
//! compressed copies that lets a rebuild reuse them.
//!
//! ## Streaming
//!
//! A layer is read on a feeder thread (hashed on the way, to check its
//! diff id), compressed, and pushed through a bounded in-memory pipe into
//! [`Store::write_blob`] on the calling thread, which hashes the compressed
//! bytes while writing them to the ingest area. At most a few MiB are in
//! flight; nothing is spooled twice. If the feeder fails (a read error, a
//! diff id mismatch), it aborts the pipe: `write_blob` then fails and
//! discards its temporary file, so no truncated blob is ever committed.
//!
//! ## Determinism
//!
//! The same bytes and settings give the same compressed bytes, whatever
//! the number of cores:
//!
//! - gzip is always written by gzp's parallel compressor (even with one
//!   thread), in independent 128 KiB blocks without a shared dictionary
//!   (gzp only chains dictionaries with its zlib backends, which kiln does
//!   not enable), so the output depends on the block size, never on the
//!   thread count. The header has mtime 0, no file name and OS 255.
//! - zstd always runs in libzstd's multi-threaded mode (at least one
//!   worker), whose output does not depend on the number of workers.
//!   (Single-threaded mode, zero workers, would give other bytes.)

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use gzp::ZWriter;
use gzp::deflate::Gzip;
use gzp::par::compress::{ParCompress, ParCompressBuilder};
use kiln_oci::Digest;
use kiln_oci::digest::Sha256Reader;
use kiln_store::Store;
use serde::{Deserialize, Serialize};

use crate::tarball::{CopyError, copy_sides};

/// gzp's block size: the unit of parallel gzip work. Fixed here (rather
/// than taken from gzp's default) because it determines the output bytes.
const GZIP_BLOCK: usize = 128 << 10;
/// Size of one message through the pipe.
const PIPE_CHUNK: usize = 256 << 10;
/// Messages the pipe holds before the producer blocks.
const PIPE_DEPTH: usize = 16;
/// A tar block: an archive whose first block is all zeros is empty.
const TAR_BLOCK: usize = 512;

/// The compressed encodings of a layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Codec {
    Gzip,
    Zstd,
}

impl Codec {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Codec::Gzip => "gzip",
            Codec::Zstd => "zstd",
        }
    }
}

/// The number of compression threads: every core.
pub(crate) fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Why compressing a layer failed.
#[derive(Debug)]
pub(crate) enum CompressError {
    /// Reading the uncompressed layer failed.
    Read(io::Error),
    /// The compressor failed (or the pipe into the store broke).
    Compress(io::Error),
    /// The layer does not hash to its declared diff id.
    DiffId { actual: Digest },
    /// Writing the blob failed.
    Store(kiln_store::Error),
}

/// The start of a layer stream, read to tell an empty archive from a real
/// one, and the hashing reader positioned after it.
pub(crate) struct Peeked<R> {
    pub(crate) head: Vec<u8>,
    pub(crate) rest: Sha256Reader<R>,
}

impl<R: Read> Peeked<R> {
    /// Reads up to one tar block from `reader`.
    pub(crate) fn new(reader: R) -> io::Result<Peeked<R>> {
        let mut rest = Sha256Reader::new(reader);
        let mut head = vec![0u8; TAR_BLOCK];
        let mut filled = 0;
        while filled < head.len() {
            match rest.read(&mut head[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        head.truncate(filled);
        Ok(Peeked { head, rest })
    }

    /// Whether the archive is empty: no bytes, or a first block of zeros
    /// (the end-of-archive marker; readers ignore what follows it).
    pub(crate) fn is_empty_archive(&self) -> bool {
        self.head.iter().all(|b| *b == 0)
    }

    /// Reads the rest of the stream and returns the digest of all of it.
    pub(crate) fn drain(mut self) -> io::Result<Digest> {
        io::copy(&mut self.rest, &mut io::sink())?;
        Ok(self.rest.finish().0)
    }
}

/// Compresses the layer `input` with `codec` at `level` into the store and
/// returns the blob's digest and size. `diff_id` is checked against the
/// uncompressed bytes before the blob is committed.
pub(crate) fn compress_into_store<R: Read + Send>(
    store: &Store,
    input: Peeked<R>,
    diff_id: &Digest,
    codec: Codec,
    level: i32,
    threads: usize,
) -> Result<(Digest, u64), CompressError> {
    let (writer, reader) = pipe();
    std::thread::scope(|scope| {
        let feeder = scope.spawn(move || feed(input, diff_id, writer, codec, level, threads));
        let stored = store.write_blob(reader, None, None);
        let fed = match feeder.join() {
            Ok(fed) => fed,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        // The feeder's error is the cause when both fail: the store only
        // saw the aborted pipe.
        fed?;
        stored.map_err(CompressError::Store)
    })
}

/// The feeder thread: input → compressor → pipe.
fn feed<R: Read>(
    input: Peeked<R>,
    diff_id: &Digest,
    pipe: PipeWriter,
    codec: Codec,
    level: i32,
    threads: usize,
) -> Result<(), CompressError> {
    let Peeked { head, mut rest } = input;
    let result = {
        let mut source = io::Cursor::new(head).chain(&mut rest);
        match codec {
            Codec::Gzip => gzip(&mut source, pipe, level, threads),
            Codec::Zstd => zstd(&mut source, pipe, level, threads),
        }
    };
    // On error the pipe writer was dropped unfinished: the store sees an
    // aborted stream.
    let pipe = result?;
    let (actual, _) = rest.finish();
    if &actual != diff_id {
        drop(pipe);
        return Err(CompressError::DiffId { actual });
    }
    pipe.finish().map_err(CompressError::Compress)
}

fn gzip(
    source: &mut impl Read,
    pipe: PipeWriter,
    level: i32,
    threads: usize,
) -> Result<PipeWriter, CompressError> {
    let level = u32::try_from(level).unwrap_or(0);
    let gz_err = |e: gzp::GzpError| CompressError::Compress(io::Error::other(e));
    let mut encoder: ParCompress<'static, Gzip, PipeWriter> = ParCompressBuilder::<Gzip>::new()
        .compression_level(gzp::Compression::new(level))
        .num_threads(threads.max(1))
        .map_err(gz_err)?
        .buffer_size(GZIP_BLOCK)
        .map_err(gz_err)?
        .from_writer(pipe);
    // Never call `flush` on the encoder: it would end a block early and
    // change the output.
    let copied = copy_sides(source, &mut encoder);
    // `finish` must run even after an error: gzp's `Drop` would otherwise
    // finish (and panic on failure) itself.
    let finished = encoder.finish();
    match copied {
        Ok(_) => {}
        Err(CopyError::Read(e)) => return Err(CompressError::Read(e)),
        Err(CopyError::Write(e)) => return Err(CompressError::Compress(e)),
    }
    finished.map_err(gz_err)
}

fn zstd(
    source: &mut impl Read,
    pipe: PipeWriter,
    level: i32,
    threads: usize,
) -> Result<PipeWriter, CompressError> {
    let mut encoder = zstd::stream::write::Encoder::new(pipe, level)
        .and_then(|mut e| {
            e.multithread(u32::try_from(threads.max(1)).unwrap_or(1))?;
            Ok(e)
        })
        .map_err(CompressError::Compress)?;
    match copy_sides(source, &mut encoder) {
        Ok(_) => {}
        Err(CopyError::Read(e)) => return Err(CompressError::Read(e)),
        Err(CopyError::Write(e)) => return Err(CompressError::Compress(e)),
    }
    encoder.finish().map_err(CompressError::Compress)
}

enum Message {
    Data(Vec<u8>),
    End,
    Abort,
}

/// A bounded pipe between the compressor and the store.
fn pipe() -> (PipeWriter, PipeReader) {
    let (tx, rx) = sync_channel(PIPE_DEPTH);
    (
        PipeWriter {
            tx,
            buf: Vec::with_capacity(PIPE_CHUNK),
            finished: false,
        },
        PipeReader {
            rx,
            chunk: Vec::new(),
            pos: 0,
            ended: false,
        },
    )
}

/// The writing end. Dropped without [`PipeWriter::finish`], it aborts the
/// stream: the reader fails instead of seeing a clean end.
struct PipeWriter {
    tx: SyncSender<Message>,
    buf: Vec<u8>,
    finished: bool,
}

impl PipeWriter {
    fn send_buffered(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(PIPE_CHUNK));
        self.tx
            .send(Message::Data(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the store stopped reading"))
    }

    fn finish(mut self) -> io::Result<()> {
        self.send_buffered()?;
        self.finished = true;
        self.tx
            .send(Message::End)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the store stopped reading"))
    }
}

impl Write for PipeWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(PIPE_CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= PIPE_CHUNK {
            self.send_buffered()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_buffered()
    }
}

impl Drop for PipeWriter {
    fn drop(&mut self) {
        if !self.finished {
            // The reader may be gone already; nothing to do then.
            let _ = self.tx.send(Message::Abort);
        }
    }
}

struct PipeReader {
    rx: Receiver<Message>,
    chunk: Vec<u8>,
    pos: usize,
    ended: bool,
}

impl Read for PipeReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.chunk.len() {
            if self.ended || out.is_empty() {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Message::Data(chunk)) => {
                    self.chunk = chunk;
                    self.pos = 0;
                }
                Ok(Message::End) => self.ended = true,
                Ok(Message::Abort) | Err(_) => {
                    return Err(io::Error::other("layer compression was aborted"));
                }
            }
        }
        let n = out.len().min(self.chunk.len() - self.pos);
        out[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

// ---------------------------------------------------------------------------
// The index of compressed copies: <root>/exporter/compressed.json
// ---------------------------------------------------------------------------

/// Version of `compressed.json`; a file of another version is ignored.
const INDEX_VERSION: u32 = 1;
const INDEX_DIR: &str = "exporter";
const INDEX_FILE: &str = "compressed.json";
const INDEX_LOCK: &str = "compressed.lock";

#[derive(Debug, Default, Serialize, Deserialize)]
struct IndexFile {
    version: u32,
    entries: Vec<IndexEntry>,
    /// How many entries the last pruning kept (see `try_record`).
    #[serde(default)]
    pruned_len: usize,
}

/// One compressed copy of an uncompressed layer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct IndexEntry {
    diff_id: Digest,
    compression: String,
    level: i32,
    digest: Digest,
    size: u64,
}

/// The index of compressed layer copies in a store.
///
/// `compressed.json` maps `(diff id, compression, level)` to the blob
/// holding that compression. It is only a cache: an entry is used only if
/// its blob is still present with the recorded size, a missing or
/// unreadable file is an empty index, and a failure to update it is logged
/// and otherwise ignored. Updates are read-modify-write under an `flock`
/// on `compressed.lock`, and replace the file atomically (temp file in the
/// same directory, fsync, rename, directory fsync). Entries whose blob was
/// garbage-collected are dropped when the index has doubled since the last
/// such pruning (one `stat` per entry, so not on every update).
///
/// One `CompressedIndex` reads the file once, at its first lookup: a
/// commit looks up every layer.
pub(crate) struct CompressedIndex {
    dir: PathBuf,
    loaded: OnceLock<HashMap<Digest, Vec<IndexEntry>>>,
}

impl CompressedIndex {
    pub(crate) fn new(store: &Store) -> CompressedIndex {
        CompressedIndex {
            dir: store.root().join(INDEX_DIR),
            loaded: OnceLock::new(),
        }
    }

    pub(crate) fn path(&self) -> PathBuf {
        self.dir.join(INDEX_FILE)
    }

    fn read(&self) -> IndexFile {
        let path = self.path();
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return IndexFile::default(),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read the compressed-layer index; ignoring it");
                return IndexFile::default();
            }
        };
        match serde_json::from_slice::<IndexFile>(&bytes) {
            Ok(index) if index.version == INDEX_VERSION => index,
            Ok(index) => {
                tracing::warn!(path = %path.display(), version = index.version, "compressed-layer index has another version; ignoring it");
                IndexFile::default()
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "compressed-layer index is invalid; ignoring it");
                IndexFile::default()
            }
        }
    }

    /// The blob holding `diff_id` compressed with `codec` at `level`, if the
    /// index knows one and the store still has it.
    pub(crate) fn lookup(
        &self,
        store: &Store,
        diff_id: &Digest,
        codec: Codec,
        level: i32,
    ) -> Option<(Digest, u64)> {
        let loaded = self.loaded.get_or_init(|| {
            let mut by_diff_id: HashMap<Digest, Vec<IndexEntry>> = HashMap::new();
            for e in self.read().entries {
                by_diff_id.entry(e.diff_id.clone()).or_default().push(e);
            }
            by_diff_id
        });
        let entry = loaded
            .get(diff_id)?
            .iter()
            .find(|e| e.compression == codec.name() && e.level == level)?
            .clone();
        match store.blob_size(&entry.digest) {
            Ok(size) if size == entry.size => Some((entry.digest, entry.size)),
            Ok(size) => {
                tracing::warn!(digest = %entry.digest, size, expected = entry.size, "indexed compressed layer has another size; recompressing");
                None
            }
            Err(_) => None,
        }
    }

    /// Records compressed copies. Failures are logged, not returned: the
    /// index is a cache.
    pub(crate) fn record(&self, store: &Store, new: &[(Digest, Codec, i32, Digest, u64)]) {
        if new.is_empty() {
            return;
        }
        if let Err(e) = self.try_record(store, new) {
            tracing::warn!(path = %self.path().display(), error = %e, "failed to update the compressed-layer index");
        }
    }

    fn try_record(
        &self,
        store: &Store,
        new: &[(Digest, Codec, i32, Digest, u64)],
    ) -> io::Result<()> {
        fs::create_dir_all(&self.dir)?;
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(self.dir.join(INDEX_LOCK))?;
        lock.lock()?;
        let mut index = self.read();
        index.version = INDEX_VERSION;
        for (diff_id, codec, level, digest, size) in new {
            index.entries.retain(|e| {
                !(&e.diff_id == diff_id && e.compression == codec.name() && e.level == *level)
            });
            index.entries.push(IndexEntry {
                diff_id: diff_id.clone(),
                compression: codec.name().to_owned(),
                level: *level,
                digest: digest.clone(),
                size: *size,
            });
        }
        // Pruning stats every entry's blob: only once the index has
        // doubled since the last time (amortized constant per update).
        if index.entries.len() >= 2 * index.pruned_len.max(32) {
            index
                .entries
                .retain(|e| store.has_blob(&e.digest).unwrap_or(true));
            index.pruned_len = index.entries.len();
        }
        index.entries.sort_by(|a, b| {
            (&a.diff_id, &a.compression, a.level).cmp(&(&b.diff_id, &b.compression, b.level))
        });
        let bytes = serde_json::to_vec(&index).map_err(io::Error::other)?;
        write_atomic(&self.dir, &self.path(), &bytes)?;
        drop(lock);
        Ok(())
    }
}

fn write_atomic(dir: &Path, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = kiln_fs::AtomicFile::in_dir(dir, path)?;
    file.write_all(bytes)?;
    file.commit(kiln_fs::Durability::Durable)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(len: usize) -> Vec<u8> {
        // Compressible but not trivial.
        (0..len).map(|i| ((i * 7 + i / 1000) % 251) as u8).collect()
    }

    fn compress_with(codec: Codec, data: &[u8], threads: usize) -> Vec<u8> {
        let (writer, mut reader) = pipe();
        let data = data.to_vec();
        let handle = std::thread::spawn(move || {
            let mut src = &data[..];
            let w = match codec {
                Codec::Gzip => gzip(&mut src, writer, 6, threads),
                Codec::Zstd => zstd(&mut src, writer, 3, threads),
            };
            match w {
                Ok(w) => w.finish().unwrap(),
                Err(e) => panic!("{e:?}"),
            }
        });
        let mut out = Vec::new();
        reader.read_to_end(&mut out).unwrap();
        handle.join().unwrap();
        out
    }

    #[test]
    fn index_lookups_and_amortized_pruning() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("root")).unwrap();
        let diff = |i: usize| Digest::sha256(format!("layer {i}").as_bytes());
        // One real compressed copy, then 70 whose blobs are gone.
        let kept = store.write_blob_bytes(b"compressed").unwrap();
        let index = CompressedIndex::new(&store);
        index.record(&store, &[(diff(0), Codec::Gzip, 6, kept.clone(), 10)]);
        let gone: Vec<_> = (1..=70)
            .map(|i| (diff(i), Codec::Gzip, 6, diff(1000 + i), 5))
            .collect();
        index.record(&store, &gone[..20]);
        // Under the pruning threshold: the stale entries stay.
        assert_eq!(index.read().entries.len(), 21);
        index.record(&store, &gone[20..]);
        // Doubled past it: pruned down to the live entry.
        let file = index.read();
        assert_eq!(file.entries.len(), 1);
        assert_eq!(file.pruned_len, 1);

        let fresh = CompressedIndex::new(&store);
        assert_eq!(
            fresh.lookup(&store, &diff(0), Codec::Gzip, 6),
            Some((kept, 10))
        );
        assert_eq!(fresh.lookup(&store, &diff(0), Codec::Zstd, 6), None);
        assert_eq!(fresh.lookup(&store, &diff(0), Codec::Gzip, 9), None);
        assert_eq!(fresh.lookup(&store, &diff(5), Codec::Gzip, 6), None);
    }

    #[test]
    fn output_does_not_depend_on_thread_count() {
        let data = sample(3 << 20);
        for codec in [Codec::Gzip, Codec::Zstd] {
            let one = compress_with(codec, &data, 1);
            let four = compress_with(codec, &data, 4);
            assert_eq!(one, four, "{codec:?}");
            let (_, mut plain) = kiln_store::decompress(&one[..]).unwrap();
            let mut back = Vec::new();
            plain.read_to_end(&mut back).unwrap();
            assert_eq!(back, data, "{codec:?}");
        }
    }

    #[test]
    fn gzip_header_has_no_mtime_or_name() {
        let out = compress_with(Codec::Gzip, b"hello", 2);
        assert_eq!(&out[..3], &[0x1f, 0x8b, 8]);
        assert_eq!(out[3], 0, "no FNAME/FCOMMENT flags");
        assert_eq!(&out[4..8], &[0, 0, 0, 0], "mtime 0");
    }

    #[test]
    fn aborted_pipe_is_an_error_not_an_end() {
        let (mut writer, mut reader) = pipe();
        writer.write_all(b"partial").unwrap();
        writer.flush().unwrap();
        drop(writer);
        let mut out = Vec::new();
        assert!(reader.read_to_end(&mut out).is_err());
    }
}
