//! What the person reads: every state the call core reports, as a sentence that says what
//! happened and what to do. Pure (and tested natively), so every case has words; the browser's
//! own error text never reaches the screen.

use shared::ErrorCode;

use crate::engine::{Link, PeerProblem, Refusal, TileState};

/// Why the lobby did not let us in, and what to do about it.
pub fn refusal(refusal: &Refusal) -> String {
    match refusal.code {
        ErrorCode::PasscodeRequired => {
            "This room is locked. Enter its passcode below, then press Join.".into()
        }
        ErrorCode::WrongPasscode => {
            "That passcode is not right. Check it with whoever invited you and try again.".into()
        }
        ErrorCode::RoomClosed => {
            "This room is closed to newcomers. Ask someone inside to open it, then press Join again."
                .into()
        }
        ErrorCode::TooManyAttempts => {
            "Too many wrong passcodes. Wait a minute, then try again.".into()
        }
        ErrorCode::UnsupportedVersion => {
            "This page is out of date: the server was upgraded. Reload the page to join.".into()
        }
        ErrorCode::RoomFull | ErrorCode::ServerFull | ErrorCode::InvalidName => {
            // The server's own sentence says the numbers (capacity) or the rule.
            refusal.message.clone()
        }
        _ => format!("You could not join: {}", refusal.message),
    }
}

/// `#status` while the server connection is not there (None: nothing to show).
pub fn link(link: Link) -> Option<&'static str> {
    match link {
        Link::Reconnecting(_) => Some("Reconnecting to the server… Your call goes on meanwhile."),
        Link::Offline => Some("You are offline. The call will reconnect when the network is back."),
        Link::Open | Link::Connecting | Link::Closed => None,
    }
}

/// A problem with one participant, on their tile.
pub fn problem(problem: PeerProblem, name: &str) -> String {
    match problem {
        PeerProblem::NetworkPath => format!(
            "No network path to {name}: a firewall or NAT is in the way. A TURN relay on the server gets through; ask whoever runs it."
        ),
        PeerProblem::SecureHandshake => format!(
            "The secure connection to {name} failed. Reloading the page usually fixes it."
        ),
        PeerProblem::NothingNegotiated => format!(
            "Your browser and {name}'s could not agree on how to send audio and video. Try another browser."
        ),
        PeerProblem::NeverConnected => format!(
            "Still not connected to {name} after 15 seconds. One of your networks may be blocking calls."
        ),
    }
}

/// The tile's state word ("" when all is well).
pub fn tile(state: TileState) -> &'static str {
    match state {
        TileState::Connecting => "connecting…",
        TileState::Reconnecting => "reconnecting…",
        TileState::Connected => "",
    }
}

/// A piece of a chat message: text, or an http(s) link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    Link(String),
}

/// Splits chat text into text and links. Only `http://` and `https://` become links (never
/// `javascript:` or anything else); trailing punctuation stays text ("see https://x.org.").
pub fn linkify(text: &str) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut plain = String::new();
    let mut rest = text;
    while !rest.is_empty() {
        let start = ["https://", "http://"]
            .iter()
            .filter_map(|scheme| find_at_word_start(rest, scheme))
            .min();
        let Some(start) = start else {
            plain.push_str(rest);
            break;
        };
        plain.push_str(&rest[..start]);
        let url_and_more = &rest[start..];
        let end = url_and_more
            .find(|c: char| c.is_whitespace() || matches!(c, '<' | '>' | '"'))
            .unwrap_or(url_and_more.len());
        let mut url = &url_and_more[..end];
        while let Some(last) = url.chars().last() {
            if matches!(last, '.' | ',' | ';' | ':' | '!' | '?' | ')' | ']' | '\'') {
                url = &url[..url.len() - last.len_utf8()];
            } else {
                break;
            }
        }
        let scheme_only = url == "https://" || url == "http://";
        if scheme_only {
            plain.push_str(url);
        } else {
            if !plain.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut plain)));
            }
            pieces.push(Piece::Link(url.to_string()));
        }
        rest = &url_and_more[url.len()..];
    }
    if !plain.is_empty() {
        pieces.push(Piece::Text(plain));
    }
    pieces
}

/// Where `scheme` starts in `text` at the beginning of a word (case-insensitive).
fn find_at_word_start(text: &str, scheme: &str) -> Option<usize> {
    let lower = text.to_ascii_lowercase();
    let mut from = 0;
    while let Some(found) = lower[from..].find(scheme) {
        let at = from + found;
        let boundary = text[..at]
            .chars()
            .last()
            .is_none_or(|c| c.is_whitespace() || matches!(c, '(' | '[' | '<' | '"' | '\''));
        if boundary {
            return Some(at);
        }
        from = at + scheme.len();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_and_problem_has_a_sentence() {
        for code in ErrorCode::ALL {
            let text = refusal(&Refusal {
                code: *code,
                message: "The server's sentence.".into(),
            });
            assert!(text.ends_with('.') && text.len() > 20, "{code}: {text}");
        }
        for p in [
            PeerProblem::NetworkPath,
            PeerProblem::SecureHandshake,
            PeerProblem::NothingNegotiated,
            PeerProblem::NeverConnected,
        ] {
            let text = problem(p, "Ana");
            assert!(text.contains("Ana") && text.ends_with('.'), "{text}");
        }
        assert!(problem(PeerProblem::NetworkPath, "Ana").contains("TURN"));
        assert!(link(Link::Reconnecting(2)).is_some_and(|t| t.starts_with("Reconnecting")));
        assert!(link(Link::Open).is_none());
    }

    #[test]
    fn links_are_http_only_and_text_stays_text() {
        assert_eq!(
            linkify("see https://noom.example/a?b=1, then http://x.org."),
            [
                Piece::Text("see ".into()),
                Piece::Link("https://noom.example/a?b=1".into()),
                Piece::Text(", then ".into()),
                Piece::Link("http://x.org".into()),
                Piece::Text(".".into()),
            ]
        );
        assert_eq!(
            linkify("<img src=x onerror=alert(1)>"),
            [Piece::Text("<img src=x onerror=alert(1)>".into())]
        );
        assert_eq!(
            linkify("javascript:alert(1) and xhttps://no"),
            [Piece::Text("javascript:alert(1) and xhttps://no".into())]
        );
        assert_eq!(
            linkify("(https://a.b)"),
            [
                Piece::Text("(".into()),
                Piece::Link("https://a.b".into()),
                Piece::Text(")".into())
            ]
        );
        assert_eq!(linkify("https://"), [Piece::Text("https://".into())]);
        assert_eq!(linkify("HTTPS://A.B"), [Piece::Link("HTTPS://A.B".into())]);
        assert_eq!(linkify(""), []);
    }
}
