//! The streaming HTTP body of a session: yields whatever its outbox has queued.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use actix::prelude::*;
use actix_web::body::{BodySize, MessageBody};
use bytes::Bytes;

use super::connections::ConnectionPermit;
use super::drain::TrackedStream;
use super::messages::BodyGone;
use super::outbox::Outbox;

/// The body of one SSE response.
pub struct SessionBody {
    outbox: Arc<Outbox>,
    session: Recipient<BodyGone>,
    permit: ConnectionPermit,
    /// Keeps the stream on the drain's list while the body lives.
    _tracked: TrackedStream,
}

impl SessionBody {
    /// A body draining `outbox`; the session hears [`BodyGone`] when it is dropped.
    pub(crate) fn new(
        outbox: Arc<Outbox>,
        session: Recipient<BodyGone>,
        permit: ConnectionPermit,
        tracked: TrackedStream,
    ) -> Self {
        Self {
            outbox,
            session,
            permit,
            _tracked: tracked,
        }
    }
}

impl MessageBody for SessionBody {
    type Error = Infallible;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        self.outbox.poll_take(cx).map(|chunk| chunk.map(Ok))
    }
}

impl Drop for SessionBody {
    fn drop(&mut self) {
        // Counted once per connection, when the socket side is really gone.
        let reason = self.outbox.body_dropped();
        self.permit.set_reason(reason);
        self.session.do_send(BodyGone);
    }
}
