//! Delivery accounting: per receiver, what arrived from whom, and in what order.
//!
//! [`SeqTracker`] follows one publisher's sequence at one receiver and tells
//! unique, duplicated and late (reordered) deliveries apart; loss is what the
//! publisher had accepted minus what arrived, computed once the run is over.
//! [`IdSet`] does the same for presence notices, whose "sequence" is the set
//! of user ids that should announce themselves. Neither allocates on the
//! common path: the tracker only grows when a gap opens.

use std::ops::Range;

use serde::{Deserialize, Serialize};

/// How one delivery fits the publisher's sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// The next expected number, or a later one (leaving a gap).
    Fresh,
    /// A number inside an earlier gap: delivered, but out of order.
    Late,
    /// A number that was already delivered.
    Duplicate,
}

/// One publisher's sequence as seen by one receiver.
#[derive(Debug, Clone, Default)]
pub struct SeqTracker {
    next: u64,
    unique: u64,
    duplicates: u64,
    reordered: u64,
    /// Missing numbers below `next`, as sorted, disjoint, non-empty ranges.
    gaps: Vec<Range<u64>>,
}

impl SeqTracker {
    /// Records the arrival of `seq` and classifies it.
    pub fn observe(&mut self, seq: u64) -> Arrival {
        if seq >= self.next {
            if seq > self.next {
                self.gaps.push(self.next..seq);
            }
            self.next = seq + 1;
            self.unique += 1;
            return Arrival::Fresh;
        }
        // Gaps are sorted by start; find the one that could hold `seq`.
        let index = self.gaps.partition_point(|gap| gap.end <= seq);
        match self.gaps.get_mut(index) {
            Some(gap) if gap.start <= seq => {
                let tail = seq + 1..gap.end;
                gap.end = seq;
                match (gap.is_empty(), tail.is_empty()) {
                    (true, true) => {
                        self.gaps.remove(index);
                    }
                    (true, false) => *gap = tail,
                    (false, true) => {}
                    (false, false) => self.gaps.insert(index + 1, tail),
                }
                self.unique += 1;
                self.reordered += 1;
                Arrival::Late
            }
            _ => {
                self.duplicates += 1;
                Arrival::Duplicate
            }
        }
    }

    /// Distinct sequence numbers delivered.
    pub fn unique(&self) -> u64 {
        self.unique
    }

    /// Tallies this tracker against `expected` messages from its publisher.
    pub fn tally(&self, expected: u64) -> Tally {
        Tally {
            expected,
            unique: self.unique,
            lost: expected.saturating_sub(self.unique),
            duplicated: self.duplicates,
            reordered: self.reordered,
            // More distinct numbers than the publisher says it had accepted.
            unexpected: self.unique.saturating_sub(expected),
        }
    }
}

/// A set of user ids in `range`, as a bitmap: which members have announced
/// themselves (`user_joined`) or gone (`user_left`) to one receiver.
#[derive(Debug, Clone)]
pub struct IdSet {
    range: Range<u32>,
    bits: Vec<u64>,
    duplicates: u64,
    outside: u64,
}

impl IdSet {
    /// An empty set that accepts ids in `range`.
    pub fn new(range: Range<u32>) -> Self {
        let words = (range.len()).div_ceil(64);
        Self { range, bits: vec![0; words], duplicates: 0, outside: 0 }
    }

    /// Adds `id`; `true` when it was not there yet. Ids outside the range
    /// and repeats are counted, not stored.
    pub fn insert(&mut self, id: u32) -> bool {
        if !self.range.contains(&id) {
            self.outside += 1;
            return false;
        }
        let offset = (id - self.range.start) as usize;
        let (word, bit) = (offset / 64, 1u64 << (offset % 64));
        if self.bits[word] & bit != 0 {
            self.duplicates += 1;
            return false;
        }
        self.bits[word] |= bit;
        true
    }

    /// Whether `id` is present.
    pub fn contains(&self, id: u32) -> bool {
        if !self.range.contains(&id) {
            return false;
        }
        let offset = (id - self.range.start) as usize;
        self.bits[offset / 64] & (1u64 << (offset % 64)) != 0
    }

    /// Whether `id` is in the accepted range.
    pub fn accepts(&self, id: u32) -> bool {
        self.range.contains(&id)
    }

    /// How many distinct ids are present.
    pub fn len(&self) -> u64 {
        self.bits.iter().map(|word| u64::from(word.count_ones())).sum()
    }

    /// Whether no id is present.
    pub fn is_empty(&self) -> bool {
        self.bits.iter().all(|word| *word == 0)
    }

    /// Repeated ids seen.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// Ids seen outside the accepted range.
    pub fn outside(&self) -> u64 {
        self.outside
    }
}

/// Expected against delivered, summed over receivers and publishers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// Deliveries that should have happened.
    pub expected: u64,
    /// Distinct deliveries that did.
    pub unique: u64,
    /// Expected deliveries that never arrived.
    pub lost: u64,
    /// Deliveries of something already delivered.
    pub duplicated: u64,
    /// Deliveries that arrived after a later one from the same sender.
    pub reordered: u64,
    /// Distinct deliveries beyond what was expected.
    pub unexpected: u64,
}

impl Tally {
    /// Adds another tally into this one.
    pub fn add(&mut self, other: &Tally) {
        self.expected += other.expected;
        self.unique += other.unique;
        self.lost += other.lost;
        self.duplicated += other.duplicated;
        self.reordered += other.reordered;
        self.unexpected += other.unexpected;
    }

    /// A tally from plain counts, for notices counted without identities.
    pub fn from_counts(expected: u64, unique: u64, duplicated: u64) -> Self {
        Self {
            expected,
            unique,
            lost: expected.saturating_sub(unique),
            duplicated,
            reordered: 0,
            unexpected: unique.saturating_sub(expected),
        }
    }

    /// Whether everything expected arrived exactly once.
    pub fn is_clean(&self) -> bool {
        self.lost == 0 && self.duplicated == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_sequence_is_all_fresh() {
        let mut tracker = SeqTracker::default();
        for seq in 0..100 {
            assert_eq!(tracker.observe(seq), Arrival::Fresh);
        }
        assert_eq!(tracker.tally(100), Tally { expected: 100, unique: 100, ..Tally::default() });
    }

    #[test]
    fn gap_counts_as_lost_until_filled_late() {
        let mut tracker = SeqTracker::default();
        for seq in [0, 1, 5, 6] {
            assert_eq!(tracker.observe(seq), Arrival::Fresh);
        }
        let tally = tracker.tally(7);
        assert_eq!((tally.unique, tally.lost), (4, 3));
        // Fill the middle, then both ends of the gap 2..5.
        assert_eq!(tracker.observe(3), Arrival::Late);
        assert_eq!(tracker.observe(2), Arrival::Late);
        assert_eq!(tracker.observe(4), Arrival::Late);
        assert!(tracker.gaps.is_empty());
        assert_eq!(tracker.observe(3), Arrival::Duplicate);
        let tally = tracker.tally(7);
        assert_eq!(
            tally,
            Tally { expected: 7, unique: 7, lost: 0, duplicated: 1, reordered: 3, unexpected: 0 }
        );
    }

    #[test]
    fn duplicates_and_several_gaps() {
        let mut tracker = SeqTracker::default();
        for seq in [0, 0, 2, 4, 9, 4, 1, 8, 3] {
            tracker.observe(seq);
        }
        assert_eq!(tracker.gaps, vec![5..8]);
        let tally = tracker.tally(10);
        assert_eq!(
            tally,
            Tally { expected: 10, unique: 7, lost: 3, duplicated: 2, reordered: 3, unexpected: 0 }
        );
        // Fewer accepted than delivered: reported, never negative loss.
        assert_eq!(tracker.tally(5).unexpected, 2);
        assert_eq!(tracker.tally(5).lost, 0);
    }

    #[test]
    fn id_set_counts_repeats_and_strangers() {
        let mut set = IdSet::new(100..230);
        assert!(set.insert(100));
        assert!(set.insert(229));
        assert!(!set.insert(229));
        assert!(!set.insert(230));
        assert!(!set.insert(5));
        assert_eq!((set.len(), set.duplicates(), set.outside()), (2, 1, 2));
        assert!(!set.is_empty());
        assert!(IdSet::new(0..0).is_empty());
    }

    #[test]
    fn tallies_add_up() {
        let mut total = Tally::default();
        total.add(&Tally::from_counts(10, 9, 1));
        total.add(&Tally::from_counts(5, 6, 0));
        assert_eq!(
            total,
            Tally { expected: 15, unique: 15, lost: 1, duplicated: 1, reordered: 0, unexpected: 1 }
        );
        assert!(!total.is_clean());
    }
}
