//! Progress events of [`save`](crate::save) and [`load`](crate::load).

use std::io::{self, Read};

use kiln_oci::{Digest, Reference};
use kiln_store::ImageId;

/// Bytes between two [`Progress::EntryBytes`] events.
const REPORT_EVERY: u64 = 1 << 20;

/// A progress event. The CLI renders these; libraries never print.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Progress {
    /// `save`: the images and blobs to write are known. `bytes` counts the
    /// blobs whose size is known up front (uncompressed copies of
    /// compressed layers are not included).
    Planned {
        images: usize,
        blobs: usize,
        bytes: u64,
    },
    /// An archive member starts: being written (`save`) or read (`load`).
    EntryStarted { path: String, size: u64 },
    /// Bytes of the current member done so far; sent at most every MiB and
    /// once at its end.
    EntryBytes { path: String, done: u64, total: u64 },
    /// An archive member is done. `digest` is its content digest when it
    /// is a blob; `already_present` tells that `load` found it in the store
    /// already and only verified it.
    EntryDone {
        path: String,
        digest: Option<Digest>,
        size: u64,
        already_present: bool,
    },
    /// `save`: an image's documents were written.
    ImageSaved { id: ImageId, tags: Vec<Reference> },
    /// `load`: an image record was written to the store.
    ImageLoaded { id: ImageId, tags: Vec<Reference> },
}

/// A reader that reports [`Progress::EntryBytes`] as it is read.
pub(crate) struct ProgressReader<'a, R> {
    inner: R,
    path: &'a str,
    total: u64,
    done: u64,
    next_report: u64,
    sink: &'a mut dyn FnMut(&Progress),
}

impl<'a, R: Read> ProgressReader<'a, R> {
    pub(crate) fn new(
        inner: R,
        path: &'a str,
        total: u64,
        sink: &'a mut dyn FnMut(&Progress),
    ) -> Self {
        ProgressReader {
            inner,
            path,
            total,
            done: 0,
            next_report: REPORT_EVERY,
            sink,
        }
    }
}

impl<R: Read> Read for ProgressReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        if self.done >= self.next_report || (n > 0 && self.done == self.total) {
            self.next_report = self.done + REPORT_EVERY;
            (self.sink)(&Progress::EntryBytes {
                path: self.path.to_owned(),
                done: self.done,
                total: self.total,
            });
        }
        Ok(n)
    }
}
