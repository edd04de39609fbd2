//! Platforms: `os/architecture[/variant]`, with Go's names (`amd64`,
//! `arm64`, `386`) and containerd's normalisation and matching rules, which
//! Docker and BuildKit use for `--platform` and for picking an image out of
//! a multi-platform index.
//!
//! Normalisation ([`Platform::normalize`]):
//!
//! | given | normalised |
//! |---|---|
//! | `x86_64`, `x86-64` | `amd64` (variant `v1` dropped) |
//! | `aarch64` | `arm64` |
//! | `arm64/v8`, `arm64/8`, `arm64/v8.0` | `arm64` (v8 is implied) |
//! | `arm64/9`, `arm64/9.0`, `arm64/v9.0` | `arm64/v9` |
//! | `armhf`, `arm`, `arm/7` | `arm/v7` |
//! | `armel` | `arm/v6` |
//! | `arm/5`, `arm/6`, `arm/8` | `arm/v5`, `arm/v6`, `arm/v8` |
//! | `i386` | `386` |
//! | `macos` (os) | `darwin` |
//!
//! Everything is lowercased. [`Platform::matches`] compares normalised
//! platforms, so `linux/arm64` matches `linux/arm64/v8`.

use std::fmt;
use std::str::FromStr;

/// An OCI platform. Serialises as the OCI JSON object
/// (`{"architecture": "arm64", "os": "linux", "variant": "v8"}`); use
/// [`as_string`] for the `linux/arm64/v8` form.
///
/// Fields are kept as given; the comparison methods normalise.
#[derive(
    Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Platform {
    /// CPU architecture in Go's naming: `amd64`, `arm64`, `arm`, `386`, ….
    pub architecture: String,
    /// Operating system in Go's naming: `linux`, `windows`, ….
    pub os: String,
    /// CPU variant: `v7` for `arm/v7`, `v8` for `arm64/v8`, ….
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// Why a platform specifier could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlatformError {
    #[error("{input:?}: platform specifier is empty")]
    Empty { input: String },
    #[error("{input:?}: wildcards not yet supported")]
    Wildcard { input: String },
    #[error("{input:?}: invalid component {component:?}")]
    InvalidComponent { input: String, component: String },
    #[error("{input:?}: unknown operating system or architecture")]
    Unknown { input: String },
    #[error("{input:?}: cannot parse platform specifier")]
    TooManyComponents { input: String },
}

impl Platform {
    /// A platform without a variant.
    pub fn new(os: impl Into<String>, architecture: impl Into<String>) -> Platform {
        Platform {
            architecture: architecture.into(),
            os: os.into(),
            variant: None,
        }
    }

    /// The same platform with `variant`.
    pub fn with_variant(self, variant: impl Into<String>) -> Platform {
        Platform {
            variant: Some(variant.into()),
            ..self
        }
    }

    /// The platform kiln runs on, in Go's names: `x86_64` → `amd64`,
    /// `aarch64` → `arm64/v8`, `arm` → `arm/v7`, `x86` (i686) → `386`,
    /// `powerpc64` little-endian → `ppc64le`, `loongarch64` → `loong64`.
    pub fn host() -> Platform {
        let os = match std::env::consts::OS {
            "macos" => "darwin",
            os => os,
        };
        let little = cfg!(target_endian = "little");
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "x86" => ("386", None),
            "aarch64" => ("arm64", Some("v8")),
            "arm" => ("arm", Some("v7")),
            "powerpc64" if little => ("ppc64le", None),
            "powerpc64" => ("ppc64", None),
            "powerpc" => ("ppc", None),
            "mips" if little => ("mipsle", None),
            "mips64" if little => ("mips64le", None),
            "loongarch64" => ("loong64", None),
            "wasm32" => ("wasm", None),
            // riscv64, s390x, sparc64, mips, mips64: same name in Go.
            arch => (arch, None),
        };
        Platform {
            architecture: architecture.to_owned(),
            os: os.to_owned(),
            variant: variant.map(str::to_owned),
        }
    }

    /// The canonical form, as containerd's `Normalize`: lowercase, Go
    /// names, implied variants dropped (`arm64/v8` → `arm64`) and default
    /// ones filled in (`arm` → `arm/v7`). An empty variant becomes `None`.
    pub fn normalize(&self) -> Platform {
        let os = match self.os.to_lowercase().as_str() {
            "macos" => "darwin".to_owned(),
            os => os.to_owned(),
        };
        let (architecture, variant) =
            normalize_arch(&self.architecture, self.variant.as_deref().unwrap_or(""));
        Platform {
            architecture,
            os,
            variant: (!variant.is_empty()).then_some(variant),
        }
    }

    /// Whether both name the same platform once normalised (containerd's
    /// exact matcher): `linux/arm64` matches `linux/arm64/v8`,
    /// `linux/aarch64` and `Linux/ARM64`, but not `linux/arm64/v9`.
    pub fn matches(&self, other: &Platform) -> bool {
        self.normalize() == other.normalize()
    }

    /// Whether an image built for `image` can run on this platform
    /// (containerd's `Only`): the platform itself plus what it can execute
    /// natively. `amd64` runs `386` and lower `amd64` micro-architecture
    /// levels; `arm/vN` runs `arm/v5` … `arm/vN`; `arm64/v8.x` runs lower
    /// v8 revisions and `arm/v5` … `arm/v8`; `arm64/v9.x` also runs
    /// `arm64/v8.0` … `arm64/v8.(x+5)`.
    pub fn can_run(&self, image: &Platform) -> bool {
        let image = image.normalize();
        self.compatible_platforms().contains(&image)
    }

    /// Which of `candidates` an image for this platform is taken from, as
    /// containerd picks an index entry: the exact platform first, else the
    /// one this platform runs that it prefers most. Attestation entries
    /// (`unknown` OS) are never picked.
    pub fn pick<'a, T, P>(&self, candidates: impl IntoIterator<Item = (T, P)>) -> Option<T>
    where
        P: std::borrow::Borrow<Platform> + 'a,
    {
        let candidates: Vec<(T, Platform)> = candidates
            .into_iter()
            .filter(|(_, p)| p.borrow().os != "unknown")
            .map(|(t, p)| (t, p.borrow().normalize()))
            .collect();
        let me = self.normalize();
        let preference = self.compatible_platforms();
        let rank = |p: &Platform| {
            if *p == me {
                Some(0)
            } else {
                preference.iter().position(|q| q == p).map(|r| r + 1)
            }
        };
        candidates
            .into_iter()
            .filter_map(|(t, p)| rank(&p).map(|r| (r, t)))
            .min_by_key(|(r, _)| *r)
            .map(|(_, t)| t)
    }

    /// The normalised platforms [`can_run`](Self::can_run) accepts, most
    /// preferred first.
    pub fn compatible_platforms(&self) -> Vec<Platform> {
        let me = self.normalize();
        let with = |architecture: &str, variant: Option<String>| {
            Platform {
                architecture: architecture.to_owned(),
                os: me.os.clone(),
                variant,
            }
            .normalize()
        };
        let version = |prefix_v: &str| {
            prefix_v
                .strip_prefix('v')
                .unwrap_or(prefix_v)
                .parse::<u32>()
                .ok()
        };
        let mut out = vec![me.clone()];
        match me.architecture.as_str() {
            "amd64" => {
                if let Some(level) = me.variant.as_deref().and_then(version) {
                    out.extend(
                        (1..level)
                            .rev()
                            .map(|n| with("amd64", Some(format!("v{n}")))),
                    );
                }
                out.push(with("386", None));
            }
            "arm" => {
                if let Some(level) = me.variant.as_deref().and_then(version) {
                    out.extend((5..level).rev().map(|n| with("arm", Some(format!("v{n}")))));
                }
            }
            "arm64" => {
                let variant = me.variant.clone().unwrap_or_else(|| "v8".to_owned());
                if let Some(revisions) = arm64_revisions(&variant) {
                    out = revisions
                        .into_iter()
                        .map(|v| with("arm64", Some(v)))
                        .collect();
                    // Every arm64 CPU runs 32-bit arm up to v8.
                    out.extend((5..=8).rev().map(|n| with("arm", Some(format!("v{n}")))));
                }
            }
            _ => {}
        }
        out.dedup();
        out
    }
}

/// `arm64` variants runnable by `variant`, most preferred first, for the
/// variants containerd knows (`v8`, `v8.1` … `v8.9`, `v9`, `v9.1` … `v9.7`).
fn arm64_revisions(variant: &str) -> Option<Vec<String>> {
    let rest = variant.strip_prefix('v')?;
    let (major, minor) = match rest.split_once('.') {
        Some((major, minor)) => (major.parse::<u32>().ok()?, minor.parse::<u32>().ok()?),
        None => (rest.parse::<u32>().ok()?, 0),
    };
    let name = |major: u32, minor: u32| {
        if minor == 0 {
            format!("v{major}")
        } else {
            format!("v{major}.{minor}")
        }
    };
    match (major, minor) {
        (8, 0..=9) => Some((0..=minor).rev().map(|m| name(8, m)).collect()),
        (9, 0..=7) => {
            let mut out: Vec<String> = (0..=minor).rev().map(|m| name(9, m)).collect();
            // v9.x implements v8.(x+5), capped at v8.9.
            out.extend((0..=(minor + 5).min(9)).rev().map(|m| name(8, m)));
            Some(out)
        }
        _ => None,
    }
}

/// containerd's `normalizeArch`, on lowercased input.
fn normalize_arch(architecture: &str, variant: &str) -> (String, String) {
    let architecture = architecture.to_lowercase();
    let variant = variant.to_lowercase();
    let (a, v): (&str, &str) = match architecture.as_str() {
        "i386" => ("386", ""),
        "x86_64" | "x86-64" | "amd64" => ("amd64", if variant == "v1" { "" } else { &variant }),
        "aarch64" | "arm64" => (
            "arm64",
            match variant.as_str() {
                "8" | "v8" | "v8.0" => "",
                "9" | "9.0" | "v9.0" => "v9",
                v => v,
            },
        ),
        "armhf" => ("arm", "v7"),
        "armel" => ("arm", "v6"),
        "arm" => (
            "arm",
            match variant.as_str() {
                "" | "7" => "v7",
                "5" => "v5",
                "6" => "v6",
                "8" => "v8",
                v => v,
            },
        ),
        a => (a, &variant),
    };
    (a.to_owned(), v.to_owned())
}

/// Operating systems Go knows (`go/build/syslist.go`).
fn is_known_os(os: &str) -> bool {
    matches!(
        os,
        "aix"
            | "android"
            | "darwin"
            | "dragonfly"
            | "freebsd"
            | "hurd"
            | "illumos"
            | "ios"
            | "js"
            | "linux"
            | "nacl"
            | "netbsd"
            | "openbsd"
            | "plan9"
            | "solaris"
            | "wasip1"
            | "windows"
            | "zos"
    )
}

/// Architectures Go knows.
fn is_known_arch(arch: &str) -> bool {
    matches!(
        arch,
        "386"
            | "amd64"
            | "amd64p32"
            | "arm"
            | "armbe"
            | "arm64"
            | "arm64be"
            | "ppc64"
            | "ppc64le"
            | "loong64"
            | "mips"
            | "mipsle"
            | "mips64"
            | "mips64le"
            | "mips64p32"
            | "mips64p32le"
            | "ppc"
            | "riscv"
            | "riscv64"
            | "s390"
            | "s390x"
            | "sparc"
            | "sparc64"
            | "wasm"
    )
}

fn valid_component(s: &str, allow_dot: bool) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (allow_dot && b == b'.')
        })
}

/// Parses a platform specifier as `docker build --platform` does
/// (containerd's `Parse`):
///
/// - `os/arch/variant` and `os/arch`: normalised; `os/arm` keeps no
///   variant (v7 is implied) and `os/arm64/v8` keeps `v8`.
/// - `os` alone (a known OS): the host's architecture.
/// - `arch` alone (a known architecture): the host's OS.
impl FromStr for Platform {
    type Err = PlatformError;

    fn from_str(s: &str) -> Result<Platform, PlatformError> {
        if s.is_empty() {
            return Err(PlatformError::Empty {
                input: s.to_owned(),
            });
        }
        if s.contains('*') {
            return Err(PlatformError::Wildcard {
                input: s.to_owned(),
            });
        }
        let parts: Vec<&str> = s.split('/').collect();
        for (i, part) in parts.iter().enumerate() {
            if !valid_component(part, i > 0) {
                return Err(PlatformError::InvalidComponent {
                    input: s.to_owned(),
                    component: (*part).to_owned(),
                });
            }
        }
        let os = match parts[0].to_lowercase().as_str() {
            "macos" => "darwin".to_owned(),
            os => os.to_owned(),
        };
        let variant = |v: String| (!v.is_empty()).then_some(v);
        match parts[..] {
            [_] if is_known_os(&os) => {
                let host = Platform::host();
                let variant = host
                    .variant
                    .filter(|v| host.architecture == "arm" && v != "v7");
                Ok(Platform {
                    architecture: host.architecture,
                    os,
                    variant,
                })
            }
            [single] => {
                let (architecture, v) = normalize_arch(single, "");
                if !is_known_arch(&architecture) {
                    return Err(PlatformError::Unknown {
                        input: s.to_owned(),
                    });
                }
                let v = if architecture == "arm" && v == "v7" {
                    String::new()
                } else {
                    v
                };
                Ok(Platform {
                    architecture,
                    os: Platform::host().os,
                    variant: variant(v),
                })
            }
            [_, arch] => {
                let (architecture, v) = normalize_arch(arch, "");
                let v = if architecture == "arm" && v == "v7" {
                    String::new()
                } else {
                    v
                };
                Ok(Platform {
                    architecture,
                    os,
                    variant: variant(v),
                })
            }
            [_, arch, var] => {
                let (architecture, v) = normalize_arch(arch, var);
                let v = if architecture == "arm64" && v.is_empty() {
                    "v8".to_owned()
                } else {
                    v
                };
                Ok(Platform {
                    architecture,
                    os,
                    variant: variant(v),
                })
            }
            _ => Err(PlatformError::TooManyComponents {
                input: s.to_owned(),
            }),
        }
    }
}

/// `os/architecture[/variant]`.
impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        match self.variant.as_deref() {
            Some(variant) if !variant.is_empty() => write!(f, "/{variant}"),
            _ => Ok(()),
        }
    }
}

/// Serde helpers for the `os/arch[/variant]` string form:
/// `#[serde(with = "kiln_oci::platform::as_string")]`.
pub mod as_string {
    use super::Platform;

    pub fn serialize<S: serde::Serializer>(
        platform: &Platform,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_str(platform)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Platform, D::Error> {
        let s = <String as serde::Deserialize>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Platform {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn plat(os: &str, arch: &str, variant: Option<&str>) -> Platform {
        Platform {
            architecture: arch.into(),
            os: os.into(),
            variant: variant.map(Into::into),
        }
    }

    #[test]
    fn parses_like_containerd() {
        let cases = [
            ("linux/amd64", plat("linux", "amd64", None)),
            ("linux/x86_64", plat("linux", "amd64", None)),
            ("linux/x86-64", plat("linux", "amd64", None)),
            ("Linux/AMD64", plat("linux", "amd64", None)),
            ("linux/aarch64", plat("linux", "arm64", None)),
            ("linux/arm64", plat("linux", "arm64", None)),
            ("linux/arm64/v8", plat("linux", "arm64", Some("v8"))),
            ("linux/aarch64/8", plat("linux", "arm64", Some("v8"))),
            ("linux/arm64/9", plat("linux", "arm64", Some("v9"))),
            ("linux/arm", plat("linux", "arm", None)),
            ("linux/armhf", plat("linux", "arm", None)),
            ("linux/armel", plat("linux", "arm", Some("v6"))),
            ("linux/arm/v7", plat("linux", "arm", Some("v7"))),
            ("linux/arm/6", plat("linux", "arm", Some("v6"))),
            ("linux/arm/v5", plat("linux", "arm", Some("v5"))),
            ("linux/i386", plat("linux", "386", None)),
            ("linux/386", plat("linux", "386", None)),
            ("linux/riscv64", plat("linux", "riscv64", None)),
            ("linux/s390x", plat("linux", "s390x", None)),
            ("linux/ppc64le", plat("linux", "ppc64le", None)),
            ("linux/amd64/v1", plat("linux", "amd64", None)),
            ("linux/amd64/v3", plat("linux", "amd64", Some("v3"))),
            ("macos/arm64", plat("darwin", "arm64", None)),
            ("windows/amd64", plat("windows", "amd64", None)),
            ("plan9/sparc", plat("plan9", "sparc", None)),
            ("linux/unknownarch", plat("linux", "unknownarch", None)),
        ];
        for (input, want) in cases {
            assert_eq!(p(input), want, "{input}");
        }
    }

    #[test]
    fn single_components_use_the_host() {
        let host = Platform::host();
        let linux = p("linux");
        assert_eq!(
            (linux.os.as_str(), linux.architecture.as_str()),
            ("linux", host.architecture.as_str())
        );
        let arm64 = p("aarch64");
        assert_eq!(
            (arm64.os.as_str(), arm64.architecture.as_str()),
            (host.os.as_str(), "arm64")
        );
        assert_eq!(p("armhf").variant, None);
        assert_eq!(p("armel").variant.as_deref(), Some("v6"));
        assert!(matches!(
            "notaplatform".parse::<Platform>(),
            Err(PlatformError::Unknown { .. })
        ));
    }

    #[test]
    fn rejects_bad_specifiers() {
        for bad in [
            "",
            "linux/",
            "/amd64",
            "linux//amd64",
            "linux/amd64/v8/x",
            "linux/*",
            "lin ux/amd64",
            "li.nux/amd64",
        ] {
            assert!(bad.parse::<Platform>().is_err(), "{bad:?}");
        }
        let e = "linux/amd64/v8/x".parse::<Platform>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "\"linux/amd64/v8/x\": cannot parse platform specifier"
        );
        let e = "linux/a b".parse::<Platform>().unwrap_err();
        assert_eq!(e.to_string(), "\"linux/a b\": invalid component \"a b\"");
    }

    #[test]
    fn displays() {
        assert_eq!(p("linux/amd64").to_string(), "linux/amd64");
        assert_eq!(p("linux/arm64/v8").to_string(), "linux/arm64/v8");
        assert_eq!(plat("linux", "arm", Some("")).to_string(), "linux/arm");
        for s in [
            "linux/amd64",
            "linux/arm64/v8",
            "linux/arm/v6",
            "windows/amd64",
            "linux/riscv64",
        ] {
            assert_eq!(p(s).to_string(), s);
        }
    }

    #[test]
    fn normalizes() {
        assert_eq!(
            plat("Linux", "AArch64", Some("v8")).normalize(),
            plat("linux", "arm64", None)
        );
        assert_eq!(
            plat("linux", "arm", None).normalize(),
            plat("linux", "arm", Some("v7"))
        );
        assert_eq!(
            plat("linux", "armhf", None).normalize(),
            plat("linux", "arm", Some("v7"))
        );
        assert_eq!(
            plat("linux", "x86_64", Some("v1")).normalize(),
            plat("linux", "amd64", None)
        );
        assert_eq!(
            plat("linux", "arm64", Some("v9.0")).normalize(),
            plat("linux", "arm64", Some("v9"))
        );
        assert_eq!(
            plat("macos", "amd64", Some("")).normalize(),
            plat("darwin", "amd64", None)
        );
    }

    #[test]
    fn matches_after_normalisation() {
        assert!(p("linux/arm64").matches(&p("linux/arm64/v8")));
        assert!(plat("linux", "aarch64", None).matches(&plat("linux", "arm64", Some("v8"))));
        assert!(p("linux/arm").matches(&p("linux/arm/v7")));
        assert!(plat("linux", "arm", None).matches(&plat("linux", "armhf", None)));
        assert!(!p("linux/arm64").matches(&p("linux/arm64/v9")));
        assert!(!p("linux/arm/v7").matches(&p("linux/arm/v6")));
        assert!(!p("linux/amd64").matches(&p("windows/amd64")));
        assert!(!p("linux/amd64").matches(&p("linux/386")));
    }

    #[test]
    fn host_is_normalised_go_naming() {
        let host = Platform::host();
        assert_eq!(host.normalize().architecture, host.architecture);
        assert!(host.matches(&host.normalize()));
        if cfg!(all(target_os = "linux", target_arch = "x86_64")) {
            assert_eq!(host.to_string(), "linux/amd64");
        }
        if cfg!(all(target_os = "linux", target_arch = "aarch64")) {
            assert_eq!(host.to_string(), "linux/arm64/v8");
        }
    }

    #[test]
    fn compatibility() {
        let names = |s: &str| {
            p(s).compatible_platforms()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(names("linux/amd64"), ["linux/amd64", "linux/386"]);
        assert_eq!(
            names("linux/amd64/v3"),
            [
                "linux/amd64/v3",
                "linux/amd64/v2",
                "linux/amd64",
                "linux/386"
            ]
        );
        assert_eq!(
            names("linux/arm/v7"),
            ["linux/arm/v7", "linux/arm/v6", "linux/arm/v5"]
        );
        assert_eq!(
            names("linux/arm"),
            ["linux/arm/v7", "linux/arm/v6", "linux/arm/v5"]
        );
        assert_eq!(
            names("linux/arm64"),
            [
                "linux/arm64",
                "linux/arm/v8",
                "linux/arm/v7",
                "linux/arm/v6",
                "linux/arm/v5"
            ]
        );
        assert_eq!(
            names("linux/arm64/v8.2")[..3],
            ["linux/arm64/v8.2", "linux/arm64/v8.1", "linux/arm64"]
        );
        let v91 = names("linux/arm64/v9.1");
        assert_eq!(
            v91[..3],
            ["linux/arm64/v9.1", "linux/arm64/v9", "linux/arm64/v8.6"]
        );
        assert!(v91.contains(&"linux/arm/v5".to_owned()));
        assert_eq!(names("linux/arm64/vX"), ["linux/arm64/vx"]);
        assert_eq!(names("linux/riscv64"), ["linux/riscv64"]);

        assert!(p("linux/amd64").can_run(&p("linux/386")));
        assert!(!p("linux/386").can_run(&p("linux/amd64")));
        assert!(p("linux/arm64/v8").can_run(&p("linux/arm/v7")));
        assert!(p("linux/arm64").can_run(&plat("linux", "aarch64", Some("v8"))));
        assert!(!p("linux/arm64").can_run(&p("linux/amd64")));
        assert!(!p("linux/amd64").can_run(&p("windows/amd64")));
    }

    #[test]
    fn serde_object_and_string_forms() {
        let platform = p("linux/arm64/v8");
        let json = serde_json::to_string(&platform).unwrap();
        assert_eq!(
            json,
            r#"{"architecture":"arm64","os":"linux","variant":"v8"}"#
        );
        assert_eq!(serde_json::from_str::<Platform>(&json).unwrap(), platform);
        let json = serde_json::to_string(&p("linux/amd64")).unwrap();
        assert_eq!(json, r#"{"architecture":"amd64","os":"linux"}"#);
        let with_os_version =
            r#"{"architecture":"amd64","os":"windows","os.version":"10.0.17763.1"}"#;
        assert_eq!(
            serde_json::from_str::<Platform>(with_os_version).unwrap(),
            p("windows/amd64")
        );

        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct Wrapper {
            #[serde(with = "as_string")]
            platform: Platform,
        }
        let w = Wrapper {
            platform: p("linux/arm/v7"),
        };
        let json = serde_json::to_string(&w).unwrap();
        assert_eq!(json, r#"{"platform":"linux/arm/v7"}"#);
        assert_eq!(serde_json::from_str::<Wrapper>(&json).unwrap(), w);
        assert!(serde_json::from_str::<Wrapper>(r#"{"platform":"linux/*"}"#).is_err());
    }
}
