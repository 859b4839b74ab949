//! Value encoding: one schema-version byte, then bincode 2 (serde). The only file that knows
//! the format, so it can be swapped by a migration.

use serde::{de::DeserializeOwned, Serialize};

/// The layout every value written by this build follows. Bump it with a migration under
/// `migrations/` and a step in `migrate.rs`.
pub const SCHEMA_VERSION: u8 = 3;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("stored value is empty")]
    Empty,
    #[error("stored value has schema version {found}, this build reads {expected}")]
    Version { found: u8, expected: u8 },
    #[error("stored value does not decode: {0}")]
    Decode(String),
    #[error("value does not encode: {0}")]
    Encode(String),
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    encode_as(SCHEMA_VERSION, value)
}

/// A value in the layout of schema `version` (for migrations, which write each version's own
/// layout so that the steps after them find what they expect).
pub fn encode_as<T: Serialize>(version: u8, value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = vec![version];
    bincode::serde::encode_into_std_write(value, &mut out, config())
        .map_err(|e| CodecError::Encode(e.to_string()))?;
    Ok(out)
}

/// A value's body without the version byte: for hashing (dedupe keys), where the same value
/// must give the same bytes in every schema version that did not change its layout.
pub fn encode_body<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    bincode::serde::encode_to_vec(value, config()).map_err(|e| CodecError::Encode(e.to_string()))
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if version != SCHEMA_VERSION {
        return Err(CodecError::Version {
            found: version,
            expected: SCHEMA_VERSION,
        });
    }
    decode_body(body)
}

/// Decode a value's body without its version byte (for migrations, which know the version).
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, CodecError> {
    let (value, _) = bincode::serde::decode_from_slice(body, config())
        .map_err(|e| CodecError::Decode(e.to_string()))?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{JobState, Usage};

    #[test]
    fn round_trip_carries_the_version_byte() {
        let v = JobState::Succeeded {
            finished: 5,
            usage: Usage {
                prompt_tokens: 3,
                completion_tokens: 4,
            },
        };
        let bytes = encode(&v).unwrap();
        assert_eq!(bytes[0], SCHEMA_VERSION);
        assert_eq!(decode::<JobState>(&bytes).unwrap(), v);
    }

    #[test]
    fn refuses_other_versions_and_garbage() {
        let mut bytes = encode(&JobState::Queued).unwrap();
        bytes[0] = SCHEMA_VERSION + 1;
        assert!(matches!(
            decode::<JobState>(&bytes),
            Err(CodecError::Version { .. })
        ));
        assert!(matches!(decode::<JobState>(&[]), Err(CodecError::Empty)));
        assert!(matches!(
            decode::<JobState>(&[SCHEMA_VERSION, 200, 200, 200]),
            Err(CodecError::Decode(_))
        ));
    }
}
