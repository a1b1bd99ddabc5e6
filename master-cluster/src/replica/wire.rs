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

/// A vote request as a replica of an earlier release (openraft 0.9) encodes it: without the
/// trailing `leadership_transfer` flag, which postcard cannot default (it reads fields in order).
#[derive(Deserialize)]
struct VoteRequestV09 {
    vote: raft_store::Vote,
    last_log_id: Option<raft_store::LogId>,
}

/// A vote request of this release or of an earlier one. (A newer request read by an earlier
/// release loses nothing it knows: postcard ignores the trailing flag.)
pub fn decode_vote_request(
    bytes: &[u8],
) -> Result<openraft::raft::VoteRequest<crate::state::MasterConfig>, tonic::Status> {
    decode("vote request", bytes).or_else(|current| {
        decode::<VoteRequestV09>("vote request", bytes)
            .map(|v09| openraft::raft::VoteRequest::new(v09.vote, v09.last_log_id))
            .map_err(|_| current)
    })
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

    /// A replica on openraft 0.9 sends a vote request without the flag 0.10 added; it still
    /// reads as the same vote.
    #[test]
    fn vote_requests_of_the_earlier_release_still_decode() {
        let vote = raft_store::Vote::new(7, 2);
        let last = Some(raft_store::LogId::new(
            raft_store::LeaderId {
                term: 6,
                node_id: 1,
            },
            41,
        ));
        // postcard encodes a struct as its fields in order: the 0.9 request is this pair.
        let v09 = encode(&(vote, last));
        let request = decode_vote_request(&v09).expect("an 0.9 vote request");
        assert_eq!(request, openraft::raft::VoteRequest::new(vote, last));

        let current =
            encode(&openraft::raft::VoteRequest::<crate::state::MasterConfig>::new(vote, last));
        assert_eq!(current.len(), v09.len() + 1);
        assert_eq!(decode_vote_request(&current).expect("current"), request);
        assert!(decode_vote_request(&v09[..v09.len() - 1]).is_err());
    }
}
