//! Serves replay requests: where a resume position lands, and pages of events after it.
//!
//! Reads run concurrently (each request is its own future), so one long replay does not
//! hold up another client's.

use std::sync::Arc;

use actix::prelude::*;

use super::messages::{ReadPage, ResolvePosition};
use crate::broker::{Broker, BrokerError, Resolution};
use crate::envelope::StoredEvent;

/// The replay reader over the broker's streams.
pub struct StreamReader {
    broker: Arc<dyn Broker>,
}

impl StreamReader {
    /// A reader over `broker`.
    pub fn new(broker: Arc<dyn Broker>) -> Self {
        Self { broker }
    }
}

impl Actor for StreamReader {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(4096);
    }
}

impl Handler<ResolvePosition> for StreamReader {
    type Result = ResponseFuture<Result<Resolution, BrokerError>>;

    fn handle(&mut self, msg: ResolvePosition, _ctx: &mut Self::Context) -> Self::Result {
        self.broker.resolve(msg.topic, msg.position)
    }
}

impl Handler<ReadPage> for StreamReader {
    type Result = ResponseFuture<Result<Vec<Arc<StoredEvent>>, BrokerError>>;

    fn handle(&mut self, msg: ReadPage, _ctx: &mut Self::Context) -> Self::Result {
        self.broker.read_after(msg.topic, msg.after, msg.limit)
    }
}
