//! Job definitions as the server keeps them: validated uploads stored as
//! versions, and parsed definitions cached by version (a version never
//! changes, so its parse never goes stale).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ganger_api as api;
use ganger_core::model::Job;
use ganger_store::{JobDef, Store};
use sha2::{Digest, Sha256};

use super::EngineError;
use super::time::{from_millis, now_millis};

pub(crate) struct Catalog {
    store: Arc<dyn Store>,
    parsed: Mutex<HashMap<(String, u32), Arc<Job>>>,
}

/// A definition's identity: equal canonical sources, equal digests.
fn digest(source: &str) -> String {
    let hash = Sha256::digest(source.as_bytes());
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn version_view(v: ganger_store::JobVersion) -> api::JobVersion {
    api::JobVersion {
        name: v.name,
        version: v.version,
        digest: v.digest,
        created: v.created,
        created_at: from_millis(v.created_at),
    }
}

impl Catalog {
    pub(crate) fn new(store: Arc<dyn Store>) -> Catalog {
        Catalog {
            store,
            parsed: Mutex::new(HashMap::new()),
        }
    }

    /// Validates every file first and stores nothing unless all are valid;
    /// then stores all jobs in one transaction.
    pub(crate) async fn apply(
        &self,
        files: Vec<(String, String)>,
    ) -> Result<Vec<api::JobVersion>, EngineError> {
        let mut details = Vec::new();
        let mut defs = Vec::new();
        let mut seen: HashMap<String, String> = HashMap::new();
        for (name, text) in &files {
            match ganger_core::parse_job_file(name, text) {
                Ok(file) => {
                    for job in file.jobs {
                        if let Some(first) = seen.insert(job.name.clone(), name.clone()) {
                            details.push(format!(
                                "{name}: job `{}` is also defined in {first}; each job must be defined once per upload",
                                job.name
                            ));
                        }
                        defs.push(JobDef {
                            digest: digest(&job.source),
                            name: job.name,
                            source: job.source,
                        });
                    }
                }
                Err(diags) => details.extend(diags.0.iter().map(ToString::to_string)),
            }
        }
        if !details.is_empty() {
            return Err(EngineError::InvalidJob { details });
        }
        if defs.is_empty() {
            return Err(EngineError::InvalidJob {
                details: vec!["the upload defines no job: a job file needs a `jobs:` map".into()],
            });
        }
        let versions = self.store.put_jobs(defs, now_millis()).await?;
        Ok(versions.into_iter().map(version_view).collect())
    }

    /// A job at a version (`None`: the latest), parsed once per version.
    pub(crate) async fn load(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> Result<(u32, Arc<Job>), EngineError> {
        if let Some(v) = version
            && let Some(job) = self.cached(name, v)
        {
            return Ok((v, job));
        }
        let Some((stored, source)) = self.store.job(name, version).await? else {
            return Err(EngineError::NotFound(match version {
                Some(v) => format!("job `{name}` has no version {v}"),
                None => format!(
                    "no job named `{name}`: upload it with `ganger apply FILE` (see `ganger jobs` for the jobs the server has)"
                ),
            }));
        };
        if let Some(job) = self.cached(name, stored.version) {
            return Ok((stored.version, job));
        }
        let file = ganger_core::parse_job_file(&format!("job {name} v{}", stored.version), &source)
            .map_err(|d| {
                EngineError::Internal(format!(
                    "stored definition of job `{name}` version {} no longer parses: {d}",
                    stored.version
                ))
            })?;
        let job = file
            .jobs
            .into_iter()
            .find(|j| j.name == name)
            .map(Arc::new)
            .ok_or_else(|| {
                EngineError::Internal(format!(
                    "stored definition of job `{name}` version {} defines another job",
                    stored.version
                ))
            })?;
        if let Ok(mut cache) = self.parsed.lock() {
            cache.insert((name.to_owned(), stored.version), Arc::clone(&job));
        }
        Ok((stored.version, job))
    }

    fn cached(&self, name: &str, version: u32) -> Option<Arc<Job>> {
        let cache = self.parsed.lock().ok()?;
        cache.get(&(name.to_owned(), version)).cloned()
    }

    pub(crate) async fn list(&self) -> Result<Vec<api::JobSummary>, EngineError> {
        let mut out = Vec::new();
        for v in self.store.jobs().await? {
            let (_, job) = self.load(&v.name, Some(v.version)).await?;
            out.push(api::JobSummary {
                name: v.name,
                version: v.version,
                description: job.description.clone(),
                tasks: job.tasks.iter().map(|t| t.name.clone()).collect(),
                updated_at: from_millis(v.created_at),
            });
        }
        Ok(out)
    }

    pub(crate) async fn detail(&self, name: &str) -> Result<api::JobDetail, EngineError> {
        let (latest, job) = self.load(name, None).await?;
        let mut versions = Vec::new();
        for v in (1..=latest).rev() {
            if let Some((stored, _)) = self.store.job(name, Some(v)).await? {
                versions.push(version_view(stored));
            }
        }
        let definition = serde_json::from_str::<serde_json::Value>(&job.source)
            .ok()
            .and_then(|mut v| {
                v.pointer_mut(&format!("/jobs/{name}"))
                    .map(serde_json::Value::take)
            })
            .unwrap_or(serde_json::Value::Null);
        Ok(api::JobDetail {
            name: name.to_owned(),
            versions,
            definition,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_stable_hex() {
        let d = digest("{\"jobs\":{}}");
        assert_eq!(d.len(), 64);
        assert_eq!(d, digest("{\"jobs\":{}}"));
        assert_ne!(d, digest("{\"jobs\":{\"a\":1}}"));
    }
}
