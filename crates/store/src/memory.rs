//! The in-memory store: the same semantics as the SQLite store without
//! durability. Used by tests and by `ganger run`, where a run lives only as
//! long as the process.
//!
//! One mutex guards everything, which makes each method trivially atomic.
//! No method awaits while holding it, so a std mutex is right.
//! Methods that can fail check everything before changing anything, so an
//! error leaves the state untouched (the equivalent of a rollback):
//! [`Store::commit`] decides every new run's outcome (`Inner::plan_runs`)
//! and checks that every run update and offer refers to a run that is stored
//! or created by the batch before applying any part (the parts then cannot
//! fail). [`Store::insert_runs`] is `commit` of a batch of new runs only, so
//! the insert logic exists once.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::{
    Batch, ClaimRequest, Claimable, Claimed, Committed, Inserted, JobDef, JobVersion, NewRun, Page,
    Result, RunFilter, RunRow, RunSummary, Store, StoreError, TaskKey, TokenRow, check_job_def,
    check_new_run, check_token, clamp_limit, decode_cursor, encode_cursor, is_terminal, tags_match,
};

/// A [`Store`] in process memory. Clones share the same data.
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self, op: &'static str) -> Result<MutexGuard<'_, Inner>> {
        self.inner.lock().map_err(|_| StoreError::Poisoned { op })
    }
}

#[derive(Debug)]
struct JobRecord {
    version: JobVersion,
    source: String,
}

#[derive(Debug)]
struct Slot {
    seq: i64,
    claimable: Claimable,
    /// `(agent, lease_until)` while claimed.
    claim: Option<(String, i64)>,
}

/// Claim order: highest priority first, then lowest seq.
type ClaimOrder = (Reverse<i32>, i64);

#[derive(Debug, Default)]
struct Inner {
    /// Versions in ascending order; `versions[i].version == i + 1`.
    jobs: BTreeMap<String, Vec<JobRecord>>,
    runs: BTreeMap<i64, RunRow>,
    run_seq: HashMap<String, i64>,
    idempotency: HashMap<String, String>,
    last_run_seq: i64,
    claimables: HashMap<TaskKey, Slot>,
    /// Index of the unclaimed slots in claim order, so a claim does not scan
    /// claimed work (the role of the SQLite partial index).
    unclaimed: BTreeMap<ClaimOrder, TaskKey>,
    /// Index of the claimed slots by seq, so lease scans touch only them.
    claimed: BTreeMap<i64, TaskKey>,
    last_claim_seq: i64,
    tokens: HashMap<String, TokenRow>,
}

impl Inner {
    fn latest_job(&self, name: &str) -> Option<&JobRecord> {
        self.jobs.get(name).and_then(|v| v.last())
    }

    fn upsert_claimable(&mut self, c: Claimable) {
        if let Some(slot) = self.claimables.get_mut(&c.key) {
            let keep_claim = slot.claim.is_some() && slot.claimable.attempt == c.attempt;
            match (slot.claim.is_some(), keep_claim) {
                // Unclaimed: re-index, the priority may have changed.
                (false, _) => {
                    self.unclaimed
                        .remove(&(Reverse(slot.claimable.priority), slot.seq));
                    self.unclaimed
                        .insert((Reverse(c.priority), slot.seq), c.key.clone());
                }
                // Claimed, same attempt: stays claimed, no index change.
                (true, true) => {}
                // Claimed, new attempt: a new offer, the old claim is void.
                (true, false) => {
                    slot.claim = None;
                    self.claimed.remove(&slot.seq);
                    self.unclaimed
                        .insert((Reverse(c.priority), slot.seq), c.key.clone());
                }
            }
            slot.claimable = c;
        } else {
            self.last_claim_seq += 1;
            let seq = self.last_claim_seq;
            self.unclaimed
                .insert((Reverse(c.priority), seq), c.key.clone());
            self.claimables.insert(
                c.key.clone(),
                Slot {
                    seq,
                    claimable: c,
                    claim: None,
                },
            );
        }
    }

    fn remove_claimable(&mut self, key: &TaskKey) {
        if let Some(slot) = self.claimables.remove(key) {
            if slot.claim.is_some() {
                self.claimed.remove(&slot.seq);
            } else {
                self.unclaimed
                    .remove(&(Reverse(slot.claimable.priority), slot.seq));
            }
        }
    }

    /// Decides the outcome of inserting `runs` (see [`Store::insert_runs`])
    /// without changing anything: keys and ids taken by earlier runs of the
    /// list count as stored. Errors when any run would fail the batch.
    fn plan_runs(&self, runs: &[NewRun]) -> Result<Vec<Inserted>> {
        let mut new_keys: HashMap<&str, &str> = HashMap::new();
        let mut new_ids: HashSet<&str> = HashSet::new();
        let mut seq = self.last_run_seq;
        let mut out = Vec::with_capacity(runs.len());
        for run in runs {
            check_new_run(run)?;
            if let Some(key) = run.idempotency_key.as_deref() {
                let existing = self
                    .idempotency
                    .get(key)
                    .map(String::as_str)
                    .or_else(|| new_keys.get(key).copied());
                if let Some(id) = existing {
                    out.push(Inserted::Existing { id: id.to_owned() });
                    continue;
                }
                new_keys.insert(key, &run.id);
            }
            if self.run_seq.contains_key(&run.id) || !new_ids.insert(&run.id) {
                return Err(StoreError::DuplicateRun { id: run.id.clone() });
            }
            seq += 1;
            out.push(Inserted::Created { seq });
        }
        Ok(out)
    }

    /// Writes the runs `plan` (from [`Inner::plan_runs`] of the same runs,
    /// with nothing changed in between) says to create.
    fn add_runs(&mut self, runs: Vec<NewRun>, plan: &[Inserted]) {
        for (run, outcome) in runs.into_iter().zip(plan) {
            if let Inserted::Created { seq } = *outcome {
                self.add_run(seq, run);
                self.last_run_seq = seq;
            }
        }
    }

    fn add_run(&mut self, seq: i64, run: NewRun) {
        if let Some(key) = &run.idempotency_key {
            self.idempotency.insert(key.clone(), run.id.clone());
        }
        self.run_seq.insert(run.id.clone(), seq);
        self.runs.insert(
            seq,
            RunRow {
                summary: RunSummary {
                    id: run.id,
                    seq,
                    job: run.job,
                    version: run.version,
                    status: "queued".into(),
                    priority: run.priority,
                    concurrency_key: run.concurrency_key,
                    idempotency_key: run.idempotency_key,
                    scheduled_at: run.scheduled_at,
                    created_at: run.created_at,
                    started_at: None,
                    finished_at: None,
                    reason: None,
                },
                params_json: run.params_json,
                state_json: run.state_json,
            },
        );
    }

    /// The one claim path (see [`Store::claim`]): walks the unclaimed index
    /// in claim order and takes the first `max` matches.
    fn claim(&mut self, req: &ClaimRequest) -> Vec<Claimed> {
        let picked: Vec<(ClaimOrder, TaskKey)> = self
            .unclaimed
            .iter()
            .filter(|(_, key)| {
                self.claimables.get(*key).is_some_and(|slot| {
                    let c = &slot.claimable;
                    c.ready_at <= req.now
                        && req.executors.contains(&c.executor)
                        && tags_match(&c.tags, &req.labels)
                })
            })
            .take(req.max as usize)
            .map(|(order, key)| (*order, key.clone()))
            .collect();
        let mut out = Vec::with_capacity(picked.len());
        for (order, key) in picked {
            self.unclaimed.remove(&order);
            self.claimed.insert(order.1, key.clone());
            if let Some(slot) = self.claimables.get_mut(&key) {
                slot.claim = Some((req.agent.clone(), req.lease_until));
                out.extend(claimed_of(slot));
            }
        }
        out
    }

    fn claimed_slots(&self) -> impl Iterator<Item = &Slot> {
        self.claimed
            .values()
            .filter_map(|key| self.claimables.get(key))
    }
}

fn claimed_of(slot: &Slot) -> Option<Claimed> {
    slot.claim.as_ref().map(|(agent, lease_until)| Claimed {
        claimable: slot.claimable.clone(),
        agent: agent.clone(),
        lease_until: *lease_until,
    })
}

#[async_trait::async_trait]
impl Store for MemoryStore {
    async fn put_jobs(&self, defs: Vec<JobDef>, now: i64) -> Result<Vec<JobVersion>> {
        let mut inner = self.lock("put jobs")?;
        // Check everything first: nothing may be stored when one fails.
        for (i, def) in defs.iter().enumerate() {
            check_job_def(i, def)?;
            let next = inner.jobs.get(&def.name).map_or(0, Vec::len);
            if u32::try_from(next + 1).is_err() {
                return Err(StoreError::Invalid {
                    what: format!("job {:?}", def.name),
                    reason: "too many versions".into(),
                });
            }
        }
        let mut out = Vec::with_capacity(defs.len());
        for def in defs {
            if let Some(latest) = inner.latest_job(&def.name)
                && latest.version.digest == def.digest
            {
                out.push(latest.version.clone());
                continue;
            }
            let versions = inner.jobs.entry(def.name.clone()).or_default();
            // Only fails past u32::MAX versions, which memory cannot hold;
            // saturating keeps this branch total without an unwrap.
            let version = u32::try_from(versions.len() + 1).unwrap_or(u32::MAX);
            let v = JobVersion {
                name: def.name,
                version,
                digest: def.digest,
                created: false,
                created_at: now,
            };
            versions.push(JobRecord {
                version: v.clone(),
                source: def.source,
            });
            out.push(JobVersion { created: true, ..v });
        }
        Ok(out)
    }

    async fn job(&self, name: &str, version: Option<u32>) -> Result<Option<(JobVersion, String)>> {
        let inner = self.lock("get job")?;
        let Some(versions) = inner.jobs.get(name) else {
            return Ok(None);
        };
        let record = match version {
            None => versions.last(),
            Some(0) => None,
            Some(v) => versions.get(v as usize - 1),
        };
        Ok(record.map(|r| (r.version.clone(), r.source.clone())))
    }

    async fn jobs(&self) -> Result<Vec<JobVersion>> {
        let inner = self.lock("list jobs")?;
        Ok(inner
            .jobs
            .values()
            .filter_map(|v| v.last().map(|r| r.version.clone()))
            .collect())
    }

    async fn run_for_key(&self, idempotency_key: &str) -> Result<Option<String>> {
        let inner = self.lock("get run by idempotency key")?;
        Ok(inner.idempotency.get(idempotency_key).cloned())
    }

    async fn run(&self, id: &str) -> Result<Option<RunRow>> {
        let inner = self.lock("get run")?;
        Ok(inner
            .run_seq
            .get(id)
            .and_then(|seq| inner.runs.get(seq))
            .cloned())
    }

    async fn unfinished(&self) -> Result<Vec<RunRow>> {
        let inner = self.lock("list unfinished runs")?;
        Ok(inner
            .runs
            .values()
            .filter(|r| !is_terminal(&r.summary.status))
            .cloned()
            .collect())
    }

    async fn list_runs(
        &self,
        filter: RunFilter,
        cursor: Option<String>,
        limit: u32,
    ) -> Result<Page<RunSummary>> {
        let before = cursor.as_deref().map(decode_cursor).transpose()?;
        let limit = clamp_limit(limit) as usize;
        let inner = self.lock("list runs")?;
        let mut matching = inner
            .runs
            .range(..before.unwrap_or(i64::MAX))
            .rev()
            .map(|(_, r)| r)
            .filter(|r| filter.job.as_ref().is_none_or(|j| *j == r.summary.job))
            .filter(|r| {
                filter
                    .status
                    .as_ref()
                    .is_none_or(|s| *s == r.summary.status)
            });
        let items: Vec<RunSummary> = matching
            .by_ref()
            .take(limit)
            .map(|r| r.summary.clone())
            .collect();
        let more = matching.next().is_some();
        let next_cursor = match items.last() {
            Some(last) if more => Some(encode_cursor(last.seq)),
            _ => None,
        };
        Ok(Page { items, next_cursor })
    }

    async fn commit(&self, batch: Batch) -> Result<Committed> {
        let mut inner = self.lock("commit batch")?;
        // Validate the whole batch before the first change (atomicity), in
        // the order the parts apply, so errors match the SQLite store's.
        let inserted = inner.plan_runs(&batch.new_runs)?;
        {
            let created: HashSet<&str> = batch
                .new_runs
                .iter()
                .zip(&inserted)
                .filter(|(_, outcome)| matches!(outcome, Inserted::Created { .. }))
                .map(|(run, _)| run.id.as_str())
                .collect();
            let exists = |id: &str| inner.run_seq.contains_key(id) || created.contains(id);
            for u in &batch.runs {
                if !exists(&u.id) {
                    return Err(StoreError::RunNotFound {
                        op: "commit batch: update run",
                        id: u.id.clone(),
                    });
                }
            }
            for c in &batch.ready {
                if !exists(&c.key.run_id) {
                    return Err(StoreError::RunNotFound {
                        op: "commit batch: offer task",
                        id: c.key.run_id.clone(),
                    });
                }
            }
        }
        inner.add_runs(batch.new_runs, &inserted);
        for u in batch.runs {
            let Some(&seq) = inner.run_seq.get(&u.id) else {
                continue; // checked above
            };
            if let Some(row) = inner.runs.get_mut(&seq) {
                row.summary.status = u.status;
                row.summary.started_at = u.started_at;
                row.summary.finished_at = u.finished_at;
                row.summary.reason = u.reason;
                row.state_json = u.state_json;
            }
        }
        for c in batch.ready {
            inner.upsert_claimable(c);
        }
        for key in &batch.done {
            inner.remove_claimable(key);
        }
        let claimed = batch.claims.iter().map(|req| inner.claim(req)).collect();
        Ok(Committed { inserted, claimed })
    }

    async fn claims_of(&self, agent: &str) -> Result<Vec<Claimed>> {
        let inner = self.lock("list claims of agent")?;
        let mut out: Vec<(ClaimOrder, Claimed)> = inner
            .claimed_slots()
            .filter_map(|s| {
                let c = claimed_of(s)?;
                (c.agent == agent).then_some(((Reverse(c.claimable.priority), s.seq), c))
            })
            .collect();
        out.sort_by_key(|(order, _)| *order);
        Ok(out.into_iter().map(|(_, c)| c).collect())
    }

    async fn renew(&self, agent: &str, lease_until: i64) -> Result<u64> {
        let mut inner = self.lock("renew leases")?;
        let keys: Vec<TaskKey> = inner
            .claimed_slots()
            .filter(|s| s.claim.as_ref().is_some_and(|(a, _)| a == agent))
            .map(|s| s.claimable.key.clone())
            .collect();
        for key in &keys {
            if let Some(Slot {
                claim: Some((_, until)),
                ..
            }) = inner.claimables.get_mut(key)
            {
                *until = (*until).max(lease_until);
            }
        }
        Ok(keys.len() as u64)
    }

    async fn expired(&self, now: i64) -> Result<Vec<Claimed>> {
        let inner = self.lock("list expired leases")?;
        let mut out: Vec<(i64, i64, Claimed)> = inner
            .claimed_slots()
            .filter_map(|s| {
                let c = claimed_of(s)?;
                (c.lease_until < now).then_some((c.lease_until, s.seq, c))
            })
            .collect();
        out.sort_by_key(|(until, seq, _)| (*until, *seq));
        Ok(out.into_iter().map(|(_, _, c)| c).collect())
    }

    async fn release(&self, key: &TaskKey) -> Result<()> {
        let mut inner = self.lock("release claim")?;
        let Some(slot) = inner.claimables.get_mut(key) else {
            return Err(StoreError::ClaimableNotFound {
                op: "release claim",
                key: key.clone(),
            });
        };
        if slot.claim.take().is_some() {
            let order = (Reverse(slot.claimable.priority), slot.seq);
            inner.claimed.remove(&order.1);
            inner.unclaimed.insert(order, key.clone());
        }
        Ok(())
    }

    async fn put_token(&self, token: TokenRow) -> Result<()> {
        check_token(&token)?;
        let mut inner = self.lock("put token")?;
        if inner.tokens.contains_key(&token.hash) {
            return Err(StoreError::DuplicateToken { name: token.name });
        }
        inner.tokens.insert(token.hash.clone(), token);
        Ok(())
    }

    async fn token(&self, hash: &str) -> Result<Option<TokenRow>> {
        let inner = self.lock("get token")?;
        Ok(inner.tokens.get(hash).cloned())
    }
}
