//! The reorder buffer of an inbound stream (consumer spec §9.3, agent spec §9.7 step 5): items
//! come out in sequence order, duplicates are dropped, a gap is waited for at most `timeout`
//! (one timer, measured from the first gap), and `stream_end` completes the stream once everything
//! below it was delivered or timed out. Pure logic: time is passed in.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use super::frames::Item;

/// How many delivered seqs arrival-order mode remembers for dedup.
const ARRIVAL_DEDUP: usize = 4096;

/// Reorder state of one stream.
#[derive(Debug)]
pub struct Reorder {
    expected: u64,
    buffer: BTreeMap<u64, Item>,
    end_seq: Option<u64>,
    deadline: Option<Instant>,
    /// The expected seq when the gap timer started: once it is delivered, that gap is filled and
    /// a remaining gap gets a fresh timer (otherwise overlapping short gaps could expire a timer
    /// started for an older gap and skip data that is merely late by milliseconds).
    deadline_for: u64,
    timeout: Duration,
    done: bool,
    seen: HashSet<u64>,
    seen_order: VecDeque<u64>,
    skipped: u64,
}

impl Reorder {
    /// `first_seq` is 0 for bytes streams and 1 for events streams; `timeout` zero means
    /// arrival order (no waiting, end at once on `stream_end`).
    pub fn new(first_seq: u64, timeout: Duration) -> Self {
        Reorder {
            expected: first_seq,
            buffer: BTreeMap::new(),
            end_seq: None,
            deadline: None,
            deadline_for: first_seq,
            timeout,
            done: false,
            seen: HashSet::new(),
            seen_order: VecDeque::new(),
            skipped: 0,
        }
    }

    /// True once the stream is complete.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// When [`Reorder::on_timeout`] should be called, if a gap is being waited for.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Sequence numbers given up on so far.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    fn arrival_mode(&self) -> bool {
        self.timeout.is_zero()
    }

    /// Offer one item; returns what can be delivered now, in order.
    pub fn push(&mut self, item: Item, now: Instant) -> Vec<Item> {
        if self.done {
            return Vec::new();
        }
        let seq = item.seq();
        if self.arrival_mode() {
            if !self.seen.insert(seq) {
                return Vec::new();
            }
            self.seen_order.push_back(seq);
            if self.seen_order.len() > ARRIVAL_DEDUP {
                if let Some(old) = self.seen_order.pop_front() {
                    self.seen.remove(&old);
                }
            }
            return vec![item];
        }
        if seq < self.expected || self.end_seq.is_some_and(|e| seq >= e) || self.buffer.contains_key(&seq) {
            return Vec::new();
        }
        self.buffer.insert(seq, item);
        let out = self.drain();
        self.after_change(now);
        out
    }

    /// `stream_end` with its seq. Returns what can be delivered now.
    pub fn end(&mut self, seq: Option<u64>, now: Instant) -> Vec<Item> {
        if self.done {
            return Vec::new();
        }
        if self.arrival_mode() {
            self.done = true;
            return Vec::new();
        }
        let Some(seq) = seq else { return Vec::new() };
        self.end_seq = Some(self.end_seq.map_or(seq, |e| e.min(seq)));
        let end = self.end_seq.unwrap_or(seq);
        self.buffer.retain(|s, _| *s < end);
        let out = self.drain();
        self.after_change(now);
        out
    }

    /// The gap timer fired: skip to the next buffered item (or to the end). Returns what can be
    /// delivered now.
    pub fn on_timeout(&mut self, now: Instant) -> Vec<Item> {
        match self.deadline {
            Some(d) if now >= d => {}
            _ => return Vec::new(),
        }
        self.deadline = None;
        if let Some((&first, _)) = self.buffer.iter().next() {
            self.skipped += first - self.expected;
            self.expected = first;
        } else if let Some(end) = self.end_seq {
            self.skipped += end.saturating_sub(self.expected);
            self.expected = end;
        }
        let out = self.drain();
        self.after_change(now);
        out
    }

    /// Local end (reader closed): nothing more will be delivered.
    pub fn close(&mut self) {
        self.done = true;
        self.buffer.clear();
        self.deadline = None;
    }

    fn drain(&mut self) -> Vec<Item> {
        let mut out = Vec::new();
        while let Some(item) = self.buffer.remove(&self.expected) {
            out.push(item);
            self.expected += 1;
        }
        out
    }

    fn after_change(&mut self, now: Instant) {
        if self.end_seq.is_some_and(|e| self.expected >= e) {
            self.done = true;
            self.deadline = None;
            self.buffer.clear();
            return;
        }
        let gap = !self.buffer.is_empty() || self.end_seq.is_some();
        if gap {
            if self.deadline.is_none() || self.deadline_for != self.expected {
                self.deadline = Some(now + self.timeout);
                self.deadline_for = self.expected;
            }
        } else {
            self.deadline = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(seq: u64) -> Item {
        Item::Events {
            seq,
            events: vec![json!(seq)],
        }
    }

    fn seqs(items: &[Item]) -> Vec<u64> {
        items.iter().map(Item::seq).collect()
    }

    #[test]
    fn in_order_passes_through() {
        let mut r = Reorder::new(1, Duration::from_millis(750));
        let t = Instant::now();
        assert_eq!(seqs(&r.push(ev(1), t)), vec![1]);
        assert_eq!(seqs(&r.push(ev(2), t)), vec![2]);
        assert!(r.deadline().is_none());
    }

    // STRM-12: out-of-order items come in seq order, duplicates dropped
    #[test]
    fn out_of_order_is_reordered_and_duplicates_dropped() {
        let mut r = Reorder::new(0, Duration::from_millis(750));
        let t = Instant::now();
        assert!(r.push(ev(2), t).is_empty());
        assert!(r.push(ev(1), t).is_empty());
        assert!(r.push(ev(2), t).is_empty(), "duplicate of a buffered seq");
        assert_eq!(seqs(&r.push(ev(0), t)), vec![0, 1, 2]);
        assert!(r.push(ev(1), t).is_empty(), "duplicate of a delivered seq");
        assert!(r.deadline().is_none());
    }

    // STRM-12: a gap is skipped after the reorder timeout
    #[test]
    fn a_gap_is_skipped_after_the_timeout_measured_from_the_first_gap() {
        let mut r = Reorder::new(1, Duration::from_millis(100));
        let t = Instant::now();
        assert!(r.push(ev(3), t).is_empty());
        let d = r.deadline().expect("gap timer");
        assert!(r.push(ev(4), t + Duration::from_millis(50)).is_empty());
        assert_eq!(r.deadline(), Some(d), "later arrivals do not restart the timer");
        assert!(r.on_timeout(t + Duration::from_millis(99)).is_empty(), "too early");
        assert_eq!(seqs(&r.on_timeout(d)), vec![3, 4]);
        assert_eq!(r.skipped(), 2);
        assert!(r.push(ev(2), d).is_empty(), "late arrival after the skip is dropped");
    }

    #[test]
    fn a_filled_gap_gives_the_next_gap_a_fresh_timer() {
        let mut r = Reorder::new(0, Duration::from_millis(100));
        let t = Instant::now();
        r.push(ev(1), t); // gap at 0
        let first = r.deadline().expect("timer");
        r.push(ev(3), t + Duration::from_millis(90)); // a second gap (2) opens
        assert_eq!(seqs(&r.push(ev(0), t + Duration::from_millis(95))), vec![0, 1]);
        let second = r.deadline().expect("timer for the gap at 2");
        assert!(second > first, "the gap at 2 waits its own full timeout");
        assert!(
            r.on_timeout(first + Duration::from_millis(1)).is_empty(),
            "2 is not skipped 6 ms after it went missing"
        );
        assert_eq!(seqs(&r.push(ev(2), t + Duration::from_millis(120))), vec![2, 3]);
    }

    // STRM-12: stream_end(seq N) completes once everything below N was delivered or timed out
    #[test]
    fn end_completes_after_everything_below_it() {
        let mut r = Reorder::new(0, Duration::from_millis(100));
        let t = Instant::now();
        r.push(ev(0), t);
        assert!(r.end(Some(3), t).is_empty());
        assert!(!r.is_done());
        assert!(r.push(ev(5), t).is_empty(), "beyond the end");
        assert!(r.push(ev(2), t).is_empty());
        assert_eq!(seqs(&r.push(ev(1), t)), vec![1, 2]);
        assert!(r.is_done());
        let mut r = Reorder::new(0, Duration::from_millis(100));
        r.push(ev(0), t);
        r.end(Some(2), t);
        let d = r.deadline().expect("tail gap timer");
        assert!(r.on_timeout(d).is_empty());
        assert!(r.is_done(), "a tail gap times out to the end");
    }

    // STRM-12: a stream_end without a numeric seq is ignored
    #[test]
    fn end_without_seq_is_ignored_when_reordering() {
        let mut r = Reorder::new(0, Duration::from_millis(100));
        let t = Instant::now();
        r.end(None, t);
        assert!(!r.is_done());
    }

    // STRM-12: reorderTimeoutMs 0 is arrival order
    #[test]
    fn zero_timeout_is_arrival_order_with_dedup() {
        let mut r = Reorder::new(0, Duration::ZERO);
        let t = Instant::now();
        assert_eq!(seqs(&r.push(ev(2), t)), vec![2]);
        assert_eq!(seqs(&r.push(ev(0), t)), vec![0]);
        assert!(r.push(ev(2), t).is_empty());
        r.end(None, t);
        assert!(r.is_done());
    }
}
