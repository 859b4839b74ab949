//! Value encoding: one schema-version byte, then bincode 2 (serde). The only file that knows
//! the format, so it can be swapped by a migration.

use serde::{de::DeserializeOwned, Serialize};

/// The layout every value written by this build follows. Bump it with a migration under
/// `migrations/` and a step in `migrate/`.
pub const SCHEMA_VERSION: u8 = 9;

/// The oldest version byte whose values have this build's layout: values written by schemas
/// `READS_FROM..=SCHEMA_VERSION` decode as they are. A schema that only adds trees (4 added
/// `crashes`) keeps it, and its migration rewrites nothing; one that changes a value's layout
/// sets it to its own number, and its migration rewrites the values (5 changed `Task`; 6 only
/// added a tree; 8 added `JobResult::provenance`; 9 added `Job::batch` and `Job::deadline`).
pub const READS_FROM: u8 = 9;

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
    if !(READS_FROM..=SCHEMA_VERSION).contains(&version) {
        return Err(CodecError::Version {
            found: version,
            expected: SCHEMA_VERSION,
        });
    }
    decode_body(body)
}

/// Decode a value's body without its version byte (for migrations, which know the version).
///
/// Stored bytes may be damaged: a length inside them is read before what it counts, and
/// bincode allocates for it first. A limit on what one value may claim turns a damaged length
/// into a decode error instead of an allocation of exabytes (which aborts the process). A
/// value claims at most a few times its own size; the limit grows with the body's length.
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, CodecError> {
    let decoded = if body.len() <= 1 << 20 {
        bincode::serde::decode_from_slice(body, config().with_limit::<{ 16 << 20 }>())
    } else {
        bincode::serde::decode_from_slice(body, config().with_limit::<{ 1 << 30 }>())
    };
    let (value, _) = decoded.map_err(|e| CodecError::Decode(e.to_string()))?;
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
        bytes[0] = READS_FROM - 1;
        assert!(matches!(
            decode::<JobState>(&bytes),
            Err(CodecError::Version { .. })
        ));
        // A value of an older schema with today's layout decodes as it is.
        bytes[0] = READS_FROM;
        assert_eq!(decode::<JobState>(&bytes).unwrap(), JobState::Queued);
        assert!(matches!(decode::<JobState>(&[]), Err(CodecError::Empty)));
        assert!(matches!(
            decode::<JobState>(&[SCHEMA_VERSION, 200, 200, 200]),
            Err(CodecError::Decode(_))
        ));
    }

    #[test]
    fn a_damaged_length_is_a_decode_error_not_a_huge_allocation() {
        // Found by the mutation fuzzer (crate::fuzz): a job whose custom id's length (varint
        // 253: a u64 follows) reads "10100101" as 3.5 × 10^18 bytes. Without a limit bincode
        // allocated that much first, and the process aborted.
        let mut bytes = vec![SCHEMA_VERSION, 2, 253];
        bytes.extend(b"10100101469249610468d\x14");
        assert!(matches!(
            decode::<crate::job::Job>(&bytes),
            Err(CodecError::Decode(_))
        ));
    }
}
