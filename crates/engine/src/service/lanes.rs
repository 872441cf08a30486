//! Admission lanes: per job and concurrency key, how many runs are running
//! and which wait. The rules are the core's ([`ganger_core::admission`]);
//! this is only their bookkeeping.

use std::collections::{BTreeSet, HashMap, HashSet};

use ganger_core::admission::{self, Admission, Lane, Limits, Waiting};
use jiff::Timestamp;

/// A job's runs that share a concurrency key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct LaneKey {
    pub(crate) job: String,
    pub(crate) key: Option<String>,
}

struct LaneState {
    limits: Limits,
    lane: Lane,
}

#[derive(Default)]
pub(crate) struct Lanes {
    lanes: HashMap<LaneKey, LaneState>,
    /// Where each waiting run waits.
    waiting: HashMap<String, LaneKey>,
    /// Waiting runs scheduled for later, by time: their lane must be looked
    /// at again when one comes due.
    scheduled: BTreeSet<(Timestamp, String)>,
    /// Lanes that may have room for a waiting run.
    dirty: HashSet<LaneKey>,
}

impl Lanes {
    fn lane(&mut self, key: &LaneKey, limits: Limits) -> &mut LaneState {
        let state = self.lanes.entry(key.clone()).or_insert(LaneState {
            limits,
            lane: Lane::default(),
        });
        // The newest definition's limits apply to the whole lane.
        state.limits = limits;
        state
    }

    pub(crate) fn admit(
        &mut self,
        key: &LaneKey,
        limits: Limits,
        scheduled_at: Option<Timestamp>,
        now: Timestamp,
    ) -> Admission {
        admission::admit(limits, &mut self.lane(key, limits).lane, scheduled_at, now)
    }

    pub(crate) fn add_running(&mut self, key: &LaneKey, limits: Limits) {
        self.lane(key, limits).lane.running += 1;
    }

    /// A running run ended: its lane may start a waiting one.
    pub(crate) fn finished(&mut self, key: &LaneKey) {
        if let Some(state) = self.lanes.get_mut(key) {
            state.lane.running = state.lane.running.saturating_sub(1);
            self.dirty.insert(key.clone());
        }
    }

    pub(crate) fn add_waiting(&mut self, key: &LaneKey, limits: Limits, waiting: Waiting) {
        if let Some(at) = waiting.scheduled_at {
            self.scheduled.insert((at, waiting.id.clone()));
        }
        self.waiting.insert(waiting.id.clone(), key.clone());
        self.lane(key, limits).lane.push(waiting);
        self.dirty.insert(key.clone());
    }

    /// Takes a run out of its wait list (cancelled, replaced).
    pub(crate) fn remove_waiting(&mut self, id: &str) -> Option<Waiting> {
        let key = self.waiting.remove(id)?;
        let w = self.lanes.get_mut(&key)?.lane.remove(id)?;
        if let Some(at) = w.scheduled_at {
            self.scheduled.remove(&(at, w.id.clone()));
        }
        Some(w)
    }

    pub(crate) fn is_waiting(&self, id: &str) -> bool {
        self.waiting.contains_key(id)
    }

    /// Fixes a waiting run's submission order once the store assigned it.
    pub(crate) fn set_seq(&mut self, id: &str, seq: i64) {
        let Some(key) = self.waiting.get(id).cloned() else {
            return;
        };
        if let Some(state) = self.lanes.get_mut(&key)
            && let Some(mut w) = state.lane.remove(id)
        {
            w.seq = seq;
            state.lane.push(w);
        }
    }

    /// Runs that may start now, lane by lane; they leave the wait list and
    /// count as running.
    pub(crate) fn take_startable(&mut self, now: Timestamp) -> Vec<(LaneKey, Waiting)> {
        while let Some((at, _)) = self.scheduled.first() {
            if *at > now {
                break;
            }
            if let Some((_, id)) = self.scheduled.pop_first()
                && let Some(key) = self.waiting.get(&id)
            {
                self.dirty.insert(key.clone());
            }
        }
        let mut out = Vec::new();
        for key in std::mem::take(&mut self.dirty) {
            let Some(state) = self.lanes.get_mut(&key) else {
                continue;
            };
            for waiting in admission::take_startable(state.limits, &mut state.lane, now) {
                self.waiting.remove(&waiting.id);
                if let Some(at) = waiting.scheduled_at {
                    self.scheduled.remove(&(at, waiting.id.clone()));
                }
                out.push((key.clone(), waiting));
            }
        }
        out
    }

    /// When a scheduled run comes due next.
    pub(crate) fn next_due(&self) -> Option<Timestamp> {
        self.scheduled.first().map(|(at, _)| *at)
    }

    pub(crate) fn wait_reason(&self, id: &str, now: Timestamp) -> Option<String> {
        let key = self.waiting.get(id)?;
        let state = self.lanes.get(key)?;
        admission::wait_reason(state.limits, &state.lane, id, now)
    }
}
