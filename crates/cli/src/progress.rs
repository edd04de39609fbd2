//! Progress bars for `save` and `load`, drawn on stderr when it is a
//! terminal, as Docker draws them for `docker load`:
//!
//! ```text
//! 3f4c1a2b9d8e: Loading layer [=========================>                        ]  12.3MB/45.6MB
//! ```
//!
//! One bar per layer-sized archive member (small members, such as configs
//! and manifests, are only counted), then one summary line. When stderr is
//! not a terminal nothing is drawn at all: Docker prints nothing for
//! `save`, and `load` prints only its `Loaded image:` lines on stdout.
//!
//! The exporter reports [`Progress`] events; turning them into bars is the
//! CLI's business only.

use std::io::IsTerminal;

use indicatif::{
    MultiProgress, ProgressBar, ProgressDrawTarget, ProgressFinish, ProgressState, ProgressStyle,
};
use kiln_exporter::Progress;

use crate::format::human_size4;

/// Members smaller than this get no bar of their own.
const BAR_MIN: u64 = 64 << 10;

/// Which command is running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Save,
    Load,
}

impl Action {
    fn verb(self) -> &'static str {
        match self {
            Action::Save => "Saving",
            Action::Load => "Loading",
        }
    }
}

/// Counts for the summary line.
#[derive(Debug, Default, PartialEq, Eq)]
struct Totals {
    images: usize,
    blobs: usize,
    bytes: u64,
    present: usize,
}

/// Turns exporter progress events into bars; see the module docs.
pub struct Bars {
    action: Action,
    /// `None` when nothing is drawn.
    multi: Option<MultiProgress>,
    current: Option<ProgressBar>,
    /// Finished bars, kept alive so they stay on screen (the
    /// `MultiProgress` forgets dropped bars at its next redraw).
    done: Vec<ProgressBar>,
    totals: Totals,
}

impl Bars {
    /// Bars on stderr if `enabled` and stderr is a terminal; otherwise a
    /// sink that draws nothing.
    pub fn stderr(action: Action, enabled: bool) -> Bars {
        let multi = (enabled && std::io::stderr().is_terminal())
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Bars::with(action, multi)
    }

    fn with(action: Action, multi: Option<MultiProgress>) -> Bars {
        Bars {
            action,
            multi,
            current: None,
            done: Vec::new(),
            totals: Totals::default(),
        }
    }

    fn style(&self) -> ProgressStyle {
        let template = format!(
            "{{prefix}}: {} layer  [{{bar:50}}]  {{sizes}}",
            self.action.verb()
        );
        // The template is fixed text around valid keys: it always parses.
        ProgressStyle::with_template(&template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ")
            .with_key(
                "sizes",
                |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = w.write_str(&sizes(state.pos(), state.len().unwrap_or(0)));
                },
            )
    }

    /// Handles one event of `kiln_exporter::save` or `load`.
    pub fn event(&mut self, event: &Progress) {
        match event {
            Progress::EntryStarted { path, size } if is_blob(path) => {
                self.finish_current();
                if *size >= BAR_MIN
                    && let Some(multi) = &self.multi
                {
                    let bar = ProgressBar::new(*size)
                        .with_style(self.style())
                        .with_prefix(short_name(path))
                        .with_finish(ProgressFinish::Abandon);
                    self.current = Some(multi.add(bar));
                }
            }
            Progress::EntryBytes { done, total, .. } => {
                if let Some(bar) = &self.current {
                    bar.set_length(*total);
                    bar.set_position(*done);
                }
            }
            Progress::EntryDone {
                path,
                size,
                already_present,
                ..
            } if is_blob(path) => {
                if let Some(bar) = self.current.take() {
                    bar.set_position(*size);
                    bar.finish();
                    self.done.push(bar);
                }
                self.totals.blobs += 1;
                self.totals.bytes += size;
                self.totals.present += usize::from(*already_present);
            }
            Progress::ImageSaved { .. } | Progress::ImageLoaded { .. } => {
                self.totals.images += 1;
            }
            _ => {}
        }
    }

    fn finish_current(&mut self) {
        if let Some(bar) = self.current.take() {
            bar.finish();
            self.done.push(bar);
        }
    }

    /// The summary line printed at the end.
    fn summary(&self) -> String {
        let t = &self.totals;
        let images = plural(t.images, "image");
        let blobs = plural(t.blobs, "blob");
        let bytes = human_size4(t.bytes);
        match self.action {
            Action::Save => format!("Saved {images}: {blobs}, {bytes}"),
            Action::Load if t.present > 0 => format!(
                "Loaded {images}: {blobs}, {bytes} ({} already present)",
                t.present
            ),
            Action::Load => format!("Loaded {images}: {blobs}, {bytes}"),
        }
    }

    /// Leaves the finished bars on screen and prints the summary. Without
    /// this (on error), unfinished bars stay where they stopped.
    pub fn finish(mut self) {
        self.finish_current();
        if let Some(multi) = &self.multi {
            let line = multi.add(
                ProgressBar::new(0).with_style(
                    ProgressStyle::with_template("{msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                ),
            );
            line.finish_with_message(self.summary());
            self.done.push(line);
        }
    }
}

fn plural(n: usize, one: &str) -> String {
    if n == 1 {
        format!("{n} {one}")
    } else {
        format!("{n} {one}s")
    }
}

/// `12.3MB/45.6MB`, with Docker's units.
fn sizes(done: u64, total: u64) -> String {
    format!("{}/{}", human_size4(done), human_size4(total))
}

/// Archive members that are content (blobs, legacy `<id>/layer.tar`), as
/// opposed to `index.json`, `manifest.json` and `oci-layout`.
fn is_blob(path: &str) -> bool {
    path.contains('/')
}

/// The 12-character name Docker shows: the start of the digest hex of
/// `blobs/sha256/<hex>`, or of the directory of `<id>/layer.tar`.
fn short_name(path: &str) -> String {
    let name = path
        .strip_prefix("blobs/sha256/")
        .unwrap_or_else(|| path.split('/').next().unwrap_or(path));
    name.chars().take(12).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn started(path: &str, size: u64) -> Progress {
        Progress::EntryStarted {
            path: path.into(),
            size,
        }
    }

    fn done(path: &str, size: u64, already_present: bool) -> Progress {
        Progress::EntryDone {
            path: path.into(),
            digest: None,
            size,
            already_present,
        }
    }

    #[test]
    fn names_and_sizes() {
        let hex = "3f4c1a2b9d8e".to_owned() + &"0".repeat(52);
        assert_eq!(short_name(&format!("blobs/sha256/{hex}")), "3f4c1a2b9d8e");
        assert_eq!(short_name(&format!("{hex}/layer.tar")), "3f4c1a2b9d8e");
        assert!(!is_blob("manifest.json") && !is_blob("index.json"));
        assert_eq!(sizes(12_300_000, 45_600_000), "12.3MB/45.6MB");
    }

    #[test]
    fn counts_blobs_not_documents() {
        let hidden = MultiProgress::with_draw_target(ProgressDrawTarget::hidden());
        let mut bars = Bars::with(Action::Load, Some(hidden));
        let layer = "blobs/sha256/aaaaaaaaaaaaaaaa";
        bars.event(&started("manifest.json", 300));
        bars.event(&done("manifest.json", 300, false));
        bars.event(&started(layer, 2 << 20));
        assert!(bars.current.is_some(), "a layer-sized member gets a bar");
        bars.event(&Progress::EntryBytes {
            path: layer.into(),
            done: 1 << 20,
            total: 2 << 20,
        });
        assert_eq!(bars.current.as_ref().map(|b| b.position()), Some(1 << 20));
        bars.event(&done(layer, 2 << 20, false));
        assert!(bars.current.is_none());
        bars.event(&started("blobs/sha256/bbbb", 100));
        assert!(bars.current.is_none(), "a small member gets none");
        bars.event(&done("blobs/sha256/bbbb", 100, true));
        assert_eq!(
            bars.totals,
            Totals {
                images: 0,
                blobs: 2,
                bytes: (2 << 20) + 100,
                present: 1
            }
        );
        assert_eq!(
            bars.summary(),
            "Loaded 0 images: 2 blobs, 2.097MB (1 already present)"
        );
    }

    #[test]
    fn disabled_bars_draw_nothing() {
        let mut bars = Bars::with(Action::Save, None);
        bars.event(&started("blobs/sha256/aaaa", 10 << 20));
        assert!(bars.current.is_none());
        bars.finish();
    }
}
