//! A sandbox's own credentials, as E2B's SDKs carry them: the access token (`X-Access-Token`,
//! `envdAccessToken` in create and connect answers), the traffic token
//! (`E2B-Traffic-Access-Token`, the code interpreter's calls), and signed `/files` URLs.
//!
//! Tokens are derived, not stored: HMAC-SHA256 of the sandbox's id under the daemon's secret
//! (kept in its data directory), so they survive restarts and die with the sandbox (its id is
//! never reused). Every comparison is in constant time. A token acts as the sandbox's owner,
//! for that sandbox only; revoking the owner's keys does not end it (destroy the sandbox).

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub(crate) struct Tokens {
    secret: [u8; 32],
}

impl Tokens {
    pub(crate) fn new(secret: [u8; 32]) -> Tokens {
        Tokens { secret }
    }

    fn derive(&self, purpose: &str, sandbox: &str) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC takes any key length");
        mac.update(purpose.as_bytes());
        mac.update(b"\0");
        mac.update(sandbox.as_bytes());
        let digest = mac.finalize().into_bytes();
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The sandbox's envd access token.
    pub(crate) fn access_token(&self, sandbox: &str) -> String {
        format!("sbxa_{}", self.derive("envd", sandbox))
    }

    /// The sandbox's traffic token (the code interpreter's calls carry it).
    pub(crate) fn traffic_token(&self, sandbox: &str) -> String {
        format!("sbxt_{}", self.derive("traffic", sandbox))
    }

    /// A share link's token: the sandbox, the port and the expiry (Unix ms), signed together
    /// with the sandbox's share generation (which the token does not carry: a revocation
    /// moves it on, and every earlier token stops matching).
    pub(crate) fn share_token(&self, sandbox: &str, port: u16, expires: i64, epoch: i64) -> String {
        let terms = format!("{sandbox}.{port}.{expires}");
        let mac = self.derive("share", &format!("{terms}.{epoch}"));
        format!("{terms}.{mac}")
    }

    /// The sandbox a share link's token names, before its signature is checked (with
    /// [`Tokens::share_of`], against that sandbox's share generation).
    pub(crate) fn share_sandbox(token: &str) -> Option<&str> {
        let sandbox = token.split('.').next()?;
        (sandbox.len() <= 64).then_some(sandbox)
    }

    /// The terms of a share link's token whose signature holds for share generation `epoch`
    /// (expired or not).
    pub(crate) fn share_of(&self, token: &str, epoch: i64) -> Option<(String, u16, i64)> {
        let mut parts = token.split('.');
        let (sandbox, port, expires, mac) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || sandbox.len() > 64 {
            return None;
        }
        let port: u16 = port.parse().ok()?;
        let expires: i64 = expires.parse().ok()?;
        let expected = self.share_token(sandbox, port, expires, epoch);
        let presented = format!("{sandbox}.{port}.{expires}.{mac}");
        // The terms as parsed, re-signed: a token whose numbers were written another way
        // (leading zeros) does not match.
        (same(&expected, &presented) && presented == token)
            .then(|| (sandbox.to_owned(), port, expires))
    }

    pub(crate) fn is_access_token(&self, sandbox: &str, presented: &str) -> bool {
        same(&self.access_token(sandbox), presented)
    }

    pub(crate) fn is_traffic_token(&self, sandbox: &str, presented: &str) -> bool {
        same(&self.traffic_token(sandbox), presented)
    }

    /// Whether a `/files` query carries a valid, unexpired signature of its own path,
    /// `operation` (`read` for a download, `write` for an upload) and user by the sandbox's
    /// access token (E2B's `v1_` form). A query naming a parameter twice is refused (the
    /// handler must act on exactly what was signed).
    pub(crate) fn signed(&self, sandbox: &str, query: Option<&str>, operation: &str) -> bool {
        let Some(query) = query else { return false };
        let Ok(pairs) = unique_pairs(query) else {
            return false;
        };
        let get = |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let Some(signature) = get("signature") else {
            return false;
        };
        // No path is the empty one (E2B's JS SDK signs an upload URL made without a path so:
        // the multipart part's file name says where it goes).
        let path = get("path").unwrap_or("");
        let user = get("username").unwrap_or("");
        let expiration = match get("signature_expiration") {
            None => None,
            Some(text) => match text.parse::<i64>() {
                Ok(at) => Some(at),
                Err(_) => return false,
            },
        };
        if let Some(at) = expiration {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            if at < now {
                return false;
            }
        }
        let token = self.access_token(sandbox);
        same(
            &signature_of(path, operation, user, &token, expiration),
            signature,
        )
    }
}

/// A query's pairs, each name once at most (`Err` names the one repeated).
pub(crate) fn unique_pairs(query: &str) -> Result<Vec<(String, String)>, String> {
    let pairs = form_pairs(query);
    for (i, (name, _)) in pairs.iter().enumerate() {
        if pairs[..i].iter().any(|(other, _)| other == name) {
            return Err(name.clone());
        }
    }
    Ok(pairs)
}

/// E2B's `v1_` signature of a `/files` URL.
pub(crate) fn signature_of(
    path: &str,
    operation: &str,
    user: &str,
    token: &str,
    expiration: Option<i64>,
) -> String {
    let raw = match expiration {
        Some(at) => format!("{path}:{operation}:{user}:{token}:{at}"),
        None => format!("{path}:{operation}:{user}:{token}"),
    };
    let digest = Sha256::digest(raw.as_bytes());
    format!(
        "v1_{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest)
    )
}

fn same(expected: &str, presented: &str) -> bool {
    bool::from(expected.as_bytes().ct_eq(presented.as_bytes()))
}

/// `application/x-www-form-urlencoded` pairs of a query (the first 256; a query that is not
/// such has none).
pub(crate) fn form_pairs(query: &str) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap_or_default();
    pairs.truncate(256);
    pairs
}

/// Percent-decoding with `+` as a space (invalid escapes kept as they are).
pub(crate) fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_e2bs() {
        // The value E2B's SDK computes for this path, operation, user and token.
        assert_eq!(
            signature_of("/home/user/x.txt", "read", "", "tok123", None),
            "v1_Rb7zm5r+4GlfZDdRF1hHG2SpHuolxyovo25Fgc1ZJ0Y"
        );
    }

    #[test]
    fn share_tokens_are_signed() {
        let tokens = Tokens::new([7; 32]);
        let token = tokens.share_token("sb-abc", 3000, 1_700_000_000_000, 0);
        assert_eq!(Tokens::share_sandbox(&token), Some("sb-abc"));
        assert_eq!(
            tokens.share_of(&token, 0),
            Some(("sb-abc".to_owned(), 3000, 1_700_000_000_000))
        );
        // Revoked: the sandbox's next generation.
        assert_eq!(tokens.share_of(&token, 1), None);
        let other = Tokens::new([8; 32]);
        assert_eq!(other.share_of(&token, 0), None);
        for forged in [
            token.replace("3000", "3001"),
            token.replace("1700000000000", "1800000000000"),
            token.replace(".3000.", ".03000."),
            format!("{token}.x"),
            "sb-abc.3000.1".into(),
        ] {
            assert_eq!(tokens.share_of(&forged, 0), None, "{forged}");
        }
    }

    #[test]
    fn signed_urls_are_checked() {
        let tokens = Tokens::new([7; 32]);
        let token = tokens.access_token("sb-1");
        let signature = signature_of("/a b", "write", "user", &token, None);
        let query = format!(
            "path=%2Fa%20b&username=user&signature={}",
            signature.replace('+', "%2B").replace('/', "%2F")
        );
        assert!(tokens.signed("sb-1", Some(&query), "write"));
        assert!(!tokens.signed("sb-1", Some(&query), "read"));
        assert!(!tokens.signed("sb-2", Some(&query), "write"));
        // A second path (or user) after the signed one is refused, not ignored.
        assert!(!tokens.signed("sb-1", Some(&format!("{query}&path=%2Fetc%2Fx")), "write"));
        assert!(!tokens.signed("sb-1", Some(&format!("{query}&username=root")), "write"));
        let expired = signature_of("/a", "read", "", &token, Some(1));
        let query = format!("path=%2Fa&signature={expired}&signature_expiration=1");
        assert!(!tokens.signed("sb-1", Some(&query), "read"));
        assert!(!tokens.signed("sb-1", Some("path=%2Fa"), "read"));
        // No path: the empty one was signed (an upload URL made without a path).
        let pathless = signature_of("", "write", "user", &token, None);
        let query = format!(
            "username=user&signature={}",
            pathless.replace('+', "%2B").replace('/', "%2F")
        );
        assert!(tokens.signed("sb-1", Some(&query), "write"));
        assert!(!tokens.signed("sb-1", Some(&format!("{query}&path=%2Fx")), "write"));
        assert!(tokens.is_access_token("sb-1", &token));
        assert!(!tokens.is_access_token("sb-1", &token[..10]));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b+c%2"), "a b c%2");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
