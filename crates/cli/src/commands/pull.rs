//! `kiln pull NAME[:TAG|@DIGEST]`: download an image from a registry, with
//! Docker's output:
//!
//! ```text
//! Using default tag: latest
//! latest: Pulling from library/busybox
//! 9ad63333ebc9: Pull complete
//! Digest: sha256:…
//! Status: Downloaded newer image for busybox:latest
//! docker.io/library/busybox:latest
//! ```
//!
//! Also home of what `pull` and `push` share: the per-layer status lines
//! ([`LayerLines`]), the async runtime and the registry error wording.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;

use anyhow::Context as _;
use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use kiln_oci::{Digest, Platform, Reference};
use kiln_registry::{PullEvent, PullOptions, PullProgress};

use super::Context;
use crate::format::human_size4;
use crate::render::DockerError;

#[derive(Args, Debug)]
#[command(about = "Download an image from a registry")]
pub struct PullArgs {
    /// Download all tagged images in the repository
    #[arg(short = 'a', long = "all-tags")]
    all_tags: bool,
    /// Set platform if server is multi-platform capable
    #[arg(long = "platform", value_name = "string")]
    platform: Option<String>,
    /// Suppress verbose output
    #[arg(short = 'q', long = "quiet")]
    quiet: bool,
    /// The image to pull
    #[arg(value_name = "NAME[:TAG|@DIGEST]")]
    name: String,
}

pub fn run(ctx: &Context, a: PullArgs) -> anyhow::Result<()> {
    let named = parse_name(&a.name)?;
    if a.all_tags && !named.is_name_only() {
        return Err(DockerError("tag can't be used with --all-tags/-a".into()).into());
    }
    let platform = a
        .platform
        .as_deref()
        .map(str::parse::<Platform>)
        .transpose()
        .map_err(|e| DockerError(format!("invalid platform: {e}")))?;
    let options = PullOptions { platform };
    let store = ctx.store()?;
    let client = crate::config::registry_client()?;
    let concurrency = client.config().concurrency.max(1);
    let say = |line: &str| {
        if !a.quiet {
            println!("{line}");
        }
    };
    if !a.all_tags && named.is_name_only() {
        say("Using default tag: latest");
    }
    let runtime = runtime()?;
    let references: Vec<Reference> = if a.all_tags {
        let mut tags = runtime
            .block_on(client.list_tags(&named))
            .map_err(|e| registry_error(e, &named.familiar_name()))?;
        tags.sort();
        tags.iter()
            .map(|t| named.with_tag(t))
            .collect::<Result<_, _>>()
            .context("the registry listed an invalid tag")?
    } else if named.digest().is_some() {
        vec![named.without_tag()]
    } else {
        vec![named.with_default_tag()]
    };
    let mut updated = false;
    let mut last_status = String::new();
    for reference in &references {
        let tag_or_digest = match reference.digest() {
            Some(d) => d.to_string(),
            None => reference.tag().unwrap_or("latest").to_owned(),
        };
        say(&format!(
            "{tag_or_digest}: Pulling from {}",
            reference.path()
        ));
        let lines = Mutex::new(LayerLines::stdout(!a.quiet, concurrency));
        let result = runtime.block_on(client.pull(&store, reference, &options, &|event| {
            lock(&lines).pull_event(&event)
        }));
        lines
            .into_inner()
            .unwrap_or_else(|p| p.into_inner())
            .finish();
        let result = result.map_err(|e| registry_error(e, &reference.familiar_string()))?;
        say(&format!("Digest: {}", result.digest));
        updated |= result.updated;
        last_status = result.status_line();
    }
    if a.all_tags {
        let verb = if updated {
            "Downloaded newer image for"
        } else {
            "Image is up to date for"
        };
        say(&format!("Status: {verb} {}", named.familiar_name()));
        println!("{}", named.name());
    } else {
        say(&last_status);
        println!("{}", references[0]);
    }
    Ok(())
}

/// Parses a name as `docker pull` does (normalised, no default tag).
pub fn parse_name(name: &str) -> anyhow::Result<Reference> {
    Reference::parse_normalized(name)
        .map_err(|e| DockerError(format!("invalid reference format: {e}")).into())
}

/// The async runtime the registry client runs on.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Runtime::new().context("failed to start the async runtime")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A registry error in Docker's one-line form, with a `hint:` line when
/// there is something to suggest. `what` is the reference as the user
/// knows it (`busybox:nope`).
pub fn registry_error(e: kiln_registry::Error, what: &str) -> anyhow::Error {
    use kiln_registry::Error;
    let hint = match &e {
        Error::Unauthorized { registry, .. } => Some(login_hint(registry)),
        other => other.hint(),
    };
    let message = match &e {
        Error::ManifestUnknown { .. } => format!("manifest for {what} not found: manifest unknown"),
        Error::Unauthorized { message, .. } => {
            let mut m = e.to_string();
            if let Some(detail) = message.as_deref().filter(|d| !m.contains(d)) {
                m.push_str(": ");
                m.push_str(detail);
            }
            m
        }
        _ => {
            let chain = anyhow::Error::from(e);
            chain
                .chain()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(": ")
        }
    };
    match hint {
        Some(h) => DockerError(format!("{message}\nhint: {h}")).into(),
        None => DockerError(message).into(),
    }
}

/// `kiln login HOST` (just `kiln login` for Docker Hub).
fn login_hint(registry: &str) -> String {
    if registry == kiln_oci::reference::DOCKER_HUB_REGISTRY_HOST {
        "kiln login".to_owned()
    } else {
        format!("kiln login {registry}")
    }
}

/// Docker's per-layer status lines (`9ad63333ebc9: Pull complete`).
///
/// On a terminal each layer has one line, rewritten in place, with a
/// progress bar while bytes move. Otherwise each status is printed once as
/// it happens, and byte progress is not printed at all, as Docker does.
pub struct LayerLines {
    enabled: bool,
    multi: Option<MultiProgress>,
    bars: HashMap<String, ProgressBar>,
    /// Non-tty: the last status printed per layer.
    printed: HashMap<String, String>,
    /// Layers announced so far (their index decides whether they wait).
    announced: usize,
    /// Transfers running at once: later layers start out `Waiting`.
    concurrency: usize,
    /// `Waiting` lines to print once the first transfer starts.
    waiting: Vec<String>,
    started: bool,
    /// Non-tty lines, when collecting instead of printing (tests).
    collected: Option<Vec<String>>,
}

impl LayerLines {
    /// Lines on stdout (with bars when it is a terminal); nothing at all
    /// unless `enabled`.
    pub fn stdout(enabled: bool, concurrency: usize) -> LayerLines {
        let multi = (enabled && std::io::stdout().is_terminal())
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stdout()));
        LayerLines::with(enabled, multi, concurrency)
    }

    fn with(enabled: bool, multi: Option<MultiProgress>, concurrency: usize) -> LayerLines {
        LayerLines {
            enabled,
            multi,
            bars: HashMap::new(),
            printed: HashMap::new(),
            announced: 0,
            concurrency: concurrency.max(1),
            waiting: Vec::new(),
            started: false,
            collected: None,
        }
    }

    /// Handles one event of a pull.
    pub fn pull_event(&mut self, event: &PullEvent) {
        let id = short_id(&event.layer);
        match &event.progress {
            PullProgress::AlreadyExists => self.status(&id, "Already exists"),
            PullProgress::Waiting => self.announce(&id, "Pulling fs layer"),
            PullProgress::Downloading { current, total } => {
                self.progress(&id, "Downloading", *current, *total)
            }
            PullProgress::Verifying => self.status(&id, "Verifying Checksum"),
            PullProgress::DownloadComplete => self.status(&id, "Download complete"),
            PullProgress::PullComplete => self.status(&id, "Pull complete"),
        }
    }

    /// A layer about to be transferred: its first status, and `Waiting`
    /// (printed when transfers start) if it queues behind the others.
    pub fn announce(&mut self, id: &str, status: &str) {
        self.status(id, status);
        if self.announced >= self.concurrency {
            self.waiting.push(id.to_owned());
        }
        self.announced += 1;
    }

    /// Bytes moving for a layer.
    pub fn progress(&mut self, id: &str, verb: &str, current: u64, total: u64) {
        self.start();
        if self.multi.is_some() {
            let width = rustix::termios::tcgetwinsize(std::io::stdout())
                .map(|w| w.ws_col)
                .unwrap_or(80);
            // Docker draws the bar only on terminals wider than 110 columns.
            self.set(id, &progress_line(verb, current, total, width > 110));
        } else {
            // Docker prints no progress when not on a terminal; say only
            // once that the transfer began.
            self.print_once(id, verb, false);
        }
    }

    /// Transfers have begun: print the queued `Waiting` lines.
    pub fn start(&mut self) {
        if !self.started {
            self.started = true;
            for id in std::mem::take(&mut self.waiting) {
                self.status(&id, "Waiting");
            }
        }
    }

    /// A status change of a layer.
    pub fn status(&mut self, id: &str, status: &str) {
        if self.multi.is_some() {
            self.set(id, status);
        } else {
            self.print_once(id, status, true);
        }
    }

    fn print_once(&mut self, id: &str, status: &str, show: bool) {
        if !self.enabled || self.printed.get(id).is_some_and(|s| s == status) {
            return;
        }
        self.printed.insert(id.to_owned(), status.to_owned());
        if !show {
            return;
        }
        let line = format!("{id}: {status}");
        match &mut self.collected {
            Some(v) => v.push(line),
            None => println!("{line}"),
        }
    }

    fn set(&mut self, id: &str, message: &str) {
        let Some(multi) = &self.multi else {
            return;
        };
        let bar = self.bars.entry(id.to_owned()).or_insert_with(|| {
            let style = ProgressStyle::with_template("{prefix}: {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar());
            multi.add(
                ProgressBar::new(0)
                    .with_style(style)
                    .with_prefix(id.to_owned()),
            )
        });
        bar.set_message(message.to_owned());
    }

    /// Leaves every line on screen as it is.
    pub fn finish(self) {
        for bar in self.bars.values() {
            bar.abandon();
        }
        // The last line is drawn without its newline.
        if self.multi.is_some() && !self.bars.is_empty() {
            println!();
        }
    }
}

/// The 12 hex digits Docker names a layer by.
pub fn short_id(digest: &Digest) -> String {
    digest.hex().chars().take(12).collect()
}

/// `Downloading [=====>      ]  1.2MB/3.4MB`, as Docker draws it (without
/// the bar unless `bar`).
fn progress_line(verb: &str, current: u64, total: u64, bar: bool) -> String {
    let filled = if total == 0 {
        0
    } else {
        ((current.min(total) as f64 / total as f64 * 100.0) as usize / 2).min(50)
    };
    let numbers = format!("{:>8}/{}", human_size4(current), human_size4(total));
    if !bar {
        return format!("{verb} {numbers}");
    }
    format!(
        "{verb} [{}>{}] {numbers}",
        "=".repeat(filled),
        " ".repeat(50 - filled)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(c: char) -> Digest {
        format!("sha256:{}", c.to_string().repeat(64))
            .parse()
            .unwrap()
    }

    fn collecting(concurrency: usize) -> LayerLines {
        let mut l = LayerLines::with(true, None, concurrency);
        l.collected = Some(Vec::new());
        l
    }

    #[test]
    fn plain_lines_are_docker_s() {
        let mut lines = collecting(1);
        let ev = |c, progress| PullEvent {
            layer: digest(c),
            progress,
        };
        lines.pull_event(&ev('a', PullProgress::AlreadyExists));
        lines.pull_event(&ev('b', PullProgress::Waiting));
        lines.pull_event(&ev('c', PullProgress::Waiting));
        for c in ['b', 'c'] {
            for p in [
                PullProgress::Downloading {
                    current: 0,
                    total: 10,
                },
                PullProgress::Downloading {
                    current: 10,
                    total: 10,
                },
                PullProgress::Verifying,
                PullProgress::DownloadComplete,
                PullProgress::PullComplete,
            ] {
                lines.pull_event(&ev(c, p));
            }
        }
        let b = "b".repeat(12);
        let c = "c".repeat(12);
        let expected = vec![
            format!("{}: Already exists", "a".repeat(12)),
            format!("{b}: Pulling fs layer"),
            format!("{c}: Pulling fs layer"),
            format!("{c}: Waiting"),
            format!("{b}: Verifying Checksum"),
            format!("{b}: Download complete"),
            format!("{b}: Pull complete"),
            format!("{c}: Verifying Checksum"),
            format!("{c}: Download complete"),
            format!("{c}: Pull complete"),
        ];
        assert_eq!(lines.collected.unwrap(), expected);
    }

    #[test]
    fn bars_look_like_docker_s() {
        assert_eq!(
            progress_line("Downloading", 1_100_000, 2_200_000, true),
            format!(
                "Downloading [{}>{}]    1.1MB/2.2MB",
                "=".repeat(25),
                " ".repeat(25)
            )
        );
        assert_eq!(
            progress_line("Pushing", 5, 5, true),
            format!("Pushing [{}>]       5B/5B", "=".repeat(50))
        );
        assert_eq!(progress_line("Pushing", 5, 5, false), "Pushing       5B/5B");
    }

    #[test]
    fn terminal_lines_update_in_place() {
        let hidden = MultiProgress::with_draw_target(ProgressDrawTarget::hidden());
        let mut lines = LayerLines::with(true, Some(hidden), 3);
        let id = "abcdefabcdef";
        lines.status(id, "Pulling fs layer");
        lines.progress(id, "Downloading", 1, 2);
        assert!(lines.bars[id].message().starts_with("Downloading "));
        lines.status(id, "Pull complete");
        assert_eq!(lines.bars.len(), 1);
        assert_eq!(lines.bars[id].message(), "Pull complete");
        lines.finish();
    }

    #[test]
    fn error_wording() {
        let e = registry_error(
            kiln_registry::Error::ManifestUnknown {
                registry: "registry-1.docker.io".into(),
                repository: "library/busybox".into(),
                reference: "nope".into(),
            },
            "busybox:nope",
        );
        assert_eq!(
            e.to_string(),
            "manifest for busybox:nope not found: manifest unknown"
        );
        let e = registry_error(
            kiln_registry::Error::Unauthorized {
                registry: "127.0.0.1:5000".into(),
                repository: Some("app".into()),
                message: None,
                hint: kiln_registry::LOGIN_HINT,
            },
            "127.0.0.1:5000/app",
        );
        assert_eq!(
            e.to_string(),
            "unauthorized: authentication required for 127.0.0.1:5000/app\nhint: kiln login 127.0.0.1:5000"
        );
    }
}
