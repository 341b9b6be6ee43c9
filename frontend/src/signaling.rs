//! The websocket to the server (`/ws` on the page's own host). One task owns the socket: it sends
//! what the call queues, hands decoded [`ServerMessage`]s back, and closes the socket when the
//! call drops its [`Signaling`] handle.

use futures::channel::mpsc::{self, UnboundedReceiver, UnboundedSender};
use futures::{SinkExt, StreamExt};
use gloo_net::websocket::futures::WebSocket;
use gloo_net::websocket::{Message, WebSocketError};
use shared::{ClientMessage, ServerMessage};

#[derive(Debug)]
pub enum SignalingEvent {
    Message(ServerMessage),
    /// The connection ended; a sentence for the person.
    Closed(String),
}

/// Sends to the server. Dropping it closes the websocket.
pub struct Signaling {
    tx: UnboundedSender<ClientMessage>,
}

impl Signaling {
    /// Queues `message`; false when the connection is already gone.
    pub fn send(&self, message: ClientMessage) -> bool {
        self.tx.unbounded_send(message).is_ok()
    }
}

/// `ws://host/ws` or `wss://host/ws`, matching how the page itself was loaded.
pub fn server_url() -> Result<String, String> {
    let location = web_sys::window().ok_or("no browser window")?.location();
    let protocol = location
        .protocol()
        .map_err(|_| "cannot read the page address")?;
    let host = location
        .host()
        .map_err(|_| "cannot read the page address")?;
    let scheme = if protocol == "https:" { "wss" } else { "ws" };
    Ok(format!("{scheme}://{host}/ws"))
}

pub fn connect(url: &str) -> Result<(Signaling, UnboundedReceiver<SignalingEvent>), String> {
    let socket = WebSocket::open(url).map_err(|e| format!("Cannot connect to the server: {e}."))?;
    let (out_tx, mut out_rx) = mpsc::unbounded::<ClientMessage>();
    let (in_tx, in_rx) = mpsc::unbounded::<SignalingEvent>();
    wasm_bindgen_futures::spawn_local(async move {
        let (mut sink, stream) = socket.split();
        let mut stream = stream.fuse();
        let ended = loop {
            futures::select! {
                outgoing = out_rx.next() => match outgoing {
                    Some(message) => {
                        if let Err(err) = sink.send(Message::Text(message.to_json())).await {
                            break Some(format!("Lost the connection to the server ({err})."));
                        }
                    }
                    // The call is over: close the socket ourselves.
                    None => break None,
                },
                incoming = stream.next() => match incoming {
                    Some(Ok(Message::Text(text))) => match ServerMessage::from_json(&text) {
                        Ok(message) => {
                            let _ = in_tx.unbounded_send(SignalingEvent::Message(message));
                        }
                        Err(err) => {
                            web_sys::console::warn_1(&format!("ignored a server message: {err}").into());
                        }
                    },
                    Some(Ok(Message::Bytes(_))) => {}
                    Some(Err(WebSocketError::ConnectionClose(event))) => {
                        break Some(close_sentence(event.code, &event.reason));
                    }
                    Some(Err(_)) => {
                        break Some("Lost the connection to the server. Your call may continue, but nobody new can join you until you reload.".into());
                    }
                    None => break Some("The server closed the connection.".into()),
                },
            }
        };
        if let Some(sentence) = ended {
            let _ = in_tx.unbounded_send(SignalingEvent::Closed(sentence));
        }
        if let Ok(socket) = sink.reunite(stream.into_inner()) {
            // Close politely (1000); an already closed socket makes this a no-op or an error.
            let _ = socket.close(Some(1000), Some("left"));
        }
    });
    Ok((Signaling { tx: out_tx }, in_rx))
}

fn close_sentence(code: u16, reason: &str) -> String {
    match code {
        1001 => "The server is restarting. Your call may continue; reload the page in a moment to reconnect.".into(),
        1008 | 1009 if !reason.is_empty() => format!("The server closed the connection: {reason}."),
        1006 => "Lost the connection to the server. Check your network; your call may continue, but reload to reconnect.".into(),
        _ if !reason.is_empty() => format!("The server closed the connection ({reason})."),
        _ => "The server closed the connection.".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes_read_as_sentences() {
        assert!(close_sentence(1001, "server shutting down").contains("restarting"));
        assert!(close_sentence(1008, "too slow").contains("too slow"));
        assert!(close_sentence(1006, "").contains("Lost the connection"));
        assert_eq!(
            close_sentence(4000, ""),
            "The server closed the connection."
        );
    }
}
