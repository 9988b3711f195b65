//! The emigrations one node owes in one view: the order they were queued in, where each
//! stands (queued, asked, streaming, deferred), and how many slots of each pacing class the
//! asked and streaming ones hold.
//!
//! Every operation costs O(log n) in the emigrations owed (taking the next one to ask also
//! costs O(d) in the destinations): after a split heals a node owes thousands of them and
//! the migrator takes a decision per message, so a scan per decision (what this replaced)
//! was quadratic and held the core for seconds in a debug build. It must never decide what
//! is owed or which class an emigration is in: the migrator does.

use std::collections::{BTreeMap, BTreeSet};

use crate::balance::NodeId;

/// How an emigration is paced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Class {
    /// Nothing to send (the partition holds no record here): no slot on either side.
    Light,
    /// A merge's source (no full copy left): one of `URGENT_EMIGRATIONS_MAX` slots.
    Urgent,
    /// Everything else: one of `migrate-threads` slots.
    Paced,
}

/// Where an owed emigration stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum State {
    /// Waiting for a slot and the destination's consent.
    Queued,
    /// `Start` sent, no answer yet (holds a slot of its class).
    Asked,
    /// Accepted; the server streams it (holds a slot of its class).
    Streaming,
    /// Refused or failed; queued again on the next tick.
    Deferred,
}

/// An owed emigration: (partition, destination).
pub(super) type Key = (u16, NodeId);

#[derive(Clone, Copy, Debug)]
struct Entry {
    /// Its place in the order (queued earlier asks earlier).
    seq: u64,
    state: State,
    /// The class it is waiting in (queued) or holds a slot of (asked, streaming).
    class: Class,
}

#[derive(Default)]
pub(super) struct EmigrationQueue {
    next_seq: u64,
    owed: BTreeMap<Key, Entry>,
    /// The queued ones, per class and destination, in order: (seq, partition).
    waiting: BTreeMap<(Class, NodeId), BTreeSet<(u64, u16)>>,
    deferred: BTreeSet<Key>,
    /// Asked or streaming, per class (indexed like `CLASSES`).
    active: [usize; 3],
}

fn slot(class: Class) -> usize {
    class as usize
}

impl EmigrationQueue {
    /// Owes `key` (queued last, in `class`); nothing if it is owed already.
    pub fn push(&mut self, key: Key, class: Class) {
        if self.owed.contains_key(&key) {
            return;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.owed.insert(
            key,
            Entry {
                seq,
                state: State::Queued,
                class,
            },
        );
        self.wait(key, seq, class);
    }

    fn wait(&mut self, key: Key, seq: u64, class: Class) {
        (self.waiting.entry((class, key.1)).or_default()).insert((seq, key.0));
    }

    fn unwait(&mut self, key: Key, seq: u64, class: Class) {
        let list = (self.waiting.get_mut(&(class, key.1)))
            .expect("a queued emigration waits in its class's list");
        let removed = list.remove(&(seq, key.0));
        debug_assert!(removed);
        if list.is_empty() {
            self.waiting.remove(&(class, key.1));
        }
    }

    /// Moves the queued emigrations of `partition` to `class` (an asked or streaming one keeps
    /// the slot it holds).
    pub fn reclass(&mut self, partition: u16, class: Class) {
        let range = (partition, NodeId(0))..=(partition, NodeId(u64::MAX));
        let moves: Vec<(Key, u64, Class)> = (self.owed.range(range))
            .filter(|(_, e)| e.state == State::Queued && e.class != class)
            .map(|(&k, e)| (k, e.seq, e.class))
            .collect();
        for (key, seq, old) in moves {
            self.unwait(key, seq, old);
            self.wait(key, seq, class);
            self.owed.get_mut(&key).expect("listed above").class = class;
        }
    }

    /// Takes the earliest queued emigration of `class` to a destination not in `refused`, and
    /// marks it asked (it holds a slot of `class` from now on).
    pub fn ask_next(&mut self, class: Class, refused: &BTreeSet<NodeId>) -> Option<Key> {
        let (to, seq, partition) = (self
            .waiting
            .range((class, NodeId(0))..=(class, NodeId(u64::MAX))))
        .filter(|((_, to), _)| !refused.contains(to))
        .filter_map(|(&(_, to), list)| list.first().map(|&(seq, p)| (to, seq, p)))
        .min_by_key(|&(_, seq, _)| seq)?;
        let key = (partition, to);
        self.unwait(key, seq, class);
        let entry = self
            .owed
            .get_mut(&key)
            .expect("a waiting emigration is owed");
        debug_assert_eq!(entry.state, State::Queued);
        entry.state = State::Asked;
        self.active[slot(class)] += 1;
        Some(key)
    }

    pub fn state(&self, key: Key) -> Option<State> {
        self.owed.get(&key).map(|e| e.state)
    }

    /// An asked emigration was accepted: it streams, holding its slot.
    pub fn streaming(&mut self, key: Key) {
        let entry = self
            .owed
            .get_mut(&key)
            .expect("only an asked one is accepted");
        debug_assert_eq!(entry.state, State::Asked);
        entry.state = State::Streaming;
    }

    /// An asked one was refused or a stream failed: its slot is free; it is queued again on
    /// the next [`EmigrationQueue::requeue_deferred`].
    pub fn defer(&mut self, key: Key) {
        let entry = self
            .owed
            .get_mut(&key)
            .expect("only an active one is deferred");
        debug_assert!(matches!(entry.state, State::Asked | State::Streaming));
        entry.state = State::Deferred;
        self.active[slot(entry.class)] -= 1;
        self.deferred.insert(key);
    }

    /// A stream finished: no longer owed.
    pub fn finish(&mut self, key: Key) {
        let entry = self
            .owed
            .remove(&key)
            .expect("only a streaming one finishes");
        debug_assert_eq!(entry.state, State::Streaming);
        self.active[slot(entry.class)] -= 1;
    }

    /// Queues the deferred ones again, each in its place of the order and in the class
    /// `class_of` gives its partition now.
    pub fn requeue_deferred(&mut self, class_of: impl Fn(u16) -> Class) {
        for key in std::mem::take(&mut self.deferred) {
            let class = class_of(key.0);
            let entry = self.owed.get_mut(&key).expect("a deferred one is owed");
            debug_assert_eq!(entry.state, State::Deferred);
            entry.state = State::Queued;
            entry.class = class;
            let seq = entry.seq;
            self.wait(key, seq, class);
        }
    }

    /// Asked or streaming emigrations holding a slot of `class`.
    pub fn active(&self, class: Class) -> usize {
        self.active[slot(class)]
    }

    /// Emigrations owed, whatever their state.
    pub fn len(&self) -> usize {
        self.owed.len()
    }

    /// The counts kept incrementally match a full recount (tests).
    #[cfg(test)]
    pub fn check(&self) {
        for class in [Class::Light, Class::Urgent, Class::Paced] {
            let active = (self.owed.values())
                .filter(|e| e.class == class && matches!(e.state, State::Asked | State::Streaming))
                .count();
            assert_eq!(self.active(class), active, "{class:?}");
        }
        let waiting: usize = self.waiting.values().map(BTreeSet::len).sum();
        let queued = (self.owed.values())
            .filter(|e| e.state == State::Queued)
            .count();
        assert_eq!(waiting, queued);
        let deferred = (self.owed.values())
            .filter(|e| e.state == State::Deferred)
            .count();
        assert_eq!(self.deferred.len(), deferred);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: NodeId = NodeId(0xA1);
    const B: NodeId = NodeId(0xB2);

    #[test]
    fn asks_in_queue_order_across_destinations_and_skips_refused_ones() {
        let mut q = EmigrationQueue::default();
        q.push((5, B), Class::Paced);
        q.push((3, A), Class::Paced);
        q.push((9, B), Class::Paced);
        q.push((5, B), Class::Paced); // owed already: no second entry
        assert_eq!(q.len(), 3);
        let none = BTreeSet::new();
        assert_eq!(q.ask_next(Class::Paced, &none), Some((5, B)));
        let refused_b = BTreeSet::from([B]);
        assert_eq!(q.ask_next(Class::Paced, &refused_b), Some((3, A)));
        assert_eq!(q.ask_next(Class::Paced, &refused_b), None);
        assert_eq!(q.ask_next(Class::Light, &none), None);
        assert_eq!(q.active(Class::Paced), 2);
        assert_eq!(q.state((9, B)), Some(State::Queued));
        q.check();
    }

    #[test]
    fn slots_are_held_while_asked_or_streaming_and_freed_by_defer_or_finish() {
        let mut q = EmigrationQueue::default();
        let none = BTreeSet::new();
        q.push((1, A), Class::Urgent);
        q.push((2, A), Class::Urgent);
        let first = q.ask_next(Class::Urgent, &none).unwrap();
        let second = q.ask_next(Class::Urgent, &none).unwrap();
        q.streaming(first);
        assert_eq!(q.active(Class::Urgent), 2);
        q.defer(second);
        assert_eq!(q.active(Class::Urgent), 1);
        assert_eq!(
            q.ask_next(Class::Urgent, &none),
            None,
            "deferred until the tick"
        );
        q.finish(first);
        assert_eq!((q.active(Class::Urgent), q.len()), (0, 1));
        // Requeued in the class its partition has now.
        q.requeue_deferred(|_| Class::Light);
        q.check();
        assert_eq!(q.ask_next(Class::Urgent, &none), None);
        assert_eq!(q.ask_next(Class::Light, &none), Some((2, A)));
        q.check();
    }

    #[test]
    fn reclass_moves_only_queued_ones_and_keeps_their_order() {
        let mut q = EmigrationQueue::default();
        let none = BTreeSet::new();
        q.push((7, A), Class::Paced);
        q.push((7, B), Class::Paced);
        q.push((4, A), Class::Light);
        assert_eq!(q.ask_next(Class::Paced, &none), Some((7, A)));
        q.reclass(7, Class::Light);
        q.check();
        // (7, A) keeps its paced slot; (7, B), queued before (4, A), is asked first.
        assert_eq!(q.active(Class::Paced), 1);
        assert_eq!(q.ask_next(Class::Light, &none), Some((7, B)));
        assert_eq!(q.ask_next(Class::Light, &none), Some((4, A)));
        q.check();
    }
}
