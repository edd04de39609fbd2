//! Recognising and undoing layer compression by magic bytes.

use std::io::{self, BufReader, Read};

use crate::error::ExtractError;

/// The compression of a layer stream, as recognised from its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar stream (or anything else without a known magic number).
    None,
    /// gzip (`1f 8b`); several concatenated members are read as one stream.
    Gzip,
    /// zstd (`28 b5 2f fd`).
    Zstd,
}

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
const XZ_MAGIC: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0x00];
const BZIP2_MAGIC: &[u8] = b"BZh";

/// Recognises the compression from the first bytes of a stream.
///
/// Fails for compressions that are recognisable but not supported (xz,
/// bzip2): the OCI spec allows only gzip and zstd.
pub fn sniff_compression(head: &[u8]) -> Result<Compression, ExtractError> {
    if head.starts_with(GZIP_MAGIC) {
        Ok(Compression::Gzip)
    } else if head.starts_with(ZSTD_MAGIC) {
        Ok(Compression::Zstd)
    } else if head.starts_with(XZ_MAGIC) {
        Err(ExtractError::UnsupportedCompression { format: "xz" })
    } else if head.starts_with(BZIP2_MAGIC) {
        Err(ExtractError::UnsupportedCompression { format: "bzip2" })
    } else {
        Ok(Compression::None)
    }
}

/// Wraps `reader` so that it yields the uncompressed layer tar, whatever
/// its compression (plain, gzip or zstd). Returns the detected compression.
pub fn decompress<'a, R: Read + 'a>(
    mut reader: R,
) -> Result<(Compression, Box<dyn Read + 'a>), ExtractError> {
    // Read the magic number in full even if the source delivers it in
    // pieces (pipes, sockets), then put it back in front of the stream.
    let mut head = [0u8; 6];
    let mut filled = 0;
    while filled < head.len() {
        match reader.read(&mut head[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => return Err(ExtractError::Read { source }),
        }
    }
    let compression = sniff_compression(&head[..filled])?;
    tracing::trace!(?compression, "detected layer compression");
    let stream = BufReader::with_capacity(
        1 << 16,
        io::Cursor::new(head).take(filled as u64).chain(reader),
    );
    let out: Box<dyn Read + 'a> = match compression {
        Compression::None => Box::new(stream),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(stream)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(stream)
                .map_err(|source| ExtractError::Read { source })?,
        ),
    };
    Ok((compression, out))
}
