//! Calls across network namespaces: the real server binary in a server namespace S, headless
//! Chromium in two client namespaces A and B that reach S over their own veths (see
//! `support::netns::Topology`), and Debian's coturn in S.
//!
//! - The topology itself: A and B reach S's service address, not each other unless S forwards;
//!   links go down and up, addresses change, routes come back.
//! - With forwarding on in S, a call between A and B connects directly (host candidates
//!   198.18.1.2 ↔ 198.18.2.2), and the time ICE takes to notice a dead link is measured.
//! - With forwarding off and no TURN, the same call never connects: the topology really keeps A
//!   and B apart, so a call that connects there must be going through a relay in S.
//! - coturn in S relays between A and B (plain RTCPeerConnections, relay-only), and refuses
//!   wrong credentials.
//!
//! Needs root (the tests create namespaces; CI and scripts/test.sh run as root) and the release
//! bundle (`trunk build --release`). Every namespace, server, coturn and browser is removed when
//! its guard drops, also when a test panics.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use support::browser::*;
use support::netns::{addr, dev, Namespace, Topology, TwoHosts};
use support::process::{Coturn, ServerProcess};
use support::{Timing, ONE_AT_A_TIME};

/// The server's port in S (plain HTTP until the server has TLS).
const PORT: u16 = 8080;

/// A Chromium flag that makes the plain-HTTP page at `origin` a secure context, so the camera
/// works without TLS.
fn treat_as_secure(origin: &str) -> String {
    format!("unsafely-treat-insecure-origin-as-secure={origin}")
}

fn listen(ns: &Namespace, ip: Ipv4Addr) -> TcpListener {
    ns.run(|| TcpListener::bind((ip, 0)).expect("listen"))
}

/// A TCP connection from namespace `from` to `listener`: the source address the listener saw,
/// or the connect error (within 1 s).
/// A TCP connection from `from` to `listener` within `timeout`: the source address the
/// listener saw.
fn connect_within(
    from: &Namespace,
    listener: &TcpListener,
    timeout: Duration,
) -> Result<IpAddr, std::io::Error> {
    let to = listener.local_addr().expect("listener address");
    let stream = from.run(|| TcpStream::connect_timeout(&to, timeout))?;
    let (accepted, seen) = listener.accept().expect("accept");
    drop((stream, accepted));
    Ok(seen.ip())
}

/// A connection that must fail: 1 s is plenty to show there is no path (a dropped SYN is not
/// retransmitted before then).
fn connect(from: &Namespace, listener: &TcpListener) -> Result<IpAddr, std::io::Error> {
    connect_within(from, listener, Duration::from_secs(1))
}

/// A connection that must succeed: the source address the listener saw. Up to 5 s, like a real
/// host's first connection after a link comes back: an ARP request still pending from while the
/// other end was down is only repeated after the kernel's 1 s retransmit time, and the SYN waits
/// for it (a 1 s connect timeout raced that retry: CI failed so once).
fn reach(from: &Namespace, listener: &TcpListener, what: &str) -> IpAddr {
    connect_within(from, listener, Duration::from_secs(5))
        .unwrap_or_else(|err| panic!("{what}: {err}"))
}

fn names(list: &[&str]) -> std::collections::BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn topology_routes_only_through_s_and_links_flap() {
    let _timing = Timing::start("topology_routes_only_through_s_and_links_flap");
    let t = Topology::new();
    assert_eq!(
        t.s.interfaces(),
        names(&["lo", dev::SERVICE, dev::S_TO_A, dev::S_TO_B])
    );
    assert_eq!(t.a.interfaces(), names(&["lo", dev::A_TO_S]));
    assert_eq!(t.b.interfaces(), names(&["lo", dev::B_TO_S]));
    // Nothing was created in the test process's own namespace.
    let own = std::fs::read_to_string("/proc/self/net/dev").expect("/proc/self/net/dev");
    for name in [
        dev::S_TO_A,
        dev::A_TO_S,
        dev::S_TO_B,
        dev::B_TO_S,
        dev::SERVICE,
    ] {
        assert!(
            !own.lines()
                .any(|l| l.trim_start().starts_with(&format!("{name}:"))),
            "{name} in the test's own namespace"
        );
    }
    assert!(!t.s.forwarding(), "forwarding is off in S by default");

    let service = listen(&t.s, addr::SERVICE);
    let at_a = listen(&t.a, addr::A);
    let at_b = listen(&t.b, addr::B);
    assert_eq!(reach(&t.a, &service, "A → S"), addr::A);
    assert_eq!(reach(&t.b, &service, "B → S"), addr::B);
    let err = connect(&t.a, &at_b).expect_err("A reached B without forwarding in S");
    println!("A -> B with forwarding off in S: {err}");
    connect(&t.b, &at_a).expect_err("B reached A without forwarding in S");

    // S as a plain router: A and B reach each other, with their own addresses (no NAT).
    t.set_forwarding(true);
    assert!(t.s.forwarding());
    assert_eq!(reach(&t.a, &at_b, "A → B with forwarding on in S"), addr::A);
    assert_eq!(reach(&t.b, &at_a, "B → A with forwarding on in S"), addr::B);
    t.set_forwarding(false);
    connect(&t.a, &at_b).expect_err("A reached B after forwarding went off again");

    // A's link goes down: the kernel drops its routes; up again, the harness puts them back.
    t.a.link_down(dev::A_TO_S);
    assert!(!t.a.is_up(dev::A_TO_S));
    connect(&t.a, &service).expect_err("A reached S with its link down");
    t.a.link_up(dev::A_TO_S);
    assert!(
        t.a.routes().contains("default via 198.18.1.1"),
        "{}",
        t.a.routes()
    );
    assert_eq!(
        reach(&t.a, &service, "A → S after A's link came back"),
        addr::A
    );
    // S's end goes down (A loses carrier), and comes back.
    t.s.link_down(dev::S_TO_A);
    connect(&t.a, &service).expect_err("A reached S with S's end down");
    t.s.link_up(dev::S_TO_A);
    assert_eq!(
        reach(&t.a, &service, "A → S after S's end came back"),
        addr::A
    );

    // A moves to another address while its link is down (Wi-Fi to cable).
    let moved = Ipv4Addr::new(198, 18, 1, 3);
    t.a.link_down(dev::A_TO_S);
    t.a.change_addr(dev::A_TO_S, "198.18.1.2/24", "198.18.1.3/24");
    t.a.link_up(dev::A_TO_S);
    assert_eq!(t.a.addrs(dev::A_TO_S), ["198.18.1.3/24"]);
    assert_eq!(reach(&t.a, &service, "A → S from its new address"), moved);
    // And back, while the link is up.
    t.a.change_addr(dev::A_TO_S, "198.18.1.3/24", "198.18.1.2/24");
    assert_eq!(
        reach(&t.a, &service, "A → S back on its old address"),
        addr::A
    );

    // Two hosts on one veth.
    let pair = TwoHosts::new();
    assert_eq!(pair.a.interfaces(), names(&["lo", dev::A_TO_B]));
    let at_pair_b = listen(&pair.b, addr::PAIR_B);
    assert_eq!(
        reach(&pair.a, &at_pair_b, "A → B over the pair"),
        addr::PAIR_A
    );
    pair.b.link_down(dev::B_TO_A);
    connect(&pair.a, &at_pair_b).expect_err("A reached B over a link that is down");
    pair.b.link_up(dev::B_TO_A);
    assert_eq!(
        reach(&pair.a, &at_pair_b, "A → B after the pair's link came back"),
        addr::PAIR_A
    );
}

/// Two browsers, one in A and one in B, open the app served from S and join `room` (A first).
/// Returns the pages and when B pressed Join.
async fn join_both(
    a: &Chrome,
    b: &Chrome,
    origin: &str,
    room: &str,
) -> (chromiumoxide::Page, chromiumoxide::Page, Instant) {
    let page_a = a.open(&format!("{origin}/r/{room}")).await;
    let secure: bool = eval(&page_a, "window.isSecureContext").await;
    assert!(
        secure,
        "{origin} is not a secure context in A: the camera would be refused"
    );
    join_from_lobby(&page_a).await;
    wait_in_room(&page_a, "A").await;
    let page_b = b.open(&format!("{origin}/r/{room}")).await;
    join_from_lobby(&page_b).await;
    (page_a, page_b, Instant::now())
}

async fn launch_in(ns: &Namespace, origin: &str) -> Chrome {
    Chrome::start(
        Launch::new(Media::Granted { cameras: 1 })
            .in_namespace(ns)
            .arg(&treat_as_secure(origin)),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_across_namespaces_goes_direct_when_s_forwards() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let _timing = Timing::start("call_across_namespaces_goes_direct_when_s_forwards");
    let t = Topology::new();
    t.set_forwarding(true);
    let server = ServerProcess::start_in(
        &t.s,
        SocketAddr::from((addr::SERVICE, PORT)),
        &["--tls", "off"],
    );
    let origin = server.url.clone();
    assert_eq!(origin, format!("http://{}:{PORT}", addr::SERVICE));
    let a = launch_in(&t.a, &origin).await;
    let b = launch_in(&t.b, &origin).await;

    let (page_a, page_b, joined_at) = join_both(&a, &b, &origin, "direct").await;
    wait_until(&page_b, &remote_video_has_frames(), "B to see A's video", T).await;
    wait_until(&page_a, &remote_video_has_frames(), "A to see B's video", T).await;
    println!(
        "call setup across namespaces, direct (B's join click -> both remote videos' first frame): {} ms",
        joined_at.elapsed().as_millis()
    );
    assert_remote_video_playing(&page_a, "A").await;
    assert_remote_video_playing(&page_b, "B").await;

    // The selected pair: host to host, A's and B's own addresses, through S's routing.
    for (page, who, local, remote) in [
        (&page_a, "A", addr::A, addr::B),
        (&page_b, "B", addr::B, addr::A),
    ] {
        let pair = selected_pair(page, 0)
            .await
            .unwrap_or_else(|| panic!("{who}: no selected candidate pair"));
        println!("{who}: selected pair {pair:?}");
        assert_eq!(
            (pair.local.kind.as_str(), pair.remote.kind.as_str()),
            ("host", "host"),
            "{who}"
        );
        assert_eq!(
            pair.local.address.as_deref(),
            Some(local.to_string().as_str()),
            "{who}"
        );
        assert_eq!(
            pair.remote.address.as_deref(),
            Some(remote.to_string().as_str()),
            "{who}"
        );
        assert_eq!(pair.state, "succeeded", "{who}");
    }

    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_forwarding_or_turn_the_call_never_connects() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let _timing = Timing::start("without_forwarding_or_turn_the_call_never_connects");
    let t = Topology::new();
    assert!(!t.s.forwarding());
    let server = ServerProcess::start_in(
        &t.s,
        SocketAddr::from((addr::SERVICE, PORT)),
        &["--tls", "off"],
    );
    let origin = server.url.clone();
    let a = launch_in(&t.a, &origin).await;
    let b = launch_in(&t.b, &origin).await;

    // Signaling goes through S, so both join and learn about each other; media cannot flow.
    let (page_a, page_b, joined_at) = join_both(&a, &b, &origin, "isolated").await;
    let bound = Duration::from_secs(60);
    for (page, who) in [(&page_a, "A"), (&page_b, "B")] {
        wait_until(
            page,
            "['network-path', 'never-connected'].includes(document.querySelector('#peers .tile')?.dataset.problem)",
            &format!("{who}'s tile for the other showing that no path was found"),
            bound,
        )
        .await;
    }
    println!(
        "without a path between A and B: both tiles failed {:.1} s after B joined",
        joined_at.elapsed().as_secs_f64()
    );
    for (page, who, local, remote) in [
        (&page_a, "A", addr::A, addr::B),
        (&page_b, "B", addr::B, addr::A),
    ] {
        // The candidates were exchanged (signaling works: each side's remote description holds
        // the other's address), yet no pair was ever selected and no frame arrived.
        let (local_sdp, remote_sdp): (String, String) = eval(
            page,
            "[window.__noom.pcs[0].localDescription?.sdp ?? '', window.__noom.pcs[0].remoteDescription?.sdp ?? '']",
        )
        .await;
        assert!(
            local_sdp.contains(&format!(" {local} "))
                && remote_sdp.contains(&format!(" {remote} ")),
            "{who}: candidates not exchanged\nlocal: {local_sdp}\nremote: {remote_sdp}"
        );
        assert!(selected_pair(page, 0).await.is_none(), "{who}");
        let changes = state_changes(page).await;
        assert!(
            !changes
                .iter()
                .any(|c| c.ice == "connected" || c.ice == "completed"),
            "{who}: ICE connected at some point: {changes:?}"
        );
        let frames: i64 = eval(
            page,
            &format!("{REMOTE_VIDEO}?.getVideoPlaybackQuality().totalVideoFrames ?? 0"),
        )
        .await;
        assert_eq!(frames, 0, "{who}: frames arrived without a path");
        // The person reads why, on that tile, in words (not the browser's state names).
        let sentence: String = eval(
            page,
            "document.querySelector('#peers .tile .tile-problem')?.textContent ?? ''",
        )
        .await;
        assert!(
            sentence.contains("network") && !sentence.contains("failed"),
            "{who}: tile sentence {sentence:?}"
        );
    }

    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coturn_in_s_relays_between_a_and_b_and_checks_credentials() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let _timing = Timing::start("coturn_in_s_relays_between_a_and_b_and_checks_credentials");
    let t = Topology::new();
    let secret = "test-secret-for-coturn";
    let turn = Coturn::start_in(&t.s, addr::SERVICE, secret, "noom.test");
    // No app here: plain RTCPeerConnections on a blank page, the test carrying the SDP.
    let a = Chrome::start(Launch::new(Media::Denied).in_namespace(&t.a)).await;
    let b = Chrome::start(Launch::new(Media::Denied).in_namespace(&t.b)).await;
    let page_a = a.open("about:blank").await;
    let page_b = b.open("about:blank").await;

    // Wrong credentials: coturn refuses the allocation, so no relay candidate.
    let (user, _) = Coturn::credentials(secret, "a", Duration::from_secs(600));
    let bad = ice_config(&turn.url, &user, "d3JvbmcgcGFzc3dvcmQ=");
    let candidates: Vec<String> = eval(
        &page_a,
        &format!(
            "(async () => {{ const pc = new RTCPeerConnection({bad}); pc.createDataChannel('x'); \
             const found = []; pc.onicecandidate = e => {{ if (e.candidate) found.push(e.candidate.candidate); }}; \
             await pc.setLocalDescription(await pc.createOffer()); {GATHERED} return found; }})()"
        ),
    )
    .await;
    assert!(
        candidates.iter().all(|c| !c.contains(" relay ")),
        "a relay candidate with a wrong password: {candidates:?}\ncoturn: {}",
        turn.log()
    );

    // Right credentials (TURN REST: `expiry:name`, base64 HMAC-SHA1), relay only on both sides.
    let setup = Instant::now();
    let (user_a, pass_a) = Coturn::credentials(secret, "a", Duration::from_secs(600));
    let (user_b, pass_b) = Coturn::credentials(secret, "b", Duration::from_secs(600));
    let offer: String = eval(
        &page_a,
        &format!(
            "(async () => {{ const pc = window.__pc = new RTCPeerConnection({}); \
             window.__got = []; const ch = window.__ch = pc.createDataChannel('t'); ch.onmessage = e => window.__got.push(e.data); \
             await pc.setLocalDescription(await pc.createOffer()); {GATHERED} return JSON.stringify(pc.localDescription); }})()",
            ice_config(&turn.url, &user_a, &pass_a)
        ),
    )
    .await;
    let answer: String = eval(
        &page_b,
        &format!(
            "(async () => {{ const pc = window.__pc = new RTCPeerConnection({}); window.__got = []; \
             pc.ondatachannel = e => {{ window.__ch = e.channel; e.channel.onmessage = m => window.__got.push(m.data); }}; \
             await pc.setRemoteDescription(JSON.parse({offer:?})); \
             await pc.setLocalDescription(await pc.createAnswer()); {GATHERED} return JSON.stringify(pc.localDescription); }})()",
            ice_config(&turn.url, &user_b, &pass_b)
        ),
    )
    .await;
    eval::<serde_json::Value>(
        &page_a,
        &format!("(async () => {{ await window.__pc.setRemoteDescription(JSON.parse({answer:?})); return null; }})()"),
    )
    .await;
    for (page, who) in [(&page_a, "A"), (&page_b, "B")] {
        wait_until(
            page,
            "window.__ch?.readyState === 'open'",
            &format!("{who}'s data channel open through coturn"),
            T,
        )
        .await;
    }
    println!(
        "relay through coturn in S: offer -> both data channels open in {} ms",
        setup.elapsed().as_millis()
    );
    eval::<serde_json::Value>(&page_a, "window.__ch.send('from A'), null").await;
    eval::<serde_json::Value>(&page_b, "window.__ch.send('from B'), null").await;
    wait_until(
        &page_b,
        "window.__got.includes('from A')",
        "B got A's message",
        T,
    )
    .await;
    wait_until(
        &page_a,
        "window.__got.includes('from B')",
        "A got B's message",
        T,
    )
    .await;
    for (page, who) in [(&page_a, "A"), (&page_b, "B")] {
        let pc: usize = eval(page, "window.__noom.pcs.indexOf(window.__pc)").await;
        let pair = selected_pair(page, pc)
            .await
            .unwrap_or_else(|| panic!("{who}: no selected pair"));
        println!("{who}: selected pair {pair:?}");
        assert_eq!(pair.local.kind, "relay", "{who}");
        assert_eq!(
            pair.local.address.as_deref(),
            Some(addr::SERVICE.to_string().as_str()),
            "{who}: relayed from S's service address"
        );
        assert_eq!(pair.local.relay_protocol.as_deref(), Some("udp"), "{who}");
    }

    a.close().await;
    b.close().await;
    drop(turn);
}

/// Waits (inside an async JS function that has `pc`) until ICE gathering is complete.
const GATHERED: &str = "await new Promise(r => { if (pc.iceGatheringState === 'complete') r(); \
    else pc.addEventListener('icegatheringstatechange', () => { if (pc.iceGatheringState === 'complete') r(); }); });";

/// An RTCConfiguration (JS) with one TURN server, relay candidates only.
fn ice_config(url: &str, username: &str, credential: &str) -> String {
    serde_json::json!({
        "iceServers": [{ "urls": [format!("{url}?transport=udp")], "username": username, "credential": credential }],
        "iceTransportPolicy": "relay",
    })
    .to_string()
}
