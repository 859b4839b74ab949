//! The API key: made at the first start into `<home>/api-key` (0600) from the system's random
//! source, printed by `qwen3q api-key`, and asked of every request as `Authorization: Bearer
//! KEY`. Compared in constant time.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::ApiState;

/// A key: `sk-qwen3q-` and 48 hex digits (192 bits).
#[derive(Clone)]
pub struct ApiKey(String);

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(…)")
    }
}

const PREFIX: &str = "sk-qwen3q-";

impl ApiKey {
    /// The key in `path`, made there first if there is none. A file that is not a key this
    /// build writes is refused, not replaced: a person may have put it there.
    pub fn load_or_create(path: &Path) -> std::io::Result<ApiKey> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let key = text.trim();
                if key.len() < PREFIX.len() + 32 || key.chars().any(|c| c.is_control()) {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("{} does not hold an API key", path.display()),
                    ));
                }
                Ok(ApiKey(key.to_string()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut bytes = [0u8; 24];
                std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
                let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                let key = format!("{PREFIX}{hex}");
                let tmp = path.with_extension("tmp");
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&tmp)?;
                f.write_all(format!("{key}\n").as_bytes())?;
                f.sync_all()?;
                // Two processes making one at once: the first rename wins, both read it.
                std::fs::rename(&tmp, path)?;
                ApiKey::load_or_create(path)
            }
            Err(e) => Err(e),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `given` is the key, in time that does not depend on where they differ.
    pub fn matches(&self, given: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), given.as_bytes());
        let mut diff = a.len() ^ b.len();
        for (i, &x) in a.iter().enumerate() {
            diff |= usize::from(x ^ b.get(i).copied().unwrap_or(0));
        }
        diff == 0
    }
}

/// Every request but none carries the key: 401 in OpenAI's shape otherwise.
pub async fn require_key(
    State(state): State<std::sync::Arc<ApiState>>,
    req: Request,
    next: Next,
) -> Response {
    let given = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(k) if state.key.matches(k) => next.run(req).await,
        Some(_) => ApiError::unauthorized(
            "Incorrect API key provided (qwen3q api-key prints this machine's)",
        )
        .into_response(),
        None => ApiError::unauthorized(
            "You didn't provide an API key: Authorization: Bearer KEY (qwen3q api-key prints it)",
        )
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_made_once_private_and_read_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api-key");
        let a = ApiKey::load_or_create(&path).unwrap();
        assert!(a.as_str().starts_with(PREFIX) && a.as_str().len() == PREFIX.len() + 48);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = ApiKey::load_or_create(&path).unwrap();
        assert_eq!(a.as_str(), b.as_str());
        assert!(a.matches(b.as_str()));
        assert!(!a.matches(&b.as_str()[1..]));
        assert!(!a.matches(""));
        let mut other = a.as_str().to_string();
        other.pop();
        other.push('x');
        assert!(!a.matches(&other));
        std::fs::write(&path, "short").unwrap();
        assert!(ApiKey::load_or_create(&path).is_err());
    }
}
