//! API tokens: random secrets handed to people and agents once, stored only
//! as their SHA-256 (a stolen database yields no usable token), each with
//! one role.
//!
//! Shared by the server (checking) and the CLI (`ganger token create`, the
//! admin token written on first start), so both hash alike.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Everything, including (later) managing tokens and agents.
    Admin,
    /// Uploads jobs, submits, cancels and retries runs; reads everything.
    Operator,
    /// Reads only.
    Viewer,
    /// Speaks the agent protocol (`/api/v1/agent/…`) and nothing else.
    Agent,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Admin, Role::Operator, Role::Viewer, Role::Agent];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Viewer => "viewer",
            Role::Agent => "agent",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown role `{0}`: use one of admin, operator, viewer, agent")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Self, UnknownRole> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownRole(s.to_owned()))
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot generate a token: the operating system's random number generator failed: {0}")]
pub struct GenerateError(getrandom::Error);

/// A new secret: 32 random bytes from the OS, as 64 lowercase hex digits
/// (safe in headers, files, shells and URLs without quoting).
pub fn generate() -> Result<String, GenerateError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(GenerateError)?;
    Ok(hex(&bytes))
}

/// The stored form of a token: SHA-256 of its text, lowercase hex. A fast
/// hash is right here: tokens carry 256 bits of entropy, so there is
/// nothing for a slow hash to protect.
pub fn hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_lowercase_hex_sha256() {
        assert_eq!(
            hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn generated_tokens_are_distinct_hex() {
        let a = generate().expect("random");
        let b = generate().expect("random");
        assert_eq!(a.len(), 64);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_ne!(a, b);
    }

    #[test]
    fn roles_round_trip_and_unknown_ones_list_the_choices() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        let err = "root".parse::<Role>().expect_err("not a role");
        assert!(err.to_string().contains("admin, operator, viewer, agent"));
    }
}
