//! Payloads of the internal Raft service: openraft's messages and forwarded commands, as
//! postcard behind a version byte. Decoding never trusts the bytes: a short, unknown or
//! malformed payload is an `InvalidArgument`, never a panic.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Version byte of every payload this release writes.
const V1: u8 = 1;

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_extend(value, vec![V1]).expect(
        "postcard fails only on a full writer (a Vec never is) or a type serde cannot \
         represent (openraft's messages and our commands are plain data)",
    )
}

pub fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, tonic::Status> {
    match bytes.split_first() {
        Some((&V1, rest)) => postcard::from_bytes(rest)
            .map_err(|e| tonic::Status::invalid_argument(format!("malformed {what}: {e}"))),
        Some((version, _)) => Err(tonic::Status::invalid_argument(format!(
            "{what} in encoding version {version}; this replica reads version {V1}"
        ))),
        None => Err(tonic::Status::invalid_argument(format!("empty {what}"))),
    }
}

/// Why the leader did not answer a forwarded command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ForwardError {
    /// The replica asked is not the leader (any more); it names the leader if it knows one.
    #[error("not the leader; the leader is {leader:?}")]
    NotLeader { leader: Option<(u64, String)> },
    /// The replica cannot commit at all (stopped, or a fatal storage error).
    #[error("the leader cannot commit: {0}")]
    Unavailable(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_and_bad_ones_are_refused() {
        let error = ForwardError::NotLeader {
            leader: Some((2, "http://[::1]:7000".into())),
        };
        let bytes = encode(&error);
        assert_eq!(
            decode::<ForwardError>("reply", &bytes).expect("decodes"),
            error
        );
        assert_eq!(
            decode::<ForwardError>("reply", &[])
                .expect_err("empty")
                .code(),
            tonic::Code::InvalidArgument
        );
        let mut future = bytes.clone();
        future[0] = 9;
        assert!(
            decode::<ForwardError>("reply", &future)
                .expect_err("unknown version")
                .message()
                .contains("version 9")
        );
        assert!(decode::<ForwardError>("reply", &bytes[..2]).is_err());
    }
}
