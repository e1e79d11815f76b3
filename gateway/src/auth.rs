//! Basic auth on `/system/*`, as OpenFaaS's gateway does it: one user and password, read from
//! a file or the environment.

use std::path::Path;

use base64::Engine as _;

/// Environment variables that carry the credentials when no file is given.
pub const USER_ENV: &str = "LNIC_GATEWAY_USER";
pub const PASSWORD_ENV: &str = "LNIC_GATEWAY_PASSWORD";

#[derive(Clone)]
pub struct Credentials {
    user: String,
    password: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read credentials from {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: expected one line `user:password` with a non-empty user and password")]
    Format { path: String },
    #[error(
        "no credentials: give --auth-file FILE (one line `user:password`), or set \
         {USER_ENV} and {PASSWORD_ENV}, or pass --no-auth"
    )]
    Missing,
}

impl Credentials {
    pub fn new(user: &str, password: &str) -> Option<Credentials> {
        (!user.is_empty() && !password.is_empty() && !user.contains(':')).then(|| Credentials {
            user: user.to_owned(),
            password: password.to_owned(),
        })
    }

    /// One line `user:password` (trailing newline allowed).
    pub fn from_file(path: &Path) -> Result<Credentials, AuthError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
        line.split_once(':')
            .and_then(|(u, p)| Credentials::new(u, p))
            .ok_or_else(|| AuthError::Format {
                path: path.display().to_string(),
            })
    }

    pub fn from_env() -> Result<Credentials, AuthError> {
        let user = std::env::var(USER_ENV).unwrap_or_default();
        let password = std::env::var(PASSWORD_ENV).unwrap_or_default();
        Credentials::new(&user, &password).ok_or(AuthError::Missing)
    }

    /// Whether an `Authorization` header value carries these credentials.
    pub fn accepts(&self, header: Option<&[u8]>) -> bool {
        let Some(value) = header else { return false };
        let Some(encoded) = value.strip_prefix(b"Basic ") else {
            return false;
        };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim_ascii())
        else {
            return false;
        };
        let expected = format!("{}:{}", self.user, self.password);
        constant_time_eq(&decoded, expected.as_bytes())
    }
}

/// Compares without stopping at the first difference, so timing does not reveal a prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        diff |= usize::from(a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0));
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_only_the_exact_basic_credentials() {
        let c = Credentials::new("admin", "s3cret").unwrap();
        let good = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("admin:s3cret")
        );
        assert!(c.accepts(Some(good.as_bytes())));
        let wrong = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("admin:s3cre")
        );
        assert!(!c.accepts(Some(wrong.as_bytes())));
        assert!(!c.accepts(Some(b"Basic !!!")));
        assert!(!c.accepts(Some(b"Bearer x")));
        assert!(!c.accepts(None));
        assert!(Credentials::new("", "x").is_none());
        assert!(Credentials::new("a:b", "x").is_none());
    }
}
