//! Admission: whether a submitted run starts now, waits in its job's wait
//! list, replaces a waiting run, or is refused; and which waiting runs start
//! when room frees up. Pure: the engine keeps the runs and asks.
//!
//! Rules (DESIGN §3): when a job's `concurrency` is full (counted per
//! `concurrency_key` when it has one), a new run waits. `append` adds it
//! while the wait list has room and refuses it when full; `replace`, when
//! the list is full, cancels the newest waiting run and puts the new one in
//! its place, so the system converges on the latest request; `reject` keeps
//! no wait list. Waiting runs start highest priority first, then first come
//! first served. A run scheduled for later takes no room until it is due.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use jiff::Timestamp;
use minijinja::Value;

use crate::model::{Job, QueuePolicy, QueueStrategy};
use crate::template::{self, Flavor, TemplateError};

/// The key that splits a job's runs into lanes: its `concurrency_key`
/// rendered with the run's params, or `None` (one lane for the job).
pub fn concurrency_key(
    job: &Job,
    params: &BTreeMap<String, String>,
) -> Result<Option<String>, TemplateError> {
    let Some(source) = &job.concurrency_key else {
        return Ok(None);
    };
    let ctx = Value::from_pairs([
        (
            "params",
            Value::from_pairs(params.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
        ),
        ("job", Value::from_pairs([("name", job.name.as_str())])),
    ]);
    template::render(Flavor::Text, source, &ctx).map(Some)
}

/// A run that has not started: waiting for room, or for its time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waiting {
    pub id: String,
    pub priority: i32,
    /// Submission order.
    pub seq: i64,
    pub scheduled_at: Option<Timestamp>,
}

/// Start order: highest priority first, then first submitted.
type Rank = (Reverse<i32>, i64, String);

fn rank(w: &Waiting) -> Rank {
    (Reverse(w.priority), w.seq, w.id.clone())
}

/// The runs of one job and one concurrency key: how many run, and the wait
/// list, indexed so that admission costs the same with a hundred thousand
/// waiting runs as with one.
#[derive(Clone, Debug, Default)]
pub struct Lane {
    pub running: usize,
    runs: HashMap<String, Waiting>,
    /// Due runs in start order.
    due: BTreeSet<Rank>,
    /// Due runs in submission order (the newest is the one `replace` cancels).
    due_by_seq: BTreeSet<(i64, String)>,
    /// Runs scheduled for later, by time.
    later: BTreeSet<(Timestamp, String)>,
}

impl Lane {
    pub fn with_running(running: usize) -> Lane {
        Lane {
            running,
            ..Lane::default()
        }
    }

    /// Every waiting run, due or not.
    pub fn waiting(&self) -> usize {
        self.runs.len()
    }

    pub fn contains(&self, id: &str) -> bool {
        self.runs.contains_key(id)
    }

    pub fn push(&mut self, w: Waiting) {
        self.remove(&w.id);
        match w.scheduled_at {
            Some(at) => {
                self.later.insert((at, w.id.clone()));
            }
            None => self.index_due(&w),
        }
        self.runs.insert(w.id.clone(), w);
    }

    pub fn remove(&mut self, id: &str) -> Option<Waiting> {
        let w = self.runs.remove(id)?;
        self.due.remove(&rank(&w));
        self.due_by_seq.remove(&(w.seq, w.id.clone()));
        if let Some(at) = w.scheduled_at {
            self.later.remove(&(at, w.id.clone()));
        }
        Some(w)
    }

    /// When the next run scheduled for later comes due.
    pub fn next_due(&self) -> Option<Timestamp> {
        self.later.first().map(|(at, _)| *at)
    }

    fn index_due(&mut self, w: &Waiting) {
        self.due.insert(rank(w));
        self.due_by_seq.insert((w.seq, w.id.clone()));
    }

    /// Moves the runs whose time has come among the due ones.
    fn promote(&mut self, now: Timestamp) {
        while let Some((at, _)) = self.later.first() {
            if *at > now {
                break;
            }
            let Some((_, id)) = self.later.pop_first() else {
                break;
            };
            if let Some(w) = self.runs.get(&id).cloned() {
                self.index_due(&w);
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    Start,
    /// Waits in the wait list (or for its scheduled time).
    Wait,
    /// Waits in the place of `cancel`, which is cancelled with reason `replaced`.
    Replace {
        cancel: String,
    },
    /// Refused (HTTP 429): nothing is created.
    Reject {
        reason: String,
    },
}

/// The limits that apply to one job.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    pub concurrency: Option<u32>,
    pub queue: QueuePolicy,
}

impl Limits {
    pub fn of(job: &Job) -> Limits {
        Limits {
            concurrency: job.concurrency,
            queue: job.queue,
        }
    }

    fn full(&self, running: usize) -> bool {
        self.concurrency.is_some_and(|c| running >= c as usize)
    }
}

/// Decides a new submission against its lane. The caller records the
/// outcome (`running += 1`, [`Lane::push`], [`Lane::remove`]).
pub fn admit(
    limits: Limits,
    lane: &mut Lane,
    scheduled_at: Option<Timestamp>,
    now: Timestamp,
) -> Admission {
    if scheduled_at.is_some_and(|at| at > now) {
        return Admission::Wait;
    }
    lane.promote(now);
    let waiting_due = lane.due.len();
    // Runs already waiting go first: a newcomer may not overtake them even if
    // a slot is free this instant (the engine starts them on its next step).
    if !limits.full(lane.running + waiting_due) {
        return Admission::Start;
    }
    let limit = match limits.queue.strategy {
        QueueStrategy::Reject => 0,
        QueueStrategy::Append | QueueStrategy::Replace => {
            limits.queue.limit.map_or(usize::MAX, |l| l as usize)
        }
    };
    if waiting_due < limit {
        return Admission::Wait;
    }
    match limits.queue.strategy {
        QueueStrategy::Replace => match lane.due_by_seq.last() {
            Some((_, newest)) => Admission::Replace {
                cancel: newest.clone(),
            },
            None => Admission::Reject {
                reason: "concurrency is full and the wait list holds no run to replace".into(),
            },
        },
        QueueStrategy::Reject => Admission::Reject {
            reason: format!(
                "concurrency is full ({} running) and the job keeps no wait list (queue strategy reject)",
                lane.running
            ),
        },
        QueueStrategy::Append => Admission::Reject {
            reason: format!(
                "concurrency is full ({} running) and the wait list is full ({waiting_due} waiting)",
                lane.running
            ),
        },
    }
}

/// Takes the waiting runs that may start now out of the wait list, in the
/// order to start them, and counts them as running.
pub fn take_startable(limits: Limits, lane: &mut Lane, now: Timestamp) -> Vec<Waiting> {
    lane.promote(now);
    let room = match limits.concurrency {
        Some(c) => (c as usize).saturating_sub(lane.running),
        None => usize::MAX,
    };
    let ids: Vec<String> = lane
        .due
        .iter()
        .take(room)
        .map(|(_, _, id)| id.clone())
        .collect();
    let started: Vec<Waiting> = ids.iter().filter_map(|id| lane.remove(id)).collect();
    lane.running += started.len();
    started
}

/// Why a waiting run has not started, for `ganger status`.
pub fn wait_reason(limits: Limits, lane: &Lane, id: &str, now: Timestamp) -> Option<String> {
    let me = lane.runs.get(id)?;
    if let Some(at) = me.scheduled_at.filter(|at| *at > now) {
        return Some(format!("scheduled for {at}"));
    }
    let mine = rank(me);
    let ahead = lane.due.range(..mine.clone()).count()
        + lane
            .later
            .iter()
            .take_while(|(at, _)| *at <= now)
            .filter_map(|(_, other)| lane.runs.get(other))
            .filter(|w| w.id != me.id && rank(w) < mine)
            .count();
    let limit = limits
        .concurrency
        .map_or_else(|| "unlimited".to_owned(), |c| c.to_string());
    Some(match ahead {
        0 => format!("concurrency full ({} of {limit} running)", lane.running),
        n => format!(
            "queued behind {n} run{} (concurrency {limit}, {} running)",
            if n == 1 { "" } else { "s" },
            lane.running
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn concurrency_keys_render_from_params() {
        let file = crate::parse_job_file(
            "t.yml",
            "jobs:\n deploy:\n  concurrency: 1\n  concurrency_key: 'env-{{ params.env }}'\n  params:\n   env: {default: prod}\n  tasks:\n   a: {run: x}\n plain:\n  tasks:\n   a: {run: x}\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let params = BTreeMap::from([("env".to_owned(), "staging".to_owned())]);
        let key = concurrency_key(&file.jobs[0], &params).ok().flatten();
        assert_eq!(key.as_deref(), Some("env-staging"));
        assert_eq!(concurrency_key(&file.jobs[1], &params).ok(), Some(None));
    }

    proptest! {
        /// Random submissions (with priorities) and finishes against one lane:
        /// concurrency and the wait list limit always hold, and runs start
        /// highest priority first, first come first served within one.
        #[test]
        fn lanes_respect_their_limits(
            concurrency in 1u32..4,
            limit in proptest::option::of(0u32..4),
            strategy in prop_oneof![Just(QueueStrategy::Append), Just(QueueStrategy::Replace), Just(QueueStrategy::Reject)],
            ops in proptest::collection::vec(prop_oneof![(0i32..3).prop_map(Some), Just(None)], 1..60),
        ) {
            let l = Limits { concurrency: Some(concurrency), queue: QueuePolicy { limit, strategy } };
            let mut lane = Lane::default();
            let mut mirror: Vec<Waiting> = Vec::new();
            for (seq, op) in ops.into_iter().enumerate() {
                let seq = seq as i64;
                match op {
                    Some(priority) => match admit(l, &mut lane, None, now()) {
                        Admission::Start => lane.running += 1,
                        Admission::Wait => {
                            lane.push(waiting(&seq.to_string(), priority, seq));
                            mirror.push(waiting(&seq.to_string(), priority, seq));
                        }
                        Admission::Replace { cancel } => {
                            let newest = mirror.iter().map(|w| w.seq).max();
                            prop_assert_eq!(Some(cancel.clone()), newest.map(|s| s.to_string()));
                            lane.remove(&cancel);
                            mirror.retain(|w| w.id != cancel);
                            lane.push(waiting(&seq.to_string(), priority, seq));
                            mirror.push(waiting(&seq.to_string(), priority, seq));
                        }
                        Admission::Reject { .. } => {}
                    },
                    None => lane.running = lane.running.saturating_sub(1),
                }
                for w in take_startable(l, &mut lane, now()) {
                    mirror.retain(|o| o.id != w.id);
                    // Nobody left waiting outranks a run that starts.
                    prop_assert!(!mirror.iter().any(|o| (o.priority, -o.seq) > (w.priority, -w.seq)));
                }
                prop_assert_eq!(lane.waiting(), mirror.len());
                prop_assert!(lane.running <= concurrency as usize);
                if lane.running < concurrency as usize {
                    prop_assert!(mirror.is_empty(), "a run waits while there is room");
                }
                let room = match strategy { QueueStrategy::Reject => 0, _ => limit.map_or(usize::MAX, |x| x as usize) };
                prop_assert!(lane.waiting() <= room);
            }
        }
    }

    fn now() -> Timestamp {
        Timestamp::from_second(1_000_000).expect("valid")
    }

    fn waiting(id: &str, priority: i32, seq: i64) -> Waiting {
        Waiting {
            id: id.into(),
            priority,
            seq,
            scheduled_at: None,
        }
    }

    fn lane(running: usize, waiting: Vec<Waiting>) -> Lane {
        let mut lane = Lane::with_running(running);
        for w in waiting {
            lane.push(w);
        }
        lane
    }

    fn ids(started: Vec<Waiting>) -> Vec<String> {
        started.into_iter().map(|w| w.id).collect()
    }

    fn limits(concurrency: u32, limit: Option<u32>, strategy: QueueStrategy) -> Limits {
        Limits {
            concurrency: Some(concurrency),
            queue: QueuePolicy { limit, strategy },
        }
    }

    #[test]
    fn unlimited_jobs_always_start() {
        let mut lane = Lane::with_running(50);
        assert_eq!(
            admit(Limits::default(), &mut lane, None, now()),
            Admission::Start
        );
    }

    #[test]
    fn append_waits_while_there_is_room_then_rejects() {
        let l = limits(1, Some(2), QueueStrategy::Append);
        let mut l0 = Lane::default();
        assert_eq!(admit(l, &mut l0, None, now()), Admission::Start);
        let mut l1 = Lane::with_running(1);
        assert_eq!(admit(l, &mut l1, None, now()), Admission::Wait);
        let mut full = lane(1, vec![waiting("a", 0, 1), waiting("b", 0, 2)]);
        assert!(matches!(
            admit(l, &mut full, None, now()),
            Admission::Reject { .. }
        ));
    }

    #[test]
    fn replace_cancels_the_newest_waiting_run() {
        let l = limits(1, Some(2), QueueStrategy::Replace);
        let mut full = lane(1, vec![waiting("old", 0, 1), waiting("newer", 0, 2)]);
        assert_eq!(
            admit(l, &mut full, None, now()),
            Admission::Replace {
                cancel: "newer".into()
            }
        );
        let no_list = limits(1, Some(0), QueueStrategy::Replace);
        assert!(matches!(
            admit(no_list, &mut Lane::with_running(1), None, now()),
            Admission::Reject { .. }
        ));
    }

    #[test]
    fn reject_keeps_no_wait_list() {
        let l = limits(2, Some(10), QueueStrategy::Reject);
        assert_eq!(
            admit(l, &mut Lane::with_running(1), None, now()),
            Admission::Start
        );
        assert!(matches!(
            admit(l, &mut Lane::with_running(2), None, now()),
            Admission::Reject { .. }
        ));
    }

    #[test]
    fn newcomers_do_not_overtake_waiting_runs() {
        let l = limits(1, None, QueueStrategy::Append);
        let mut waiting_one = lane(0, vec![waiting("first", 0, 1)]);
        assert_eq!(admit(l, &mut waiting_one, None, now()), Admission::Wait);
    }

    #[test]
    fn waiting_runs_start_by_priority_then_fifo() {
        let l = limits(2, None, QueueStrategy::Append);
        let all = vec![
            waiting("a", 0, 1),
            waiting("b", 5, 2),
            waiting("c", 5, 3),
            waiting("d", 0, 4),
        ];
        let mut free = lane(0, all.clone());
        assert_eq!(ids(take_startable(l, &mut free, now())), vec!["b", "c"]);
        assert_eq!(free.running, 2);
        assert_eq!(free.waiting(), 2);
        let mut busy = lane(2, all);
        assert!(take_startable(l, &mut busy, now()).is_empty());
    }

    #[test]
    fn scheduled_runs_wait_for_their_time_and_take_no_room() {
        let later = now()
            .checked_add(jiff::SignedDuration::from_secs(60))
            .expect("valid");
        let l = limits(1, Some(0), QueueStrategy::Append);
        let scheduled = Waiting {
            scheduled_at: Some(later),
            ..waiting("s", 0, 1)
        };
        let mut lane = lane(0, vec![scheduled]);
        assert_eq!(admit(l, &mut lane, Some(later), now()), Admission::Wait);
        assert_eq!(
            admit(l, &mut lane, None, now()),
            Admission::Start,
            "the scheduled run holds no room yet"
        );
        assert_eq!(lane.next_due(), Some(later));
        assert!(
            wait_reason(l, &lane, "s", now())
                .unwrap_or_default()
                .starts_with("scheduled for")
        );
        assert!(take_startable(l, &mut lane, now()).is_empty());
        assert_eq!(ids(take_startable(l, &mut lane, later)), vec!["s"]);
    }

    #[test]
    fn wait_reasons_count_the_runs_ahead() {
        let l = limits(1, None, QueueStrategy::Append);
        let lane = lane(
            1,
            vec![waiting("a", 0, 1), waiting("b", 0, 2), waiting("c", 9, 3)],
        );
        assert_eq!(
            wait_reason(l, &lane, "c", now()).as_deref(),
            Some("concurrency full (1 of 1 running)")
        );
        assert_eq!(
            wait_reason(l, &lane, "b", now()).as_deref(),
            Some("queued behind 2 runs (concurrency 1, 1 running)")
        );
        assert_eq!(wait_reason(l, &lane, "zz", now()), None);
    }

    #[test]
    fn many_waiting_runs_stay_cheap() {
        let l = limits(1, None, QueueStrategy::Append);
        let mut lane = Lane::with_running(1);
        for seq in 0..100_000 {
            assert_eq!(admit(l, &mut lane, None, now()), Admission::Wait);
            lane.push(waiting(&seq.to_string(), 0, seq));
        }
        lane.running = 0;
        assert_eq!(ids(take_startable(l, &mut lane, now())), vec!["0"]);
    }
}
