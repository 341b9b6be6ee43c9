//! The web app's files, served from memory: normally the bundle that `build.rs` packed into this
//! binary, so that the binary alone is the deployment.
//!
//! Every file is held in its identity form and, when smaller, brotli (quality 11) and gzip
//! (level 9) forms made ahead of time ([`pack`]). A request gets the best form its
//! `Accept-Encoding` allows (`Vary: Accept-Encoding`), a strong `ETag` per form (a matching
//! `If-None-Match` gets 304), and `Cache-Control: public, max-age=31536000, immutable` for
//! Trunk's hashed file names or `no-cache` for the rest (the pages above all: `/r/<room>` deep
//! links serve the whole app's `index.html`; `/` serves the first page, `welcome.html` — the
//! welcome form alone — when the bundle has one, else `index.html`). Any other path is a real 404.
//!
//! [`StaticFiles`] says where the app comes from: this in-memory [`Bundle`], a directory on disk
//! (`--dist`, served by tower-http as before), or nowhere (then `/` is a 503 page that says how
//! to build one).

pub mod pack;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;

/// What the generated `embedded.rs` lists: one packed file, all of it in the binary.
pub(crate) struct EmbeddedFile {
    path: &'static str,
    content_type: &'static str,
    etag: &'static str,
    immutable: bool,
    raw: &'static [u8],
    br: Option<&'static [u8]>,
    gzip: Option<&'static [u8]>,
}

mod embedded {
    use super::EmbeddedFile;
    include!(concat!(env!("OUT_DIR"), "/embedded.rs"));
}

/// `Cache-Control` for Trunk's hashed file names: their content never changes under that name.
pub const CACHE_IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// `Cache-Control` for everything else: keep it, but ask (cheaply, with the ETag) every time.
pub const CACHE_REVALIDATE: &str = "no-cache";

/// A content coding the server can send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Brotli,
    Gzip,
    Identity,
}

impl Encoding {
    fn header(self) -> Option<HeaderValue> {
        match self {
            Encoding::Brotli => Some(HeaderValue::from_static("br")),
            Encoding::Gzip => Some(HeaderValue::from_static("gzip")),
            Encoding::Identity => None,
        }
    }

    fn etag_suffix(self) -> &'static str {
        match self {
            Encoding::Brotli => "-br",
            Encoding::Gzip => "-gz",
            Encoding::Identity => "",
        }
    }
}

/// One file of a bundle in all the forms it is served in.
#[derive(Clone, Debug)]
pub struct Asset {
    content_type: HeaderValue,
    /// The identity form's ETag without its quotes; see [`Asset::etag`].
    etag: String,
    immutable: bool,
    identity: Bytes,
    br: Option<Bytes>,
    gzip: Option<Bytes>,
}

impl Asset {
    fn new(
        content_type: &str,
        etag: &str,
        immutable: bool,
        identity: Bytes,
        br: Option<Bytes>,
        gzip: Option<Bytes>,
    ) -> Self {
        Self {
            content_type: HeaderValue::from_str(content_type)
                .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream")),
            etag: etag.trim_matches('"').to_string(),
            immutable,
            identity,
            br,
            gzip,
        }
    }

    /// The file's own bytes.
    pub fn identity(&self) -> &[u8] {
        &self.identity
    }

    /// The bytes sent for `encoding`, if this file has that form (brotli and gzip forms exist
    /// only where they are smaller).
    pub fn encoded(&self, encoding: Encoding) -> Option<&[u8]> {
        match encoding {
            Encoding::Brotli => self.br.as_deref(),
            Encoding::Gzip => self.gzip.as_deref(),
            Encoding::Identity => Some(&self.identity),
        }
    }

    /// Whether the name is one of Trunk's hashed names (cached for a year, `immutable`).
    pub fn immutable(&self) -> bool {
        self.immutable
    }

    /// The strong ETag of the form sent for `encoding`, quoted.
    pub fn etag(&self, encoding: Encoding) -> String {
        format!("\"{}{}\"", self.etag, encoding.etag_suffix())
    }

    fn has_alternatives(&self) -> bool {
        self.br.is_some() || self.gzip.is_some()
    }

    fn cache_control(&self) -> HeaderValue {
        HeaderValue::from_static(if self.immutable {
            CACHE_IMMUTABLE
        } else {
            CACHE_REVALIDATE
        })
    }
}

/// A packed web app held in memory.
#[derive(Clone, Debug)]
pub struct Bundle {
    /// Where it was packed from (for logs).
    source: String,
    files: HashMap<String, Asset>,
}

/// A bundle that cannot be packed.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{0}: no index.html (build the web app with `trunk build --release`)")]
    NoIndex(PathBuf),
    #[error("packing {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Bundle {
    /// The bundle built into this binary, or `None` if it was built without one.
    pub fn embedded() -> Option<Self> {
        let source = embedded::SOURCE?;
        let files = embedded::FILES
            .iter()
            .map(|f| {
                let asset = Asset::new(
                    f.content_type,
                    f.etag,
                    f.immutable,
                    Bytes::from_static(f.raw),
                    f.br.map(Bytes::from_static),
                    f.gzip.map(Bytes::from_static),
                );
                (f.path.to_string(), asset)
            })
            .collect();
        Some(Self {
            source: source.to_string(),
            files,
        })
    }

    /// Packs `dir` now, exactly as `build.rs` packs the embedded bundle (brotli 11 is slow:
    /// about a second per few hundred KB).
    pub fn from_dir(dir: &Path) -> Result<Self, BundleError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| BundleError::Io { path, source }
        };
        if !dir.join("index.html").is_file() {
            return Err(BundleError::NoIndex(dir.to_path_buf()));
        }
        let mut files = HashMap::new();
        for (url, path) in pack::list(dir).map_err(io(dir))? {
            let raw = std::fs::read(&path).map_err(io(&path))?;
            let packed = pack::pack(url, raw).map_err(io(&path))?;
            let asset = Asset::new(
                packed.content_type,
                &packed.etag,
                packed.immutable,
                Bytes::from(packed.raw),
                packed.br.map(Bytes::from),
                packed.gzip.map(Bytes::from),
            );
            files.insert(packed.path, asset);
        }
        Ok(Self {
            source: dir.display().to_string(),
            files,
        })
    }

    /// Where the bundle was packed from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Every file by URL path (no leading `/`), sorted.
    pub fn files(&self) -> Vec<(&str, &Asset)> {
        let mut files: Vec<_> = self.files.iter().map(|(p, a)| (p.as_str(), a)).collect();
        files.sort_by_key(|(p, _)| *p);
        files
    }

    pub fn get(&self, path: &str) -> Option<&Asset> {
        self.files.get(path)
    }
}

/// Where the web app is served from.
#[derive(Clone, Debug)]
pub enum StaticFiles {
    /// From memory: the bundle built into the binary (or one packed at start, in tests).
    Bundle(Arc<Bundle>),
    /// From this directory on disk (`--dist`), read and compressed per request.
    Dir(PathBuf),
    /// From `dist` in the working directory, because the binary was built without a bundle
    /// and no `--dist` was given (what the server did before it embedded one).
    FallbackDir(PathBuf),
    /// Nowhere: `/` answers 503 with a page that says how to build the app.
    Missing,
}

impl StaticFiles {
    /// `--dist DIR` if given; else the embedded bundle; else `./dist` if it has an
    /// `index.html`; else nothing.
    pub fn from_config(dist: Option<&Path>) -> Self {
        if let Some(dir) = dist {
            return Self::Dir(dir.to_path_buf());
        }
        if let Some(bundle) = Bundle::embedded() {
            return Self::Bundle(Arc::new(bundle));
        }
        let fallback = PathBuf::from("dist");
        if fallback.join("index.html").is_file() {
            Self::FallbackDir(fallback)
        } else {
            Self::Missing
        }
    }

    /// Says (log and stdout) where the app comes from, loudly when that is not the bundle
    /// built into the binary by accident.
    pub fn announce(&self) {
        match self {
            Self::Bundle(bundle) => tracing::info!(
                files = bundle.files.len(),
                source = bundle.source(),
                "serving the web app built into this binary"
            ),
            Self::Dir(dir) if dir.join("index.html").is_file() => {
                tracing::info!(dist = %dir.display(), "serving the web app from disk (--dist)")
            }
            Self::Dir(dir) => tracing::warn!(
                dist = %dir.display(),
                "no index.html in the --dist directory: the app will not load (run `trunk build --release`)"
            ),
            Self::FallbackDir(_) | Self::Missing => {
                if let Some(notice) = self.notice() {
                    tracing::warn!("{notice}");
                    println!("{notice}");
                }
            }
        }
    }

    /// The sentence for the person starting a server that has no web app built in, if it has
    /// none and none was given with `--dist`.
    pub fn notice(&self) -> Option<String> {
        match self {
            Self::FallbackDir(dir) => Some(format!(
                "This server was built without the web app inside; serving it from {} instead. \
                 Build the app before the server (scripts/run.sh does) to get one self-contained binary.",
                dir.display()
            )),
            Self::Missing => Some(format!(
                "This server was built without the web app, and no --dist was given: {HOW_TO_BUILD} \
                 Signaling on /ws works; / answers 503."
            )),
            Self::Bundle(_) | Self::Dir(_) => None,
        }
    }

    /// The router for everything that is not `/ws`, `/healthz` or `/metrics`.
    pub fn router(&self) -> Router {
        match self {
            Self::Bundle(bundle) => Router::new()
                .fallback(serve_bundle)
                .with_state(Arc::clone(bundle)),
            Self::Dir(dir) | Self::FallbackDir(dir) => disk_router(dir),
            Self::Missing => Router::new().fallback(serve_missing),
        }
    }
}

const HOW_TO_BUILD: &str = "build it with `trunk build --release`, then the server with \
    `NOOM_BUNDLE_DIR=dist cargo build --release -p server` (scripts/run.sh does both), or start \
    the server with --dist pointing to a built web app.";

/// Files from a directory, as the server always served `--dist`: ServeDir, `/r/<room>` deep
/// links to index.html, `/` to welcome.html if the directory has one when the server starts,
/// `no-cache`, and compression per request.
fn disk_router(dir: &Path) -> Router {
    use tower_http::compression::CompressionLayer;
    use tower_http::services::{ServeDir, ServeFile};
    use tower_http::set_header::SetResponseHeaderLayer;

    let index = dir.join(APP_PAGE);
    let welcome = dir.join(FIRST_PAGE);
    let first = if welcome.is_file() {
        welcome
    } else {
        index.clone()
    };
    // Unknown paths get a real 404 rather than index.html, so a missing asset is visible.
    Router::new()
        .route_service("/", ServeFile::new(first))
        .route_service("/r/{*room}", ServeFile::new(&index))
        .fallback_service(ServeDir::new(dir))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CACHE_CONTROL,
            HeaderValue::from_static(CACHE_REVALIDATE),
        ))
        .layer(CompressionLayer::new())
}

/// The whole app's page: what `/r/<room>` serves (and `/`, when there is no first page).
pub const APP_PAGE: &str = "index.html";
/// The first page, the welcome form alone (`frontend/src/bin/welcome.rs`), when the bundle has
/// it (release builds): what `/` serves, so a first visit does not load the whole app.
pub const FIRST_PAGE: &str = "welcome.html";

/// The `/…` paths an HTML page refers to in quotes: href, src, the wasm's `module_or_path`
/// (what a browser loads with the page; the size budget and the tests weigh and check them).
pub fn referenced_paths(html: &str) -> Vec<String> {
    let mut paths = Vec::new();
    for quote in ['"', '\''] {
        for piece in html.split(quote).skip(1).step_by(2) {
            if piece.starts_with('/') && !piece.starts_with("//") && piece.len() > 1 {
                paths.push(piece.to_string());
            }
        }
    }
    paths.sort();
    paths.dedup();
    paths
}

/// What a request path names.
#[derive(Debug, PartialEq, Eq)]
enum Lookup<'a> {
    /// `/`: the first page, or the app's page without one.
    FirstPage,
    /// `/r/<room>`: the app's page.
    AppPage,
    /// Any other path: that file, or a 404.
    File(&'a str),
}

impl Lookup<'_> {
    /// One of the pages, by its address or by its file name.
    fn is_page(&self) -> bool {
        match self {
            Lookup::FirstPage | Lookup::AppPage => true,
            Lookup::File(path) => *path == APP_PAGE || *path == FIRST_PAGE,
        }
    }
}

fn lookup_path(path: &str) -> Option<Lookup<'_>> {
    if path == "/" {
        return Some(Lookup::FirstPage);
    }
    if path
        .strip_prefix("/r/")
        .is_some_and(|room| !room.is_empty())
    {
        return Some(Lookup::AppPage);
    }
    path.strip_prefix('/')
        .filter(|p| !p.is_empty())
        .map(Lookup::File)
}

fn method_not_allowed() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(header::ALLOW, HeaderValue::from_static("GET, HEAD"))],
    )
        .into_response()
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "Not found\n").into_response()
}

async fn serve_bundle(
    State(bundle): State<Arc<Bundle>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return method_not_allowed();
    }
    let asset = match lookup_path(uri.path()) {
        Some(Lookup::FirstPage) => bundle.get(FIRST_PAGE).or_else(|| bundle.get(APP_PAGE)),
        Some(Lookup::AppPage) => bundle.get(APP_PAGE),
        Some(Lookup::File(path)) => bundle.get(path),
        None => None,
    };
    match asset {
        Some(asset) => respond(asset, &method, &headers),
        None => not_found(),
    }
}

/// The response for `asset`, in the form `headers` accept, or 304 if the client has it.
pub(crate) fn respond(asset: &Asset, method: &Method, headers: &HeaderMap) -> Response {
    let encoding = negotiate(
        headers.get(header::ACCEPT_ENCODING),
        asset.br.is_some(),
        asset.gzip.is_some(),
    );
    let body = match encoding {
        Encoding::Brotli => asset.br.clone(),
        Encoding::Gzip => asset.gzip.clone(),
        Encoding::Identity => None,
    }
    .unwrap_or_else(|| asset.identity.clone());
    let etag = asset.etag(encoding);

    let mut response = Response::new(Body::empty());
    let out = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&etag) {
        out.insert(header::ETAG, value);
    }
    out.insert(header::CACHE_CONTROL, asset.cache_control());
    if asset.has_alternatives() {
        out.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
    if none_match(headers.get(header::IF_NONE_MATCH), asset) {
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        return response;
    }
    out.insert(header::CONTENT_TYPE, asset.content_type.clone());
    if let Some(coding) = encoding.header() {
        out.insert(header::CONTENT_ENCODING, coding);
    }
    out.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    if method != Method::HEAD {
        *response.body_mut() = Body::from(body);
    }
    response
}

/// The best coding `accept` (an `Accept-Encoding` value) allows among those available:
/// highest q-value, and on a tie the smaller form (brotli, then gzip, then identity). No header
/// means identity (what curl and most programs expect); so does a header that refuses everything.
pub fn negotiate(accept: Option<&HeaderValue>, br: bool, gzip: bool) -> Encoding {
    let Some(accept) = accept.and_then(|v| v.to_str().ok()) else {
        return Encoding::Identity;
    };
    let mut q_br = None;
    let mut q_gzip = None;
    let mut q_identity = None;
    let mut q_any = None;
    for item in accept.split(',') {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let mut q = 1.0_f32;
        for param in parts {
            if let Some((key, value)) = param.split_once('=') {
                if key.trim().eq_ignore_ascii_case("q") {
                    q = value.trim().parse().unwrap_or(0.0);
                }
            }
        }
        let slot = match coding.as_str() {
            "br" => &mut q_br,
            "gzip" | "x-gzip" => &mut q_gzip,
            "identity" => &mut q_identity,
            "*" => &mut q_any,
            _ => continue,
        };
        // A coding listed twice: the most generous wins.
        *slot = Some(slot.map_or(q, |old: f32| old.max(q)));
    }
    let br_q = if br {
        q_br.or(q_any).unwrap_or(0.0)
    } else {
        0.0
    };
    let gzip_q = if gzip {
        q_gzip.or(q_any).unwrap_or(0.0)
    } else {
        0.0
    };
    // Identity is acceptable unless refused by name (or by `*;q=0` without naming it), but
    // when not named it comes after every coding that is (0.001: the lowest q there is). Even
    // refused, it is what we send when nothing else is acceptable.
    let identity_q = q_identity.or(q_any).unwrap_or(0.001);
    let best = [
        (Encoding::Brotli, br_q),
        (Encoding::Gzip, gzip_q),
        (Encoding::Identity, identity_q),
    ]
    .into_iter()
    .filter(|(_, q)| *q > 0.0)
    // max_by keeps the last of equals: reverse so that the earlier (smaller) form wins ties.
    .rev()
    .max_by(|a, b| a.1.total_cmp(&b.1));
    best.map_or(Encoding::Identity, |(encoding, _)| encoding)
}

/// Whether `if_none_match` names any form of `asset` (weak comparison, as RFC 9110 asks for
/// If-None-Match: a `W/` prefix is ignored), or is `*`.
fn none_match(if_none_match: Option<&HeaderValue>, asset: &Asset) -> bool {
    let Some(value) = if_none_match.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    value.split(',').map(str::trim).any(|tag| {
        if tag == "*" {
            return true;
        }
        let tag = tag.strip_prefix("W/").unwrap_or(tag);
        [Encoding::Brotli, Encoding::Gzip, Encoding::Identity]
            .into_iter()
            .any(|encoding| tag == asset.etag(encoding))
    })
}

async fn serve_missing(method: Method, uri: Uri) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return method_not_allowed();
    }
    if !lookup_path(uri.path()).is_some_and(|l| l.is_page()) {
        return not_found();
    }
    let page = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Noom: no web app in this server</title></head><body>\
         <h1>This Noom server has no web app</h1>\
         <p>It was built without the web app inside, and started without <code>--dist</code>. \
         To fix it, {}</p></body></html>\n",
        html_escape(HOW_TO_BUILD)
    );
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        page,
    )
        .into_response()
}

/// Escapes the text for HTML and turns `code` spans into `<code>`.
fn html_escape(text: &str) -> String {
    let escaped = text
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    let mut out = String::new();
    for (i, part) in escaped.split('`').enumerate() {
        if i % 2 == 1 {
            out.push_str("<code>");
            out.push_str(part);
            out.push_str("</code>");
        } else {
            out.push_str(part);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> Encoding {
        negotiate(Some(&HeaderValue::from_str(value).unwrap()), true, true)
    }

    #[test]
    fn negotiation_prefers_the_smallest_acceptable_form() {
        assert_eq!(negotiate(None, true, true), Encoding::Identity);
        assert_eq!(accept("gzip, deflate, br, zstd"), Encoding::Brotli);
        assert_eq!(accept("gzip"), Encoding::Gzip);
        assert_eq!(accept("x-gzip"), Encoding::Gzip);
        assert_eq!(accept("br;q=0, gzip"), Encoding::Gzip);
        assert_eq!(accept("br;q=0.5, gzip;q=0.8"), Encoding::Gzip);
        assert_eq!(accept("BR"), Encoding::Brotli);
        assert_eq!(accept("*"), Encoding::Brotli);
        assert_eq!(accept("*;q=0.1, identity"), Encoding::Identity);
        assert_eq!(accept("identity"), Encoding::Identity);
        assert_eq!(accept("deflate"), Encoding::Identity);
        assert_eq!(accept("br;q=0, gzip;q=0, identity;q=0"), Encoding::Identity);
        assert_eq!(accept(""), Encoding::Identity);
        assert_eq!(accept("br;q=nonsense, gzip"), Encoding::Gzip);
        // A form the file does not have is never chosen.
        let br = HeaderValue::from_static("br, gzip");
        assert_eq!(negotiate(Some(&br), false, true), Encoding::Gzip);
        assert_eq!(negotiate(Some(&br), false, false), Encoding::Identity);
    }

    #[test]
    fn trunk_hashed_names_are_immutable_and_others_are_not() {
        for name in [
            "frontend-8561349053976a24_bg.wasm",
            "frontend-f39c5f48bb549439.js",
            "style-73c5c9c5e7a96fcd.css",
            "favicon-9eb468f3a09f300f.svg",
            "snippets/web-sys-0123456789abcdef/inline0.js-0123abcd.js",
        ] {
            assert!(pack::is_hashed_name(name), "{name}");
        }
        for name in [
            "index.html",
            "favicon.svg",
            "app-1234.js",
            "app-XYZ0123456789.js",
            "my-app.js",
            "robots.txt",
            "noext-0123456789abcdef",
        ] {
            assert!(!pack::is_hashed_name(name), "{name}");
        }
    }

    #[test]
    fn paths_map_to_files() {
        assert_eq!(lookup_path("/"), Some(Lookup::FirstPage));
        assert_eq!(lookup_path("/r/standup"), Some(Lookup::AppPage));
        assert_eq!(lookup_path("/r/a/b"), Some(Lookup::AppPage));
        assert_eq!(
            lookup_path("/r/"),
            Some(Lookup::File("r/")),
            "not the page: a 404"
        );
        assert_eq!(lookup_path("/r"), Some(Lookup::File("r")));
        assert_eq!(lookup_path("/app.js"), Some(Lookup::File("app.js")));
        assert_eq!(
            lookup_path("/snippets/x/a.js"),
            Some(Lookup::File("snippets/x/a.js"))
        );
        assert_eq!(
            lookup_path("/welcome.html"),
            Some(Lookup::File("welcome.html"))
        );
        assert_eq!(lookup_path(""), None);
    }

    #[test]
    fn missing_notice_says_how_to_build() {
        let notice = StaticFiles::Missing.notice().unwrap();
        assert!(notice.contains("trunk build --release"), "{notice}");
        assert!(notice.contains("--dist"), "{notice}");
        let fallback = StaticFiles::FallbackDir(PathBuf::from("dist"))
            .notice()
            .unwrap();
        assert!(fallback.contains("without the web app"), "{fallback}");
        assert!(StaticFiles::Dir(PathBuf::from("x")).notice().is_none());
    }
}
