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

use std::collections::BTreeMap;

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

/// The runs of one job and one concurrency key.
#[derive(Clone, Debug, Default)]
pub struct Lane {
    pub running: usize,
    pub waiting: Vec<Waiting>,
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

fn due(w: &Waiting, now: Timestamp) -> bool {
    w.scheduled_at.is_none_or(|at| at <= now)
}

/// Decides a new submission against its lane.
pub fn admit(
    limits: Limits,
    lane: &Lane,
    scheduled_at: Option<Timestamp>,
    now: Timestamp,
) -> Admission {
    if scheduled_at.is_some_and(|at| at > now) {
        return Admission::Wait;
    }
    let waiting_due: Vec<&Waiting> = lane.waiting.iter().filter(|w| due(w, now)).collect();
    // Runs already waiting go first: a newcomer may not overtake them even if
    // a slot is free this instant (the engine starts them on its next step).
    if !limits.full(lane.running + waiting_due.len()) {
        return Admission::Start;
    }
    let limit = match limits.queue.strategy {
        QueueStrategy::Reject => 0,
        QueueStrategy::Append | QueueStrategy::Replace => {
            limits.queue.limit.map_or(usize::MAX, |l| l as usize)
        }
    };
    if waiting_due.len() < limit {
        return Admission::Wait;
    }
    match limits.queue.strategy {
        QueueStrategy::Replace => match waiting_due.iter().max_by_key(|w| w.seq) {
            Some(newest) => Admission::Replace {
                cancel: newest.id.clone(),
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
                "concurrency is full ({} running) and the wait list is full ({} waiting)",
                lane.running,
                waiting_due.len()
            ),
        },
    }
}

/// The waiting runs of a lane that may start now, in the order to start them.
pub fn to_start(limits: Limits, lane: &Lane, now: Timestamp) -> Vec<String> {
    let room = match limits.concurrency {
        Some(c) => (c as usize).saturating_sub(lane.running),
        None => usize::MAX,
    };
    let mut ready: Vec<&Waiting> = lane.waiting.iter().filter(|w| due(w, now)).collect();
    ready.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.seq.cmp(&b.seq)));
    ready.into_iter().take(room).map(|w| w.id.clone()).collect()
}

/// Why a waiting run has not started, for `ganger status`.
pub fn wait_reason(limits: Limits, lane: &Lane, id: &str, now: Timestamp) -> Option<String> {
    let me = lane.waiting.iter().find(|w| w.id == id)?;
    if let Some(at) = me.scheduled_at.filter(|at| *at > now) {
        return Some(format!("scheduled for {at}"));
    }
    let ahead = lane
        .waiting
        .iter()
        .filter(|w| {
            due(w, now)
                && w.id != id
                && (w.priority > me.priority || (w.priority == me.priority && w.seq < me.seq))
        })
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
            let mut started: Vec<(i32, i64)> = Vec::new();
            for (seq, op) in ops.into_iter().enumerate() {
                let seq = seq as i64;
                match op {
                    Some(priority) => match admit(l, &lane, None, now()) {
                        Admission::Start => {
                            lane.running += 1;
                            started.push((priority, seq));
                        }
                        Admission::Wait => lane.waiting.push(waiting(&seq.to_string(), priority, seq)),
                        Admission::Replace { cancel } => {
                            lane.waiting.retain(|w| w.id != cancel);
                            lane.waiting.push(waiting(&seq.to_string(), priority, seq));
                        }
                        Admission::Reject { .. } => {}
                    },
                    None => lane.running = lane.running.saturating_sub(1),
                }
                let before: Vec<Waiting> = lane.waiting.clone();
                for id in to_start(l, &lane, now()) {
                    let pos = lane.waiting.iter().position(|w| w.id == id).expect("starts a waiting run");
                    let w = lane.waiting.remove(pos);
                    // Nobody left waiting outranks a run that starts.
                    prop_assert!(!lane.waiting.iter().any(|o| (o.priority, -o.seq) > (w.priority, -w.seq)));
                    lane.running += 1;
                }
                prop_assert!(lane.running <= concurrency as usize);
                if lane.running < concurrency as usize {
                    prop_assert!(lane.waiting.is_empty(), "a run waits while there is room: {before:?}");
                }
                let room = match strategy { QueueStrategy::Reject => 0, _ => limit.map_or(usize::MAX, |x| x as usize) };
                prop_assert!(lane.waiting.len() <= room);
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

    fn limits(concurrency: u32, limit: Option<u32>, strategy: QueueStrategy) -> Limits {
        Limits {
            concurrency: Some(concurrency),
            queue: QueuePolicy { limit, strategy },
        }
    }

    #[test]
    fn unlimited_jobs_always_start() {
        let lane = Lane {
            running: 50,
            waiting: Vec::new(),
        };
        assert_eq!(
            admit(Limits::default(), &lane, None, now()),
            Admission::Start
        );
    }

    #[test]
    fn append_waits_while_there_is_room_then_rejects() {
        let l = limits(1, Some(2), QueueStrategy::Append);
        let mut lane = Lane {
            running: 0,
            waiting: Vec::new(),
        };
        assert_eq!(admit(l, &lane, None, now()), Admission::Start);
        lane.running = 1;
        assert_eq!(admit(l, &lane, None, now()), Admission::Wait);
        lane.waiting = vec![waiting("a", 0, 1), waiting("b", 0, 2)];
        assert!(matches!(
            admit(l, &lane, None, now()),
            Admission::Reject { .. }
        ));
    }

    #[test]
    fn replace_cancels_the_newest_waiting_run() {
        let l = limits(1, Some(2), QueueStrategy::Replace);
        let lane = Lane {
            running: 1,
            waiting: vec![waiting("old", 0, 1), waiting("newer", 0, 2)],
        };
        assert_eq!(
            admit(l, &lane, None, now()),
            Admission::Replace {
                cancel: "newer".into()
            }
        );
        let no_list = limits(1, Some(0), QueueStrategy::Replace);
        assert!(matches!(
            admit(
                no_list,
                &Lane {
                    running: 1,
                    waiting: Vec::new()
                },
                None,
                now()
            ),
            Admission::Reject { .. }
        ));
    }

    #[test]
    fn reject_keeps_no_wait_list() {
        let l = limits(2, Some(10), QueueStrategy::Reject);
        assert_eq!(
            admit(
                l,
                &Lane {
                    running: 1,
                    waiting: Vec::new()
                },
                None,
                now()
            ),
            Admission::Start
        );
        assert!(matches!(
            admit(
                l,
                &Lane {
                    running: 2,
                    waiting: Vec::new()
                },
                None,
                now()
            ),
            Admission::Reject { .. }
        ));
    }

    #[test]
    fn newcomers_do_not_overtake_waiting_runs() {
        let l = limits(1, None, QueueStrategy::Append);
        let lane = Lane {
            running: 0,
            waiting: vec![waiting("first", 0, 1)],
        };
        assert_eq!(admit(l, &lane, None, now()), Admission::Wait);
    }

    #[test]
    fn waiting_runs_start_by_priority_then_fifo() {
        let l = limits(2, None, QueueStrategy::Append);
        let lane = Lane {
            running: 0,
            waiting: vec![
                waiting("a", 0, 1),
                waiting("b", 5, 2),
                waiting("c", 5, 3),
                waiting("d", 0, 4),
            ],
        };
        assert_eq!(to_start(l, &lane, now()), vec!["b", "c"]);
        let lane = Lane { running: 2, ..lane };
        assert!(to_start(l, &lane, now()).is_empty());
    }

    #[test]
    fn scheduled_runs_wait_for_their_time_and_take_no_room() {
        let later = now()
            .checked_add(jiff::SignedDuration::from_secs(60))
            .expect("valid");
        let l = limits(1, Some(0), QueueStrategy::Append);
        let lane = Lane {
            running: 0,
            waiting: vec![Waiting {
                scheduled_at: Some(later),
                ..waiting("s", 0, 1)
            }],
        };
        assert_eq!(admit(l, &lane, Some(later), now()), Admission::Wait);
        assert_eq!(
            admit(l, &lane, None, now()),
            Admission::Start,
            "the scheduled run holds no room yet"
        );
        assert!(to_start(l, &lane, now()).is_empty());
        assert_eq!(to_start(l, &lane, later), vec!["s"]);
        assert!(
            wait_reason(l, &lane, "s", now())
                .unwrap_or_default()
                .starts_with("scheduled for")
        );
    }

    #[test]
    fn wait_reasons_count_the_runs_ahead() {
        let l = limits(1, None, QueueStrategy::Append);
        let lane = Lane {
            running: 1,
            waiting: vec![waiting("a", 0, 1), waiting("b", 0, 2), waiting("c", 9, 3)],
        };
        assert_eq!(
            wait_reason(l, &lane, "c", now()).as_deref(),
            Some("concurrency full (1 of 1 running)")
        );
        assert_eq!(
            wait_reason(l, &lane, "b", now()).as_deref(),
            Some("queued behind 2 runs (concurrency 1, 1 running)")
        );
    }
}
