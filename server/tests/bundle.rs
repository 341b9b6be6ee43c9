//! The web app served from memory, over real HTTP on 127.0.0.1: content encodings, ETags and
//! 304s, cache headers, deep links, 404s, the page of a server without an app, the bundle built
//! into this very build, and the binary serving it from a directory with no `dist/` in sight.
//!
//! Most tests pack a small bundle from a temporary directory at run time
//! (`Bundle::from_dir`, the same code build.rs uses), so they do not depend on how the binary was
//! built; the `embedded_*` and `binary_*` tests check the real embedded bundle and fail (with
//! what to do) if this build has none.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use server::bundle::{referenced_paths, Bundle, BundleError, CACHE_IMMUTABLE, CACHE_REVALIDATE};
use server::{AppState, Config, StaticFiles};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const INDEX_MARKER: &str = "noom-bundle-test-index";
const JS: &str = "app-0123456789abcdef.js";
const WASM: &str = "app-0123456789abcdef_bg.wasm";
const CSS: &str = "style-fedcba9876543210.css";
const ICON: &str = "favicon-00112233aabbccdd.svg";
/// An unhashed name: revalidated like index.html.
const PLAIN: &str = "robots.txt";
/// A nested file, as wasm-bindgen snippets are.
const NESTED: &str = "snippets/web-sys-0123456789abcdef/inline0.js";

fn write_bundle(dir: &Path) -> Vec<(&'static str, Vec<u8>)> {
    let index = format!(
        "<!doctype html><html><head><title>Noom</title><link rel=\"icon\" href=\"/{ICON}\"></head>\
         <body>{INDEX_MARKER}</body></html>\n"
    );
    let js =
        "export function greet() { console.log('noom bundle test, compress me'); }\n".repeat(200);
    // Not very compressible, like a real wasm file: pseudo-random bytes after a wasm header.
    let mut wasm = b"\0asm\x01\0\0\0".to_vec();
    let mut x: u32 = 12345;
    for _ in 0..20_000 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        wasm.push((x >> 16) as u8 & 0x3f);
    }
    let files: Vec<(&'static str, Vec<u8>)> = vec![
        ("index.html", index.into_bytes()),
        (JS, js.into_bytes()),
        (WASM, wasm),
        (
            CSS,
            "body { margin: 0; padding: 0; }\n".repeat(50).into_bytes(),
        ),
        (
            ICON,
            b"<svg xmlns=\"http://www.w3.org/2000/svg\"/>".to_vec(),
        ),
        (PLAIN, b"User-agent: *\nDisallow:\n".to_vec()),
        (NESTED, b"export function x() { return 1; }\n".repeat(20)),
    ];
    for (name, bytes) in &files {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
    // Trunk's lock file: hidden, never served.
    std::fs::write(dir.join(".trunk-lock"), b"").unwrap();
    files
}

/// A server in this process on 127.0.0.1 port 0, serving `static_files`; shut down on drop.
struct Server {
    url: String,
    _shutdown: oneshot::Sender<()>,
}

impl Server {
    async fn start(static_files: StaticFiles) -> Self {
        let config = Config::try_parse_from(["server", "--ice-server", "none"]).unwrap();
        let state = AppState::with_static_files(&config, static_files).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(server::run(
            listener,
            Arc::clone(&state),
            async move {
                let _ = rx.await;
            },
            Duration::from_secs(1),
        ));
        Self { url, _shutdown: tx }
    }

    /// A server with a bundle packed from a fresh temporary directory.
    async fn with_test_bundle() -> (Self, Vec<(&'static str, Vec<u8>)>) {
        let dir = tempfile::tempdir().unwrap();
        let files = write_bundle(dir.path());
        let bundle = Bundle::from_dir(dir.path()).expect("pack the test bundle");
        // Packed into memory: the directory is not needed any more.
        drop(dir);
        (
            Self::start(StaticFiles::Bundle(Arc::new(bundle))).await,
            files,
        )
    }

    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut request = http().get(format!("{}{path}", self.url));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.unwrap()
    }
}

fn http() -> reqwest::Client {
    // reqwest without default features neither asks for nor decodes compression: the test
    // sees exactly what the server sent.
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
}

fn unbrotli(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    brotli::Decompressor::new(bytes, 4096)
        .read_to_end(&mut out)
        .expect("valid brotli");
    out
}

fn ungzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .expect("valid gzip");
    out
}

fn original<'a>(files: &'a [(&str, Vec<u8>)], name: &str) -> &'a [u8] {
    &files.iter().find(|(n, _)| *n == name).unwrap().1
}

#[tokio::test]
async fn each_form_is_served_as_accept_encoding_asks() {
    let (server, files) = Server::with_test_bundle().await;
    let js = original(&files, JS);
    let path = format!("/{JS}");

    let cases = [
        (None, None),
        (Some("gzip, deflate, br, zstd"), Some("br")),
        (Some("br"), Some("br")),
        (Some("gzip"), Some("gzip")),
        (Some("br;q=0, gzip"), Some("gzip")),
        (Some("gzip;q=1, br;q=0.5"), Some("gzip")),
        (Some("identity"), None),
        (Some("deflate"), None),
    ];
    let mut etags = std::collections::HashSet::new();
    for (accept, expected) in cases {
        let headers: Vec<(&str, &str)> =
            accept.map(|a| ("accept-encoding", a)).into_iter().collect();
        let response = server.get(&path, &headers).await;
        assert_eq!(response.status(), 200, "{accept:?}");
        assert_eq!(
            header(&response, "content-encoding").as_deref(),
            expected,
            "{accept:?}"
        );
        assert_eq!(
            header(&response, "vary").as_deref(),
            Some("accept-encoding"),
            "{accept:?}"
        );
        assert_eq!(
            header(&response, "content-type").as_deref(),
            Some("text/javascript"),
            "{accept:?}"
        );
        let etag = header(&response, "etag").expect("an ETag");
        assert!(
            etag.starts_with('"') && etag.ends_with('"'),
            "strong ETag: {etag}"
        );
        let length: usize = header(&response, "content-length")
            .unwrap()
            .parse()
            .unwrap();
        let body = response.bytes().await.unwrap();
        assert_eq!(body.len(), length);
        let decoded = match expected {
            Some("br") => unbrotli(&body),
            Some("gzip") => ungzip(&body),
            _ => body.to_vec(),
        };
        assert_eq!(
            decoded, js,
            "{accept:?}: decoded body differs from the file"
        );
        if expected.is_some() {
            assert!(
                body.len() * 5 < js.len(),
                "{accept:?}: {} -> {}",
                js.len(),
                body.len()
            );
        }
        etags.insert((expected, etag));
    }
    // One strong ETag per form: identity, br, gzip.
    let distinct: std::collections::HashSet<_> = etags.iter().map(|(_, e)| e.clone()).collect();
    assert_eq!(distinct.len(), 3, "{etags:?}");

    // Other files get their own content types, and brotli.
    for (name, content_type) in [
        (WASM, "application/wasm"),
        (CSS, "text/css"),
        (ICON, "image/svg+xml"),
        ("index.html", "text/html"),
    ] {
        let response = server
            .get(&format!("/{name}"), &[("accept-encoding", "br")])
            .await;
        assert_eq!(response.status(), 200, "{name}");
        assert_eq!(
            header(&response, "content-type").as_deref(),
            Some(content_type),
            "{name}"
        );
        let encoding = header(&response, "content-encoding");
        let body = response.bytes().await.unwrap();
        let decoded = if encoding.as_deref() == Some("br") {
            unbrotli(&body)
        } else {
            body.to_vec()
        };
        assert_eq!(decoded, original(&files, name), "{name}");
    }
}

#[tokio::test]
async fn etag_revalidation_gives_304_without_a_body() {
    let (server, _) = Server::with_test_bundle().await;
    for path in ["/", "/index.html", &format!("/{JS}")] {
        let first = server.get(path, &[("accept-encoding", "br")]).await;
        assert_eq!(first.status(), 200);
        let etag = header(&first, "etag").unwrap();
        let cache = header(&first, "cache-control").unwrap();
        let weak = format!("W/{etag}");
        for if_none_match in [
            etag.as_str(),
            weak.as_str(),
            "*",
            &format!("\"other\", {etag}"),
        ] {
            let again = server
                .get(
                    path,
                    &[("accept-encoding", "br"), ("if-none-match", if_none_match)],
                )
                .await;
            assert_eq!(again.status(), 304, "{path} If-None-Match: {if_none_match}");
            assert_eq!(
                header(&again, "etag").as_deref(),
                Some(etag.as_str()),
                "{path}"
            );
            assert_eq!(
                header(&again, "cache-control").as_deref(),
                Some(cache.as_str())
            );
            assert_eq!(header(&again, "vary").as_deref(), Some("accept-encoding"));
            assert!(again.bytes().await.unwrap().is_empty(), "304 with a body");
        }
        // The client holds the brotli form but now asks without compression: the content is
        // the same file, so it is still current.
        let plain = server.get(path, &[("if-none-match", etag.as_str())]).await;
        assert_eq!(plain.status(), 304, "{path}");
        // A stale or unknown ETag gets the file.
        for stale in ["\"0123456789abcdef0123456789abcdef\"", "\"\"", "garbage"] {
            let response = server
                .get(path, &[("accept-encoding", "br"), ("if-none-match", stale)])
                .await;
            assert_eq!(response.status(), 200, "{path} If-None-Match: {stale}");
            assert!(!response.bytes().await.unwrap().is_empty());
        }
    }
}

#[tokio::test]
async fn hashed_names_are_immutable_and_the_page_is_revalidated() {
    let (server, _) = Server::with_test_bundle().await;
    for name in [JS, WASM, CSS, ICON] {
        let response = server.get(&format!("/{name}"), &[]).await;
        assert_eq!(response.status(), 200, "{name}");
        assert_eq!(
            header(&response, "cache-control").as_deref(),
            Some(CACHE_IMMUTABLE),
            "{name}"
        );
        assert_eq!(CACHE_IMMUTABLE, "public, max-age=31536000, immutable");
    }
    for path in ["/", "/index.html", "/r/standup", &format!("/{PLAIN}")] {
        let response = server.get(path, &[]).await;
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(
            header(&response, "cache-control").as_deref(),
            Some(CACHE_REVALIDATE),
            "{path}"
        );
    }
    assert_eq!(CACHE_REVALIDATE, "no-cache");
}

#[tokio::test]
async fn deep_links_serve_the_page_and_unknown_paths_are_404() {
    let (server, files) = Server::with_test_bundle().await;
    for path in [
        "/",
        "/index.html",
        "/r/some-room",
        "/r/team%20sync",
        "/r/a/b",
    ] {
        let response = server.get(path, &[("accept-encoding", "gzip")]).await;
        assert_eq!(response.status(), 200, "GET {path}");
        assert_eq!(
            header(&response, "content-type").as_deref(),
            Some("text/html")
        );
        let body = ungzip(&response.bytes().await.unwrap());
        assert_eq!(body, original(&files, "index.html"), "GET {path}");
    }
    let nested = server.get(&format!("/{NESTED}"), &[]).await;
    assert_eq!(nested.status(), 200);
    assert_eq!(nested.bytes().await.unwrap(), original(&files, NESTED));

    for path in [
        "/missing.js",
        "/r",
        "/r/",
        "/assets/nope.wasm",
        "/snippets",
        "/snippets/",
        "/.trunk-lock",
        "/index.html/",
        "/../Cargo.toml",
    ] {
        let response = server.get(path, &[]).await;
        assert_eq!(response.status(), 404, "GET {path}");
        let body = response.text().await.unwrap();
        assert!(!body.contains(INDEX_MARKER), "GET {path} served the app");
    }
    let post = http()
        .post(format!("{}/", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 405);
    assert_eq!(header(&post, "allow").as_deref(), Some("GET, HEAD"));
}

#[tokio::test]
async fn head_gets_the_headers_and_no_body() {
    let (server, _) = Server::with_test_bundle().await;
    let get = server
        .get(&format!("/{JS}"), &[("accept-encoding", "br")])
        .await;
    let get_length = header(&get, "content-length").unwrap();
    let head = http()
        .head(format!("{}/{JS}", server.url))
        .header("accept-encoding", "br")
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(header(&head, "content-encoding").as_deref(), Some("br"));
    assert_eq!(header(&head, "content-length"), Some(get_length));
    assert_eq!(header(&head, "etag"), header(&get, "etag"));
    assert!(head.bytes().await.unwrap().is_empty());
}

#[test]
fn a_directory_without_index_html_is_not_a_bundle() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(JS), "x").unwrap();
    let err = Bundle::from_dir(dir.path()).unwrap_err();
    assert!(matches!(err, BundleError::NoIndex(_)), "{err}");
    assert!(err.to_string().contains("trunk build --release"), "{err}");
    assert!(Bundle::from_dir(&dir.path().join("absent")).is_err());
}

#[tokio::test]
async fn without_an_app_the_page_says_how_to_build_one() {
    let server = Server::start(StaticFiles::Missing).await;
    for path in ["/", "/index.html", "/r/standup"] {
        let response = server.get(path, &[]).await;
        assert_eq!(response.status(), 503, "GET {path}");
        assert_eq!(
            header(&response, "content-type").as_deref(),
            Some("text/html; charset=utf-8")
        );
        let body = response.text().await.unwrap();
        assert!(body.contains("has no web app"), "{body}");
        assert!(
            body.contains("<code>trunk build --release</code>"),
            "{body}"
        );
        assert!(body.contains("--dist"), "{body}");
    }
    for path in ["/app.js", "/r"] {
        assert_eq!(server.get(path, &[]).await.status(), 404, "GET {path}");
    }
    // The rest of the server works.
    let health = server.get("/healthz", &[]).await;
    assert_eq!(health.status(), 200);
}

// ---------------------------------------------------------------------------------------------
// The bundle built into this build
// ---------------------------------------------------------------------------------------------

fn embedded() -> Bundle {
    Bundle::embedded().expect(
        "this build of the server has no web app inside: build it with `trunk build --release` \
         first, then the tests (scripts/test.sh does, with NOOM_BUNDLE_DIR set)",
    )
}

#[tokio::test]
async fn embedded_bundle_is_complete_and_served_compressed() {
    let bundle = embedded();
    assert!(
        bundle.get(server::bundle::FIRST_PAGE).is_some(),
        "a release bundle has the first page (welcome.html, built by scripts/welcome-page.sh)"
    );
    let server = Server::start(StaticFiles::Bundle(Arc::new(bundle.clone()))).await;
    let mut pages = Vec::new();
    // `/` is the first page (the welcome form alone), a room is the whole app: each page's
    // files must all be there.
    for (path, page_file) in [
        ("/", server::bundle::FIRST_PAGE),
        ("/r/standup", server::bundle::APP_PAGE),
    ] {
        let page = server.get(path, &[("accept-encoding", "br")]).await;
        assert_eq!(page.status(), 200, "{path}");
        assert_eq!(header(&page, "cache-control").as_deref(), Some("no-cache"));
        let html = String::from_utf8(unbrotli(&page.bytes().await.unwrap())).unwrap();
        assert_eq!(
            html.as_bytes(),
            bundle.get(page_file).unwrap().identity(),
            "{path} serves {page_file}"
        );
        assert!(html.contains("<html"), "{html}");
        assert!(
            html.contains("rel=\"icon\""),
            "the favicon must be in the bundle: {html}"
        );
        let paths = referenced_paths(&html);
        for ext in [".wasm", ".js", ".css", ".svg"] {
            assert!(
                paths.iter().any(|p| p.ends_with(ext)),
                "{page_file} refers to no {ext} file: {paths:?}"
            );
        }
        for path in &paths {
            let response = server
                .get(path, &[("accept-encoding", "gzip, deflate, br")])
                .await;
            assert_eq!(response.status(), 200, "{path} (referenced by {page_file})");
            assert_eq!(
                header(&response, "cache-control").as_deref(),
                Some(CACHE_IMMUTABLE),
                "{path}"
            );
            let asset = bundle.get(&path[1..]).unwrap();
            if asset.encoded(server::bundle::Encoding::Brotli).is_some() {
                assert_eq!(
                    header(&response, "content-encoding").as_deref(),
                    Some("br"),
                    "{path}"
                );
                let body = response.bytes().await.unwrap();
                assert_eq!(unbrotli(&body), asset.identity(), "{path}");
            }
        }
        pages.push(paths);
    }
    // Two different programs: the first page does not load the whole app's wasm.
    let wasm = |paths: &Vec<String>| paths.iter().find(|p| p.ends_with(".wasm")).cloned();
    assert_ne!(wasm(&pages[0]), wasm(&pages[1]), "{pages:?}");
}

#[tokio::test]
async fn the_first_page_is_served_for_the_root_and_the_app_for_rooms() {
    const WELCOME_MARKER: &str = "noom-bundle-test-welcome";
    let dir = tempfile::tempdir().unwrap();
    write_bundle(dir.path());
    std::fs::write(
        dir.path().join("welcome.html"),
        format!("<!doctype html><html><body>{WELCOME_MARKER}</body></html>\n"),
    )
    .unwrap();
    let bundle = Bundle::from_dir(dir.path()).expect("pack the test bundle");
    // From memory (the embedded way) and from disk (--dist), the same answers.
    for server in [
        Server::start(StaticFiles::Bundle(Arc::new(bundle))).await,
        Server::start(StaticFiles::Dir(dir.path().to_path_buf())).await,
    ] {
        for (path, marker) in [
            ("/", WELCOME_MARKER),
            ("/welcome.html", WELCOME_MARKER),
            ("/r/standup", INDEX_MARKER),
            ("/r/team%20sync", INDEX_MARKER),
            ("/index.html", INDEX_MARKER),
        ] {
            let response = server.get(path, &[("accept-encoding", "gzip")]).await;
            assert_eq!(response.status(), 200, "GET {path}");
            assert_eq!(
                header(&response, "cache-control").as_deref(),
                Some(CACHE_REVALIDATE),
                "{path}"
            );
            let encoding = header(&response, "content-encoding");
            let body = response.bytes().await.unwrap();
            let body = if encoding.as_deref() == Some("gzip") {
                ungzip(&body)
            } else {
                body.to_vec()
            };
            let text = String::from_utf8(body).unwrap();
            assert!(text.contains(marker), "{path}: {text}");
        }
    }
}

/// The server binary, killed by PID when dropped.
struct Binary {
    child: Child,
    url: String,
    /// Every stdout line after the first (the "listening" one).
    rest: std::sync::mpsc::Receiver<String>,
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Binary {
    /// Starts the binary in `cwd` with `args` (never `--dist` unless given here).
    fn start(cwd: &Path, args: &[&str], env: &[(&str, &Path)]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_server"));
        command
            .args(["--addr", "127.0.0.1:0", "--ice-server", "none"])
            .args(args)
            .current_dir(cwd)
            .env_remove("NOOM_DIST")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("start the server binary");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut binary = Binary {
            child,
            url: String::new(),
            rest: rx,
        };
        let line = binary
            .rest
            .recv_timeout(Duration::from_secs(10))
            .expect("no first line from the server");
        binary.url = line
            .strip_prefix("Noom is listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_string();
        binary
    }
}

#[tokio::test]
async fn binary_serves_its_built_in_app_with_no_dist_beside_it() {
    let bundle = embedded();
    let cwd = tempfile::tempdir().unwrap();
    assert!(!cwd.path().join("dist").exists());
    let binary = Binary::start(cwd.path(), &[], &[]);
    let page = http()
        .get(format!("{}/r/standup", binary.url))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(
        page.bytes().await.unwrap(),
        bundle.get("index.html").unwrap().identity()
    );
    // Nothing printed after the listening line: a complete server has nothing to warn about.
    std::thread::sleep(Duration::from_millis(200));
    assert!(binary.rest.try_recv().is_err());
}

#[tokio::test]
async fn binary_with_dist_serves_that_directory_instead() {
    // Keep the built-in bundle out of it: the directory's own index.html must be served.
    let dir = tempfile::tempdir().unwrap();
    write_bundle(dir.path());
    let cwd = tempfile::tempdir().unwrap();
    let by_flag = Binary::start(cwd.path(), &["--dist", dir.path().to_str().unwrap()], &[]);
    let by_env = Binary::start(cwd.path(), &[], &[("NOOM_DIST", dir.path())]);
    for binary in [&by_flag, &by_env] {
        for path in ["/", "/r/standup"] {
            let response = http()
                .get(format!("{}{path}", binary.url))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            // Today's --dist behaviour: no-cache, and compression made per request.
            assert_eq!(
                header(&response, "cache-control").as_deref(),
                Some("no-cache")
            );
            assert!(
                response.text().await.unwrap().contains(INDEX_MARKER),
                "{path}"
            );
        }
        let js = http()
            .get(format!("{}/{JS}", binary.url))
            .header("accept-encoding", "gzip")
            .send()
            .await
            .unwrap();
        assert_eq!(header(&js, "content-encoding").as_deref(), Some("gzip"));
        let missing = http()
            .get(format!("{}/missing.js", binary.url))
            .send()
            .await
            .unwrap();
        assert_eq!(missing.status(), 404);
    }
}
