//! Replays already-read header bytes, notes which incoming transfers were sent
//! pre-settled, and who the peer is.
//!
//! fe2o3's `Delivery` does not expose the transfer's `settled` flag, but a router must
//! know it (pre-settled deliveries are forwarded pre-settled and may be dropped). So the
//! plain AMQP byte stream (above TLS) is scanned frame by frame; for each first transfer
//! frame of a delivery with `settled=true`, `(channel, handle, delivery-id)` is recorded.
//! fe2o3's acceptor does not expose the peer's Open or SASL init either; the management
//! views need the peer's container-id, SASL mechanism and user name, so those are read
//! from the same scan (the PLAIN password is skipped, never kept).

use std::collections::HashSet;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::util::lock;

/// Set of pre-settled deliveries seen on one connection: (remote channel, remote handle, delivery-id).
#[derive(Debug, Default)]
pub(crate) struct SettledSet {
    set: Mutex<HashSet<(u16, u32, u32)>>,
}

impl SettledSet {
    /// Whether that delivery was pre-settled (and forgets it).
    pub(crate) fn take(&self, channel: u16, handle: u32, delivery_id: u32) -> bool {
        lock(&self.set).remove(&(channel, handle, delivery_id))
    }

    /// Forgets everything of one link.
    pub(crate) fn forget_link(&self, channel: u16, handle: u32) {
        lock(&self.set).retain(|(c, h, _)| !(*c == channel && *h == handle));
    }
}

/// Who the peer said it is (from its SASL init and Open frames).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct PeerIdent {
    pub container_id: Option<String>,
    pub sasl_mechanism: Option<String>,
    /// The PLAIN authentication identity (`authcid`).
    pub user: Option<String>,
}

/// Shared, filled in by the scanner.
#[derive(Debug, Default)]
pub(crate) struct PeerInfo {
    ident: Mutex<PeerIdent>,
}

impl PeerInfo {
    pub(crate) fn get(&self) -> PeerIdent {
        lock(&self.ident).clone()
    }
}

const CAPTURE: usize = 160;

#[derive(Debug, Clone, Copy)]
enum ScanState {
    /// At a frame boundary; collecting up to 8 bytes.
    Head,
    /// Inside a frame body.
    Body {
        remaining: usize,
        skip: usize,
        channel: u16,
        capture: bool,
    },
}

#[derive(Debug)]
struct Scanner {
    state: ScanState,
    head: Vec<u8>,
    captured: Vec<u8>,
    settled: Arc<SettledSet>,
    peer: Arc<PeerInfo>,
}

impl Scanner {
    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match self.state {
                ScanState::Head => {
                    let need = 8 - self.head.len();
                    let n = need.min(bytes.len());
                    self.head.extend_from_slice(&bytes[..n]);
                    bytes = &bytes[n..];
                    if self.head.len() == 8 {
                        if &self.head[..4] == b"AMQP" {
                            self.head.clear();
                            continue;
                        }
                        let size = u32::from_be_bytes([
                            self.head[0],
                            self.head[1],
                            self.head[2],
                            self.head[3],
                        ]) as usize;
                        let doff = self.head[4] as usize * 4;
                        let ftype = self.head[5];
                        let channel = u16::from_be_bytes([self.head[6], self.head[7]]);
                        self.head.clear();
                        let remaining = size.saturating_sub(8);
                        self.captured.clear();
                        if remaining > 0 {
                            self.state = ScanState::Body {
                                remaining,
                                skip: doff.saturating_sub(8),
                                channel,
                                // AMQP (0) and SASL (1) frames
                                capture: ftype <= 1,
                            };
                        }
                    }
                }
                ScanState::Body {
                    mut remaining,
                    mut skip,
                    channel,
                    mut capture,
                } => {
                    let n = remaining.min(bytes.len());
                    let chunk = &bytes[..n];
                    bytes = &bytes[n..];
                    remaining -= n;
                    let mut c = chunk;
                    if skip > 0 {
                        let s = skip.min(c.len());
                        skip -= s;
                        c = &c[s..];
                    }
                    let mut parse_now = false;
                    if capture && self.captured.len() < CAPTURE {
                        let take = (CAPTURE - self.captured.len()).min(c.len());
                        self.captured.extend_from_slice(&c[..take]);
                        if self.captured.len() >= CAPTURE {
                            capture = false;
                            parse_now = true;
                        }
                    }
                    if remaining == 0 {
                        parse_now |= capture;
                        self.state = ScanState::Head;
                    } else {
                        self.state = ScanState::Body {
                            remaining,
                            skip,
                            channel,
                            capture,
                        };
                    }
                    if parse_now {
                        self.parse(channel);
                    }
                }
            }
        }
    }

    fn parse(&mut self, channel: u16) {
        match descriptor(&self.captured) {
            Some(TRANSFER) => {
                if let Some((handle, id)) = presettled_transfer(&self.captured) {
                    lock(&self.settled.set).insert((channel, handle, id));
                }
            }
            Some(OPEN) => {
                if let Some(id) = open_container_id(&self.captured) {
                    lock(&self.peer.ident).container_id = Some(id);
                }
            }
            Some(SASL_INIT) => {
                if let Some((mechanism, user)) = sasl_init(&self.captured) {
                    let mut ident = lock(&self.peer.ident);
                    ident.sasl_mechanism = Some(mechanism);
                    ident.user = user;
                }
            }
            _ => {}
        }
        self.captured.clear();
    }
}

struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(*b)
    }
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u32(&mut self) -> Option<u32> {
        let b = self.take(4)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    /// A uint field; `Some(None)` for null.
    fn uint(&mut self) -> Option<Option<u32>> {
        match self.byte()? {
            0x40 => Some(None),
            0x43 => Some(Some(0)),
            0x52 => Some(Some(u32::from(self.byte()?))),
            0x70 => Some(Some(self.u32()?)),
            _ => None,
        }
    }
    fn skip_binary(&mut self) -> Option<()> {
        match self.byte()? {
            0x40 => Some(()),
            0xa0 => {
                let n = self.byte()? as usize;
                self.take(n).map(|_| ())
            }
            0xb0 => {
                let n = self.u32()? as usize;
                self.take(n).map(|_| ())
            }
            _ => None,
        }
    }
    fn boolean(&mut self) -> Option<Option<bool>> {
        match self.byte()? {
            0x40 => Some(None),
            0x41 => Some(Some(true)),
            0x42 => Some(Some(false)),
            0x56 => Some(Some(self.byte()? != 0)),
            _ => None,
        }
    }
}

const OPEN: u8 = 0x10;
const TRANSFER: u8 = 0x14;
const SASL_INIT: u8 = 0x41;

/// The small-ulong descriptor code of the performative `body` starts with.
fn descriptor(body: &[u8]) -> Option<u8> {
    match body {
        [0x00, 0x53, code, ..] => Some(*code),
        [0x00, 0x80, 0, 0, 0, 0, 0, 0, 0, code, ..] => Some(*code),
        _ => None,
    }
}

impl Cursor<'_> {
    /// Skips the descriptor and reads the list header; returns the field count.
    fn list_start(&mut self) -> Option<u32> {
        match self.byte()? {
            0x53 => {
                self.byte()?;
            }
            0x80 => {
                self.take(8)?;
            }
            _ => return None,
        }
        match self.byte()? {
            0x45 => Some(0),
            0xc0 => {
                self.byte()?;
                Some(u32::from(self.byte()?))
            }
            0xd0 => {
                self.u32()?;
                self.u32()
            }
            _ => None,
        }
    }

    /// A string or symbol (`str8`/`str32`/`sym8`/`sym32`).
    fn text(&mut self) -> Option<String> {
        let n = match self.byte()? {
            0xa1 | 0xa3 => usize::from(self.byte()?),
            0xb1 | 0xb3 => self.u32()? as usize,
            _ => return None,
        };
        self.take(n)
            .map(|b| String::from_utf8_lossy(b).into_owned())
    }

    /// A binary (`vbin8`/`vbin32`); `Some(None)` for null.
    fn binary(&mut self) -> Option<Option<&[u8]>> {
        let n = match self.byte()? {
            0x40 => return Some(None),
            0xa0 => usize::from(self.byte()?),
            0xb0 => self.u32()? as usize,
            _ => return None,
        };
        self.take(n).map(Some)
    }
}

/// The container-id of an Open performative.
fn open_container_id(body: &[u8]) -> Option<String> {
    let mut c = Cursor(body);
    c.byte()?;
    if c.list_start()? == 0 {
        return None;
    }
    c.text()
}

/// The mechanism of a SASL init, and for PLAIN the authentication identity. The password
/// that follows it is never copied.
fn sasl_init(body: &[u8]) -> Option<(String, Option<String>)> {
    let mut c = Cursor(body);
    c.byte()?;
    if c.list_start()? == 0 {
        return None;
    }
    let mechanism = c.text()?;
    let user = if mechanism == "PLAIN" {
        c.binary().flatten().and_then(|resp| {
            let authcid = resp.split(|b| *b == 0).nth(1)?;
            Some(String::from_utf8_lossy(authcid).into_owned())
        })
    } else {
        None
    };
    Some((mechanism, user))
}

/// If `body` starts with a transfer performative with `settled=true` and a delivery-id,
/// returns `(handle, delivery-id)`.
fn presettled_transfer(body: &[u8]) -> Option<(u32, u32)> {
    if descriptor(body)? != TRANSFER {
        return None;
    }
    let mut c = Cursor(body);
    c.byte()?;
    if c.list_start()? < 5 {
        return None;
    }
    let handle = c.uint()??;
    let delivery_id = c.uint()??;
    c.skip_binary()?;
    c.uint()?;
    match c.boolean()? {
        Some(true) => Some((handle, delivery_id)),
        _ => None,
    }
}

/// Stream wrapper: prefix replay + transfer scanning.
pub(crate) struct Sniff<S> {
    inner: S,
    prefix: Vec<u8>,
    pos: usize,
    scanner: Scanner,
}

impl<S> std::fmt::Debug for Sniff<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sniff").finish_non_exhaustive()
    }
}

impl<S> Sniff<S> {
    pub(crate) fn new(
        inner: S,
        prefix: Vec<u8>,
        settled: Arc<SettledSet>,
        peer: Arc<PeerInfo>,
    ) -> Self {
        Sniff {
            inner,
            prefix,
            pos: 0,
            scanner: Scanner {
                state: ScanState::Head,
                head: Vec::with_capacity(8),
                captured: Vec::with_capacity(CAPTURE),
                settled,
                peer,
            },
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Sniff<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        if this.pos < this.prefix.len() {
            let rest = &this.prefix[this.pos..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.pos += n;
        } else {
            match Pin::new(&mut this.inner).poll_read(cx, buf) {
                Poll::Ready(Ok(())) => {}
                other => return other,
            }
        }
        let new = &buf.filled()[before..];
        this.scanner.feed(new);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Sniff<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_presettled_transfer() {
        // transfer [handle=1, delivery-id=7, tag=vbin8 "ab", format=0, settled=true]
        let body = [
            0x00, 0x53, 0x14, 0xc0, 0x0b, 0x05, 0x52, 0x01, 0x52, 0x07, 0xa0, 0x02, b'a', b'b',
            0x43, 0x41,
        ];
        assert_eq!(presettled_transfer(&body), Some((1, 7)));
        let mut unsettled = body;
        unsettled[15] = 0x42;
        assert_eq!(presettled_transfer(&unsettled), None);
    }

    #[test]
    fn scanner_handles_split_frames() {
        let settled = Arc::new(SettledSet::default());
        let mut s = Scanner {
            state: ScanState::Head,
            head: Vec::new(),
            captured: Vec::new(),
            settled: settled.clone(),
            peer: Arc::default(),
        };
        let perf = [
            0x00, 0x53, 0x14, 0xc0, 0x0b, 0x05, 0x43, 0x52, 0x09, 0xa0, 0x02, b'a', b'b', 0x43,
            0x41,
        ];
        let payload = [0x00, 0x53, 0x77, 0xa1, 0x01, b'x'];
        let size = (8 + perf.len() + payload.len()) as u32;
        let mut bytes = b"AMQP\x00\x01\x00\x00".to_vec();
        bytes.extend_from_slice(&size.to_be_bytes());
        bytes.extend_from_slice(&[2, 0, 0, 3]);
        bytes.extend_from_slice(&perf);
        bytes.extend_from_slice(&payload);
        for chunk in bytes.chunks(3) {
            s.feed(chunk);
        }
        assert!(settled.take(3, 0, 9));
        assert!(!settled.take(3, 0, 9));
    }

    #[test]
    fn reads_peer_identity_without_the_password() {
        let peer = Arc::new(PeerInfo::default());
        let mut s = Scanner {
            state: ScanState::Head,
            head: Vec::new(),
            captured: Vec::new(),
            settled: Arc::default(),
            peer: peer.clone(),
        };
        let frame = |ftype: u8, body: &[u8]| {
            let mut f = ((8 + body.len()) as u32).to_be_bytes().to_vec();
            f.extend_from_slice(&[2, ftype, 0, 0]);
            f.extend_from_slice(body);
            f
        };
        // sasl-init [mechanism=:PLAIN, initial-response=b"\0alice\0secret"]
        let mut init = vec![0x00, 0x53, 0x41, 0xc0, 0x14, 0x02, 0xa3, 0x05];
        init.extend_from_slice(b"PLAIN");
        init.extend_from_slice(&[0xa0, 0x0d]);
        init.extend_from_slice(b"\0alice\0secret");
        // open [container-id="client-1"]
        let mut open = vec![0x00, 0x53, 0x10, 0xc0, 0x0b, 0x01, 0xa1, 0x08];
        open.extend_from_slice(b"client-1");
        let mut bytes = b"AMQP\x03\x01\x00\x00".to_vec();
        bytes.extend(frame(1, &init));
        bytes.extend_from_slice(b"AMQP\x00\x01\x00\x00");
        bytes.extend(frame(0, &open));
        for chunk in bytes.chunks(5) {
            s.feed(chunk);
        }
        let ident = peer.get();
        assert_eq!(ident.container_id.as_deref(), Some("client-1"));
        assert_eq!(ident.sasl_mechanism.as_deref(), Some("PLAIN"));
        assert_eq!(ident.user.as_deref(), Some("alice"));
        assert!(!format!("{ident:?}").contains("secret"));
    }
}
