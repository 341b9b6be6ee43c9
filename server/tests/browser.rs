//! End to end: the release bundle served by the real server binary, driven in separate headless
//! Chromium processes with fake camera and microphone, calling each other over loopback.
//!
//! Needs `trunk build --release` first (for `dist/`) and a network namespace with only `lo`,
//! because Chromium offers every interface's address as an ICE candidate and test traffic must
//! stay on loopback. `scripts/test.sh` (the README's test command) provides both; run directly,
//! these tests fail with a message saying so rather than touch the real network.
//!
//! Every browser and the server are killed when their guard drops, also when a test panics.
//! The helpers (server process, Chromium, page helpers) live in `support/`, shared with the
//! network-namespace tests.

mod support;

use std::time::{Duration, Instant};

use support::browser::*;
use support::process::ServerProcess;
use support::{require_loopback_only_network, ONE_AT_A_TIME};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_browsers_call_each_other_and_use_the_controls() {
    require_loopback_only_network();
    let _serial = ONE_AT_A_TIME.lock().await;
    // A 1:1 call: room capacity 2, so a third person meets a full room.
    let server = ServerProcess::start(&["--room-capacity", "2"]);
    let room = "e2e call";

    let a = Chrome::launch(Media::Granted { cameras: 3 }).await;
    // B on a phone-sized screen: the layout must work at 375 px.
    let b = Chrome::launch_with(Media::Granted { cameras: 1 }, PHONE).await;
    let page_a = a.open(&server.url).await;
    let page_b = b.open(&server.url).await;

    // A enters the room name, sees the lobby (deep link in the address bar), joins and waits.
    join_through_form(&page_a, room).await;
    wait_in_room(&page_a, "A").await;
    let path: String = eval(&page_a, "location.pathname").await;
    assert_eq!(path, "/r/e2e%20call");
    let local_ok: bool = eval(
        &page_a,
        &format!("(() => {{ const v = {LOCAL_VIDEO}; return v.muted && v.autoplay && v.playsInline && !!v.srcObject; }})()"),
    )
    .await;
    assert!(
        local_ok,
        "A's preview must be muted, autoplay, playsinline and showing the camera"
    );
    // B joins; measure until both see the other's first frame.
    join_through_form(&page_b, room).await;
    let joined_at = Instant::now();
    wait_until(&page_b, &remote_video_has_frames(), "B to see A's video", T).await;
    wait_until(&page_a, &remote_video_has_frames(), "A to see B's video", T).await;
    let setup = joined_at.elapsed();
    println!(
        "call setup (B's join click -> both remote videos' first frame): {} ms",
        setup.as_millis()
    );

    assert_remote_video_playing(&page_a, "A").await;
    assert_remote_video_playing(&page_b, "B").await;
    for (page, who) in [(&page_a, "A"), (&page_b, "B")] {
        let audio: String = eval(
            page,
            &format!("{REMOTE_VIDEO}.srcObject.getAudioTracks()[0]?.readyState ?? 'none'"),
        )
        .await;
        assert_eq!(audio, "live", "{who}: remote audio track");
        let muted: bool = eval(page, &format!("{REMOTE_VIDEO}.muted")).await;
        assert!(!muted, "{who}: the remote video must not be muted");
    }
    // Voice processing is on (no echo, no background noise).
    let processing: Vec<bool> = eval(
        &page_a,
        "(() => { const s = window.__noom.pcs[0].getTransceivers().find(t => t.receiver.track.kind === 'audio').sender.track.getSettings(); \
         return [s.echoCancellation, s.noiseSuppression, s.autoGainControl]; })()",
    )
    .await;
    assert_eq!(
        processing,
        [true, true, true],
        "echo cancellation, noise suppression, gain control"
    );
    let (fits, width): (bool, u32) = eval(
        &page_b,
        "[document.documentElement.scrollWidth <= window.innerWidth, window.innerWidth]",
    )
    .await;
    assert_eq!(width, 375, "B's viewport is phone-sized");
    assert!(fits, "B's 375 px wide page scrolls sideways");
    // The tile is labelled with the peer id the server assigned.
    let peer_attr: String = eval(&page_b, &format!("{REMOTE_VIDEO}.dataset.peer")).await;
    assert!(
        peer_attr.parse::<u64>().is_ok(),
        "data-peer = {peer_attr:?}"
    );
    // One offer in the whole call, made by B (the newcomer calls at once; A answers), and no
    // second round once connected.
    assert_eq!((offers(&page_a).await, offers(&page_b).await), (0, 1));
    assert_eq!(tile_attr(&page_b, "data-muted").await, "false");
    assert_eq!(tile_attr(&page_b, "data-camera-off").await, "false");

    // Mute on A: the track stays but is disabled, the button says so, B's tile shows it.
    let a_audio_sender = "window.__noom.pcs[0].getTransceivers().find(t => t.receiver.track.kind === 'audio').sender.track";
    click(&page_a, "#mute").await;
    wait_until(
        &page_a,
        &format!("{a_audio_sender}.enabled === false && {a_audio_sender}.readyState === 'live'"),
        "A's mic track disabled",
        T,
    )
    .await;
    let (text, pressed): (String, String) = eval(&page_a, "[document.querySelector('#mute').textContent, document.querySelector('#mute').getAttribute('aria-pressed')]").await;
    assert_eq!((text.as_str(), pressed.as_str()), ("Unmute", "true"));
    wait_until(
        &page_b,
        "document.querySelector('#peers .tile')?.dataset.muted === 'true'",
        "B sees A muted",
        T,
    )
    .await;
    screenshot(&page_b, "call-peer-muted").await;
    click(&page_a, "#mute").await;
    wait_until(
        &page_a,
        &format!("{a_audio_sender}.enabled === true"),
        "A's mic back on",
        T,
    )
    .await;
    wait_until(
        &page_b,
        "document.querySelector('#peers .tile')?.dataset.muted === 'false'",
        "B sees A unmuted",
        T,
    )
    .await;

    let offers_before = (offers(&page_a).await, offers(&page_b).await);
    // Camera switch on A: the second fake camera replaces the first in the call, by
    // replaceTrack: no new offer on either side, B's video keeps playing, the old camera is
    // released.
    let cameras = options(&page_a, "#cameras").await;
    assert_eq!(cameras.len(), 3, "fake cameras listed: {cameras:?}");
    let current: String = eval(&page_a, &format!("{LOCAL_TRACK}.getSettings().deviceId")).await;
    let selected: String = eval(&page_a, "document.querySelector('#cameras').value").await;
    assert_eq!(selected, current, "the picker shows the camera in use");
    // Chrome's second fake camera emulates a depth camera (Y16 pixels): a <video> shows it, but
    // WebRTC's encoder sends no frames from it (checked with plain JS, without the app). The
    // third one is an ordinary camera.
    let other: String = eval(
        &page_a,
        "[...document.querySelectorAll('#cameras option')].find(o => o.textContent.trim() === 'fake_device_2').value",
    )
    .await;
    assert_ne!(other, current);
    eval::<serde_json::Value>(
        &page_a,
        &format!("window.__oldCamera = {LOCAL_TRACK}; null"),
    )
    .await;
    select(&page_a, "#cameras", &other).await;
    wait_until(
        &page_a,
        &format!("{LOCAL_TRACK}?.getSettings().deviceId === {other:?}"),
        "A's preview on the second camera",
        T,
    )
    .await;
    wait_until(
        &page_a,
        &format!("{} === {other:?}", sender_device("video")),
        "A's connection sending the second camera",
        T,
    )
    .await;
    let old_state: String = eval(&page_a, "window.__oldCamera.readyState").await;
    assert_eq!(
        old_state, "ended",
        "the first camera is released after the switch"
    );
    assert_remote_video_playing(&page_b, "B after A switched camera").await;
    assert_eq!(
        (offers(&page_a).await, offers(&page_b).await),
        offers_before,
        "no renegotiation"
    );

    // Microphone switch on A, likewise: the call goes on.
    let microphones = options(&page_a, "#microphones").await;
    assert!(
        microphones.len() >= 2,
        "fake microphones listed: {microphones:?}"
    );
    let current_mic: String = eval(&page_a, &sender_device("audio")).await;
    let other_mic = microphones
        .iter()
        .find(|m| **m != current_mic && *m != "default")
        .expect("another microphone")
        .clone();
    select(&page_a, "#microphones", &other_mic).await;
    wait_until(
        &page_a,
        &format!("{} === {other_mic:?}", sender_device("audio")),
        "A's connection sending the other microphone",
        T,
    )
    .await;
    let audio: String = eval(
        &page_b,
        &format!("{REMOTE_VIDEO}.srcObject.getAudioTracks()[0]?.readyState ?? 'none'"),
    )
    .await;
    assert_eq!(audio, "live", "B still hears A");
    let packets = "(async () => { let n = 0; (await window.__noom.pcs[0].getStats()).forEach(r => { if (r.type === 'inbound-rtp' && r.kind === 'audio') n += r.packetsReceived; }); return n; })()";
    let p1: i64 = eval(&page_b, packets).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let p2: i64 = eval(&page_b, packets).await;
    assert!(
        p2 > p1 + 5,
        "B receives A's audio after the switch ({p1} -> {p2})"
    );
    assert_remote_video_playing(&page_b, "B after A switched microphone").await;
    assert_eq!(
        (offers(&page_a).await, offers(&page_b).await),
        offers_before,
        "no renegotiation"
    );

    // Camera off on A releases the camera (track ended, preview placeholder), sends nothing,
    // and B's tile shows camera-off instead of a frozen frame.
    eval::<serde_json::Value>(&page_a, &format!("window.__camera = {LOCAL_TRACK}; null")).await;
    click(&page_a, "#camera").await;
    wait_until(
        &page_a,
        "window.__camera.readyState === 'ended'",
        "A's camera track ended",
        T,
    )
    .await;
    wait_until(
        &page_a,
        &format!("{} === 'none'", sender_device("video")),
        "A sending no video",
        T,
    )
    .await;
    let (text, pressed): (String, String) = eval(&page_a, "[document.querySelector('#camera').textContent, document.querySelector('#camera').getAttribute('aria-pressed')]").await;
    assert_eq!(
        (text.as_str(), pressed.as_str()),
        ("Turn camera on", "true")
    );
    wait_until(
        &page_b,
        "document.querySelector('#peers .tile')?.dataset.cameraOff === 'true'",
        "B sees A's camera off",
        T,
    )
    .await;
    let placeholder: bool = eval(
        &page_b,
        "getComputedStyle(document.querySelector('#peers .tile .placeholder')).display !== 'none'",
    )
    .await;
    assert!(placeholder, "B shows a placeholder for A");
    assert_remote_video_frozen(&page_b, "B while A's camera is off").await;
    // Camera on: the camera is opened again and B's video plays again, with no new offer.
    click(&page_a, "#camera").await;
    wait_until(
        &page_b,
        "document.querySelector('#peers .tile')?.dataset.cameraOff === 'false'",
        "B sees A's camera on",
        T,
    )
    .await;
    assert_remote_video_playing(&page_b, "B after A's camera came back").await;
    assert_eq!(
        (offers(&page_a).await, offers(&page_b).await),
        offers_before,
        "camera off/on renegotiated"
    );

    // A third person is refused at the door: the lobby says the room is full and stays, with
    // the preview, so C can try again without reloading.
    let c = Chrome::launch(Media::Granted { cameras: 1 }).await;
    let page_c = c.open(&format!("{}/r/e2e%20call", server.url)).await;
    join_from_lobby(&page_c).await;
    wait_until(
        &page_c,
        "document.querySelector('[role=alert]')?.textContent.includes('full')",
        "C told the room is full",
        T,
    )
    .await;
    let (in_lobby, preview): (bool, bool) = eval(
        &page_c,
        &format!("[!!document.querySelector('#lobby #join') && !document.querySelector('#call'), !!{LOCAL_VIDEO}?.srcObject]"),
    )
    .await;
    assert!(in_lobby && preview, "C stays in the lobby with the preview");
    screenshot(&page_c, "room-full").await;
    let peers_b: u32 = eval(
        &page_b,
        "document.querySelectorAll('#peers video[data-peer]').length",
    )
    .await;
    assert_eq!(peers_b, 1, "B still sees only A");

    // A leaves: B's tile for A goes away; A is back on the welcome form.
    click(&page_a, "#leave").await;
    wait_until(
        &page_b,
        "document.querySelectorAll('#peers video[data-peer]').length === 0",
        "A's tile removed on B",
        T,
    )
    .await;
    wait_until(
        &page_a,
        "!!document.querySelector('#welcome')",
        "A back at the start",
        T,
    )
    .await;

    // The room has a free place again: C presses Join again and calls B.
    join_from_lobby(&page_c).await;
    wait_until(&page_c, &remote_video_has_frames(), "C to see B's video", T).await;
    wait_until(&page_b, &remote_video_has_frames(), "B to see C's video", T).await;
    assert_remote_video_playing(&page_b, "B with C").await;

    // The server goes away mid-call: B shows that it is reconnecting (no alarm), and the call
    // itself (peer to peer) keeps playing.
    drop(server);
    wait_until(
        &page_b,
        "document.querySelector('#status')?.dataset.state === 'reconnecting' && /Reconnecting/.test(document.querySelector('#status').textContent)",
        "B shows it is reconnecting",
        T,
    )
    .await;
    assert_remote_video_playing(&page_b, "B with C, server gone").await;

    a.close().await;
    b.close().await;
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_camera_is_explained_and_the_call_still_receives() {
    require_loopback_only_network();
    let _serial = ONE_AT_A_TIME.lock().await;
    let server = ServerProcess::start(&[]);

    // A refuses camera and microphone: the lobby says so, with a way forward, and A can still
    // join (first, so it makes the offer with receive-only transceivers) to watch and listen.
    let a = Chrome::launch(Media::Denied).await;
    let b = Chrome::launch(Media::Granted { cameras: 1 }).await;
    let page_a = a.open(&format!("{}/r/denied", server.url)).await;
    wait_until(
        &page_a,
        "document.querySelector('[role=alert]')?.textContent.includes('blocked')",
        "A told that camera access was blocked",
        T,
    )
    .await;
    let retry: bool = eval(
        &page_a,
        "!!document.querySelector('[role=alert] #retry-media')",
    )
    .await;
    assert!(retry, "a Try again button comes with the denied message");
    let disabled: bool = eval(
        &page_a,
        "document.querySelector('#mute').disabled && document.querySelector('#camera').disabled",
    )
    .await;
    assert!(disabled, "no media: mute and camera buttons are disabled");
    // Trying again while still denied gives the same answer, not a stuck page.
    click(&page_a, "#retry-media").await;
    wait_until(
        &page_a,
        "document.querySelector('[role=alert]')?.textContent.includes('blocked')",
        "the denied message again",
        T,
    )
    .await;
    join_from_lobby(&page_a).await;
    wait_in_room(&page_a, "A").await;

    let page_b = b.open(&format!("{}/r/denied", server.url)).await;
    join_from_lobby(&page_b).await;
    wait_until(
        &page_a,
        &remote_video_has_frames(),
        "A (no camera) to see B's video",
        T,
    )
    .await;
    assert_remote_video_playing(&page_a, "A").await;
    let audio: String = eval(
        &page_a,
        &format!("{REMOTE_VIDEO}.srcObject.getAudioTracks()[0]?.readyState ?? 'none'"),
    )
    .await;
    assert_eq!(audio, "live", "A hears B");
    let recvonly: Vec<String> = eval(
        &page_a,
        "window.__noom.pcs[0].getTransceivers().map(t => t.currentDirection)",
    )
    .await;
    assert_eq!(recvonly, ["recvonly", "recvonly"], "A only receives");
    // B: a tile for A showing camera off and muted, and no error.
    wait_until(
        &page_b,
        "document.querySelector('#peers .tile')?.dataset.cameraOff === 'true'",
        "B shows A's camera off",
        T,
    )
    .await;
    assert_eq!(tile_attr(&page_b, "data-muted").await, "true");
    let alert_b: String = eval(
        &page_b,
        "document.querySelector('[role=alert]').textContent",
    )
    .await;
    assert_eq!(alert_b, "", "nothing is broken on B's side");

    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lobby_remembers_the_chosen_camera() {
    require_loopback_only_network();
    let _serial = ONE_AT_A_TIME.lock().await;
    let server = ServerProcess::start(&[]);
    let a = Chrome::launch(Media::Granted { cameras: 2 }).await;
    let page = a.open(&format!("{}/r/remember", server.url)).await;

    // The lobby: a live preview, the pickers, and Join.
    wait_until(
        &page,
        "!!document.querySelector('#lobby #join') && !document.querySelector('#join').disabled",
        "the lobby",
        T,
    )
    .await;
    assert_video_playing(&page, "#myFace", "lobby preview").await;
    let cameras = options(&page, "#cameras").await;
    assert_eq!(cameras.len(), 2, "{cameras:?}");
    let speakers_shown: bool = eval(
        &page,
        "!!document.querySelector('#speakers') === ('setSinkId' in HTMLMediaElement.prototype)",
    )
    .await;
    assert!(
        speakers_shown,
        "the speaker picker is shown exactly where setSinkId exists"
    );
    screenshot(&page, "lobby").await;

    // Pick the second camera in the lobby: the preview switches at once.
    let second = cameras[1].clone();
    select(&page, "#cameras", &second).await;
    wait_until(
        &page,
        &format!("{LOCAL_TRACK}?.getSettings().deviceId === {second:?}"),
        "the preview on the second camera",
        T,
    )
    .await;

    // Join, leave, come back: the second camera is still the one in use and selected.
    join_from_lobby(&page).await;
    wait_in_room(&page, "the person").await;
    let in_call: String = eval(&page, &format!("{LOCAL_TRACK}.getSettings().deviceId")).await;
    assert_eq!(in_call, second);
    click(&page, "#leave").await;
    wait_until(
        &page,
        "!!document.querySelector('#welcome')",
        "back at the start",
        T,
    )
    .await;
    page.goto(format!("{}/r/remember", server.url))
        .await
        .expect("reload the room");
    wait_until(
        &page,
        "!!document.querySelector('#lobby #join') && !document.querySelector('#join').disabled",
        "the lobby again",
        T,
    )
    .await;
    let (selected, using): (String, String) = eval(
        &page,
        &format!("[document.querySelector('#cameras').value, {LOCAL_TRACK}?.getSettings().deviceId ?? 'none']"),
    )
    .await;
    assert_eq!(
        (selected.as_str(), using.as_str()),
        (second.as_str(), second.as_str())
    );
    a.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autoplay_refusal_offers_a_tap_to_start() {
    require_loopback_only_network();
    let _serial = ONE_AT_A_TIME.lock().await;
    let server = ServerProcess::start(&[]);
    let a = Chrome::launch(Media::Granted { cameras: 1 }).await;
    // B joins to watch only (no camera or microphone: Chrome lets a page that is capturing
    // autoplay, so only a watcher meets the policy), in a browser that wants a real tap before
    // playing sound, and joins without one (a script click is not a user gesture): the remote
    // video cannot start by itself.
    let b = Chrome::launch_with(
        Media::Denied,
        Window {
            autoplay_needs_gesture: true,
            ..DESKTOP
        },
    )
    .await;
    let page_a = a.open(&format!("{}/r/autoplay", server.url)).await;
    join_from_lobby(&page_a).await;
    let page_b = b.open(&format!("{}/r/autoplay", server.url)).await;
    wait_until(
        &page_b,
        "(() => { const b = document.querySelector('#join'); return !!b && !b.disabled; })()",
        "B's lobby",
        T,
    )
    .await;
    eval::<serde_json::Value>(&page_b, "document.querySelector('#join').click(), null").await;
    wait_until(
        &page_b,
        "!!document.querySelector('#start-media')",
        "B offered a tap to start",
        T,
    )
    .await;
    let paused: bool = eval(&page_b, &format!("{REMOTE_VIDEO}.paused")).await;
    assert!(paused, "the remote video is waiting for the tap");
    // The tap (a real click) starts it.
    click(&page_b, "#start-media").await;
    wait_until(
        &page_b,
        "!document.querySelector('#start-media')",
        "the tap control gone",
        T,
    )
    .await;
    assert_remote_video_playing(&page_b, "B after the tap").await;
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unplugged_camera_is_replaced_and_the_person_told() {
    require_loopback_only_network();
    let _serial = ONE_AT_A_TIME.lock().await;
    let server = ServerProcess::start(&[]);
    let a = Chrome::launch(Media::Granted { cameras: 3 }).await;
    let page = a.open(&format!("{}/r/unplug", server.url)).await;
    join_from_lobby(&page).await;
    wait_in_room(&page, "the person").await;
    let before: String = eval(&page, &format!("{LOCAL_TRACK}.getSettings().deviceId")).await;

    // Fake devices cannot be unplugged, so the browser's device list is made to forget the
    // camera in use and `devicechange` fires, as on a real unplug; the app's own code does the rest.
    eval::<serde_json::Value>(
        &page,
        &format!(
            r#"(() => {{
                const md = navigator.mediaDevices;
                const real = md.enumerateDevices.bind(md);
                md.enumerateDevices = async () => (await real()).filter(d => d.deviceId !== {before:?});
                md.dispatchEvent(new Event('devicechange'));
                return null;
            }})()"#
        ),
    )
    .await;
    wait_until(
        &page,
        &format!("{LOCAL_TRACK}?.readyState === 'live' && {LOCAL_TRACK}.getSettings().deviceId !== {before:?}"),
        "the preview on another camera",
        T,
    )
    .await;
    wait_until(
        &page,
        "document.querySelector('.status')?.textContent.includes('now using')",
        "the person told",
        T,
    )
    .await;
    let listed = options(&page, "#cameras").await;
    assert!(
        !listed.contains(&before),
        "the unplugged camera is no longer offered"
    );
    a.close().await;
}
