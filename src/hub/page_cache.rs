//! Recent pages of the streams, so many resumes from the same or nearby positions cost one
//! stream read: a page read after `a` holds the events after every cursor it contains, so a
//! replay starting at one of them is served from it.
//!
//! Bounds: [`PAGE_CACHE_TTL`] from the read, [`PAGE_CACHE_BYTES`] of event frames (oldest
//! pages go first), pages with events only.
//!
//! Only what a page proves is answered from it: a non-empty run of events after a cursor
//! the stream held when it was read. Whether anything follows that run, and whether a
//! stream is exhausted, is left to a fresh read (an empty answer is never cached), so a stale
//! page can make a replay read one more page, never skip or invent an event. Supervisors'
//! gap fills never read from here: they need the stream as it is now.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::broker::{Loss, Page};
use crate::envelope::{Cursor, StoredEvent, Topic};

/// How long a page serves other resumes after it was read.
pub const PAGE_CACHE_TTL: Duration = Duration::from_secs(10);
/// Most bytes of event frames held over all pages.
pub const PAGE_CACHE_BYTES: usize = 16 << 20;

struct CachedPage {
    seq: u64,
    after: Cursor,
    page: Arc<Page>,
    bytes: usize,
    read_at: Instant,
}

/// Recent non-empty pages, per topic, in the order they were read.
#[derive(Default)]
pub struct PageCache {
    by_topic: HashMap<Topic, VecDeque<CachedPage>>,
    /// Every page's topic and number, oldest first: the eviction order.
    order: VecDeque<(Topic, u64)>,
    bytes: usize,
    next_seq: u64,
}

impl PageCache {
    /// Keeps a page read after `after` (pages without events, and larger than the whole
    /// bound, are not kept).
    pub fn insert(&mut self, topic: &Topic, after: Cursor, page: Arc<Page>, now: Instant) {
        let bytes: usize = page.events.iter().map(|e| e.size()).sum();
        if page.events.is_empty() || bytes > PAGE_CACHE_BYTES {
            return;
        }
        while self.bytes + bytes > PAGE_CACHE_BYTES && self.evict_oldest() {}
        let seq = self.next_seq;
        self.next_seq += 1;
        self.bytes += bytes;
        self.order.push_back((topic.clone(), seq));
        self.by_topic
            .entry(topic.clone())
            .or_default()
            .push_back(CachedPage {
                seq,
                after,
                page,
                bytes,
                read_at: now,
            });
    }

    /// Drops pages read more than [`PAGE_CACHE_TTL`] before `now`.
    pub fn expire(&mut self, now: Instant) {
        while let Some((topic, seq)) = self.order.front()
            && self
                .by_topic
                .get(topic)
                .and_then(|pages| pages.front())
                .is_none_or(|p| p.seq != *seq || now.duration_since(p.read_at) > PAGE_CACHE_TTL)
        {
            self.evict_oldest();
        }
    }

    fn evict_oldest(&mut self) -> bool {
        let Some((topic, seq)) = self.order.pop_front() else {
            return false;
        };
        if let Some(pages) = self.by_topic.get_mut(&topic) {
            if pages.front().is_some_and(|p| p.seq == seq)
                && let Some(page) = pages.pop_front()
            {
                self.bytes -= page.bytes;
            }
            if pages.is_empty() {
                self.by_topic.remove(&topic);
            }
        }
        true
    }

    /// Up to `limit` events after `after`, from a page that holds `after` and at least one
    /// event after it. `full` says more may follow: the run was cut at `limit`, or its page
    /// was full.
    pub fn read(&self, topic: &Topic, after: Cursor, limit: usize, now: Instant) -> Option<Page> {
        self.fresh(topic, now).rev().find_map(|cached| {
            let page = &cached.page;
            if cached.after == after {
                return Some(run(&page.events, limit, page.full, page.lost));
            }
            let at = page
                .events
                .binary_search_by(|e| e.cursor().cmp(&Some(after)))
                .ok()?;
            let rest = &page.events[at + 1..];
            // The page's last event: what follows it needs a real read.
            (!rest.is_empty()).then(|| run(rest, limit, page.full, None))
        })
    }

    /// Whether a recent page proves the stream held this position and everything after it:
    /// the page holds an event with this cursor (a stream is only trimmed from its oldest
    /// end), or was read after it and found events and nothing lost.
    pub fn holds(&self, topic: &Topic, cursor: Cursor, now: Instant) -> bool {
        self.fresh(topic, now).any(|cached| {
            let page = &cached.page;
            (cached.after == cursor && page.lost.is_none())
                || page
                    .events
                    .binary_search_by(|e| e.cursor().cmp(&Some(cursor)))
                    .is_ok()
        })
    }

    fn fresh<'a>(
        &'a self,
        topic: &Topic,
        now: Instant,
    ) -> impl DoubleEndedIterator<Item = &'a CachedPage> + 'a {
        self.by_topic
            .get(topic)
            .into_iter()
            .flatten()
            .filter(move |p| now.duration_since(p.read_at) <= PAGE_CACHE_TTL)
    }

    /// Bytes of event frames held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// At most `limit` of `events` as a page; more may follow when it is cut or `full`.
fn run(events: &[Arc<StoredEvent>], limit: usize, full: bool, lost: Option<Loss>) -> Page {
    let taken = events.len().min(limit);
    Page {
        events: events[..taken].to_vec(),
        lost,
        full: full || taken < events.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::OrgId;

    fn topic() -> Topic {
        Topic::Org(OrgId::parse("org_cache").unwrap())
    }

    fn event(seq: u64) -> Arc<StoredEvent> {
        let json = format!(
            r#"{{"id":"evt_{seq}","org_id":"org_cache","event":"a.b","timestamp":"2025-02-13T18:00:00.000Z","version":"v1","payload":{{}}}}"#
        );
        Arc::new(
            StoredEvent::from_wire(
                json.as_bytes(),
                Some(Cursor::new(1000, seq)),
                &topic(),
                65_536,
            )
            .unwrap(),
        )
    }

    fn page(from: u64, to: u64, full: bool) -> Arc<Page> {
        Arc::new(Page {
            events: (from..=to).map(event).collect(),
            lost: None,
            full,
        })
    }

    fn seqs(page: &Page) -> Vec<u64> {
        page.events
            .iter()
            .map(|e| e.cursor().unwrap().seq)
            .collect()
    }

    #[test]
    fn serves_positions_inside_a_page_never_its_end() {
        let now = Instant::now();
        let mut cache = PageCache::default();
        cache.insert(&topic(), Cursor::new(1000, 0), page(1, 10, true), now);
        // The page's own start.
        let same = cache
            .read(&topic(), Cursor::new(1000, 0), 256, now)
            .unwrap();
        assert_eq!(seqs(&same), (1..=10).collect::<Vec<_>>());
        assert!(same.full);
        // Inside: the rest, still "more may follow".
        let inside = cache
            .read(&topic(), Cursor::new(1000, 4), 256, now)
            .unwrap();
        assert_eq!(seqs(&inside), (5..=10).collect::<Vec<_>>());
        assert!(inside.full && inside.lost.is_none());
        // A smaller limit cuts the run and says more follows.
        let cut = cache.read(&topic(), Cursor::new(1000, 4), 3, now).unwrap();
        assert_eq!((seqs(&cut), cut.full), (vec![5, 6, 7], true));
        // Its last event, or a cursor it does not hold: a real read is needed.
        assert!(
            cache
                .read(&topic(), Cursor::new(1000, 10), 256, now)
                .is_none()
        );
        assert!(
            cache
                .read(&topic(), Cursor::new(999, 5), 256, now)
                .is_none()
        );
        assert!(cache.holds(&topic(), Cursor::new(1000, 10), now));
        assert!(
            cache.holds(&topic(), Cursor::new(1000, 0), now),
            "the page's own start"
        );
        assert!(!cache.holds(&topic(), Cursor::new(1000, 11), now));
        // A page that was not full says so for what it serves.
        cache.insert(&topic(), Cursor::new(1000, 10), page(11, 12, false), now);
        let tail = cache
            .read(&topic(), Cursor::new(1000, 11), 256, now)
            .unwrap();
        assert_eq!((seqs(&tail), tail.full), (vec![12], false));
    }

    #[test]
    fn bounded_by_time_and_bytes() {
        let now = Instant::now();
        let mut cache = PageCache::default();
        cache.insert(&topic(), Cursor::new(1000, 0), page(1, 10, true), now);
        cache.insert(
            &topic(),
            Cursor::new(1000, 20),
            Arc::new(Page::default()),
            now,
        );
        assert!(
            cache
                .read(&topic(), Cursor::new(1000, 20), 256, now)
                .is_none()
        );
        let later = now + PAGE_CACHE_TTL + Duration::from_millis(1);
        assert!(
            cache
                .read(&topic(), Cursor::new(1000, 3), 256, later)
                .is_none()
        );
        cache.expire(later);
        assert_eq!(cache.bytes(), 0);
        let one = event(1).size();
        let per_page = 10 * one;
        let pages = PAGE_CACHE_BYTES / per_page + 5;
        for n in 0..pages as u64 {
            cache.insert(&topic(), Cursor::new(2000 + n, 0), page(1, 10, true), now);
        }
        assert!(cache.bytes() <= PAGE_CACHE_BYTES, "{}", cache.bytes());
        // The oldest went first.
        assert!(
            cache
                .read(&topic(), Cursor::new(2000, 0), 256, now)
                .is_none()
        );
        let newest = Cursor::new(2000 + pages as u64 - 1, 0);
        assert!(cache.read(&topic(), newest, 256, now).is_some());
    }
}
