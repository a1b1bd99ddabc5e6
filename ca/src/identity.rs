//! Who a certificate speaks for: its role and id, carried as one URI subject alternative name
//! `urn:slapcluster:ROLE:ID` (a partition's id is `COMPUTER:PARTITION`), and parsed back into
//! a typed [`Identity`] on every call.

use std::fmt;

/// The prefix of every identity URI this crate writes.
const URN: &str = "urn:slapcluster:";

/// Longest id accepted: far above any real computer, partition or user name.
pub const MAX_ID_BYTES: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Replica,
    Operator,
    User,
    Computer,
    Partition,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Replica => "replica",
            Self::Operator => "operator",
            Self::User => "user",
            Self::Computer => "computer",
            Self::Partition => "partition",
        }
    }
}

/// A certificate's holder.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Identity {
    /// A master replica, by its Raft node id.
    Replica(u64),
    Operator(String),
    User(String),
    /// A computer's node agent, by computer id (`COMP-123`).
    Computer(String),
    /// The instance running in a partition.
    Partition {
        computer: String,
        partition: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("{0:?} is not a slapcluster identity (urn:slapcluster:ROLE:ID)")]
    NotOurs(String),
    #[error("unknown role {0:?}")]
    UnknownRole(String),
    #[error("invalid {role} id {id:?}: {reason}")]
    BadId {
        role: &'static str,
        id: String,
        reason: &'static str,
    },
}

impl Identity {
    pub fn role(&self) -> Role {
        match self {
            Self::Replica(_) => Role::Replica,
            Self::Operator(_) => Role::Operator,
            Self::User(_) => Role::User,
            Self::Computer(_) => Role::Computer,
            Self::Partition { .. } => Role::Partition,
        }
    }

    /// The subject alternative name that carries this identity.
    pub fn to_uri(&self) -> String {
        let id = match self {
            Self::Replica(id) => id.to_string(),
            Self::Operator(id) | Self::User(id) | Self::Computer(id) => id.clone(),
            Self::Partition {
                computer,
                partition,
            } => format!("{computer}:{partition}"),
        };
        format!("{URN}{}:{id}", self.role().as_str())
    }

    /// Parses [`Identity::to_uri`]'s form; refuses anything else, including ids this crate
    /// would not issue.
    pub fn parse_uri(uri: &str) -> Result<Self, IdentityError> {
        let rest = uri
            .strip_prefix(URN)
            .ok_or_else(|| IdentityError::NotOurs(uri.to_string()))?;
        let (role, id) = rest
            .split_once(':')
            .ok_or_else(|| IdentityError::NotOurs(uri.to_string()))?;
        let identity = match role {
            "replica" => Self::Replica(match id.parse() {
                Ok(n) if n > 0 && !id.starts_with('0') => n,
                _ => {
                    return Err(IdentityError::BadId {
                        role: "replica",
                        id: id.to_string(),
                        reason: "not a positive integer",
                    });
                }
            }),
            "operator" => Self::Operator(id.to_string()),
            "user" => Self::User(id.to_string()),
            "computer" => Self::Computer(id.to_string()),
            "partition" => {
                let (computer, partition) =
                    id.split_once(':').ok_or_else(|| IdentityError::BadId {
                        role: "partition",
                        id: id.to_string(),
                        reason: "not COMPUTER:PARTITION",
                    })?;
                Self::Partition {
                    computer: computer.to_string(),
                    partition: partition.to_string(),
                }
            }
            other => return Err(IdentityError::UnknownRole(other.to_string())),
        };
        identity.validate()?;
        Ok(identity)
    }

    /// Ids are 1 to [`MAX_ID_BYTES`] of letters, digits and `. _ - @ +`: enough for SlapOS
    /// references and e-mail-like user names, and nothing that could be read two ways in a
    /// URI or a log line.
    pub fn validate(&self) -> Result<(), IdentityError> {
        let role = self.role().as_str();
        let check = |id: &str| {
            let bad = |reason| IdentityError::BadId {
                role,
                id: id.to_string(),
                reason,
            };
            if id.is_empty() {
                return Err(bad("empty"));
            }
            if id.len() > MAX_ID_BYTES {
                return Err(bad("longer than 128 bytes"));
            }
            let allowed = |c: char| c.is_ascii_alphanumeric() || "._-@+".contains(c);
            if !id.chars().all(allowed) {
                return Err(bad("only letters, digits and . _ - @ + are allowed"));
            }
            Ok(())
        };
        match self {
            Self::Replica(0) => Err(IdentityError::BadId {
                role,
                id: "0".into(),
                reason: "replica ids start at 1",
            }),
            Self::Replica(_) => Ok(()),
            Self::Operator(id) | Self::User(id) | Self::Computer(id) => check(id),
            Self::Partition {
                computer,
                partition,
            } => check(computer).and_then(|()| check(partition)),
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Replica(id) => write!(f, "replica {id}"),
            Self::Operator(id) => write!(f, "operator {id}"),
            Self::User(id) => write!(f, "user {id}"),
            Self::Computer(id) => write!(f, "computer {id}"),
            Self::Partition {
                computer,
                partition,
            } => write!(f, "partition {computer}/{partition}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_role_round_trips_through_its_uri() {
        for identity in [
            Identity::Replica(3),
            Identity::Operator("ops@example.org".into()),
            Identity::User("alice".into()),
            Identity::Computer("COMP-1234".into()),
            Identity::Partition {
                computer: "COMP-1".into(),
                partition: "slappart0".into(),
            },
        ] {
            let uri = identity.to_uri();
            assert!(uri.starts_with("urn:slapcluster:"), "{uri}");
            assert_eq!(Identity::parse_uri(&uri), Ok(identity));
        }
        assert_eq!(
            Identity::parse_uri("urn:slapcluster:partition:COMP-1:slappart0"),
            Ok(Identity::Partition {
                computer: "COMP-1".into(),
                partition: "slappart0".into()
            })
        );
    }

    #[test]
    fn anything_else_is_refused_with_its_reason() {
        let refused = |uri: &str| Identity::parse_uri(uri).expect_err(uri);
        assert!(matches!(
            refused("https://example.org/alice"),
            IdentityError::NotOurs(_)
        ));
        assert!(matches!(
            refused("urn:slapcluster:root:x"),
            IdentityError::UnknownRole(_)
        ));
        for uri in [
            "urn:slapcluster:user:",
            "urn:slapcluster:user:al ice",
            "urn:slapcluster:user:a/b",
            "urn:slapcluster:computer:COMP:1",
            "urn:slapcluster:replica:0",
            "urn:slapcluster:replica:01",
            "urn:slapcluster:replica:-1",
            "urn:slapcluster:partition:COMP-1",
            "urn:slapcluster:partition::slappart0",
        ] {
            assert!(matches!(refused(uri), IdentityError::BadId { .. }), "{uri}");
        }
        let long = format!("urn:slapcluster:user:{}", "a".repeat(MAX_ID_BYTES + 1));
        assert!(matches!(refused(&long), IdentityError::BadId { .. }));
    }
}
