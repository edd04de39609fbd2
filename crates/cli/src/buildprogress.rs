//! Build progress: renders the solver's typed event stream the way
//! BuildKit does. `plain` prints `#N [stage i/n] INSTRUCTION`, every log
//! line with its time offset, and `#N DONE 0.3s` / `#N CACHED` /
//! `#N ERROR`; `tty` shows one live line per step with its timer and last
//! output line; `rawjson` prints one JSON object per event; `quiet` prints
//! nothing.

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant, SystemTime};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use kiln_solver::{Event, EventKind, LogStream, VertexDigest};

/// How progress is shown (`--progress`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressMode {
    /// tty when stderr is a terminal, plain otherwise.
    Auto,
    Tty,
    Plain,
    Rawjson,
    Quiet,
}

impl ProgressMode {
    /// Resolves `auto` against the terminal.
    pub fn resolve(self) -> ProgressMode {
        match self {
            ProgressMode::Auto => {
                if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
                    ProgressMode::Tty
                } else {
                    ProgressMode::Plain
                }
            }
            other => other,
        }
    }
}

struct Step {
    number: usize,
    name: String,
    started: Instant,
    /// Bytes of a log line not yet ended by `\n`.
    partial: Vec<u8>,
    /// The last complete lines (for error reports and the tty view).
    tail: Vec<String>,
    bar: Option<ProgressBar>,
}

/// Lines of output kept per step for the failure report.
const TAIL_LINES: usize = 20;

/// Renders events to stderr.
pub struct Renderer {
    mode: ProgressMode,
    steps: HashMap<VertexDigest, Step>,
    next: usize,
    last_printed: Option<VertexDigest>,
    multi: Option<MultiProgress>,
    start: Instant,
}

impl Renderer {
    pub fn new(mode: ProgressMode) -> Renderer {
        let mode = mode.resolve();
        let multi = (mode == ProgressMode::Tty)
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Renderer {
            mode,
            steps: HashMap::new(),
            next: 1,
            last_printed: None,
            multi,
            start: Instant::now(),
        }
    }

    /// The last output lines of the step named `name` (for errors).
    pub fn tail_of(&self, digest: &VertexDigest) -> Vec<String> {
        self.steps
            .get(digest)
            .map(|s| s.tail.clone())
            .unwrap_or_default()
    }

    /// Prints a line outside the live area.
    pub fn println(&self, line: &str) {
        match &self.multi {
            Some(m) => {
                let _ = m.println(line);
            }
            None if self.mode != ProgressMode::Quiet => eprintln!("{line}"),
            None => {}
        }
    }

    pub fn handle(&mut self, event: &Event) {
        if self.mode == ProgressMode::Rawjson {
            self.raw(event);
        }
        match &event.kind {
            EventKind::Started { name } => {
                let number = self.next;
                self.next += 1;
                let bar = self.multi.as_ref().map(|m| {
                    let bar = m.add(ProgressBar::new_spinner());
                    bar.set_style(
                        ProgressStyle::with_template(" {spinner} {prefix} {wide_msg} {elapsed:>4}")
                            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                    );
                    bar.set_prefix(name.clone());
                    bar.enable_steady_tick(Duration::from_millis(100));
                    bar
                });
                self.steps.insert(
                    event.digest,
                    Step {
                        number,
                        name: name.clone(),
                        started: Instant::now(),
                        partial: Vec::new(),
                        tail: Vec::new(),
                        bar,
                    },
                );
                if self.mode == ProgressMode::Plain {
                    self.plain_header(&event.digest);
                }
            }
            EventKind::Log { stream, bytes } => self.log(&event.digest, *stream, bytes),
            EventKind::Progress { .. } => {}
            EventKind::Cached { .. } => self.finish(&event.digest, "CACHED", None),
            EventKind::Completed { duration, .. } => {
                let text = format!("DONE {:.1}s", duration.as_secs_f64());
                self.finish(&event.digest, &text, None)
            }
            EventKind::Failed { error } => {
                // The step is named on the line already: show the cause.
                let cause = std::error::Error::source(error)
                    .map(error_text)
                    .unwrap_or_else(|| error_text(error));
                let text = format!("ERROR: {cause}");
                self.finish(&event.digest, &text, Some(()))
            }
            EventKind::Cancelled => self.finish(&event.digest, "CANCELED", Some(())),
        }
    }

    fn plain_header(&mut self, digest: &VertexDigest) {
        if self.last_printed.as_ref() == Some(digest) {
            return;
        }
        let Some(step) = self.steps.get(digest) else {
            return;
        };
        if self.last_printed.is_some() {
            eprintln!();
        }
        eprintln!("#{} {}", step.number, step.name);
        self.last_printed = Some(*digest);
    }

    fn log(&mut self, digest: &VertexDigest, _stream: LogStream, bytes: &[u8]) {
        let mut lines = Vec::new();
        if let Some(step) = self.steps.get_mut(digest) {
            step.partial.extend_from_slice(bytes);
            while let Some(pos) = step.partial.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = step.partial.drain(..=pos).collect();
                let line = String::from_utf8_lossy(&line[..line.len() - 1])
                    .trim_end_matches('\r')
                    .to_string();
                lines.push(line);
            }
        }
        for line in lines {
            self.emit_line(digest, line);
        }
    }

    fn emit_line(&mut self, digest: &VertexDigest, line: String) {
        if self.mode == ProgressMode::Plain {
            self.plain_header(digest);
        }
        let Some(step) = self.steps.get_mut(digest) else {
            return;
        };
        if self.mode == ProgressMode::Plain {
            eprintln!(
                "#{} {:.3} {}",
                step.number,
                step.started.elapsed().as_secs_f64(),
                line
            );
        }
        if let Some(bar) = &step.bar {
            bar.set_message(line.chars().take(120).collect::<String>());
        }
        step.tail.push(line);
        if step.tail.len() > TAIL_LINES {
            step.tail.remove(0);
        }
    }

    fn finish(&mut self, digest: &VertexDigest, text: &str, failed: Option<()>) {
        // Flush an unterminated last log line.
        let rest = self
            .steps
            .get_mut(digest)
            .map(|s| std::mem::take(&mut s.partial))
            .unwrap_or_default();
        if !rest.is_empty() {
            self.emit_line(digest, String::from_utf8_lossy(&rest).to_string());
        }
        if self.mode == ProgressMode::Plain {
            self.plain_header(digest);
            if let Some(step) = self.steps.get(digest) {
                eprintln!("#{} {text}", step.number);
            }
        }
        if let Some(step) = self.steps.get_mut(digest)
            && let Some(bar) = step.bar.take()
        {
            let mark = if failed.is_some() { "✗" } else { "✔" };
            bar.set_style(
                ProgressStyle::with_template(" {prefix} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_prefix(format!("{mark} {}", step.name));
            bar.finish_with_message(text.to_string());
        }
    }

    fn raw(&self, event: &Event) {
        let at = event
            .at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default();
        let mut obj = serde_json::json!({"vertex": event.digest.to_string(), "time": at});
        let kind = match &event.kind {
            EventKind::Started { name } => {
                obj["name"] = name.clone().into();
                "started"
            }
            EventKind::Cached { .. } => "cached",
            EventKind::Log { stream, bytes } => {
                obj["stream"] = match stream {
                    LogStream::Stdout => 1,
                    LogStream::Stderr => 2,
                }
                .into();
                obj["data"] = String::from_utf8_lossy(bytes).into_owned().into();
                "log"
            }
            EventKind::Progress { current, total } => {
                obj["current"] = (*current).into();
                obj["total"] = (*total).into();
                "progress"
            }
            EventKind::Completed { duration, .. } => {
                obj["duration"] = duration.as_secs_f64().into();
                "completed"
            }
            EventKind::Failed { error } => {
                obj["error"] = error_text(error).into();
                "error"
            }
            EventKind::Cancelled => "canceled",
        };
        obj["kind"] = kind.into();
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{obj}");
    }

    /// The closing summary line of the tty view.
    pub fn finish_all(&self, ok: bool) {
        if let Some(m) = &self.multi {
            let _ = m.clear();
            let _ = ok;
        }
        if self.mode == ProgressMode::Tty {
            let mut done = 0;
            for step in self.steps.values() {
                if step.bar.is_none() {
                    done += 1;
                }
            }
            eprintln!(
                "[+] Building {:.1}s ({}/{}) {}",
                self.start.elapsed().as_secs_f64(),
                done,
                self.steps.len(),
                if ok { "FINISHED" } else { "" }
            );
            let mut steps: Vec<&Step> = self.steps.values().collect();
            steps.sort_by_key(|s| s.number);
            for s in steps {
                eprintln!(" => {}", s.name);
            }
        }
    }
}

/// An error and its causes on one line.
pub fn error_text(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cause = c.source();
    }
    s
}
