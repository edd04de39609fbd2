//! `kiln import`: a root filesystem tarball (plain, gzip or zstd) becomes a
//! one-layer image. `-c` applies Dockerfile instructions to its config, as
//! `docker import --change` does; `-m` sets the comment (default
//! `Imported from -`, Docker's wording). `SOURCE_DATE_EPOCH` fixes the
//! creation time.

use std::io::Read;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use kiln_frontend::instructions::{Command, Healthcheck, parse_instruction};
use kiln_frontend::shell::Lexer;
use kiln_oci::{Platform, Reference};
use kiln_store::{ContainerConfig, ImportOptions};

use super::Context;
use crate::render::DockerError;

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// Apply Dockerfile instruction to the created image
    #[arg(short = 'c', long = "change", value_name = "list")]
    changes: Vec<String>,
    /// Set commit message for imported image
    #[arg(short = 'm', long = "message", value_name = "string")]
    message: Option<String>,
    /// Set platform if server is multi-platform capable
    #[arg(long = "platform", value_name = "string")]
    platform: Option<String>,
    /// The tarball to import ("-" reads standard input)
    #[arg(value_name = "file|-")]
    file: PathBuf,
    /// Tag the new image
    #[arg(value_name = "REPOSITORY[:TAG]")]
    reference: Option<String>,
}

pub fn run(ctx: &Context, a: ImportArgs) -> anyhow::Result<()> {
    if let Some(r) = &a.reference {
        Reference::parse_docker_ref(r).with_context(|| format!("invalid reference {r:?}"))?;
    }
    let platform = match &a.platform {
        Some(p) => p
            .parse::<Platform>()
            .with_context(|| format!("invalid platform {p:?}"))?
            .normalize(),
        None => Platform::host(),
    };
    let config = apply_changes(&a.changes)?;
    let src = a.file.to_string_lossy().into_owned();
    if src.contains("://") {
        return Err(DockerError(format!("importing from a URL is not supported: {src}")).into());
    }
    let store = ctx.store()?;
    let opts = ImportOptions {
        config,
        platform,
        comment: a
            .message
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| "Imported from -".to_owned()),
        created: created_time()?,
    };
    let reader: Box<dyn Read> = if src == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(
            std::fs::File::open(&a.file)
                .with_context(|| format!("failed to open {}", a.file.display()))?,
        )
    };
    let record = store
        .import_rootfs(reader, &opts)
        .with_context(|| format!("failed to import {src}"))?;
    if let Some(r) = &a.reference {
        store.tag(&record.id, r)?;
    }
    println!("{}", record.id);
    Ok(())
}

/// Now, or `SOURCE_DATE_EPOCH` when set (reproducible images: the same
/// tarball and options then give the same image id).
fn created_time() -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => {
            let secs: i64 = v
                .trim()
                .parse()
                .with_context(|| format!("invalid SOURCE_DATE_EPOCH {v:?}"))?;
            chrono::DateTime::from_timestamp(secs, 0)
                .with_context(|| format!("SOURCE_DATE_EPOCH {v:?} is out of range"))
        }
        _ => Ok(chrono::Utc::now()),
    }
}

/// Applies `--change` instructions, in order, to an empty config.
pub fn apply_changes(changes: &[String]) -> anyhow::Result<ContainerConfig> {
    apply_changes_onto(ContainerConfig::default(), changes)
}

/// Applies `--change` instructions, in order, to `cfg` (`kiln commit -c`).
pub fn apply_changes_onto(
    mut cfg: ContainerConfig,
    changes: &[String],
) -> anyhow::Result<ContainerConfig> {
    let mut cmd_set = false;
    for change in changes {
        let df = kiln_frontend::parser::parse(change)
            .with_context(|| format!("invalid change {change:?}"))?;
        for node in &df.nodes {
            let ins =
                parse_instruction(node).with_context(|| format!("invalid change {change:?}"))?;
            let name = ins.name().to_ascii_lowercase();
            apply(&mut cfg, &mut cmd_set, &name, ins.command, df.escape)
                .with_context(|| format!("invalid change {change:?}"))?;
        }
    }
    Ok(cfg)
}

fn env_pairs(cfg: &ContainerConfig) -> Vec<(String, String)> {
    cfg.env
        .iter()
        .map(|e| match e.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (e.clone(), String::new()),
        })
        .collect()
}

fn shell_form(args: Vec<String>, prepend_shell: bool) -> Vec<String> {
    if prepend_shell {
        let mut v = vec!["/bin/sh".to_owned(), "-c".to_owned()];
        v.extend(args);
        v
    } else {
        args
    }
}

/// `path.Join` then `path.Clean`, as Docker resolves a relative WORKDIR.
fn join_workdir(current: &str, requested: &str) -> String {
    let joined = if requested.starts_with('/') {
        requested.to_owned()
    } else {
        format!("/{current}/{requested}")
    };
    let mut parts: Vec<&str> = Vec::new();
    for p in joined.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

fn healthcheck_json(h: &Healthcheck) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    m.insert("Test".into(), h.test.clone().into());
    for (key, d) in [
        ("Interval", h.interval),
        ("Timeout", h.timeout),
        ("StartPeriod", h.start_period),
        ("StartInterval", h.start_interval),
    ] {
        if let Some(d) = d {
            m.insert(key.into(), (d.as_nanos() as u64).into());
        }
    }
    if let Some(r) = h.retries {
        m.insert("Retries".into(), r.into());
    }
    serde_json::Value::Object(m)
}

/// Expands the ports of EXPOSE into `port/proto` keys (`80` → `80/tcp`,
/// `7000-7001/udp` → both ports).
fn expose_keys(spec: &str) -> anyhow::Result<Vec<String>> {
    let (ports, proto) = spec.split_once('/').unwrap_or((spec, "tcp"));
    let proto = proto.to_ascii_lowercase();
    let bad = || DockerError(format!("invalid containerPort: {spec}"));
    let (lo, hi) = match ports.split_once('-') {
        Some((a, b)) => (
            a.parse::<u16>().map_err(|_| bad())?,
            b.parse::<u16>().map_err(|_| bad())?,
        ),
        None => {
            let p = ports.parse::<u16>().map_err(|_| bad())?;
            (p, p)
        }
    };
    if hi < lo {
        return Err(bad().into());
    }
    Ok((lo..=hi).map(|p| format!("{p}/{proto}")).collect())
}

fn apply(
    cfg: &mut ContainerConfig,
    cmd_set: &mut bool,
    name: &str,
    command: Command,
    escape: char,
) -> anyhow::Result<()> {
    let lexer = Lexer::new(escape);
    let env = env_pairs(cfg);
    let word = |w: &str| lexer.process_word(w, &env).map_err(anyhow::Error::from);
    match command {
        Command::Cmd(c) => {
            cfg.cmd = Some(shell_form(c.args, c.prepend_shell));
            *cmd_set = true;
        }
        Command::Entrypoint(c) => {
            cfg.entrypoint = Some(shell_form(c.args, c.prepend_shell));
            if !*cmd_set {
                cfg.cmd = None;
            }
        }
        Command::Env(kvs) => {
            let mut pairs = Vec::new();
            for kv in &kvs {
                pairs.push((word(&kv.key)?, word(&kv.value)?));
            }
            for (k, v) in pairs {
                cfg.env
                    .retain(|e| e.split_once('=').map_or(e.as_str(), |(ek, _)| ek) != k);
                cfg.env.push(format!("{k}={v}"));
            }
        }
        Command::Label(kvs) => {
            for kv in &kvs {
                let (k, v) = (word(&kv.key)?, word(&kv.value)?);
                cfg.labels.insert(k, v);
            }
        }
        Command::Expose(ports) => {
            for p in &ports {
                for spec in lexer.process_words(p, &env)? {
                    for key in expose_keys(&spec)? {
                        cfg.exposed_ports.insert(key, kiln_store::Empty {});
                    }
                }
            }
        }
        Command::User(u) => cfg.user = word(&u)?,
        Command::Workdir(w) => {
            let w = word(&w)?;
            cfg.working_dir = join_workdir(&cfg.working_dir, &w);
        }
        Command::StopSignal(s) => cfg.stop_signal = word(&s)?,
        Command::Volume(vs) => {
            for v in &vs {
                let v = word(v)?;
                let v = v.trim();
                if v.is_empty() {
                    return Err(
                        DockerError("VOLUME specified can not be an empty string".into()).into(),
                    );
                }
                cfg.volumes.insert(v.to_owned(), kiln_store::Empty {});
            }
        }
        Command::Onbuild(trigger) => cfg.on_build.push(trigger),
        Command::Healthcheck(h) => cfg.healthcheck = Some(healthcheck_json(&h)),
        _ => {
            return Err(DockerError(format!("{name} is not a valid change command")).into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_build_a_config() {
        let cfg = apply_changes(&[
            "ENV A=1 B=two".into(),
            "ENV C=${A}x".into(),
            "CMD echo hi".into(),
            "ENTRYPOINT [\"/bin/app\"]".into(),
            "EXPOSE 80 7000-7001/udp".into(),
            "LABEL version=\"1.0\" team=$B".into(),
            "WORKDIR /srv".into(),
            "WORKDIR data".into(),
            "USER nobody".into(),
            "VOLUME /data".into(),
            "STOPSIGNAL SIGTERM".into(),
            "ONBUILD RUN make".into(),
        ])
        .unwrap();
        assert_eq!(cfg.env, ["A=1", "B=two", "C=1x"]);
        assert_eq!(cfg.cmd.unwrap(), ["/bin/sh", "-c", "echo hi"]);
        assert_eq!(cfg.entrypoint.unwrap(), ["/bin/app"]);
        assert_eq!(
            cfg.exposed_ports.keys().collect::<Vec<_>>(),
            ["7000/udp", "7001/udp", "80/tcp"]
        );
        assert_eq!(cfg.labels["version"], "1.0");
        assert_eq!(cfg.labels["team"], "two");
        assert_eq!(cfg.working_dir, "/srv/data");
        assert_eq!(cfg.user, "nobody");
        assert!(cfg.volumes.contains_key("/data"));
        assert_eq!(cfg.stop_signal, "SIGTERM");
        assert_eq!(cfg.on_build, ["RUN make"]);
    }

    #[test]
    fn entrypoint_resets_an_earlier_image_cmd_only() {
        let cfg = apply_changes(&["ENTRYPOINT /x".into()]).unwrap();
        assert_eq!(cfg.cmd, None);
        let cfg = apply_changes(&["CMD [\"a\"]".into(), "ENTRYPOINT /x".into()]).unwrap();
        assert_eq!(cfg.cmd.unwrap(), ["a"]);
    }

    #[test]
    fn other_instructions_are_refused() {
        let e = apply_changes(&["RUN make".into()]).unwrap_err();
        assert_eq!(
            format!("{:#}", e),
            "invalid change \"RUN make\": run is not a valid change command"
        );
    }
}
