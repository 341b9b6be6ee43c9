//! The websocket transport: one task per connection that decodes frames into [`Session::handle`]
//! and writes the session's queue back out. All signaling rules live in [`crate::hub`].

use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use shared::{ClientMessage, ErrorCode};
use tracing::Instrument;

use crate::hub::Session;
use crate::AppState;

/// Close codes (RFC 6455 section 7.4.1) this server uses.
pub mod close_code {
    /// The server is shutting down.
    pub const GOING_AWAY: u16 = 1001;
    /// The client broke a rule badly enough to be dropped (e.g. it stopped reading).
    pub const POLICY: u16 = 1008;
}

pub async fn upgrade(State(state): State<Arc<AppState>>, ws: WebSocketUpgrade) -> Response {
    // Taken here, while axum still tracks this connection, and held until the task ends, so that
    // `run` can wait for the websocket to finish closing (see `AppState::connections`).
    let open = state.connections.subscribe();
    ws.max_message_size(state.max_message_bytes)
        .max_frame_size(state.max_message_bytes)
        .on_upgrade(move |socket| async move {
            serve(socket, state).await;
            drop(open);
        })
}

async fn serve(socket: WebSocket, state: Arc<AppState>) {
    let (session, mut queue) = state.hub.connect();
    let span = tracing::info_span!("conn", peer = %session.id());
    async move {
        tracing::debug!("connected");
        let (mut sink, mut stream) = socket.split();
        let close = loop {
            tokio::select! {
                frame = stream.next() => match frame {
                    Some(Ok(Message::Text(text))) => handle_text(&session, &text),
                    Some(Ok(Message::Binary(_))) => session.reply_error(
                        ErrorCode::Malformed,
                        "Binary frames are not part of this protocol; send JSON text.",
                    ),
                    // Pings are answered by the websocket layer itself.
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Ok(Message::Close(_))) | None => break None,
                    Some(Err(err)) => {
                        // Includes frames over the size limit, which tungstenite refuses.
                        tracing::debug!(%err, "websocket read failed");
                        break None;
                    }
                },
                outgoing = queue.recv() => match outgoing {
                    Some(message) => {
                        if sink.send(Message::Text(message.to_json().into())).await.is_err() {
                            break None;
                        }
                    }
                    // The hub dropped this peer: it stopped reading and its queue overflowed.
                    None => break Some((close_code::POLICY, "too slow: messages were not being read")),
                },
                () = state.shutdown.cancelled() => {
                    break Some((close_code::GOING_AWAY, "server shutting down"));
                }
            }
        };
        if let Some((code, reason)) = close {
            let frame = CloseFrame {
                code,
                reason: Utf8Bytes::from_static(reason),
            };
            let _ = sink.send(Message::Close(Some(frame))).await;
        }
        drop(session);
        tracing::debug!("disconnected");
    }
    .instrument(span)
    .await
}

fn handle_text(session: &Session, text: &str) {
    match ClientMessage::decode(text) {
        Ok(message) => session.handle(message),
        Err(err) => {
            tracing::debug!(%err, "refused a message");
            session.reply_error(err.code(), err.to_string());
        }
    }
}
