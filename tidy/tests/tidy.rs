//! The rules in ARCHITECTURE.md's "Invariants", checked on the source itself (rust-analyzer's
//! `tidy` idea): each test reads the files a rule is about and fails with the place that breaks
//! it. Plain text search, so each rule is written to be greppable; a rule that needs the type
//! system is checked elsewhere (clippy's `await_holding_lock`, the server's property tests).

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

/// Every `.rs` file under `dir` (relative to the workspace root), with its text.
fn sources(dir: &str) -> Vec<(PathBuf, String)> {
    fn walk(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
        let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("read source");
                out.push((path, text));
            }
        }
    }
    let mut out = Vec::new();
    walk(&root().join(dir), &mut out);
    assert!(!out.is_empty(), "no sources under {dir}");
    out
}

/// Code lines (comments and doc comments skipped) containing `needle`, as `path:line: text`.
fn find(files: &[(PathBuf, String)], needle: &str) -> Vec<String> {
    let mut hits = Vec::new();
    for (path, text) in files {
        for (number, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            if line.contains(needle) {
                let short = path.strip_prefix(root()).unwrap_or(path);
                hits.push(format!(
                    "{}:{}: {}",
                    short.display(),
                    number + 1,
                    line.trim()
                ));
            }
        }
    }
    hits
}

fn only_in(files: &[(PathBuf, String)], needle: &str, allowed: &[&str], rule: &str) {
    let stray: Vec<String> = find(files, needle)
        .into_iter()
        .filter(|hit| !allowed.iter().any(|a| hit.starts_with(a)))
        .collect();
    assert!(
        stray.is_empty(),
        "{rule}; `{needle}` found in:\n{}",
        stray.join("\n")
    );
}

fn nowhere(files: &[(PathBuf, String)], needle: &str, rule: &str) {
    only_in(files, needle, &[], rule);
}

#[test]
fn shared_does_no_io() {
    let shared = sources("shared/src");
    for needle in [
        "std::fs",
        "std::net",
        "std::io",
        "tokio",
        "println!",
        "eprintln!",
        "web_sys",
    ] {
        nowhere(
            &shared,
            needle,
            "`shared` is plain data and (de)serialization, no I/O",
        );
    }
}

#[test]
fn the_server_never_parses_sdp() {
    let server = sources("server/src");
    // The description travels as a whole; nothing looks inside its `sdp` string.
    for needle in [".sdp", "a=candidate", "m=audio", "m=video", "a=msid"] {
        nowhere(&server, needle, "the server relays SDP as an opaque string");
    }
}

#[test]
fn the_registry_knows_nothing_of_sockets() {
    let registry: Vec<(PathBuf, String)> = sources("server/src")
        .into_iter()
        .filter(|(p, _)| p.file_stem().is_some_and(|s| s == "registry"))
        .collect();
    assert!(!registry.is_empty(), "registry.rs not found");
    for needle in [
        "tokio",
        "axum",
        "std::net",
        "Waker",
        "WebSocket",
        "Session",
        "async ",
    ] {
        nowhere(
            &registry,
            needle,
            "the room registry is pure data behind one interface",
        );
    }
}

#[test]
fn only_media_touches_media_devices_and_only_peer_touches_peer_connections() {
    let frontend = sources("frontend/src");
    for needle in [
        "media_devices()",
        "MediaDevices",
        "get_user_media",
        "getDisplayMedia",
    ] {
        only_in(
            &frontend,
            needle,
            &["frontend/src/media.rs"],
            "only media.rs touches navigator.mediaDevices",
        );
    }
    for needle in ["RtcPeerConnection", "RtcRtpTransceiver", "RtcRtpSender"] {
        only_in(
            &frontend,
            needle,
            &["frontend/src/peer.rs"],
            "only peer.rs touches RTCPeerConnection",
        );
    }
    only_in(
        &frontend,
        "WebSocket",
        &["frontend/src/signaling.rs"],
        "only signaling.rs touches the websocket",
    );
}

#[test]
fn the_call_core_has_no_browser_inside() {
    let engine = sources("frontend/src/engine");
    for needle in ["web_sys", "js_sys", "wasm_bindgen", "leptos", "gloo"] {
        nowhere(
            &engine,
            needle,
            "the call core is sans-IO: no browser types",
        );
    }
}

#[test]
fn views_hold_no_browser_handles() {
    let views: Vec<(PathBuf, String)> = sources("frontend/src")
        .into_iter()
        .filter(|(p, _)| p.file_stem().is_some_and(|s| s == "app" || s == "welcome"))
        .collect();
    for needle in [
        "MediaStream",
        "RtcPeerConnection",
        "WebSocket",
        "MediaStreamTrack",
        "EventListener",
    ] {
        nowhere(&views, needle, "views read signals and call actions");
    }
}

/// The frontend's code that runs in the browser: its sources without the native unit tests
/// (`engine/tests.rs`, and each file's `#[cfg(test)]` part), which may unwrap and so on.
fn browser_code() -> Vec<(PathBuf, String)> {
    sources("frontend/src")
        .into_iter()
        .filter(|(p, _)| !p.ends_with("engine/tests.rs"))
        .map(|(p, text)| {
            let code = text
                .split("#[cfg(test)]")
                .next()
                .unwrap_or_default()
                .to_string();
            (p, code)
        })
        .collect()
}

#[test]
fn the_browser_code_cannot_panic_or_leak_a_closure() {
    let frontend = browser_code();
    for needle in [
        ".unwrap()",
        ".expect(",
        ".forget()",
        "unwrap_throw",
        "expect_throw",
    ] {
        nowhere(
            &frontend,
            needle,
            "a failure in the browser is a sentence on screen, and listeners are owned",
        );
    }
}

#[test]
fn every_queue_is_bounded() {
    let mut code = sources("server/src");
    code.extend(sources("frontend/src"));
    for needle in ["unbounded_channel", "mpsc::unbounded", "unbounded()"] {
        nowhere(&code, needle, "every queue is bounded");
    }
}

#[test]
fn no_lock_is_allowed_across_an_await() {
    // clippy's `await_holding_lock` (on under `-D warnings`) checks the rule itself; this makes
    // sure nobody switched it off.
    let mut code = sources("server/src");
    code.extend(sources("frontend/src"));
    nowhere(
        &code,
        "await_holding_lock",
        "a std Mutex is never held across .await",
    );
}

#[test]
fn no_javascript_clone_of_a_stream_by_accident() {
    // web-sys binds MediaStream.prototype.clone() as an inherent method: `.0.clone()` on a
    // stream or track wrapper makes a NEW stream/track instead of a second handle.
    let frontend = sources("frontend/src");
    nowhere(
        &frontend,
        ".0.clone()",
        "write Clone::clone(&x) or JsValue::from(&x) for a second handle to a browser object",
    );
}

#[test]
fn a_browser_cannot_name_the_sender() {
    // The server stamps `from` on everything it relays (the hub's property tests check the
    // stamping); for that to be the only source of truth, no client message may carry a sender.
    let messages = std::fs::read_to_string(root().join("shared/src/messages.rs"))
        .expect("shared/src/messages.rs");
    let start = messages
        .find("pub enum ClientMessage {")
        .expect("ClientMessage in shared/src/messages.rs");
    let body = &messages[start..];
    let body = &body[..body.find("\n}\n").expect("the end of ClientMessage")];
    for needle in ["from:", "sender:", "peer_id:"] {
        assert!(
            !body.contains(needle),
            "ClientMessage has a `{needle}` field: the server stamps the sender, a browser never names it"
        );
    }
}

#[test]
fn the_bundle_carries_no_unicode_case_tables() {
    // `str::to_lowercase`/`to_uppercase` pull Unicode's case tables into the wasm: one such call
    // cost 6.6 KB of the brotli bundle. ASCII case (`to_ascii_lowercase`) costs nothing.
    let frontend = browser_code();
    for needle in [".to_lowercase()", ".to_uppercase()"] {
        nowhere(
            &frontend,
            needle,
            "use ASCII case or a match: Unicode case tables are 6.6 KB",
        );
    }
}
