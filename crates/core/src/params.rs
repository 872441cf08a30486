//! Turns the `key=value` pairs given to a run into its parameters, checked
//! against the job's declarations before anything runs.

use std::collections::BTreeMap;

use crate::diag::suggestion;
use crate::model::Job;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    #[error("job `{job}` has no param `{name}` (it declares: {declared}){hint}")]
    Unknown {
        job: String,
        name: String,
        declared: String,
        hint: String,
    },
    #[error("param `{name}` is required by job `{job}`: pass it with -p {name}=VALUE")]
    Missing { job: String, name: String },
    #[error("param `{name}`: value `{value}` does not match the pattern `{pattern}`")]
    Pattern {
        name: String,
        value: String,
        pattern: String,
    },
    #[error("param `{name}` is given twice")]
    Duplicate { name: String },
}

/// Every problem with the given params, or the full set (defaults filled in).
pub fn resolve_params(
    job: &Job,
    given: &[(String, String)],
) -> Result<BTreeMap<String, String>, Vec<ParamError>> {
    let mut errors = Vec::new();
    let mut values = BTreeMap::new();
    for (name, value) in given {
        if !job.params.iter().any(|p| &p.name == name) {
            let declared: Vec<&str> = job.params.iter().map(|p| p.name.as_str()).collect();
            errors.push(ParamError::Unknown {
                job: job.name.clone(),
                name: name.clone(),
                declared: if declared.is_empty() {
                    "none".into()
                } else {
                    declared.join(", ")
                },
                hint: suggestion(name, declared.iter().copied()),
            });
        } else if values.insert(name.clone(), value.clone()).is_some() {
            errors.push(ParamError::Duplicate { name: name.clone() });
        }
    }
    for spec in &job.params {
        let value = match (values.get(&spec.name), &spec.default) {
            (Some(v), _) => v.clone(),
            (None, Some(d)) => {
                values.insert(spec.name.clone(), d.clone());
                d.clone()
            }
            (None, None) if spec.required => {
                errors.push(ParamError::Missing {
                    job: job.name.clone(),
                    name: spec.name.clone(),
                });
                continue;
            }
            (None, None) => {
                values.insert(spec.name.clone(), String::new());
                String::new()
            }
        };
        if let Some(re) = &spec.pattern
            && !re.is_match(&value)
        {
            errors.push(ParamError::Pattern {
                name: spec.name.clone(),
                value,
                pattern: re.as_str().to_owned(),
            });
        }
    }
    if errors.is_empty() {
        Ok(values)
    } else {
        Err(errors)
    }
}

/// The environment variable a param is exported as: `GANGER_PARAM_<NAME>`.
pub fn param_env_name(name: &str) -> String {
    format!("GANGER_PARAM_{}", name.to_ascii_uppercase())
}
