//! The byte stream under fe2o3: TCP (always with `TCP_NODELAY`), optionally
//! TLS, wrapped in a sniffer that captures the peer's `open` performative.
//!
//! fe2o3 keeps the remote Open private, but the driver must read its
//! `product` property to pick the addressing mode (spec §3.1). The sniffer
//! parses the first incoming bytes (protocol headers, SASL frames, then the
//! first AMQP frame, which is always `open`) and then becomes a plain
//! pass-through.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use fe2o3_amqp_types::performatives::Open;
use fe2o3_amqp_types::primitives::{Symbol, Value};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Plain TCP or TLS over TCP.
#[derive(Debug)]
pub(crate) enum MaybeTls {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for MaybeTls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MaybeTls {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_flush(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_shutdown(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            MaybeTls::Plain(s) => s.is_write_vectored(),
            MaybeTls::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// What the sniffer learnt from the peer's Open.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct PeerOpen {
    /// `properties.product`, when the peer sent one.
    pub product: Option<String>,
    /// `properties.version`, when the peer sent one.
    pub version: Option<String>,
    /// `offered-capabilities` (e.g. `ANONYMOUS-RELAY`, `LINK_PAIR_V1_0`).
    pub offered_capabilities: Vec<String>,
}

/// Stops sniffing after this many bytes (a broken peer must not make us buffer forever).
const SNIFF_LIMIT: usize = 64 * 1024;

/// Pass-through stream that records the peer's Open.
#[derive(Debug)]
pub(crate) struct Sniffer<S> {
    inner: S,
    buf: Vec<u8>,
    done: bool,
    out: Arc<OnceLock<PeerOpen>>,
}

impl<S> Sniffer<S> {
    pub(crate) fn new(inner: S, out: Arc<OnceLock<PeerOpen>>) -> Self {
        Sniffer {
            inner,
            buf: Vec::with_capacity(512),
            done: false,
            out,
        }
    }

    fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        match parse_open(&self.buf) {
            Parse::NeedMore if self.buf.len() < SNIFF_LIMIT => {}
            Parse::NeedMore | Parse::Broken => {
                self.done = true;
                self.buf = Vec::new();
            }
            Parse::Open(open) => {
                let _ = self.out.set(PeerOpen {
                    product: property(&open, "product"),
                    version: property(&open, "version"),
                    offered_capabilities: capabilities(&open),
                });
                self.done = true;
                self.buf = Vec::new();
            }
        }
    }
}

fn property(open: &Open, key: &str) -> Option<String> {
    let props = open.properties.as_ref()?;
    match props.get(&Symbol::from(key))? {
        Value::String(s) => Some(s.clone()),
        Value::Symbol(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}

fn capabilities(open: &Open) -> Vec<String> {
    open.offered_capabilities
        .as_ref()
        .map(|caps| caps.iter().map(|c| c.as_str().to_string()).collect())
        .unwrap_or_default()
}

#[derive(Debug)]
enum Parse {
    NeedMore,
    Broken,
    Open(Box<Open>),
}

/// Walks protocol headers and frames until the first AMQP (non-SASL) frame with a body.
fn parse_open(buf: &[u8]) -> Parse {
    let mut pos = 0usize;
    let mut amqp = false;
    loop {
        if buf.len() < pos + 8 {
            return Parse::NeedMore;
        }
        if &buf[pos..pos + 4] == b"AMQP" {
            amqp = buf[pos + 4] == 0;
            pos += 8;
            continue;
        }
        let size =
            u32::from_be_bytes([buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]]) as usize;
        let doff = buf[pos + 4] as usize * 4;
        if size < 8 || doff < 8 || doff > size {
            return Parse::Broken;
        }
        if buf.len() < pos + size {
            return Parse::NeedMore;
        }
        if amqp && size > doff {
            let body = &buf[pos + doff..pos + size];
            return match serde_amqp::from_slice::<Open>(body) {
                Ok(open) => Parse::Open(Box::new(open)),
                Err(_) => Parse::Broken,
            };
        }
        pos += size;
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Sniffer<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        if !this.done {
            if let Poll::Ready(Ok(())) = &res {
                let new = buf.filled()[before..].to_vec();
                this.feed(&new);
            }
        }
        res
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Sniffer<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use fe2o3_amqp_types::definitions::Fields;

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut f = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        f.extend_from_slice(&[2, 0, 0, 0]);
        f.extend_from_slice(body);
        f
    }

    #[test]
    fn finds_product_after_sasl_and_in_pieces() {
        let mut props = Fields::new();
        props.insert(Symbol::from("product"), Value::String("qpid-cpp".into()));
        let open = Open {
            container_id: "c".into(),
            hostname: None,
            max_frame_size: Default::default(),
            channel_max: Default::default(),
            idle_time_out: None,
            outgoing_locales: None,
            incoming_locales: None,
            offered_capabilities: None,
            desired_capabilities: None,
            properties: Some(props),
        };
        let body = serde_amqp::to_vec(&open).expect("encode");
        let mut wire = b"AMQP\x03\x01\x00\x00".to_vec();
        wire.extend(frame(&[0x00, 0x53, 0x44, 0x45])); // a fake SASL frame, skipped
        wire.extend_from_slice(b"AMQP\x00\x01\x00\x00");
        wire.extend(frame(&body));
        let out = Arc::new(OnceLock::new());
        let mut s = Sniffer::new((), out.clone());
        for chunk in wire.chunks(7) {
            s.feed(chunk);
        }
        assert_eq!(
            out.get().and_then(|p| p.product.clone()).as_deref(),
            Some("qpid-cpp")
        );
        assert!(s.done);
    }

    #[test]
    fn garbage_stops_sniffing() {
        let out = Arc::new(OnceLock::new());
        let mut s = Sniffer::new((), out.clone());
        s.feed(&[0, 0, 0, 1, 0, 0, 0, 0]);
        assert!(s.done);
        assert!(out.get().is_none());
    }
}
