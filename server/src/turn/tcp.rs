//! TURN over TCP (RFC 5766 §2.1: TCP between client and server, UDP relays). The `turn` crate
//! only serves packet `Conn`s and takes its listeners once, at start, so this module turns a TCP
//! listener into one packet `Conn`: every connection's frames come out of [`TcpMux::recv_from`]
//! tagged with the connection's remote address, and [`TcpMux::send_to`] writes to the
//! connection with that address. (The crate has no TCP listener; this is the one piece of
//! framing we had to add.)
//!
//! Framing (RFC 5766 §11.5, RFC 5389 §6): a stream carries STUN messages (first two bits 00;
//! 20-byte header plus the length in bytes 2-3) and ChannelData messages (first two bits 01;
//! 4-byte header plus the length in bytes 2-3, padded to a multiple of 4 over TCP). Anything else
//! means the peer is not speaking TURN, and the connection is closed.
//!
//! Bounds: connections per client IP and in total, one frame in flight per connection on the way
//! in (the reader waits for the crate), a short queue on the way out (a frame that does not fit
//! is dropped, as UDP would), write and idle timeouts. When a connection closes, the allocation
//! it made is closed with it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::relay::{Client, Relays, Transport};

/// Frames waiting to be written to one client before new ones are dropped.
const OUTBOX_FRAMES: usize = 64;
/// Frames from all connections waiting for the crate's read loop.
const INBOX_FRAMES: usize = 256;
/// A client that does not take a frame within this is gone.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection that sends nothing for this long is closed. Browsers refresh their allocation,
/// permissions and channels every few minutes, and send ICE consent checks every few seconds
/// while the relay is in use.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// Length of the TURN frame whose first four bytes are `header`, or `None` if it is neither a
/// STUN message nor ChannelData.
pub fn frame_len(header: [u8; 4]) -> Option<usize> {
    let length = usize::from(u16::from_be_bytes([header[2], header[3]]));
    match header[0] >> 6 {
        0b00 => Some(20 + length),
        0b01 => Some(4 + length.next_multiple_of(4)),
        _ => None,
    }
}

struct Frame {
    data: Vec<u8>,
    from: SocketAddr,
}

struct Outbox {
    tx: mpsc::Sender<Vec<u8>>,
    local: SocketAddr,
}

#[derive(Default)]
struct Table {
    outboxes: HashMap<SocketAddr, Outbox>,
    per_ip: HashMap<IpAddr, usize>,
}

/// Connection limits of the TCP listener.
#[derive(Clone, Copy, Debug)]
pub struct TcpLimits {
    pub per_ip: usize,
    pub total: usize,
}

/// All TURN-over-TCP connections of one listener, as one packet `Conn` for the gate.
pub struct TcpMux {
    local: SocketAddr,
    inbox: tokio::sync::Mutex<mpsc::Receiver<Frame>>,
    table: Mutex<Table>,
}

impl TcpMux {
    /// Accepts connections on `listener` until `shutdown`.
    pub fn start(
        listener: TcpListener,
        limits: TcpLimits,
        relays: Arc<Relays>,
        shutdown: CancellationToken,
    ) -> std::io::Result<(Arc<Self>, JoinHandle<()>)> {
        let local = listener.local_addr()?;
        let (inbox_tx, inbox_rx) = mpsc::channel(INBOX_FRAMES);
        let mux = Arc::new(Self {
            local,
            inbox: tokio::sync::Mutex::new(inbox_rx),
            table: Mutex::new(Table::default()),
        });
        let task = tokio::spawn(accept_loop(
            listener,
            Arc::clone(&mux),
            limits,
            inbox_tx,
            relays,
            shutdown,
        ));
        Ok((mux, task))
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The local end of `client`'s connection: the address it reached us at.
    pub fn local_addr_for(&self, client: SocketAddr) -> Option<SocketAddr> {
        self.table().outboxes.get(&client).map(|o| o.local)
    }

    /// The next frame from any connection (frames larger than `buf` are dropped: the crate
    /// reads into an MTU-sized buffer, and no WebRTC client sends bigger ones).
    pub async fn recv_from(
        &self,
        buf: &mut [u8],
    ) -> Result<(usize, SocketAddr), webrtc_util::Error> {
        let mut inbox = self.inbox.lock().await;
        loop {
            let frame = inbox
                .recv()
                .await
                .ok_or(webrtc_util::Error::ErrAlreadyClosed)?;
            let n = frame.data.len();
            if n <= buf.len() {
                buf[..n].copy_from_slice(&frame.data);
                return Ok((n, frame.from));
            }
            tracing::debug!(client = %frame.from, bytes = n, "TURN TCP frame too big; dropped");
        }
    }

    /// Queues `buf` (one whole frame) for the connection from `to`.
    pub fn send_to(&self, buf: &[u8], to: SocketAddr) -> Result<usize, webrtc_util::Error> {
        let table = self.table();
        let outbox = table
            .outboxes
            .get(&to)
            .ok_or_else(|| webrtc_util::Error::Other("no TCP connection to this client".into()))?;
        match outbox.tx.try_send(buf.to_vec()) {
            // A client that does not keep up loses frames, as it would over UDP.
            Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => Ok(buf.len()),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(webrtc_util::Error::ErrAlreadyClosed),
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    mux: Arc<TcpMux>,
    limits: TcpLimits,
    inbox: mpsc::Sender<Frame>,
    relays: Arc<Relays>,
    shutdown: CancellationToken,
) {
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors, or a connection reset before accept: wait a
                    // little rather than spin.
                    tracing::debug!(%err, "TURN TCP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(local) = stream.local_addr() else {
            continue;
        };
        let (tx, rx) = mpsc::channel(OUTBOX_FRAMES);
        {
            let mut table = mux.table();
            let from_ip = table.per_ip.get(&peer.ip()).copied().unwrap_or(0);
            if table.outboxes.len() >= limits.total || from_ip >= limits.per_ip {
                tracing::debug!(client = %peer, "TURN TCP connection over the limit; closed");
                continue;
            }
            table.outboxes.insert(peer, Outbox { tx, local });
            *table.per_ip.entry(peer.ip()).or_insert(0) += 1;
        }
        let _ = stream.set_nodelay(true);
        let guard = Registered {
            mux: Arc::clone(&mux),
            relays: Arc::clone(&relays),
            peer,
        };
        tokio::spawn(serve(stream, guard, rx, inbox.clone(), shutdown.clone()));
    }
}

/// A connection's place in the table; dropping it (however the task ends) removes the
/// connection and closes its allocation.
struct Registered {
    mux: Arc<TcpMux>,
    relays: Arc<Relays>,
    peer: SocketAddr,
}

impl Drop for Registered {
    fn drop(&mut self) {
        {
            let mut table = self.mux.table();
            if table.outboxes.remove(&self.peer).is_some() {
                if let Some(count) = table.per_ip.get_mut(&self.peer.ip()) {
                    *count = count.saturating_sub(1);
                    if *count == 0 {
                        table.per_ip.remove(&self.peer.ip());
                    }
                }
            }
        }
        self.relays.close_client(Client {
            transport: Transport::Tcp,
            addr: self.peer,
        });
    }
}

async fn serve(
    stream: TcpStream,
    guard: Registered,
    mut outbox: mpsc::Receiver<Vec<u8>>,
    inbox: mpsc::Sender<Frame>,
    shutdown: CancellationToken,
) {
    let peer = guard.peer;
    let (mut reader, mut writer) = stream.into_split();
    let read = async {
        let mut header = [0u8; 4];
        loop {
            let data = tokio::time::timeout(IDLE_TIMEOUT, async {
                reader.read_exact(&mut header).await?;
                let len = frame_len(header).ok_or(std::io::ErrorKind::InvalidData)?;
                let mut data = vec![0u8; len];
                data[..4].copy_from_slice(&header);
                reader.read_exact(&mut data[4..]).await?;
                Ok::<_, std::io::Error>(data)
            })
            .await;
            match data {
                Ok(Ok(data)) => {
                    if inbox.send(Frame { data, from: peer }).await.is_err() {
                        return;
                    }
                }
                Ok(Err(err)) => {
                    tracing::debug!(client = %peer, %err, "TURN TCP connection ended");
                    return;
                }
                Err(_) => {
                    tracing::debug!(client = %peer, "TURN TCP connection idle; closed");
                    return;
                }
            }
        }
    };
    let write = async {
        while let Some(frame) = outbox.recv().await {
            match tokio::time::timeout(WRITE_TIMEOUT, writer.write_all(&frame)).await {
                Ok(Ok(())) => {}
                _ => return,
            }
        }
    };
    tokio::select! {
        () = read => {}
        () = write => {}
        () = shutdown.cancelled() => {}
    }
    drop(guard);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_delimited_by_their_headers() {
        // A STUN Allocate request with 8 bytes of attributes.
        assert_eq!(frame_len([0x00, 0x03, 0x00, 0x08]), Some(28));
        // ChannelData: 5 bytes of data, padded to 8 over TCP.
        assert_eq!(frame_len([0x40, 0x00, 0x00, 0x05]), Some(12));
        assert_eq!(frame_len([0x7f, 0xff, 0x00, 0x04]), Some(8));
        assert_eq!(frame_len([0x40, 0x00, 0xff, 0xff]), Some(4 + 65536));
        // A TLS record (0x16) frames like STUN (the gate then drops it: no magic cookie);
        // anything with the top bit set is not TURN at all.
        assert_eq!(frame_len([0x16, 0x03, 0x01, 0x02]), Some(20 + 0x0102));
        assert_eq!(frame_len([0x80, 0x00, 0x00, 0x00]), None);
        assert_eq!(frame_len([0xc0, 0x00, 0x00, 0x00]), None);
    }
}
