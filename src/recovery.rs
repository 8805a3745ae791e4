//! The recovery rules, as pure functions: where a resume position lands in a stream, and
//! how a session that replayed up to a cursor joins its topic's live fan-out.
//!
//! Both brokers and the supervisor decide with these functions and nothing else, so the
//! memory and Redis backends resync alike and the join rules are tested on their own.

use crate::envelope::{Cursor, ResumePosition};

/// Where a resume position lands in a topic's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// Replay the events strictly after this cursor.
    After(Cursor),
    /// The position is older than the window (or its events were trimmed).
    Expired,
    /// The position is not in this stream (another data set, lost data, or garbage).
    Unknown,
}

impl Resolution {
    /// The reason text of a `realtime.resync` frame, if this resolution needs one.
    pub fn resync_reason(self) -> Option<&'static str> {
        match self {
            Self::After(_) => None,
            Self::Expired => Some("expired"),
            Self::Unknown => Some("unknown"),
        }
    }
}

/// For positions not found in the stream: expired when the position's own time (a cursor's
/// milliseconds, a ULID id's timestamp) is before the window, unknown otherwise.
pub fn expired_or_unknown(position: &ResumePosition, oldest_ms: u64) -> Resolution {
    let stamp_ms = match position {
        ResumePosition::Cursor(cursor) => Some(cursor.ms),
        ResumePosition::EventId(id) => id
            .strip_prefix("evt_")
            .and_then(|s| ulid::Ulid::from_string(s).ok())
            .map(|u| u.timestamp_ms()),
        ResumePosition::Unrecognized(_) => None,
    };
    match stamp_ms {
        Some(ms) if ms < oldest_ms => Resolution::Expired,
        _ => Resolution::Unknown,
    }
}

/// Where a stream cursor lands, given the newest id the stream ever had (`newest`) and
/// whether events after the cursor were removed from it (`lost_after`: trimmed by time or
/// length, or evicted).
pub fn classify_cursor(
    cursor: Cursor,
    newest: Option<Cursor>,
    lost_after: bool,
    oldest_ms: u64,
) -> Resolution {
    match newest {
        Some(newest) if cursor <= newest => {}
        // Newer than anything stored: another data set, or the stream lost its data.
        _ => return Resolution::Unknown,
    }
    if cursor.ms < oldest_ms || lost_after {
        return Resolution::Expired;
    }
    Resolution::After(cursor)
}

/// Events a read could not return because they are gone from the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// Removed from the stream's oldest end (trimmed by time or length, or evicted): the
    /// reader's clients resync with `expired`, and the read goes on with what is left.
    Trimmed,
    /// The stream no longer reaches the read's position: entries up to it are gone from its
    /// newest end (a failover lost writes its replica never received, or the data set was
    /// lost). The reader's clients resync with `unknown`, and the reader goes on after
    /// `resume_after`, the newest position the stream still has before the lost ones.
    Tail {
        /// Where reading resumes (the default cursor: from the start).
        resume_after: Cursor,
    },
}

impl Loss {
    /// The reason of the `realtime.resync` frame this loss calls for.
    pub fn resync_reason(self) -> &'static str {
        match self {
            Self::Trimmed => "expired",
            Self::Tail { .. } => "unknown",
        }
    }
}

/// What a read after `after` lost, when `after` itself is no longer in the stream, given the
/// newest id the stream ever generated (`newest`; `None` when the stream does not exist) and
/// the newest entry it still holds before `after` (`before`; only consulted when `newest` is
/// past `after`).
///
/// Streams are trimmed only from their oldest end, so a missing position with nothing
/// before it was trimmed; a missing position with older entries still present, or with a
/// stream that ends before it, lost its newest entries.
pub fn loss_at_missing(
    after: Cursor,
    newest: Option<Cursor>,
    before: Option<Cursor>,
) -> Option<Loss> {
    match newest {
        None => Some(Loss::Tail {
            resume_after: Cursor::default(),
        }),
        Some(newest) if newest < after => Some(Loss::Tail {
            resume_after: newest,
        }),
        // Nothing was ever written after the position: nothing after it is missing.
        Some(newest) if newest == after => None,
        Some(_) => Some(match before {
            Some(before) => Loss::Tail {
                resume_after: before,
            },
            None => Loss::Trimmed,
        }),
    }
}

/// What a supervisor knows when a session asks to join: its ring of recent events holds
/// every event in `(floor, last]`; `last` is the default cursor before anything was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingSpan {
    /// Exclusive lower end of the ring.
    pub floor: Cursor,
    /// Cursor of the newest event fanned out (or the stream head when subscribing).
    pub last: Cursor,
}

/// A session's request to join, as the recovery rules see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinRequest {
    /// The cursor the session has read through (None: join at the live edge).
    pub after: Option<Cursor>,
    /// `after` is the client's own cursor, not yet checked against the stream.
    pub unverified: bool,
    /// The ring holds an event at exactly `after`: what proves an unverified cursor (one
    /// between two of the ring's events was never stored, or a failover lost it).
    pub in_ring: bool,
}

/// How the supervisor answers a join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinPlan {
    /// Join now; live events up to `skip_through` were already written by the replay.
    Live {
        /// Skip live events at or before this cursor for the session.
        skip_through: Option<Cursor>,
    },
    /// Hand over the ring's events after this cursor, then join.
    HandOver {
        /// The session's position.
        after: Cursor,
    },
    /// The ring cannot serve this position: the session reads more from the stream.
    Behind,
}

/// Decides a join. An unverified cursor is only served when the ring proves it: one of the
/// ring's own events (so neither newer than the stream, nor trimmed, nor lost) and inside
/// the replay window (the stream path would call an older one expired).
pub fn plan_join(ring: RingSpan, request: JoinRequest, oldest_ms: u64) -> JoinPlan {
    let Some(after) = request.after else {
        return JoinPlan::Live { skip_through: None };
    };
    if request.unverified {
        let proven =
            request.in_ring && after > ring.floor && after <= ring.last && after.ms >= oldest_ms;
        if !proven {
            return JoinPlan::Behind;
        }
    }
    if after >= ring.last {
        JoinPlan::Live {
            skip_through: Some(after),
        }
    } else if after >= ring.floor {
        JoinPlan::HandOver { after }
    } else {
        JoinPlan::Behind
    }
}

/// What a session does when the supervisor answers [`JoinPlan::Behind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BehindStep {
    /// Read more pages from the stream after the session's position, then ask again.
    ReadMore,
    /// The stream has nothing after the position yet the supervisor is past it: the events
    /// in between expired while the session replayed. Resync, then join at the live edge.
    ResyncExpired,
}

/// The session's next step after `Behind`, given whether its last read found the stream end.
pub fn after_behind(stream_exhausted: bool) -> BehindStep {
    if stream_exhausted {
        BehindStep::ResyncExpired
    } else {
        BehindStep::ReadMore
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(ms: u64, seq: u64) -> Cursor {
        Cursor::new(ms, seq)
    }

    fn ring(floor: Cursor, last: Cursor) -> RingSpan {
        RingSpan { floor, last }
    }

    fn verified(after: Option<Cursor>) -> JoinRequest {
        JoinRequest {
            after,
            unverified: false,
            in_ring: false,
        }
    }

    fn unverified(after: Cursor) -> JoinRequest {
        JoinRequest {
            after: Some(after),
            unverified: true,
            in_ring: true,
        }
    }

    #[test]
    fn live_edge_joins_without_skipping() {
        let plan = plan_join(ring(c(1, 0), c(9, 0)), verified(None), 0);
        assert_eq!(plan, JoinPlan::Live { skip_through: None });
    }

    #[test]
    fn a_session_ahead_of_the_supervisor_skips_what_it_replayed() {
        let plan = plan_join(ring(c(1, 0), c(5, 0)), verified(Some(c(7, 0))), 0);
        assert_eq!(
            plan,
            JoinPlan::Live {
                skip_through: Some(c(7, 0))
            }
        );
        let at_last = plan_join(ring(c(1, 0), c(5, 0)), verified(Some(c(5, 0))), 0);
        assert_eq!(
            at_last,
            JoinPlan::Live {
                skip_through: Some(c(5, 0))
            }
        );
    }

    #[test]
    fn the_ring_hands_over_from_its_floor_up() {
        let span = ring(c(3, 0), c(9, 0));
        assert_eq!(
            plan_join(span, verified(Some(c(3, 0))), 0),
            JoinPlan::HandOver { after: c(3, 0) }
        );
        assert_eq!(
            plan_join(span, verified(Some(c(4, 1))), 0),
            JoinPlan::HandOver { after: c(4, 1) }
        );
        assert_eq!(
            plan_join(span, verified(Some(c(2, 9))), 0),
            JoinPlan::Behind
        );
    }

    #[test]
    fn unverified_cursors_need_proof_from_the_ring() {
        let span = ring(c(3, 0), c(9, 0));
        // Inside the ring and the window: served.
        assert_eq!(
            plan_join(span, unverified(c(5, 0)), 0),
            JoinPlan::HandOver { after: c(5, 0) }
        );
        assert_eq!(
            plan_join(span, unverified(c(9, 0)), 0),
            JoinPlan::Live {
                skip_through: Some(c(9, 0))
            }
        );
        // Newer than the stream, trimmed, out of the window, or an empty supervisor: read.
        assert_eq!(plan_join(span, unverified(c(10, 0)), 0), JoinPlan::Behind);
        assert_eq!(plan_join(span, unverified(c(2, 0)), 0), JoinPlan::Behind);
        assert_eq!(plan_join(span, unverified(c(5, 0)), 6), JoinPlan::Behind);
        let empty = ring(Cursor::default(), Cursor::default());
        assert_eq!(plan_join(empty, unverified(c(0, 0)), 0), JoinPlan::Behind);
        // Inside the span but not one of the ring's events (lost by a failover, or never
        // stored): the stream decides.
        let between = JoinRequest {
            in_ring: false,
            ..unverified(c(5, 0))
        };
        assert_eq!(plan_join(span, between, 0), JoinPlan::Behind);
    }

    #[test]
    fn behind_with_an_exhausted_stream_means_expired() {
        assert_eq!(after_behind(true), BehindStep::ResyncExpired);
        assert_eq!(after_behind(false), BehindStep::ReadMore);
    }

    #[test]
    fn cursor_classification() {
        let last = Some(c(100, 0));
        let at = |cursor, newest, lost, oldest| classify_cursor(cursor, newest, lost, oldest);
        assert_eq!(at(c(50, 0), last, false, 0), Resolution::After(c(50, 0)));
        assert_eq!(at(c(101, 0), last, false, 0), Resolution::Unknown);
        assert_eq!(at(c(1, 0), None, false, 0), Resolution::Unknown);
        assert_eq!(at(c(50, 0), last, false, 60), Resolution::Expired);
        assert_eq!(at(c(50, 0), last, true, 0), Resolution::Expired);
        assert_eq!(at(c(100, 0), last, false, 0), Resolution::After(c(100, 0)));
    }

    #[test]
    fn a_missing_position_is_trimmed_or_a_lost_tail() {
        let at = c(50, 0);
        // The stream ends before the position (a failover lost its newest writes) or is gone.
        assert_eq!(
            loss_at_missing(at, Some(c(40, 2)), None),
            Some(Loss::Tail {
                resume_after: c(40, 2)
            })
        );
        assert_eq!(
            loss_at_missing(at, None, None),
            Some(Loss::Tail {
                resume_after: Cursor::default()
            })
        );
        // Entries follow the position but it is gone with everything before it: trimmed.
        assert_eq!(
            loss_at_missing(at, Some(c(60, 0)), None),
            Some(Loss::Trimmed)
        );
        // Older entries survived it: a hole, not a trim (lost, then written again).
        assert_eq!(
            loss_at_missing(at, Some(c(60, 0)), Some(c(45, 0))),
            Some(Loss::Tail {
                resume_after: c(45, 0)
            })
        );
        // It was the newest entry ever and it was trimmed: nothing after it is missing.
        assert_eq!(loss_at_missing(at, Some(at), None), None);
        assert_eq!(Loss::Trimmed.resync_reason(), "expired");
        let tail = Loss::Tail { resume_after: at };
        assert_eq!(tail.resync_reason(), "unknown");
    }

    #[test]
    fn missing_positions_expire_by_their_own_time() {
        let old = ResumePosition::Cursor(c(10, 0));
        assert_eq!(expired_or_unknown(&old, 20), Resolution::Expired);
        assert_eq!(expired_or_unknown(&old, 5), Resolution::Unknown);
        let ulid = ulid::Ulid::from_parts(10, 1);
        let id = ResumePosition::EventId(format!("evt_{ulid}"));
        assert_eq!(expired_or_unknown(&id, 20), Resolution::Expired);
        let uuid = ResumePosition::EventId("evt_not-a-ulid".into());
        assert_eq!(expired_or_unknown(&uuid, u64::MAX), Resolution::Unknown);
        let garbage = ResumePosition::Unrecognized("x".into());
        assert_eq!(expired_or_unknown(&garbage, u64::MAX), Resolution::Unknown);
    }
}
