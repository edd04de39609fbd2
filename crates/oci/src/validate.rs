//! Validation of OCI documents (descriptors, manifests, indexes, configs,
//! the layout header) by media type: the rules of the image-spec's JSON
//! schemas, plus the typed checks a decoder makes (registered digest
//! algorithms have their exact encoding, `Env` entries are `KEY=value`).
//!
//! Untrusted documents (pulled, loaded) pass through here before kiln
//! relies on them, with [`Rules::Decoder`]: what the Go tools that write
//! and read images accept, which is looser than the schemas in a few
//! places real images depend on.

use serde_json::{Map, Value};

use crate::Digest;

pub const MEDIA_TYPE_DESCRIPTOR: &str = "application/vnd.oci.descriptor.v1+json";
pub const MEDIA_TYPE_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_TYPE_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_TYPE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_TYPE_LAYOUT: &str = "application/vnd.oci.layout.header.v1+json";

/// Why a document is invalid: the JSON path and what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ValidationError {
    pub path: String,
    pub message: String,
}

fn fail<T>(path: &str, message: impl Into<String>) -> Result<T, ValidationError> {
    Err(ValidationError {
        path: if path.is_empty() {
            "$".into()
        } else {
            path.to_string()
        },
        message: message.into(),
    })
}

/// Which rules [`validate_with`] applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rules {
    /// The image-spec's JSON schemas, as written.
    Schema,
    /// The schemas as Go decoders (Docker, containerd, BuildKit, skopeo)
    /// apply them: a `null` member is the same as a missing one, an image
    /// manifest may have no layers (BuildKit and skopeo write `"layers": []`
    /// for an image of metadata only), and a config's `architecture`, `os`
    /// and `rootfs.diff_ids` may be missing. Types and formats are checked
    /// as with [`Rules::Schema`].
    Decoder,
}

/// Validates `bytes` as a document of `media_type` against the schemas.
pub fn validate(media_type: &str, bytes: &[u8]) -> Result<(), ValidationError> {
    validate_with(media_type, bytes, Rules::Schema)
}

/// Validates `bytes` as a document of `media_type` with `rules`.
pub fn validate_with(media_type: &str, bytes: &[u8], rules: Rules) -> Result<(), ValidationError> {
    let mut doc: Value =
        serde_json::from_slice(bytes).or_else(|e| fail("", format!("invalid JSON: {e}")))?;
    let strict = rules == Rules::Schema;
    if !strict {
        strip_null_members(&mut doc);
    }
    match media_type {
        MEDIA_TYPE_DESCRIPTOR => descriptor(&doc, ""),
        MEDIA_TYPE_MANIFEST => manifest(&doc, strict),
        MEDIA_TYPE_INDEX => index(&doc),
        MEDIA_TYPE_CONFIG => config(&doc, strict),
        MEDIA_TYPE_LAYOUT => layout(&doc),
        other => fail("", format!("no validator for media type {other:?}")),
    }
}

/// Removes every `null` member of every object, as if it were missing.
fn strip_null_members(v: &mut Value) {
    match v {
        Value::Object(o) => {
            o.retain(|_, v| !v.is_null());
            o.values_mut().for_each(strip_null_members);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_null_members),
        _ => {}
    }
}

fn object<'a>(v: &'a Value, path: &str) -> Result<&'a Map<String, Value>, ValidationError> {
    v.as_object()
        .map_or_else(|| fail(path, "expected an object"), Ok)
}

fn string<'a>(v: &'a Value, path: &str) -> Result<&'a str, ValidationError> {
    v.as_str()
        .map_or_else(|| fail(path, "expected a string"), Ok)
}

fn field<'a>(
    o: &'a Map<String, Value>,
    name: &str,
    path: &str,
) -> Result<&'a Value, ValidationError> {
    o.get(name)
        .map_or_else(|| fail(&format!("{path}.{name}"), "required"), Ok)
}

fn opt_string(o: &Map<String, Value>, name: &str, path: &str) -> Result<(), ValidationError> {
    match o.get(name) {
        Some(v) => string(v, &format!("{path}.{name}")).map(|_| ()),
        None => Ok(()),
    }
}

fn string_array(v: &Value, path: &str) -> Result<Vec<String>, ValidationError> {
    let Some(items) = v.as_array() else {
        return fail(path, "expected an array of strings");
    };
    items
        .iter()
        .enumerate()
        .map(|(i, s)| string(s, &format!("{path}[{i}]")).map(str::to_string))
        .collect()
}

/// `^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$`
pub fn is_media_type(s: &str) -> bool {
    let Some((ty, sub)) = s.split_once('/') else {
        return false;
    };
    let part = |p: &str| {
        let mut chars = p.chars();
        chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
            && p.len() <= 127
            && chars.all(|c| c.is_ascii_alphanumeric() || "!#$&^_.+-".contains(c))
    };
    part(ty) && part(sub)
}

/// `^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$`, and the registered
/// algorithms' exact encodings.
pub fn check_digest(s: &str) -> Result<(), String> {
    let Some((alg, enc)) = s.split_once(':') else {
        return Err("no algorithm".into());
    };
    let alg_ok = !alg.is_empty()
        && alg.split(['+', '.', '_', '-']).all(|c| {
            !c.is_empty()
                && c.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        });
    if !alg_ok {
        return Err(format!("invalid algorithm {alg:?}"));
    }
    if enc.is_empty()
        || !enc
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "=_-".contains(c))
    {
        return Err("invalid encoded part".into());
    }
    let hex_len = match alg {
        "sha256" => Some(64),
        "sha512" => Some(128),
        _ => None,
    };
    if let Some(n) = hex_len
        && (enc.len() != n
            || !enc
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)))
    {
        return Err(format!("{alg} needs {n} lowercase hex digits"));
    }
    Ok(())
}

fn is_uri(s: &str) -> bool {
    let Some((scheme, rest)) = s.split_once(':') else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c))
        && !rest.is_empty()
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Standard base64 with padding.
fn is_base64(s: &str) -> bool {
    if !s.len().is_multiple_of(4) {
        return false;
    }
    let body = s.trim_end_matches('=');
    s.len() - body.len() <= 2
        && body
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/')
}

fn int64(v: &Value, path: &str, min: i64) -> Result<i64, ValidationError> {
    match v.as_i64() {
        Some(n) if n >= min => Ok(n),
        Some(n) => fail(path, format!("{n} is below the minimum {min}")),
        None => fail(path, "expected an integer"),
    }
}

fn annotations(o: &Map<String, Value>, path: &str) -> Result<(), ValidationError> {
    if let Some(a) = o.get("annotations") {
        let a = object(a, &format!("{path}.annotations"))?;
        for (k, v) in a {
            string(v, &format!("{path}.annotations.{k}"))?;
        }
    }
    Ok(())
}

fn media_type_field(
    o: &Map<String, Value>,
    name: &str,
    path: &str,
    required: bool,
) -> Result<(), ValidationError> {
    match o.get(name) {
        None if required => fail(&format!("{path}.{name}"), "required"),
        None => Ok(()),
        Some(v) => {
            let s = string(v, &format!("{path}.{name}"))?;
            if is_media_type(s) {
                Ok(())
            } else {
                fail(
                    &format!("{path}.{name}"),
                    format!("{s:?} is not a media type"),
                )
            }
        }
    }
}

/// A content descriptor.
fn descriptor(v: &Value, path: &str) -> Result<(), ValidationError> {
    let o = object(v, path)?;
    media_type_field(o, "mediaType", path, true)?;
    int64(field(o, "size", path)?, &format!("{path}.size"), 0)?;
    let digest = string(field(o, "digest", path)?, &format!("{path}.digest"))?;
    check_digest(digest).or_else(|e| fail(&format!("{path}.digest"), e))?;
    if let Some(urls) = o.get("urls") {
        for (i, u) in string_array(urls, &format!("{path}.urls"))?
            .iter()
            .enumerate()
        {
            if !is_uri(u) {
                return fail(&format!("{path}.urls[{i}]"), format!("{u:?} is not a URI"));
            }
        }
    }
    if let Some(data) = o.get("data") {
        let d = string(data, &format!("{path}.data"))?;
        if !is_base64(d) {
            return fail(&format!("{path}.data"), "not base64 with padding");
        }
    }
    media_type_field(o, "artifactType", path, false)?;
    annotations(o, path)?;
    if let Some(p) = o.get("platform") {
        platform(p, &format!("{path}.platform"))?;
    }
    Ok(())
}

fn platform(v: &Value, path: &str) -> Result<(), ValidationError> {
    let o = object(v, path)?;
    string(
        field(o, "architecture", path)?,
        &format!("{path}.architecture"),
    )?;
    string(field(o, "os", path)?, &format!("{path}.os"))?;
    opt_string(o, "os.version", path)?;
    opt_string(o, "variant", path)?;
    for list in ["os.features", "features"] {
        if let Some(f) = o.get(list) {
            string_array(f, &format!("{path}.{list}"))?;
        }
    }
    Ok(())
}

fn schema_version(o: &Map<String, Value>) -> Result<(), ValidationError> {
    match field(o, "schemaVersion", "$")?.as_i64() {
        Some(2) => Ok(()),
        _ => fail("$.schemaVersion", "must be 2"),
    }
}

fn own_media_type(o: &Map<String, Value>, expected: &str) -> Result<(), ValidationError> {
    match o.get("mediaType") {
        None => Ok(()),
        Some(v) => {
            let s = string(v, "$.mediaType")?;
            if s == expected {
                Ok(())
            } else {
                fail("$.mediaType", format!("must be {expected}, not {s:?}"))
            }
        }
    }
}

fn manifest(doc: &Value, strict: bool) -> Result<(), ValidationError> {
    let o = object(doc, "$")?;
    schema_version(o)?;
    own_media_type(o, MEDIA_TYPE_MANIFEST)?;
    media_type_field(o, "artifactType", "$", false)?;
    descriptor(field(o, "config", "$")?, "$.config")?;
    let no_layers = Value::Array(Vec::new());
    let layers = match o.get("layers") {
        None if !strict => &no_layers,
        _ => field(o, "layers", "$")?,
    };
    let Some(layers) = layers.as_array() else {
        return fail("$.layers", "expected an array");
    };
    if strict && layers.is_empty() {
        return fail("$.layers", "at least one layer is required");
    }
    for (i, l) in layers.iter().enumerate() {
        descriptor(l, &format!("$.layers[{i}]"))?;
    }
    if let Some(s) = o.get("subject") {
        descriptor(s, "$.subject")?;
    }
    annotations(o, "$")
}

fn index(doc: &Value) -> Result<(), ValidationError> {
    let o = object(doc, "$")?;
    schema_version(o)?;
    own_media_type(o, MEDIA_TYPE_INDEX)?;
    media_type_field(o, "artifactType", "$", false)?;
    let Some(manifests) = field(o, "manifests", "$")?.as_array() else {
        return fail("$.manifests", "expected an array");
    };
    for (i, m) in manifests.iter().enumerate() {
        descriptor(m, &format!("$.manifests[{i}]"))?;
    }
    if let Some(s) = o.get("subject") {
        descriptor(s, "$.subject")?;
    }
    annotations(o, "$")
}

fn config(doc: &Value, strict: bool) -> Result<(), ValidationError> {
    let o = object(doc, "$")?;
    if strict {
        string(field(o, "architecture", "$")?, "$.architecture")?;
        string(field(o, "os", "$")?, "$.os")?;
    }
    for name in [
        "architecture",
        "os",
        "created",
        "author",
        "variant",
        "os.version",
    ] {
        opt_string(o, name, "$")?;
    }
    if let Some(f) = o.get("os.features") {
        string_array(f, "$.os.features")?;
    }
    if let Some(c) = o.get("config") {
        let c = object(c, "$.config")?;
        for name in ["User", "WorkingDir", "StopSignal"] {
            opt_string(c, name, "$.config")?;
        }
        for name in ["Entrypoint", "Cmd"] {
            if let Some(v) = c.get(name).filter(|v| !v.is_null()) {
                string_array(v, &format!("$.config.{name}"))?;
            }
        }
        if let Some(env) = c.get("Env").filter(|v| !v.is_null()) {
            for (i, e) in string_array(env, "$.config.Env")?.iter().enumerate() {
                if !e.contains('=') {
                    return fail(
                        &format!("$.config.Env[{i}]"),
                        format!("{e:?} is not KEY=value"),
                    );
                }
            }
        }
        for name in ["ExposedPorts", "Volumes"] {
            if let Some(v) = c.get(name).filter(|v| !v.is_null()) {
                let set = object(v, &format!("$.config.{name}"))?;
                for (k, item) in set {
                    object(item, &format!("$.config.{name}.{k}"))?;
                }
            }
        }
        if let Some(l) = c.get("Labels").filter(|v| !v.is_null()) {
            for (k, v) in object(l, "$.config.Labels")? {
                string(v, &format!("$.config.Labels.{k}"))?;
            }
        }
    }
    let rootfs = object(field(o, "rootfs", "$")?, "$.rootfs")?;
    if string(field(rootfs, "type", "$.rootfs")?, "$.rootfs.type")? != "layers" {
        return fail("$.rootfs.type", "must be \"layers\"");
    }
    let no_diff_ids = Value::Array(Vec::new());
    let diff_ids = match rootfs.get("diff_ids") {
        None if !strict => &no_diff_ids,
        _ => field(rootfs, "diff_ids", "$.rootfs")?,
    };
    for (i, d) in string_array(diff_ids, "$.rootfs.diff_ids")?
        .iter()
        .enumerate()
    {
        d.parse::<Digest>()
            .or_else(|e| fail(&format!("$.rootfs.diff_ids[{i}]"), e.to_string()))?;
    }
    if let Some(h) = o.get("history") {
        let Some(items) = h.as_array() else {
            return fail("$.history", "expected an array");
        };
        for (i, item) in items.iter().enumerate() {
            let item = object(item, &format!("$.history[{i}]"))?;
            for name in ["created", "author", "created_by", "comment"] {
                opt_string(item, name, &format!("$.history[{i}]"))?;
            }
            if let Some(e) = item.get("empty_layer")
                && !e.is_boolean()
            {
                return fail(&format!("$.history[{i}].empty_layer"), "expected a boolean");
            }
        }
    }
    Ok(())
}

fn layout(doc: &Value) -> Result<(), ValidationError> {
    let o = object(doc, "$")?;
    if string(field(o, "imageLayoutVersion", "$")?, "$.imageLayoutVersion")? != "1.0.0" {
        return fail("$.imageLayoutVersion", "must be \"1.0.0\"");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:5b0bcabd1ed22e9fb1310cf6c2dec7cdef19f0ad69efa1f392e94a4333501270";

    #[test]
    fn descriptors() {
        let ok = format!(
            r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","size":1,"digest":"{D}"}}"#
        );
        assert!(validate(MEDIA_TYPE_DESCRIPTOR, ok.as_bytes()).is_ok());
        for bad in [
            format!(r#"{{"size":1,"digest":"{D}"}}"#),
            format!(r#"{{"mediaType":"application","size":1,"digest":"{D}"}}"#),
            format!(r#"{{"mediaType":"a/b","size":"1","digest":"{D}"}}"#),
            format!(r#"{{"mediaType":"a/b","size":-1,"digest":"{D}"}}"#),
            r#"{"mediaType":"a/b","size":1,"digest":"sha256:ABC"}"#.to_string(),
            r#"{"mediaType":"a/b","size":1,"digest":"sha256+-x:abc"}"#.to_string(),
            format!(r#"{{"mediaType":"a/b","size":1,"digest":"{D}","urls":["value"]}}"#),
            format!(r#"{{"mediaType":"a/b","size":1,"digest":"{D}","data":"abc"}}"#),
        ] {
            assert!(
                validate(MEDIA_TYPE_DESCRIPTOR, bad.as_bytes()).is_err(),
                "{bad}"
            );
        }
        assert!(check_digest("sha256+b64u:LCa0a2j_xo_5m0U8HTBBNBNCLXBkg7-g-YpeiGJm564").is_ok());
    }

    #[test]
    fn manifests_and_configs() {
        let m = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"{MEDIA_TYPE_CONFIG}","size":2,"digest":"{D}"}},"layers":[{{"mediaType":"a/b","size":2,"digest":"{D}"}}]}}"#
        );
        assert!(validate(MEDIA_TYPE_MANIFEST, m.as_bytes()).is_ok());
        assert!(
            validate(
                MEDIA_TYPE_MANIFEST,
                m.replace("\"layers\":[{", "\"layers\":[],\"x\":[{")
                    .as_bytes()
            )
            .is_err()
        );
        let c = format!(
            r#"{{"architecture":"amd64","os":"linux","config":{{"Env":["A=1"]}},"rootfs":{{"type":"layers","diff_ids":["{D}"]}}}}"#
        );
        assert!(validate(MEDIA_TYPE_CONFIG, c.as_bytes()).is_ok());
        assert!(validate(MEDIA_TYPE_CONFIG, c.replace("A=1", "A").as_bytes()).is_err());
        assert!(validate(MEDIA_TYPE_LAYOUT, br#"{"imageLayoutVersion":"1.0.0"}"#).is_ok());
        assert!(validate(MEDIA_TYPE_LAYOUT, br#"{"imageLayoutVersion":"2"}"#).is_err());
    }

    #[test]
    fn decoder_rules() {
        let decoder =
            |media_type, doc: &str| validate_with(media_type, doc.as_bytes(), Rules::Decoder);
        // BuildKit's zero-layer image, as skopeo writes it to an OCI layout.
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{MEDIA_TYPE_MANIFEST}","config":{{"mediaType":"{MEDIA_TYPE_CONFIG}","digest":"{D}","size":352}},"layers":[]}}"#
        );
        assert!(validate(MEDIA_TYPE_MANIFEST, m.as_bytes()).is_err());
        assert!(decoder(MEDIA_TYPE_MANIFEST, &m).is_ok());
        assert!(
            decoder(
                MEDIA_TYPE_MANIFEST,
                &m.replace(r#""layers":[]"#, r#""layers":null"#)
            )
            .is_ok()
        );
        assert!(
            decoder(
                MEDIA_TYPE_MANIFEST,
                &m.replace(r#""layers":[]"#, r#""layers":{}"#)
            )
            .is_err()
        );
        assert!(
            decoder(
                MEDIA_TYPE_MANIFEST,
                &m.replace(r#""schemaVersion":2"#, r#""schemaVersion":null"#)
            )
            .is_err()
        );

        let c = r#"{"architecture":"amd64","os":"linux","config":{"Env":["A=1"],"OnBuild":null},"created":null,"rootfs":{"type":"layers","diff_ids":null},"history":[{"created_by":"LABEL a=b","empty_layer":null}]}"#;
        assert!(validate(MEDIA_TYPE_CONFIG, c.as_bytes()).is_err());
        assert!(decoder(MEDIA_TYPE_CONFIG, c).is_ok());
        assert!(decoder(MEDIA_TYPE_CONFIG, r#"{"rootfs":{"type":"layers"}}"#).is_ok());
        for bad in [
            r#"{"rootfs":{"type":"layers","diff_ids":"x"}}"#,
            r#"{"rootfs":null}"#,
            r#"{"architecture":1,"rootfs":{"type":"layers"}}"#,
            r#"{"config":{"Env":"A=1"},"rootfs":{"type":"layers"}}"#,
            r#"{"config":{"Env":["A"]},"rootfs":{"type":"layers"}}"#,
            r#"{"history":[{"empty_layer":"yes"}],"rootfs":{"type":"layers"}}"#,
        ] {
            assert!(decoder(MEDIA_TYPE_CONFIG, bad).is_err(), "{bad}");
        }
    }
}
