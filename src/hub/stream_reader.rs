//! The one reader of the streams: where a resume position lands and pages of events after a
//! cursor, for session replays and supervisor gap fills alike.
//!
//! Identical requests in flight at the same time are served by one broker call: after a
//! restart many sessions resume from the same cursor, and every supervisor of an org fills
//! from the same `last`, so a reconnect storm costs one stream read per distinct position
//! instead of one per session. Distinct reads run concurrently, so one long replay does not
//! hold up another client's.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;

use actix::prelude::*;
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};

use super::messages::{Page, ReadPage, ResolvePosition};
use crate::broker::{Broker, BrokerError, Resolution};
use crate::envelope::{Cursor, ResumePosition, Topic};

type SharedRead<T> = Shared<BoxFuture<'static, Result<T, BrokerError>>>;

/// Reads in flight, by what they read; each entry is removed when its read completes.
struct InFlight<K, T: Clone> {
    reads: HashMap<K, (u64, SharedRead<T>)>,
    next_id: u64,
}

impl<K: Hash + Eq + Clone + Unpin + 'static, T: Clone + Send + Sync + 'static> InFlight<K, T> {
    fn new() -> Self {
        Self {
            reads: HashMap::new(),
            next_id: 0,
        }
    }

    /// The read in flight for `key`, or a new one from `start`; `Some(id)` when new, so the
    /// caller can forget it once done.
    fn join_or_start(
        &mut self,
        key: &K,
        start: impl FnOnce() -> BoxFuture<'static, Result<T, BrokerError>>,
    ) -> (SharedRead<T>, Option<u64>) {
        if let Some((_, read)) = self.reads.get(key) {
            return (read.clone(), None);
        }
        let id = self.next_id;
        self.next_id += 1;
        let read = start().shared();
        self.reads.insert(key.clone(), (id, read.clone()));
        (read, Some(id))
    }

    fn finish(&mut self, key: &K, id: u64) {
        if self
            .reads
            .get(key)
            .is_some_and(|(current, _)| *current == id)
        {
            self.reads.remove(key);
        }
    }
}

/// The stream reader actor.
pub struct StreamReader {
    broker: Arc<dyn Broker>,
    pages: InFlight<(Topic, Cursor, usize), Page>,
    resolutions: InFlight<(Topic, ResumePosition), Resolution>,
}

impl StreamReader {
    /// A reader over `broker`.
    pub fn new(broker: Arc<dyn Broker>) -> Self {
        Self {
            broker,
            pages: InFlight::new(),
            resolutions: InFlight::new(),
        }
    }
}

impl Actor for StreamReader {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(4096);
    }
}

impl Handler<ReadPage> for StreamReader {
    type Result = ResponseFuture<Result<Page, BrokerError>>;

    fn handle(&mut self, msg: ReadPage, ctx: &mut Self::Context) -> Self::Result {
        let key = (msg.topic, msg.after, msg.limit);
        let broker = self.broker.clone();
        let (read, new) = self.pages.join_or_start(&key, || {
            let read = broker.read_after(key.0.clone(), key.1, key.2);
            async move { read.await.map(Arc::new) }.boxed()
        });
        if let Some(id) = new {
            ctx.spawn(
                read.clone()
                    .into_actor(self)
                    .map(move |_, act, _| act.pages.finish(&key, id)),
            );
        }
        Box::pin(read)
    }
}

impl Handler<ResolvePosition> for StreamReader {
    type Result = ResponseFuture<Result<Resolution, BrokerError>>;

    fn handle(&mut self, msg: ResolvePosition, ctx: &mut Self::Context) -> Self::Result {
        let key = (msg.topic, msg.position);
        let broker = self.broker.clone();
        let (read, new) = self
            .resolutions
            .join_or_start(&key, || broker.resolve(key.0.clone(), key.1.clone()));
        if let Some(id) = new {
            ctx.spawn(
                read.clone()
                    .into_actor(self)
                    .map(move |_, act, _| act.resolutions.finish(&key, id)),
            );
        }
        Box::pin(read)
    }
}
