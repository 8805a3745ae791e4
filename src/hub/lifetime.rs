//! How long a stream may live: until its credential's expiry, and, for a credential that
//! can be revoked, while a periodic re-check still holds; and at most its maximum age, after
//! which the client resumes (maybe on another instance, which is how clients spread over an
//! instance added later). The hub knows nothing of credentials: the HTTP layer hands it a
//! deadline and a re-check closure; the hub adds the age.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::outbox::CloseReason;

/// The future of one re-check: `false` ends the stream.
pub type RecheckFuture = Pin<Box<dyn Future<Output = bool> + Send>>;

/// Asks every `every` whether the stream's credential still holds.
#[derive(Clone)]
pub struct Recheck {
    /// Time between checks.
    pub every: Duration,
    /// One check.
    pub check: Arc<dyn Fn() -> RecheckFuture + Send + Sync>,
}

/// A stream's limits in time; the default is none.
#[derive(Clone, Default)]
pub struct Lifetime {
    /// The stream ends here, with a final `retry:` frame (`CloseReason::Expired`).
    pub deadline: Option<Instant>,
    /// The stream ends when a check says no (`CloseReason::Revoked`).
    pub recheck: Option<Recheck>,
    /// The stream ends here because it is old enough, with a final `retry:` frame
    /// (`CloseReason::MaxAge`).
    pub max_age: Option<Instant>,
}

impl std::fmt::Debug for Lifetime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lifetime")
            .field("deadline", &self.deadline)
            .field("recheck_every", &self.recheck.as_ref().map(|r| r.every))
            .field("max_age", &self.max_age)
            .finish()
    }
}

/// Arms an actor's timers for `lifetime`: `end` is called with `Expired` at the deadline,
/// with `MaxAge` at the maximum age, or with `Revoked` when a check fails. One check runs
/// at a time.
pub(crate) fn watch<A>(
    lifetime: &Lifetime,
    ctx: &mut Context<A>,
    end: fn(&mut A, CloseReason, &mut Context<A>),
) where
    A: Actor<Context = Context<A>>,
{
    if let Some(deadline) = lifetime.deadline {
        let wait = deadline.saturating_duration_since(Instant::now());
        ctx.run_later(wait, move |act, ctx| end(act, CloseReason::Expired, ctx));
    }
    if let Some(at) = lifetime.max_age {
        let wait = at.saturating_duration_since(Instant::now());
        ctx.run_later(wait, move |act, ctx| end(act, CloseReason::MaxAge, ctx));
    }
    if let Some(recheck) = lifetime.recheck.clone() {
        let busy = Rc::new(Cell::new(false));
        ctx.run_interval(recheck.every, move |act, ctx| {
            if busy.replace(true) {
                return;
            }
            let busy = busy.clone();
            ctx.spawn(
                (recheck.check)()
                    .into_actor(act)
                    .map(move |valid, act, ctx| {
                        busy.set(false);
                        if !valid {
                            end(act, CloseReason::Revoked, ctx);
                        }
                    }),
            );
        });
    }
}
