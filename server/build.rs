//! Embeds the built web app into the server binary, so that one file is the whole deployment.
//!
//! Which bundle:
//! - `NOOM_BUNDLE_DIR` set to a directory: that one (relative paths are taken from the
//!   workspace root). It must hold an `index.html`, or the build fails: asking for a bundle
//!   and silently getting none would ship a server without its app.
//! - `NOOM_BUNDLE_DIR` set to `none` (or empty): no bundle.
//! - unset: `<workspace>/dist` (where `trunk build --release` writes) if it has an `index.html`,
//!   otherwise no bundle.
//!
//! Every file is packed by `src/bundle/pack.rs` (brotli 11 and gzip 9 when smaller, ETag,
//! content type, cache policy) into `OUT_DIR/bundle/`, and `OUT_DIR/embedded.rs` lists them with
//! `include_bytes!`. The build script runs again when `NOOM_BUNDLE_DIR` changes or when
//! anything inside the bundle directory does (cargo scans it recursively).
//!
//! When there is no bundle, nothing about `dist` is watched: cargo treats a watched path that
//! does not exist as changed on every build, which would rerun this script (and recompile the
//! server) forever. So a `dist/` created after such a build is only picked up once the script
//! runs again: set `NOOM_BUNDLE_DIR` (the project's scripts always do), or `touch server/build.rs`.

#[path = "src/bundle/pack.rs"]
#[allow(dead_code)]
mod pack;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

const ENV: &str = "NOOM_BUNDLE_DIR";

fn main() {
    println!("cargo:rerun-if-env-changed={ENV}");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/bundle/pack.rs");

    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let manifest_dir = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    );
    let workspace = manifest_dir
        .parent()
        .expect("the server crate lives inside the workspace")
        .to_path_buf();

    let source = match std::env::var(ENV) {
        Ok(value) if value.trim().is_empty() || value.trim().eq_ignore_ascii_case("none") => None,
        Ok(value) => {
            let dir = workspace.join(value.trim());
            if !dir.join("index.html").is_file() {
                panic!(
                    "{ENV}={value}: no index.html in {} (build the web app first: `trunk build --release`; \
                     or set {ENV}=none for a server without one)",
                    dir.display()
                );
            }
            Some(dir)
        }
        Err(std::env::VarError::NotUnicode(value)) => panic!("{ENV}={value:?} is not UTF-8"),
        Err(std::env::VarError::NotPresent) => {
            let dist = workspace.join("dist");
            dist.join("index.html").is_file().then_some(dist)
        }
    };

    let code = match &source {
        Some(dir) => {
            println!("cargo:rerun-if-changed={}", dir.display());
            embed(dir, &out_dir.join("bundle"))
        }
        None => {
            println!(
                "cargo:warning=no web app bundle ({ENV} unset and no {}/dist/index.html): this server \
                 will serve none. Run `trunk build --release`, then build again with {ENV}=dist \
                 (scripts/run.sh does both).",
                workspace.display()
            );
            "/// No bundle was found when this binary was built.\n\
             pub(crate) const SOURCE: Option<&str> = None;\n\
             pub(crate) static FILES: &[EmbeddedFile] = &[];\n"
                .to_string()
        }
    };
    let generated = out_dir.join("embedded.rs");
    // Rewritten only when different, so an unchanged bundle does not look new to rustc.
    if std::fs::read_to_string(&generated).ok().as_deref() != Some(code.as_str()) {
        std::fs::write(&generated, code).expect("write embedded.rs");
    }
}

/// Packs every file of `dir` into `out` and returns the Rust source listing them.
fn embed(dir: &Path, out: &Path) -> String {
    let files = pack::list(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    if out.exists() {
        std::fs::remove_dir_all(out).expect("clear the old packed bundle");
    }
    std::fs::create_dir_all(out).expect("create OUT_DIR/bundle");
    let mut code = format!(
        "/// Packed by build.rs from this directory.\n\
         pub(crate) const SOURCE: Option<&str> = Some({:?});\n\
         pub(crate) static FILES: &[EmbeddedFile] = &[\n",
        dir.display().to_string()
    );
    for (index, (url, path)) in files.into_iter().enumerate() {
        let raw = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let packed = pack::pack(url, raw).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let write = |suffix: &str, bytes: &[u8]| -> String {
            let file = out.join(format!("{index}.{suffix}"));
            std::fs::write(&file, bytes).expect("write a packed file");
            format!("include_bytes!({:?})", file.display().to_string())
        };
        let raw = write("raw", &packed.raw);
        let br = packed.br.as_deref().map(|b| write("br", b));
        let gzip = packed.gzip.as_deref().map(|b| write("gz", b));
        let option = |o: Option<String>| o.map_or("None".to_string(), |s| format!("Some({s})"));
        writeln!(
            code,
            "    EmbeddedFile {{ path: {:?}, content_type: {:?}, etag: {:?}, immutable: {}, raw: {raw}, br: {}, gzip: {} }},",
            packed.path,
            packed.content_type,
            packed.etag,
            packed.immutable,
            option(br),
            option(gzip),
        )
        .expect("write to a String");
    }
    code.push_str("];\n");
    code
}
