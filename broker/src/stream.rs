//! The socket wrapper every connection goes through: it implements the `drop_connections` and `pause` faults at the byte level.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::faults::{FaultState, StreamCtl};

/// A stream with fault controls and an optional replay prefix.
pub(crate) struct BrokerStream<S> {
    inner: S,
    ctl: Arc<StreamCtl>,
    faults: Arc<FaultState>,
    read_sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    write_sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> std::fmt::Debug for BrokerStream<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerStream")
            .field("killed", &self.ctl.is_killed())
            .finish()
    }
}

impl<S> BrokerStream<S> {
    pub(crate) fn new(inner: S, ctl: Arc<StreamCtl>, faults: Arc<FaultState>) -> Self {
        BrokerStream {
            inner,
            ctl,
            faults,
            read_sleep: None,
            write_sleep: None,
        }
    }
}

fn killed_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "connection dropped by fault injection",
    )
}

/// Returns Pending while the broker is paused, arranging a wake-up at the end of the pause.
fn poll_pause(
    faults: &FaultState,
    sleep: &mut Option<Pin<Box<tokio::time::Sleep>>>,
    cx: &mut Context<'_>,
) -> Poll<()> {
    match faults.paused_until() {
        Some(until) => {
            let deadline = tokio::time::Instant::from_std(until);
            match sleep {
                Some(s) if s.deadline() == deadline => {}
                _ => *sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
            if let Some(s) = sleep.as_mut() {
                if s.as_mut().poll(cx).is_ready() && until <= Instant::now() {
                    *sleep = None;
                    return Poll::Ready(());
                }
            }
            Poll::Pending
        }
        None => {
            *sleep = None;
            Poll::Ready(())
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for BrokerStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.ctl.register_read(cx.waker());
        if this.ctl.is_killed() {
            return Poll::Ready(Err(killed_error()));
        }
        if poll_pause(&this.faults, &mut this.read_sleep, cx).is_pending() {
            return Poll::Pending;
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for BrokerStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.ctl.register_write(cx.waker());
        if this.ctl.is_killed() {
            return Poll::Ready(Err(killed_error()));
        }
        if poll_pause(&this.faults, &mut this.write_sleep, cx).is_pending() {
            return Poll::Pending;
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.ctl.is_killed() {
            return Poll::Ready(Err(killed_error()));
        }
        if poll_pause(&this.faults, &mut this.write_sleep, cx).is_pending() {
            this.ctl.register_write(cx.waker());
            return Poll::Pending;
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.ctl.is_killed() {
            return Poll::Ready(Err(killed_error()));
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}
