//! The server's side of the agent protocol (`/api/v1/agent/…`): what
//! remote agents say, checked and turned into the same engine calls the
//! in-process agent makes directly.
//!
//! Fencing is by attempt number and holder: an agent may speak only of
//! attempts it holds now. Kill orders for a remote agent wait in its queue
//! until its next heartbeat or claim answer.

use std::collections::HashSet;
use std::io::SeekFrom;
use std::time::Duration;

use ganger_api::agent as wire;
use ganger_core::run::{Exit, Phase, TaskSpec};
use ganger_store::TaskKey;
use tokio::io::{AsyncSeekExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::actor::{AgentReport, KillOrder};
use super::{Engine, EngineError, Want, agent::LOCAL_AGENT};

/// The longest a claim may wait for work.
const MAX_WAIT: Duration = Duration::from_secs(30);
/// The most tasks one claim may ask for.
const MAX_CLAIM: u32 = 1000;

fn attempt_ref(key: &TaskKey, attempt: u32) -> wire::AttemptRef {
    wire::AttemptRef {
        run_id: key.run_id.clone(),
        task: key.task,
        phase: key.phase.clone(),
        attempt,
    }
}

fn key_of(a: &wire::AttemptRef) -> Result<(TaskKey, Phase), EngineError> {
    let phase = match a.phase.as_str() {
        "main" => Phase::Main,
        "undo" => Phase::Undo,
        other => {
            return Err(EngineError::InvalidRequest(format!(
                "attempt.phase is `{other}`; it must be `main` or `undo`"
            )));
        }
    };
    let key = TaskKey {
        run_id: a.run_id.clone(),
        task: a.task,
        phase: a.phase.clone(),
    };
    Ok((key, phase))
}

fn exit_of(e: wire::Exit) -> Result<Exit, EngineError> {
    match (e.code, e.signal, e.error, e.interrupted) {
        (Some(code), None, None, None) => Ok(Exit::Code(code)),
        (None, Some(signal), None, None) => Ok(Exit::Signal(signal)),
        (None, None, Some(error), None) => Ok(Exit::Error(error)),
        (None, None, None, Some(reason)) => Ok(Exit::Interrupted(reason)),
        _ => Err(EngineError::InvalidRequest(
            "exit must hold exactly one of code, signal, error or interrupted".into(),
        )),
    }
}

fn check_name(name: &str) -> Result<(), EngineError> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(EngineError::InvalidRequest(format!(
            "agent name {name:?} must be 1 to 100 letters, digits, `_`, `.` or `-`"
        )))
    }
}

fn kill_view(k: KillOrder) -> wire::Kill {
    wire::Kill {
        attempt: attempt_ref(&k.key, k.attempt),
        force: k.force,
    }
}

impl Engine {
    /// An agent joins (or rejoins, under the same name).
    pub async fn register(&self, reg: wire::Register) -> Result<wire::Registered, EngineError> {
        check_name(&reg.name)?;
        if reg.name == LOCAL_AGENT {
            return Err(EngineError::InvalidRequest(format!(
                "the agent name `{LOCAL_AGENT}` belongs to the server's in-process agent; pick another (--name)"
            )));
        }
        if reg.slots == 0 || reg.slots > MAX_CLAIM {
            return Err(EngineError::InvalidRequest(format!(
                "slots must be 1 to {MAX_CLAIM}, not {}",
                reg.slots
            )));
        }
        if reg.executors.is_empty() {
            return Err(EngineError::InvalidRequest(
                "executors is empty: an agent must run at least `process`".into(),
            ));
        }
        if let Some(bad) = reg
            .labels
            .iter()
            .find(|l| l.is_empty() || l.starts_with('=') || l.chars().any(char::is_whitespace))
        {
            return Err(EngineError::InvalidRequest(format!(
                "label {bad:?} must be `key=value` or `key`, without spaces"
            )));
        }
        self.seen(
            &reg.name,
            Some((reg.labels.clone(), reg.executors.clone(), reg.slots)),
        );
        let (tx, rx) = mpsc::unbounded_channel();
        self.attach(&reg.name, tx);
        if let Ok(mut queues) = self.inner.kill_queues.lock() {
            queues.insert(reg.name.clone(), rx);
        }
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Ok(wire::Registered {
            agent_id: reg.name,
            lease_ms: ms(self.inner.config.lease),
            heartbeat_ms: ms(self.inner.config.heartbeat),
        })
    }

    fn registered(&self, agent: &str) -> Result<(Vec<String>, Vec<String>, u32), EngineError> {
        let agents = self
            .inner
            .agents
            .lock()
            .map_err(|_| EngineError::Internal("agent registry poisoned".into()))?;
        match agents.get(agent) {
            Some(a) if agent != LOCAL_AGENT => Ok((a.labels.clone(), a.executors.clone(), a.slots)),
            _ => Err(EngineError::NotFound(format!(
                "agent `{agent}` is not registered (the server may have restarted): register again"
            ))),
        }
    }

    /// Kill orders waiting for this agent.
    fn kills_for(&self, agent: &str) -> Vec<wire::Kill> {
        let mut out = Vec::new();
        if let Ok(mut queues) = self.inner.kill_queues.lock()
            && let Some(rx) = queues.get_mut(agent)
        {
            while let Ok(k) = rx.try_recv() {
                out.push(kill_view(k));
            }
        }
        out
    }

    /// Long poll for work on behalf of a registered agent.
    pub async fn agent_claim(&self, req: wire::Claim) -> Result<wire::Claimed, EngineError> {
        let (labels, executors, _) = self.registered(&req.agent_id)?;
        let max = req.max.clamp(1, MAX_CLAIM);
        let wait = req
            .wait_ms
            .map_or(MAX_WAIT, Duration::from_millis)
            .min(MAX_WAIT);
        let got = self
            .claim(
                &req.agent_id,
                labels,
                executors,
                Want {
                    max,
                    ahead: req.ahead,
                },
                wait,
            )
            .await?;
        let mut tasks = Vec::with_capacity(got.len());
        for a in got {
            let spec = serde_json::to_value(&a.spec)
                .map_err(|e| EngineError::Internal(format!("cannot encode a task: {e}")))?;
            tasks.push(wire::Assigned {
                attempt: attempt_ref(&a.key, a.attempt),
                name: a.spec.name.clone(),
                spec,
            });
        }
        Ok(wire::Claimed {
            tasks,
            kill: self.kills_for(&req.agent_id),
        })
    }

    /// Renews the agent's leases; names the listed attempts it no longer
    /// holds, and passes on kill orders.
    pub async fn agent_heartbeat(
        &self,
        hb: wire::Heartbeat,
    ) -> Result<wire::HeartbeatAck, EngineError> {
        self.registered(&hb.agent_id)?;
        self.heartbeat(&hb.agent_id).await?;
        if let Ok(mut agents) = self.inner.agents.lock()
            && let Some(a) = agents.get_mut(&hb.agent_id)
        {
            a.draining = hb.draining;
        }
        let held: HashSet<(TaskKey, u32)> = self
            .inner
            .store
            .claims_of(&hb.agent_id)
            .await?
            .into_iter()
            .map(|c| (c.claimable.key, c.claimable.attempt))
            .collect();
        let mut stale = Vec::new();
        let mut listed = HashSet::new();
        for a in hb.running {
            let (key, _) = key_of(&a)?;
            let id = (key, a.attempt);
            if !held.contains(&id) {
                stale.push(a);
            }
            listed.insert(id);
        }
        // A claim the agent has not listed twice running is gone from it
        // (the agent restarted and forgot it): it is lost now rather than
        // renewed forever. Twice, because a claim answered while this
        // heartbeat was on its way is not listed yet.
        let unlisted: HashSet<(TaskKey, u32)> = held.difference(&listed).cloned().collect();
        let before = self
            .inner
            .agents
            .lock()
            .ok()
            .and_then(|mut agents| {
                let a = agents.get_mut(&hb.agent_id)?;
                Some(std::mem::replace(&mut a.unlisted, unlisted.clone()))
            })
            .unwrap_or_default();
        for (key, attempt) in unlisted.intersection(&before) {
            let lost = AgentReport::Finished {
                exit: Exit::Lost,
                outputs: Default::default(),
            };
            // Refused only if it ended meanwhile: nothing to do then.
            let _ = self.report(&hb.agent_id, key, *attempt, lost).await;
        }
        Ok(wire::HeartbeatAck {
            stale,
            kill: self.kills_for(&hb.agent_id),
        })
    }

    pub async fn agent_started(&self, s: wire::Started) -> Result<(), EngineError> {
        self.registered(&s.agent_id)?;
        let (key, _) = key_of(&s.attempt)?;
        self.report(&s.agent_id, &key, s.attempt.attempt, AgentReport::Started)
            .await
    }

    /// How far along an attempt says it is; 400 outside `0.0..=1.0`.
    /// Like a result, it needs no registration, only the attempt's claim: a
    /// server that restarted still hears it.
    pub async fn agent_progress(&self, p: wire::Progress) -> Result<(), EngineError> {
        let (key, _) = key_of(&p.attempt)?;
        if !(0.0..=1.0).contains(&p.progress) {
            return Err(EngineError::InvalidRequest(format!(
                "progress is {}; it must be a number from 0.0 to 1.0",
                p.progress
            )));
        }
        let report = AgentReport::Progress {
            progress: p.progress,
        };
        self.report(&p.agent_id, &key, p.attempt.attempt, report)
            .await
    }

    pub async fn agent_finished(&self, f: wire::Finished) -> Result<(), EngineError> {
        let (key, _) = key_of(&f.attempt)?;
        let report = AgentReport::Finished {
            exit: exit_of(f.exit)?,
            outputs: f.outputs,
        };
        self.report(&f.agent_id, &key, f.attempt.attempt, report)
            .await
    }

    /// Appends a chunk of an attempt's output at `offset`; what is already
    /// stored is not stored twice.
    pub async fn agent_log(&self, chunk: wire::LogChunk) -> Result<wire::LogAck, EngineError> {
        let (key, phase) = key_of(&chunk.attempt)?;
        // The claim is the authority on who holds an attempt: it is written
        // before the agent hears of the task, while the run's own record of
        // the claim may land a commit later.
        let claim = self
            .inner
            .store
            .claims_of(&chunk.agent_id)
            .await?
            .into_iter()
            .find(|c| c.claimable.key == key && c.claimable.attempt == chunk.attempt.attempt)
            .ok_or_else(|| {
                EngineError::Stale(format!(
                    "attempt {} of {key} is not held by agent `{}`; stop it",
                    chunk.attempt.attempt, chunk.agent_id
                ))
            })?;
        // The claim carries the task's name: no need to read the run.
        let spec: TaskSpec = serde_json::from_str(&claim.claimable.spec_json)
            .map_err(|e| EngineError::Internal(format!("stored task cannot be read: {e}")))?;
        let path =
            self.inner
                .logs
                .workdir(&key.run_id)
                .log(&spec.name, chunk.attempt.attempt, phase);
        let next = {
            // One writer at a time: a resent chunk racing the original must
            // see what the original stored.
            let _guard = self.inner.log_writes.lock().await;
            append_at(
                &path,
                chunk.offset,
                chunk.data.as_bytes(),
                self.inner.config.log_cap,
            )
            .await
            .map_err(|e| {
                EngineError::Internal(format!("cannot write log {}: {e}", path.display()))
            })?
        };
        self.inner.logs.changed(&key.run_id, key.task as usize);
        Ok(wire::LogAck { next_offset: next })
    }

    /// The agent leaves: it is no longer listed, and kill orders for it
    /// are dropped. Claims it still holds expire with their leases.
    pub async fn deregister(&self, d: wire::Deregister) -> Result<(), EngineError> {
        self.registered(&d.agent_id)?;
        if let Ok(mut agents) = self.inner.agents.lock() {
            agents.remove(&d.agent_id);
        }
        if let Ok(mut queues) = self.inner.kill_queues.lock() {
            queues.remove(&d.agent_id);
        }
        // A claim it left open must not be handed work.
        let _ = self
            .inner
            .commands
            .send(super::actor::Command::Forget(d.agent_id));
        Ok(())
    }
}

/// Writes `data` so that it starts at `offset` of the file, skipping what
/// the file already holds past `offset`. A chunk starting beyond the end
/// (a gap) writes nothing. Past `cap`, nothing more is written. Returns the
/// file's length: where the next chunk starts.
async fn append_at(
    path: &std::path::Path,
    offset: u64,
    data: &[u8],
    cap: Option<u64>,
) -> std::io::Result<u64> {
    if let Some(parent) = path.parent() {
        tokio::fs::create_dir_all(parent).await?;
    }
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(false)
        .write(true)
        .truncate(false)
        .open(path)
        .await?;
    let len = file.seek(SeekFrom::End(0)).await?;
    if cap.is_some_and(|c| len >= c) {
        // Full: accept and drop, so the agent moves on.
        return Ok(offset.saturating_add(data.len() as u64).max(len));
    }
    if offset > len {
        return Ok(len);
    }
    let skip = usize::try_from(len - offset).unwrap_or(usize::MAX);
    let Some(rest) = data.get(skip..).filter(|r| !r.is_empty()) else {
        return Ok(len);
    };
    let room = cap.map_or(u64::MAX, |c| c.saturating_sub(len));
    let take = usize::try_from(room).unwrap_or(usize::MAX).min(rest.len());
    file.write_all(&rest[..take]).await?;
    file.flush().await?;
    // Past the cap the rest is accepted and dropped, so the agent moves on.
    Ok(len + rest.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn chunks_are_stored_once_whatever_is_resent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("logs/t.1.log");
        assert_eq!(append_at(&path, 0, b"one\n", None).await.ok(), Some(4));
        assert_eq!(
            append_at(&path, 0, b"one\n", None).await.ok(),
            Some(4),
            "a resend"
        );
        assert_eq!(
            append_at(&path, 2, b"e\ntwo\n", None).await.ok(),
            Some(8),
            "an overlap"
        );
        assert_eq!(
            append_at(&path, 20, b"gap\n", None).await.ok(),
            Some(8),
            "a gap"
        );
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text, "one\ntwo\n");
    }

    #[tokio::test]
    async fn the_cap_bounds_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.log");
        let next = append_at(&path, 0, b"0123456789", Some(4)).await.ok();
        assert_eq!(next, Some(10));
        let next = append_at(&path, 10, b"more", Some(4)).await.ok();
        assert_eq!(next, Some(14), "past the cap, chunks are taken and dropped");
        assert_eq!(std::fs::read(&path).expect("read"), b"0123");
    }

    #[test]
    fn exits_hold_exactly_one_outcome() {
        assert_eq!(
            exit_of(wire::Exit {
                code: Some(3),
                ..Default::default()
            })
            .ok(),
            Some(Exit::Code(3))
        );
        assert!(exit_of(wire::Exit::default()).is_err());
        assert!(
            exit_of(wire::Exit {
                code: Some(0),
                signal: Some(9),
                ..Default::default()
            })
            .is_err()
        );
    }
}
