//! Export targets other than the image store: OCI layout and
//! docker-archive tarballs of a committed image, and the flattened
//! filesystem of a layer stack as a directory or one tar stream.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use kiln_fs::HoleReader;
use kiln_oci::digest::Sha256Reader;
use kiln_store::{ExtractMode, ExtractOptions, LayerStats, Store, extract_layer};

use crate::error::{Error, Result};
use crate::image::{CommittedImage, LayerInput};
use crate::save::{ImageSelector, SaveFormat, SavedImage, save};

/// Writes `image` as an OCI image layout archive (see [`save`]), tagged
/// with the image's tags. Use [`save`] directly for progress events.
pub fn export_oci_tar<W: Write>(
    store: &Store,
    image: &CommittedImage,
    out: W,
) -> Result<SavedImage> {
    export_archive(store, image, out, SaveFormat::Oci)
}

/// Writes `image` as a docker-archive (see [`save`]), tagged with the
/// image's tags, for `docker load`.
pub fn export_docker_tar<W: Write>(
    store: &Store,
    image: &CommittedImage,
    out: W,
) -> Result<SavedImage> {
    export_archive(store, image, out, SaveFormat::Docker)
}

fn export_archive<W: Write>(
    store: &Store,
    image: &CommittedImage,
    out: W,
    format: SaveFormat,
) -> Result<SavedImage> {
    let selectors = if image.tags.is_empty() {
        vec![ImageSelector::Id(image.id.clone())]
    } else {
        // A tag may have moved to another image since the commit: refuse
        // rather than export that other image.
        let record = store.image(&image.id)?;
        for tag in &image.tags {
            if !record.tags.contains(tag) {
                return Err(Error::TagMoved {
                    tag: tag.clone(),
                    id: image.id.clone(),
                });
            }
        }
        image.tags.iter().cloned().map(ImageSelector::Tag).collect()
    };
    let mut saved = save(store, &selectors, out, format, |_| {})?;
    saved.pop().ok_or_else(|| Error::ImageNotFound {
        query: image.id.to_string(),
    })
}

fn extract_options() -> ExtractOptions {
    let mut options = ExtractOptions::new(ExtractMode::Flatten);
    options.allow_devices = kiln_store::is_root();
    options
}

/// Applies `layers`, base first, to `dest` (created if missing): the
/// flattened root filesystem, whiteouts and opaque directories applied.
/// Each layer is checked against its diff id as it is read. Returns each
/// layer's extraction statistics.
///
/// Entries already in `dest` count as a lower layer: whiteouts can delete
/// them. Ownership is kept when running as root (and device nodes are
/// created only then).
pub fn export_local_dir(
    store: &Store,
    layers: &[LayerInput],
    dest: &Path,
) -> Result<Vec<LayerStats>> {
    fs::create_dir_all(dest).map_err(|source| Error::ExportIo {
        action: "create directory",
        path: dest.to_path_buf(),
        source,
    })?;
    apply_layers(store, layers, dest, &extract_options())
}

/// [`export_local_dir`] for a directory the host's users may use (`-o
/// type=local`): without `devices`, device nodes are skipped (counted in
/// the stats) and setuid and setgid bits dropped, so an image cannot plant
/// a `/dev/sda` or a setuid-root shell on the host. With `devices` (as
/// root) the tree is written as the image has it.
pub fn export_host_dir(
    store: &Store,
    layers: &[LayerInput],
    dest: &Path,
    devices: bool,
) -> Result<Vec<LayerStats>> {
    fs::create_dir_all(dest).map_err(|source| Error::ExportIo {
        action: "create directory",
        path: dest.to_path_buf(),
        source,
    })?;
    let mut options = extract_options();
    options.allow_devices &= devices;
    options.clear_setid = !devices;
    apply_layers(store, layers, dest, &options)
}

fn apply_layers(
    store: &Store,
    layers: &[LayerInput],
    dest: &Path,
    options: &ExtractOptions,
) -> Result<Vec<LayerStats>> {
    let mut stats = Vec::with_capacity(layers.len());
    for (i, layer) in layers.iter().enumerate() {
        let mut reader = Sha256Reader::new(layer.open(store, i)?);
        let layer_stats =
            extract_layer(&mut reader, dest, options).map_err(|source| Error::ApplyLayer {
                layer: i,
                dest: dest.to_path_buf(),
                source,
            })?;
        // The tar reader stops at the end-of-archive marker: hash the rest.
        io::copy(&mut reader, &mut io::sink())
            .map_err(|source| Error::ReadLayer { layer: i, source })?;
        let (actual, _) = reader.finish();
        if actual != layer.diff_id {
            return Err(Error::LayerDiffIdMismatch {
                layer: i,
                expected: layer.diff_id.clone(),
                actual,
            });
        }
        stats.push(layer_stats);
    }
    Ok(stats)
}

/// Writes the flattened filesystem of `layers` to `out` as one tar stream.
///
/// The layers are applied to a temporary directory in the store's ingest
/// area (as [`export_local_dir`] does), which is then written as a tar in
/// a deterministic order (a directory's entries sorted by name, then each
/// subdirectory's contents in turn; the root itself is not an entry), with each entry's mode, owner ids and modification time; hard
/// links within the tree are kept as hard links. Files with holes are
/// plain entries with their holes as zeros, as BuildKit writes them; only
/// their data is read from disk. Without root, owners are
/// those of the exporting user and device nodes are missing. Extended
/// attributes are not written. On error the output is incomplete (no
/// end-of-archive marker) and must be discarded.
pub fn export_tar<W: Write>(store: &Store, layers: &[LayerInput], out: W) -> Result<()> {
    let ingest = store.ingest_dir();
    let tmp = tempfile::Builder::new()
        .prefix("export-")
        .tempdir_in(&ingest)
        .map_err(|source| Error::ExportIo {
            action: "create a temporary directory in",
            path: ingest.clone(),
            source,
        })?;
    let root = tmp.path().join("rootfs");
    export_local_dir(store, layers, &root)?;
    let result = write_tree(&root, out);
    // Layers may contain read-only directories, which tempdir's removal
    // cannot descend into: make them writable first.
    make_writable(tmp.path());
    if let Err(e) = tmp.close() {
        tracing::warn!(error = %e, "failed to remove the temporary export directory");
    }
    result
}

fn make_writable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if let Ok(meta) = entry.file_type()
            && meta.is_dir()
        {
            let path = entry.path();
            let _ = fs::set_permissions(&path, fs::Permissions::from_mode(0o755));
            make_writable(&path);
        }
    }
}

/// A writer that fails every write once poisoned, so that `tar::Builder`'s
/// `Drop` cannot append an end-of-archive marker to a failed stream.
struct Fuse<W> {
    inner: W,
    poisoned: bool,
}

impl<W: Write> Write for Fuse<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.poisoned {
            return Err(io::Error::other("the export failed"));
        }
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.poisoned {
            return Ok(());
        }
        self.inner.flush()
    }
}

fn write_tree<W: Write>(root: &Path, out: W) -> Result<()> {
    let mut builder = tar::Builder::new(Fuse {
        inner: io::BufWriter::with_capacity(1 << 20, out),
        poisoned: false,
    });
    builder.follow_symlinks(false);
    builder.mode(tar::HeaderMode::Complete);
    // Plain entries, holes as zeros (see `append_file`).
    builder.sparse(false);
    let result = append_tree(&mut builder, root);
    if result.is_err() {
        builder.get_mut().poisoned = true;
        return result;
    }
    let fuse = builder.into_inner().map_err(Error::write)?;
    let mut buffered = fuse.inner;
    buffered.flush().map_err(Error::write)?;
    Ok(())
}

fn append_tree<W: Write>(builder: &mut tar::Builder<W>, root: &Path) -> Result<()> {
    let io_err = |action: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::ExportIo {
            action,
            path,
            source,
        }
    };
    // (dev, ino) of multiply-linked files → their first path in the archive.
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let mut stack: Vec<PathBuf> = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        let mut names: Vec<_> = fs::read_dir(&dir)
            .map_err(io_err("read directory", &dir))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()
            .map_err(io_err("read directory", &dir))?;
        names.sort();
        let mut subdirs = Vec::new();
        for name in names {
            let rel = rel.join(&name);
            let full = root.join(&rel);
            let meta = fs::symlink_metadata(&full).map_err(io_err("stat", &full))?;
            if meta.is_file() && meta.nlink() > 1 {
                let key = (meta.dev(), meta.ino());
                if let Some(target) = links.get(&key) {
                    let mut header = tar::Header::new_gnu();
                    header.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
                    header.set_entry_type(tar::EntryType::Link);
                    header.set_size(0);
                    builder
                        .append_link(&mut header, &rel, target)
                        .map_err(Error::write)?;
                    continue;
                }
                links.insert(key, rel.clone());
            }
            if meta.is_file() {
                append_file(builder, &full, &rel, &meta)?;
            } else {
                builder
                    .append_path_with_name(&full, &rel)
                    .map_err(Error::write)?;
            }
            if meta.is_dir() {
                subdirs.push(rel);
            }
        }
        // Depth first, in name order: push in reverse.
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(())
}

/// Appends regular file `full` as `rel`: the entry `append_path_with_name`
/// writes without its sparse support, but reading only the file's data.
fn append_file<W: Write>(
    builder: &mut tar::Builder<W>,
    full: &Path,
    rel: &Path,
    meta: &fs::Metadata,
) -> Result<()> {
    let file = fs::File::open(full).map_err(|source| Error::ExportIo {
        action: "open",
        path: full.to_path_buf(),
        source,
    })?;
    let mut header = tar::Header::new_gnu();
    header.set_metadata_in_mode(meta, tar::HeaderMode::Complete);
    builder
        .append_data(&mut header, rel, HoleReader::new(&file, meta.len()))
        .map_err(Error::write)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    /// What `append_path_with_name` without sparse support writes.
    fn reference(root: &Path, names: &[&str]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        b.mode(tar::HeaderMode::Complete);
        b.sparse(false);
        for name in names {
            b.append_path_with_name(root.join(name), name).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn files_with_holes_are_plain_entries_read_by_data_region() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let mib = 1u64 << 20;
        let f = fs::File::create(root.join("sparse")).unwrap();
        f.set_len(16 * mib + 3).unwrap();
        f.write_all_at(b"start", 0).unwrap();
        f.write_all_at(&[5u8; 70_000], 8 * mib - 10).unwrap();
        drop(f);
        fs::File::create(root.join("hole"))
            .unwrap()
            .set_len(mib)
            .unwrap();
        fs::write(root.join("plain"), b"plain content").unwrap();
        let long = "l".repeat(120);
        fs::write(root.join(&long), b"long name").unwrap();
        fs::write(root.join("empty"), b"").unwrap();
        let names = ["empty", "hole", long.as_str(), "plain", "sparse"];

        let mut ours = Vec::new();
        write_tree(root, &mut ours).unwrap();
        assert_eq!(ours, reference(root, &names));
    }
}
