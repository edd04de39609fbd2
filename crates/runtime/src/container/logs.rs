//! Container logs in Docker's json-file format: one JSON object per line,
//! `{"log":"…\n","stream":"stdout","time":"2024-01-02T03:04:05.123456789Z"}`.
//! Output is split at newlines; a partial line is written when its stream
//! ends (or grows beyond 16 KiB, as Docker does).

use std::fs::File;
use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::runc::Stream;

/// The longest line kept in one entry.
const MAX_LINE: usize = 16 * 1024;

/// One line of `container.log`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    pub log: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    pub time: DateTime<Utc>,
}

impl LogEntry {
    pub fn is_stderr(&self) -> bool {
        self.stream == "stderr"
    }
}

/// Appends entries to a log file; shared by the stdout and stderr pumps.
#[derive(Clone, Debug)]
pub struct LogWriter {
    file: Arc<Mutex<File>>,
}

impl LogWriter {
    pub fn open(path: &Path) -> std::io::Result<LogWriter> {
        let file = File::options().create(true).append(true).open(path)?;
        Ok(LogWriter {
            file: Arc::new(Mutex::new(file)),
        })
    }

    fn write_entry(&self, stream: Stream, data: &[u8]) {
        let entry = LogEntry {
            log: String::from_utf8_lossy(data).into_owned(),
            stream: match stream {
                Stream::Stdout => "stdout",
                Stream::Stderr => "stderr",
            }
            .to_owned(),
            time: Utc::now(),
        };
        let Ok(mut line) = serde_json::to_vec(&entry) else {
            return;
        };
        line.push(b'\n');
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = file.write_all(&line) {
            tracing::warn!(error = %e, "cannot write container log");
        }
    }
}

/// Splits one stream's output into lines for a [`LogWriter`].
#[derive(Debug)]
pub struct LineSplitter {
    writer: LogWriter,
    stream: Stream,
    pending: Vec<u8>,
}

impl LineSplitter {
    pub fn new(writer: LogWriter, stream: Stream) -> LineSplitter {
        LineSplitter {
            writer,
            stream,
            pending: Vec::new(),
        }
    }

    pub fn stream(&self) -> Stream {
        self.stream
    }

    pub fn push(&mut self, mut data: &[u8]) {
        while let Some(i) = data.iter().position(|&b| b == b'\n') {
            self.pending.extend_from_slice(&data[..=i]);
            self.writer.write_entry(self.stream, &self.pending);
            self.pending.clear();
            data = &data[i + 1..];
        }
        self.pending.extend_from_slice(data);
        if self.pending.len() >= MAX_LINE {
            self.flush();
        }
    }

    /// Writes what is left of a partial line.
    pub fn flush(&mut self) {
        if !self.pending.is_empty() {
            self.writer.write_entry(self.stream, &self.pending);
            self.pending.clear();
        }
    }
}

/// Parses complete lines of `bytes` (a log file's content from some
/// offset); returns the entries and how many bytes they took (a trailing
/// partial line is left for later).
pub fn parse_entries(bytes: &[u8]) -> (Vec<LogEntry>, usize) {
    let mut entries = Vec::new();
    let mut used = 0;
    for line in bytes.split_inclusive(|&b| b == b'\n') {
        if !line.ends_with(b"\n") {
            break;
        }
        used += line.len();
        match serde_json::from_slice::<LogEntry>(line) {
            Ok(e) => entries.push(e),
            Err(e) => tracing::warn!(error = %e, "skipping a malformed log line"),
        }
    }
    (entries, used)
}

/// Every entry of a log file (none if it does not exist).
pub fn read_entries(path: &Path) -> std::io::Result<Vec<LogEntry>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for line in std::io::BufReader::new(file).lines() {
        if let Ok(e) = serde_json::from_str::<LogEntry>(&line?) {
            out.push(e);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_json_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("container.log");
        let w = LogWriter::open(&path).unwrap();
        let mut out = LineSplitter::new(w.clone(), Stream::Stdout);
        let mut err = LineSplitter::new(w, Stream::Stderr);
        out.push(b"a\nb");
        err.push(b"oops\n");
        out.push(b"c\n");
        out.push(b"tail");
        out.flush();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(r#"{"log":"a\n","stream":"stdout","time":""#));
        let entries = read_entries(&path).unwrap();
        let logs: Vec<(&str, &str)> = entries
            .iter()
            .map(|e| (e.stream.as_str(), e.log.as_str()))
            .collect();
        assert_eq!(
            logs,
            [
                ("stdout", "a\n"),
                ("stderr", "oops\n"),
                ("stdout", "bc\n"),
                ("stdout", "tail")
            ]
        );
        let (parsed, used) = parse_entries(text.as_bytes());
        assert_eq!(parsed.len(), 4);
        assert_eq!(used, text.len());
        let (parsed, used) = parse_entries(&text.as_bytes()[..text.len() - 3]);
        assert_eq!(parsed.len(), 3);
        assert!(used < text.len());
    }
}
