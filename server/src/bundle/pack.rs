//! Packing a built web app (`trunk build --release` writes `dist/`) for serving from memory:
//! every file with its content type, an ETag, its cache policy and, when they are smaller, its
//! brotli (highest quality) and gzip (level 9) forms.
//!
//! Shared word for word by `build.rs` (which embeds the bundle into the binary, through
//! `#[path]`) and by [`super::Bundle::from_dir`], so a bundle packed at run time (tests, the
//! size budget) is byte for byte what the binary serves. Only std and the crates listed under
//! both `[dependencies]` and `[build-dependencies]` may be used here.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Brotli quality: 11, the highest (slow to compress, which happens once, at build time).
pub const BROTLI_QUALITY: i32 = 11;
/// Brotli window, log2 bytes: 24 is the largest standard window (what the `brotli` tool uses).
pub const BROTLI_WINDOW: i32 = 24;
/// Gzip level: 9, the highest.
pub const GZIP_LEVEL: u32 = 9;

/// One file of the bundle, ready to serve.
pub struct Packed {
    /// URL path without the leading `/`, `/`-separated (`index.html`, `snippets/x/a.js`).
    pub path: String,
    pub content_type: &'static str,
    /// The identity form's strong ETag, quoted (`"3f…"`); the compressed forms append `-br` /
    /// `-gz` inside the quotes (a strong ETag names one representation).
    pub etag: String,
    /// A Trunk file name with a content hash (`frontend-5f0c…_bg.wasm`): cacheable for a year.
    pub immutable: bool,
    pub raw: Vec<u8>,
    /// Only when smaller than `raw`.
    pub br: Option<Vec<u8>>,
    /// Only when smaller than `raw`.
    pub gzip: Option<Vec<u8>>,
}

/// The files under `dir`, as (URL path, file path), sorted by URL path. Hidden entries (a name
/// starting with `.`, like Trunk's `.trunk-lock` and `.stage`) are left out.
pub fn list(dir: &Path) -> io::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    walk(dir, "", &mut out)?;
    out.sort();
    Ok(out)
}

fn walk(dir: &Path, prefix: &str, out: &mut Vec<(String, PathBuf)>) -> io::Result<()> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| io::Error::new(e.kind(), format!("reading {}: {e}", dir.display())))?;
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: file name is not UTF-8", entry.path().display()),
            ));
        };
        if name.starts_with('.') {
            continue;
        }
        let url = format!("{prefix}{name}");
        // Follows symlinks, like a web server serving the directory would.
        let meta = std::fs::metadata(entry.path())?;
        if meta.is_dir() {
            walk(&entry.path(), &format!("{url}/"), out)?;
        } else if meta.is_file() {
            out.push((url, entry.path()));
        }
    }
    Ok(())
}

/// Packs one file: content type from its name, ETag from its content, compressed forms.
pub fn pack(path: String, raw: Vec<u8>) -> io::Result<Packed> {
    let content_type = mime_guess::from_path(&path)
        .first_raw()
        .unwrap_or("application/octet-stream");
    let digest = Sha256::digest(&raw);
    let etag = format!("\"{}\"", hex(&digest[..16]));
    let br = Some(brotli(&raw)?).filter(|c| c.len() < raw.len());
    let gzip = Some(gzip(&raw)?).filter(|c| c.len() < raw.len());
    let immutable = is_hashed_name(&path);
    Ok(Packed {
        path,
        content_type,
        etag,
        immutable,
        raw,
        br,
        gzip,
    })
}

/// Brotli at [`BROTLI_QUALITY`] and [`BROTLI_WINDOW`].
pub fn brotli(raw: &[u8]) -> io::Result<Vec<u8>> {
    let params = brotli::enc::BrotliEncoderParams {
        quality: BROTLI_QUALITY,
        lgwin: BROTLI_WINDOW,
        size_hint: raw.len(),
        ..Default::default()
    };
    let mut out = Vec::new();
    brotli::BrotliCompress(&mut &raw[..], &mut out, &params)?;
    Ok(out)
}

/// Gzip at [`GZIP_LEVEL`].
pub fn gzip(raw: &[u8]) -> io::Result<Vec<u8>> {
    let mut encoder =
        flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(GZIP_LEVEL));
    encoder.write_all(raw)?;
    encoder.finish()
}

/// Whether the last path segment carries a Trunk content hash: `name-<hex>.ext` or
/// `name-<hex>_bg.wasm`, with at least 8 lowercase hex digits (Trunk writes 16). Such a name
/// changes whenever its content does, so browsers may keep it for a year without asking.
pub fn is_hashed_name(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    let Some((stem, _ext)) = name.rsplit_once('.') else {
        return false;
    };
    let stem = stem.strip_suffix("_bg").unwrap_or(stem);
    let Some((_, hash)) = stem.rsplit_once('-') else {
        return false;
    };
    hash.len() >= 8
        && hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
