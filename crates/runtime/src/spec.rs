//! The OCI runtime spec (`config.json`) for a container, with Docker's
//! defaults: mount, pid, ipc and uts namespaces (plus a network namespace
//! unless the host network is used: a new one holding only `lo`, or a
//! private one with outbound access), `/proc`, a tmpfs `/dev` with the
//! minimal devices, `/dev/pts`, `/dev/shm`, `/dev/mqueue`, a read-only
//! `/sys`, generated `/etc/hosts`, `/etc/resolv.conf` and `/etc/hostname`
//! bind-mounted read-only, Docker's default capability set, masked and
//! read-only `/proc` paths. As in Docker and BuildKit, processes may gain
//! privileges (setuid `su`, `sudo`). No seccomp profile is applied yet.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDeviceCgroupBuilder,
    LinuxMemoryBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder,
    LinuxResourcesBuilder, Mount, MountBuilder, PosixRlimitBuilder, PosixRlimitType,
    ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};

use crate::error::{Error, Result};
use crate::user::ResolvedUser;

/// The `PATH` a process gets when its environment has none (Docker's).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Docker's default capability set.
pub const DEFAULT_CAPABILITIES: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

const MASKED_PATHS: [&str; 11] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Mount options of the generated `/etc` files, as BuildKit's.
const GENERATED_OPTS: &[&str] = &["nosuid", "nodev", "noexec"];

/// The network a container sees.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// A new network namespace with only the loopback interface.
    #[default]
    None,
    /// The host's network namespace.
    Host,
    /// A network namespace of its own with outbound access through a
    /// user-mode network stack (see [`crate::network`]); what Docker and
    /// BuildKit give by default.
    #[serde(alias = "bridge")]
    Default,
}

impl Network {
    /// What a user types: `none`, `host`, `default` (Docker's `bridge`
    /// too).
    pub fn parse(name: &str) -> Option<Network> {
        match name {
            "none" => Some(Network::None),
            "host" => Some(Network::Host),
            "default" | "bridge" => Some(Network::Default),
            _ => None,
        }
    }
}

/// A host path bind-mounted into the container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindMount {
    pub source: PathBuf,
    /// Absolute path inside the container.
    pub target: PathBuf,
    pub readonly: bool,
}

/// A tmpfs mounted in the container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TmpfsMount {
    /// Absolute path inside the container.
    pub target: PathBuf,
    /// Size limit in bytes (the kernel's default, half of RAM, if `None`).
    pub size: Option<u64>,
}

/// Optional cgroup limits and resource limits.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Resources {
    /// Memory limit in bytes.
    pub memory: Option<i64>,
    /// CPU quota in microseconds per `cpu_period`.
    pub cpu_quota: Option<i64>,
    /// CPU period in microseconds (100000 if a quota is set without one).
    pub cpu_period: Option<u64>,
    /// Maximum number of processes.
    pub pids: Option<i64>,
    /// `RLIMIT_NOFILE` (soft, hard); inherited from the runtime if `None`.
    pub nofile: Option<(u64, u64)>,
}

/// Everything [`build_spec`] needs.
#[derive(Clone, Debug)]
pub struct SpecOptions {
    /// The mounted root filesystem (absolute).
    pub rootfs: PathBuf,
    pub args: Vec<String>,
    /// `KEY=value` entries; `PATH` and `HOME` are added when missing.
    pub env: Vec<String>,
    /// Absolute working directory inside the container.
    pub cwd: PathBuf,
    pub user: ResolvedUser,
    pub terminal: bool,
    /// The terminal's size (rows, columns) when the process starts, so
    /// that it never sees a 0×0 terminal (`process.consoleSize`).
    pub console_size: Option<(u16, u16)>,
    pub network: Network,
    /// The network namespace to join (a pinned `ns/net` file); a new
    /// one when `None` (unless the network is the host's).
    pub netns: Option<PathBuf>,
    pub hostname: String,
    /// Host files bind-mounted read-only at `/etc/hosts`,
    /// `/etc/resolv.conf` and `/etc/hostname`.
    pub hosts_file: PathBuf,
    pub resolv_conf: PathBuf,
    pub hostname_file: PathBuf,
    pub mounts: Vec<BindMount>,
    pub tmpfs: Vec<TmpfsMount>,
    pub resources: Resources,
    /// The cgroup path (`/kiln/<id>`), if any.
    pub cgroups_path: Option<PathBuf>,
    /// Mount the root filesystem read-only (`--read-only`).
    pub readonly_rootfs: bool,
}

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Result<Mount> {
    MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()
        .map_err(Error::Spec)
}

fn bind(source: &Path, dest: &Path, readonly: bool) -> Result<Mount> {
    bind_with(source, dest, readonly, &[])
}

fn bind_with(source: &Path, dest: &Path, readonly: bool, extra: &[&str]) -> Result<Mount> {
    let mut options = vec!["rbind".to_owned(), "rprivate".to_owned()];
    if readonly {
        options.push("ro".to_owned());
    }
    options.extend(extra.iter().map(|s| (*s).to_owned()));
    MountBuilder::default()
        .destination(dest)
        .typ("bind")
        .source(source)
        .options(options)
        .build()
        .map_err(Error::Spec)
}

/// Docker's default mounts, then the generated `/etc` files, then the
/// caller's mounts (parents before children).
fn mounts(opts: &SpecOptions) -> Result<Vec<Mount>> {
    let mut out = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        )?,
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["ro", "nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
        bind_with(
            &opts.hosts_file,
            Path::new("/etc/hosts"),
            true,
            GENERATED_OPTS,
        )?,
        bind_with(
            &opts.resolv_conf,
            Path::new("/etc/resolv.conf"),
            true,
            GENERATED_OPTS,
        )?,
        bind_with(
            &opts.hostname_file,
            Path::new("/etc/hostname"),
            true,
            GENERATED_OPTS,
        )?,
    ];
    let mut extra: Vec<(PathBuf, Mount)> = Vec::new();
    for m in &opts.mounts {
        let target = container_path("mount target", &m.target)?;
        extra.push((target.clone(), bind(&m.source, &target, m.readonly)?));
    }
    for t in &opts.tmpfs {
        let target = container_path("tmpfs target", &t.target)?;
        let mut options = vec![
            "nosuid".to_owned(),
            "nodev".to_owned(),
            "noexec".to_owned(),
            "mode=1777".to_owned(),
        ];
        if let Some(size) = t.size {
            options.push(format!("size={size}"));
        }
        let m = MountBuilder::default()
            .destination(&target)
            .typ("tmpfs")
            .source("tmpfs")
            .options(options)
            .build()
            .map_err(Error::Spec)?;
        extra.push((target, m));
    }
    // Stable: equal depths keep the caller's order.
    extra.sort_by_key(|(t, _)| t.components().count());
    out.extend(extra.into_iter().map(|(_, m)| m));
    Ok(out)
}

fn container_path(what: &'static str, p: &Path) -> Result<PathBuf> {
    if !p.is_absolute() {
        return Err(Error::Invalid {
            what,
            reason: format!("{} is not an absolute path", p.display()),
        });
    }
    Ok(Path::new("/").join(crate::inroot::clean(p)))
}

/// `env` with `PATH` and `HOME` added when missing.
pub fn default_env(env: &[String], home: &str) -> Vec<String> {
    let mut out = env.to_vec();
    let has = |key: &str| {
        env.iter()
            .any(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == key)
    };
    if !has("PATH") {
        out.insert(0, format!("PATH={DEFAULT_PATH}"));
    }
    if !has("HOME") {
        out.push(format!("HOME={home}"));
    }
    out
}

/// Builds the runtime spec.
pub fn build_spec(opts: &SpecOptions) -> Result<Spec> {
    if opts.args.is_empty() {
        return Err(Error::Invalid {
            what: "command",
            reason: "no arguments".to_owned(),
        });
    }
    let cwd = container_path("working directory", &opts.cwd)?;
    let caps: HashSet<Capability> = DEFAULT_CAPABILITIES.into_iter().collect();
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps)
        .inheritable(HashSet::new())
        .ambient(HashSet::new())
        .build()
        .map_err(Error::Spec)?;
    let user = UserBuilder::default()
        .uid(opts.user.uid)
        .gid(opts.user.gid)
        .additional_gids(opts.user.additional_gids.clone())
        .build()
        .map_err(Error::Spec)?;
    let mut process = ProcessBuilder::default()
        .terminal(opts.terminal)
        .user(user)
        .args(opts.args.clone())
        .env(default_env(&opts.env, &opts.user.home))
        .cwd(cwd)
        .capabilities(capabilities)
        // As Docker and BuildKit: setuid programs may gain privileges.
        .no_new_privileges(false)
        // Inherited from kiln, as Docker's and BuildKit's processes inherit
        // the daemon's, unless set.
        .rlimits(Vec::new());
    if let Some((soft, hard)) = opts.resources.nofile {
        process = process.rlimits(vec![
            PosixRlimitBuilder::default()
                .typ(PosixRlimitType::RlimitNofile)
                .soft(soft)
                .hard(hard)
                .build()
                .map_err(Error::Spec)?,
        ]);
    }
    if let Some((rows, cols)) = opts.console_size.filter(|_| opts.terminal) {
        process = process.console_size(
            oci_spec::runtime::BoxBuilder::default()
                .height(u64::from(rows))
                .width(u64::from(cols))
                .build()
                .map_err(Error::Spec)?,
        );
    }
    let process = process.build().map_err(Error::Spec)?;

    let mut namespaces = Vec::new();
    let ns_types = vec![
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
    ];
    for typ in ns_types {
        namespaces.push(
            LinuxNamespaceBuilder::default()
                .typ(typ)
                .build()
                .map_err(Error::Spec)?,
        );
    }
    if opts.network != Network::Host {
        let mut ns = LinuxNamespaceBuilder::default().typ(LinuxNamespaceType::Network);
        if let Some(path) = &opts.netns {
            ns = ns.path(path.clone());
        }
        namespaces.push(ns.build().map_err(Error::Spec)?);
    }

    let deny_all = LinuxDeviceCgroupBuilder::default()
        .allow(false)
        .access("rwm")
        .build()
        .map_err(Error::Spec)?;
    let mut resources = LinuxResourcesBuilder::default().devices(vec![deny_all]);
    if let Some(limit) = opts.resources.memory {
        resources = resources.memory(
            LinuxMemoryBuilder::default()
                .limit(limit)
                .build()
                .map_err(Error::Spec)?,
        );
    }
    if let Some(quota) = opts.resources.cpu_quota {
        resources = resources.cpu(
            LinuxCpuBuilder::default()
                .quota(quota)
                .period(opts.resources.cpu_period.unwrap_or(100_000))
                .build()
                .map_err(Error::Spec)?,
        );
    }
    if let Some(limit) = opts.resources.pids {
        resources = resources.pids(
            LinuxPidsBuilder::default()
                .limit(limit)
                .build()
                .map_err(Error::Spec)?,
        );
    }
    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .resources(resources.build().map_err(Error::Spec)?)
        .masked_paths(MASKED_PATHS.map(String::from).to_vec())
        .readonly_paths(READONLY_PATHS.map(String::from).to_vec());
    if let Some(path) = &opts.cgroups_path {
        linux = linux.cgroups_path(path.clone());
    }
    let linux = linux.build().map_err(Error::Spec)?;

    SpecBuilder::default()
        .version("1.0.2")
        .root(
            RootBuilder::default()
                .path(opts.rootfs.clone())
                .readonly(opts.readonly_rootfs)
                .build()
                .map_err(Error::Spec)?,
        )
        .hostname(opts.hostname.clone())
        .mounts(mounts(opts)?)
        .process(process)
        .linux(linux)
        .build()
        .map_err(Error::Spec)
}

/// `/etc/hosts`: the loopback names (with the container's host name, as
/// BuildKit writes it), then `extra_hosts` (`name`, `address`) in order.
pub fn hosts_file(hostname: &str, extra_hosts: &[(String, String)]) -> String {
    let mut out =
        format!("127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    for (name, addr) in extra_hosts {
        out.push_str(&format!("{addr}\t{name}\n"));
    }
    out
}

/// `/etc/resolv.conf` from the host's: unchanged for the host network;
/// for a private network, its DNS forwarder (which asks the host's
/// resolvers) with the host's search domains and options; otherwise
/// without loopback name servers (unreachable from another network
/// namespace), falling back to Docker's public defaults when none remain.
pub fn resolv_conf(host: &str, network: Network) -> String {
    if network == Network::Host {
        return host.to_owned();
    }
    if network == Network::Default {
        let mut out = String::new();
        for line in host.lines() {
            if line.split_whitespace().next() != Some("nameserver") {
                out.push_str(line);
                out.push('\n');
            }
        }
        out.push_str(&format!("nameserver {}\n", crate::network::DNS_SERVER));
        return out;
    }
    let mut out = String::new();
    let mut servers = 0;
    for line in host.lines() {
        let mut words = line.split_whitespace();
        if words.next() == Some("nameserver") {
            let addr = words.next().unwrap_or_default();
            let loopback = addr
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
            if loopback {
                continue;
            }
            servers += 1;
        }
        out.push_str(line);
        out.push('\n');
    }
    if servers == 0 {
        out.push_str("nameserver 8.8.8.8\nnameserver 8.8.4.4\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> SpecOptions {
        SpecOptions {
            rootfs: "/state/c/rootfs".into(),
            args: vec!["echo".into(), "hi".into()],
            env: vec!["A=1".into()],
            cwd: "/work".into(),
            user: ResolvedUser {
                uid: 1000,
                gid: 1000,
                additional_gids: vec![10],
                home: "/home/app".into(),
            },
            terminal: false,
            console_size: None,
            network: Network::None,
            netns: None,
            hostname: "kiln".into(),
            hosts_file: "/state/c/hosts".into(),
            resolv_conf: "/state/c/resolv.conf".into(),
            hostname_file: "/state/c/hostname".into(),
            mounts: vec![
                BindMount {
                    source: "/src/b".into(),
                    target: "/a/b".into(),
                    readonly: true,
                },
                BindMount {
                    source: "/src/a".into(),
                    target: "/a".into(),
                    readonly: false,
                },
            ],
            tmpfs: vec![TmpfsMount {
                target: "/tmp".into(),
                size: Some(1 << 20),
            }],
            resources: Resources {
                memory: Some(1 << 30),
                pids: Some(100),
                ..Resources::default()
            },
            cgroups_path: Some("/kiln/x".into()),
            readonly_rootfs: false,
        }
    }

    #[test]
    fn docker_like_defaults() {
        let spec = build_spec(&options()).unwrap();
        let json = serde_json::to_value(&spec).unwrap();
        let process = &json["process"];
        assert_eq!(process["args"], serde_json::json!(["echo", "hi"]));
        assert_eq!(
            process["env"],
            serde_json::json!([format!("PATH={DEFAULT_PATH}"), "A=1", "HOME=/home/app"])
        );
        assert_eq!(process["cwd"], "/work");
        assert_eq!(process["noNewPrivileges"], false);
        assert_eq!(process["user"]["additionalGids"], serde_json::json!([10]));
        assert_eq!(
            process["capabilities"]["bounding"]
                .as_array()
                .unwrap()
                .len(),
            14
        );
        let namespaces: Vec<&str> = json["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert_eq!(namespaces, ["pid", "ipc", "uts", "mount", "network"]);
        let dests: Vec<&str> = json["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["destination"].as_str().unwrap())
            .collect();
        assert_eq!(
            dests,
            [
                "/proc",
                "/dev",
                "/dev/pts",
                "/sys",
                "/sys/fs/cgroup",
                "/dev/mqueue",
                "/dev/shm",
                "/etc/hosts",
                "/etc/resolv.conf",
                "/etc/hostname",
                "/a",
                "/tmp",
                "/a/b"
            ]
        );
        assert_eq!(json["linux"]["resources"]["pids"]["limit"], 100);
        assert_eq!(json["linux"]["resources"]["memory"]["limit"], 1 << 30);
    }

    #[test]
    fn a_terminal_starts_with_the_callers_size() {
        let mut opts = options();
        opts.console_size = Some((33, 91));
        let spec = build_spec(&opts).unwrap();
        assert!(spec.process().as_ref().unwrap().console_size().is_none());
        opts.terminal = true;
        let spec = build_spec(&opts).unwrap();
        let size = spec.process().as_ref().unwrap().console_size().unwrap();
        assert_eq!((size.height(), size.width()), (33, 91));
    }

    #[test]
    fn processes_may_gain_privileges() {
        let json = serde_json::to_value(build_spec(&options()).unwrap()).unwrap();
        assert_eq!(json["process"]["noNewPrivileges"], false);
        assert_eq!(
            json["process"]["capabilities"]["ambient"],
            serde_json::json!([])
        );
    }

    #[test]
    fn host_network_has_no_netns() {
        let mut opts = options();
        opts.network = Network::Host;
        let spec = build_spec(&opts).unwrap();
        let json = serde_json::to_value(&spec).unwrap();
        assert!(
            !json["linux"]["namespaces"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n["type"] == "network")
        );
    }

    #[test]
    fn rejects_relative_paths_and_empty_args() {
        let mut opts = options();
        opts.cwd = "work".into();
        assert_eq!(
            build_spec(&opts).unwrap_err().to_string(),
            "invalid working directory: work is not an absolute path"
        );
        let mut opts = options();
        opts.args.clear();
        assert!(matches!(
            build_spec(&opts),
            Err(Error::Invalid {
                what: "command",
                ..
            })
        ));
    }

    #[test]
    fn resolv_conf_drops_loopback_servers() {
        let host = "search example.com\nnameserver 127.0.0.53\noptions edns0\n";
        assert_eq!(
            resolv_conf(host, Network::None),
            "search example.com\noptions edns0\nnameserver 8.8.8.8\nnameserver 8.8.4.4\n"
        );
        assert_eq!(resolv_conf(host, Network::Host), host);
        let host = "nameserver 10.0.0.1\n";
        assert_eq!(resolv_conf(host, Network::None), host);
    }

    #[test]
    fn private_network_asks_its_dns_forwarder() {
        let host = "search example.com\nnameserver 127.0.0.53\nnameserver 10.0.0.1\n";
        assert_eq!(
            resolv_conf(host, Network::Default),
            "search example.com\nnameserver 10.0.2.3\n"
        );
    }

    #[test]
    fn private_network_joins_the_pinned_namespace() {
        let mut opts = options();
        opts.network = Network::Default;
        opts.netns = Some("/state/netns/1-2-0".into());
        let json = serde_json::to_value(build_spec(&opts).unwrap()).unwrap();
        let ns = json["linux"]["namespaces"].as_array().unwrap();
        let net: Vec<_> = ns.iter().filter(|n| n["type"] == "network").collect();
        assert_eq!(net.len(), 1);
        assert_eq!(net[0]["path"], "/state/netns/1-2-0");
        assert_eq!(Network::parse("bridge"), Some(Network::Default));
        assert_eq!(Network::parse("container:x"), None);
    }

    #[test]
    fn hosts_file_lists_extra_hosts() {
        assert_eq!(
            hosts_file("box", &[("db".into(), "10.0.0.2".into())]),
            "127.0.0.1\tlocalhost box\n::1\tlocalhost ip6-localhost ip6-loopback\n10.0.0.2\tdb\n"
        );
    }
}
