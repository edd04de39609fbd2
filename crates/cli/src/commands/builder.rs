//! `kiln builder prune` and `kiln builder du`: the build cache's garbage
//! collection and disk usage, with Docker's flags and output
//! (`docker builder prune`, `docker buildx du`).

use std::io::{BufRead, Write};
use std::time::Duration;

use clap::{Args, Subcommand};
use kiln_engine::build_cache::{self, CacheEntry, EntryKind, PruneOptions};

use super::Context;
use crate::format::{human_size4, since, tabwrite};
use crate::render::DockerError;

#[derive(Subcommand, Debug)]
pub enum BuilderCommand {
    /// Show the build cache's disk usage
    Du(DuArgs),
    /// Remove build cache
    Prune(PruneArgs),
}

pub fn run(ctx: &Context, cmd: BuilderCommand) -> anyhow::Result<()> {
    match cmd {
        BuilderCommand::Du(a) => du(ctx, a),
        BuilderCommand::Prune(a) => prune(ctx, a),
    }
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Remove all unused build cache, not just dangling ones
    #[arg(short = 'a', long = "all")]
    all: bool,
    /// Provide filter values (e.g. 'until=24h')
    #[arg(long = "filter", value_name = "filter")]
    filter: Vec<String>,
    /// Do not prompt for confirmation
    #[arg(short = 'f', long = "force")]
    force: bool,
    /// Amount of disk space to keep for cache
    #[arg(long = "keep-storage", value_name = "bytes")]
    keep_storage: Option<String>,
}

#[derive(Args, Debug)]
pub struct DuArgs {
    /// Provide a more verbose output
    #[arg(long = "verbose")]
    verbose: bool,
}

/// Go's `time.ParseDuration` for the units filters use (`h`, `m`, `s`,
/// `ms`), e.g. `24h`, `1h30m`, `90s`.
pub(crate) fn parse_duration(s: &str) -> Option<Duration> {
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    if rest == "0" {
        return Some(Duration::ZERO);
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let n: f64 = rest[..end].parse().ok()?;
        rest = &rest[end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let secs = match &rest[..unit_end] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            _ => return None,
        };
        total += n * secs;
        rest = &rest[unit_end..];
    }
    Some(Duration::from_secs_f64(total))
}

/// Docker's `RAMInBytes`: `512`, `10k`, `1.5GB`, `2g` (binary units).
pub(crate) fn parse_bytes(s: &str) -> Option<u64> {
    let lower = s.trim().to_ascii_lowercase();
    let num_end = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let n: f64 = lower[..num_end].parse().ok()?;
    let mult: u64 = match lower[num_end..].trim() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return None,
    };
    Some((n * mult as f64) as u64)
}

fn prune_options(a: &PruneArgs) -> anyhow::Result<PruneOptions> {
    let mut options = PruneOptions {
        all: a.all,
        ..PruneOptions::default()
    };
    for f in &a.filter {
        let Some((name, value)) = f.split_once('=') else {
            return Err(
                DockerError(format!("bad format of filter (expected name=value): {f}")).into(),
            );
        };
        match name.trim() {
            "until" => {
                let d = parse_duration(value).ok_or_else(|| {
                    DockerError(format!("invalid filter 'until={value}': invalid duration"))
                })?;
                options.until = Some(d);
            }
            other => {
                return Err(DockerError(format!("invalid filter '{other}'")).into());
            }
        }
    }
    if let Some(k) = &a.keep_storage {
        let n = parse_bytes(k).ok_or_else(|| {
            DockerError(format!(
                "invalid argument \"{k}\" for \"--keep-storage\" flag: invalid size"
            ))
        })?;
        options.keep_storage = Some(n);
    }
    Ok(options)
}

fn prune(ctx: &Context, a: PruneArgs) -> anyhow::Result<()> {
    let mut options = prune_options(&a)?;
    let store = ctx.store()?;
    if !a.force {
        let warning = if a.all {
            "WARNING! This will remove all build cache. Are you sure you want to continue?"
        } else {
            "WARNING! This will remove all dangling build cache. Are you sure you want to continue?"
        };
        print!("{warning} [y/N] ");
        std::io::stdout().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y") {
            return Ok(());
        }
    }
    let report = match build_cache::prune(&store, &options)? {
        Some(r) => r,
        None => {
            eprintln!("waiting for running builds to finish...");
            options.wait = true;
            build_cache::prune(&store, &options)?.unwrap_or_default()
        }
    };
    if !report.removed.is_empty() {
        let mut out = String::from("Deleted build cache objects:\n");
        for id in &report.removed {
            out.push_str(short_id(id));
            out.push('\n');
        }
        println!("{out}");
    }
    println!("Total reclaimed space: {}", human_size4(report.reclaimed));
    Ok(())
}

/// Record ids are 64 hex digits; shown as 25, as BuildKit's ids.
fn short_id(id: &str) -> &str {
    if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        &id[..25]
    } else {
        id
    }
}

fn du(ctx: &Context, a: DuArgs) -> anyhow::Result<()> {
    let store = ctx.store()?;
    let usage = build_cache::disk_usage(&store)?;
    let mut out = String::new();
    if a.verbose {
        for e in &usage.entries {
            out.push_str(&verbose_entry(e));
            out.push('\n');
        }
    } else if !usage.entries.is_empty() {
        let mut lines = vec!["ID\tRECLAIMABLE\tSIZE\tLAST ACCESSED".to_owned()];
        for e in &usage.entries {
            lines.push(format!(
                "{}\t{}\t{}\t{}",
                short_id(&e.id),
                e.reclaimable,
                human_size4(e.size),
                since(e.last_used)
            ));
        }
        out.push_str(&tabwrite(&lines));
        out.push('\n');
    }
    out.push_str(&tabwrite(&[
        format!("Shared:\t{}", human_size4(usage.shared)),
        format!("Private:\t{}", human_size4(usage.private)),
        format!("Reclaimable:\t{}", human_size4(usage.reclaimable)),
        format!("Total:\t{}", human_size4(usage.total)),
    ]));
    print!("{out}");
    Ok(())
}

fn verbose_entry(e: &CacheEntry) -> String {
    let kind = match e.kind {
        EntryKind::Record => "regular",
        EntryKind::CacheMount => "exec.cachemount",
    };
    let mut lines = vec![
        format!("ID:\t{}", e.id),
        format!("Reclaimable:\t{}", e.reclaimable),
        format!("Shared:\t{}", e.shared),
        format!("Size:\t{}", human_size4(e.size)),
    ];
    if !e.description.is_empty() {
        lines.push(format!("Description:\t{}", e.description));
    }
    lines.push(format!("Last used:\t{}", since(e.last_used)));
    lines.push(format!("Type:\t{kind}"));
    tabwrite(&lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes_parse_as_docker_does() {
        assert_eq!(parse_duration("24h"), Some(Duration::from_secs(86400)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_duration("3d"), None);
        assert_eq!(parse_duration(""), None);
        assert_eq!(parse_bytes("512"), Some(512));
        assert_eq!(parse_bytes("10k"), Some(10 << 10));
        assert_eq!(parse_bytes("1.5GB"), Some(3 << 29));
        assert_eq!(parse_bytes("2g"), Some(2 << 30));
        assert_eq!(parse_bytes("lots"), None);
    }

    #[test]
    fn record_ids_are_shortened_to_buildkit_length() {
        let id = "a".repeat(64);
        assert_eq!(short_id(&id).len(), 25);
        assert_eq!(short_id("pip-cache"), "pip-cache");
    }
}
