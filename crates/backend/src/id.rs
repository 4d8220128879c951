//! Sandbox ids: `sb-` + 26 lowercase base32 characters = 128 bits from the OS's CSPRNG.
//!
//! Ids name host paths and cgroups, so only [`SandboxId::parse`]d or generated values exist:
//! no `/`, no `..`, fixed length.

use std::fmt;

const PREFIX: &str = "sb-";
const BODY_LEN: usize = 26;
const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// A validated sandbox id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SandboxId(String);

/// The text is not a sandbox id.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a sandbox id")]
pub struct InvalidSandboxId(pub String);

impl SandboxId {
    /// A fresh id with 128 bits of randomness.
    pub fn generate() -> SandboxId {
        let mut bytes = [0u8; 16];
        // The OS random source only fails when the kernel cannot provide entropy at all, in which
        // case no id could be safe either.
        getrandom::fill(&mut bytes).expect("the OS random number generator is unavailable");
        let mut value = u128::from_be_bytes(bytes);
        let mut body = [0u8; BODY_LEN];
        // 26 × 5 = 130 bits: the top 2 bits of the first character are always zero.
        for slot in body.iter_mut().rev() {
            *slot = ALPHABET[(value & 31) as usize];
            value >>= 5;
        }
        let body = std::str::from_utf8(&body).expect("the alphabet is ASCII");
        SandboxId(format!("{PREFIX}{body}"))
    }

    pub fn parse(text: &str) -> Result<SandboxId, InvalidSandboxId> {
        let valid = text.strip_prefix(PREFIX).is_some_and(|body| {
            body.len() == BODY_LEN && body.bytes().all(|b| ALPHABET.contains(&b))
        });
        if valid {
            Ok(SandboxId(text.to_owned()))
        } else {
            Err(InvalidSandboxId(text.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SandboxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse_and_differ() {
        let a = SandboxId::generate();
        let b = SandboxId::generate();
        assert_ne!(a, b);
        assert_eq!(SandboxId::parse(a.as_str()).unwrap(), a);
        assert_eq!(a.as_str().len(), 3 + BODY_LEN);
    }

    #[test]
    fn rejects_everything_else() {
        for bad in [
            "",
            "sb-",
            "sb-../../../../etc/passwd",
            "sb-AAAAAAAAAAAAAAAAAAAAAAAAAA",
            "sb-aaaaaaaaaaaaaaaaaaaaaaaaa",
            "sb-aaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "xx-aaaaaaaaaaaaaaaaaaaaaaaaaa",
            "sb-aaaaaaaaaaaaaaaaaaaaaaaaa1",
        ] {
            assert!(SandboxId::parse(bad).is_err(), "{bad}");
        }
    }
}
