//! Who may read what, decided without IO from facts the handlers read first. (Who may change
//! what is the state machine's to decide, in `state/apply.rs`, so that every replica decides
//! the same.) Operators and replicas may read everything; a computer reads its own computer
//! and what runs on it; a partition reads its own instance, the instances it requested and the
//! shared instances it hosts; a user reads the instances they own.

use tonic::Status;

use crate::state::model::{Actor, ComputerId, Instance, InstanceGuid, Placement, Requester};

fn denied(actor: &Actor, what: impl std::fmt::Display) -> Status {
    tracing::info!(%actor, %what, "read refused");
    Status::permission_denied(format!("{actor} may not read {what}"))
}

/// Reading a computer's view (a node's poll) or its usage.
pub fn may_read_computer(actor: &Actor, computer: &ComputerId) -> Result<(), Status> {
    match actor {
        Actor::Operator(_) | Actor::Replica(_) => Ok(()),
        Actor::Computer(c) if c == computer => Ok(()),
        _ => Err(denied(actor, format_args!("computer {computer}"))),
    }
}

/// What it takes to decide whether an instance is visible to a caller.
#[derive(Debug, Clone, Copy)]
pub struct InstanceFacts<'a> {
    pub instance: &'a Instance,
    /// For a shared instance: where its host is placed.
    pub host_placement: Option<&'a Placement>,
    /// For a partition caller: the instance on its partition.
    pub callers_instance: Option<InstanceGuid>,
}

pub fn may_read_instance(actor: &Actor, facts: InstanceFacts<'_>) -> Result<(), Status> {
    let instance = facts.instance;
    let on_computer = |placement: Option<&Placement>, computer: &ComputerId| matches!(placement, Some(Placement::Partition(p)) if p.computer == *computer);
    let allowed = match actor {
        Actor::Operator(_) | Actor::Replica(_) => true,
        Actor::User(user) => instance.owner == *user,
        Actor::Computer(computer) => {
            on_computer(Some(&instance.placement), computer)
                || on_computer(facts.host_placement, computer)
        }
        Actor::Partition(_) => facts.callers_instance.is_some_and(|mine| {
            instance.guid == mine
                || instance.requester == Requester::Instance(mine)
                || instance.placement == Placement::Hosted { host: mine }
        }),
    };
    if allowed {
        Ok(())
    } else {
        Err(denied(actor, format_args!("instance {}", instance.guid)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::model::{PartitionId, RequestedState, Timestamp, UserId};

    fn instance(guid: u64, owner: &str, requester: Requester, placement: Placement) -> Instance {
        Instance {
            guid: InstanceGuid(guid),
            owner: UserId::from(owner),
            title: format!("i{guid}"),
            root: InstanceGuid(1),
            requester,
            software_release: "https://sr".into(),
            software_type: "default".into(),
            sla: Default::default(),
            shared: false,
            shared_reference: None,
            requested_state: RequestedState::Started,
            placement,
            reported_state: None,
            last_error: None,
            access_status: None,
            timestamp: Timestamp(1),
            created_at: Timestamp(1),
            destroyed_reported: false,
        }
    }

    fn on(computer: &str, partition: &str) -> Placement {
        Placement::Partition(PartitionId {
            computer: computer.into(),
            partition: partition.into(),
        })
    }

    #[test]
    fn each_role_reads_only_what_is_its_own() {
        let root = instance(
            1,
            "alice",
            Requester::User("alice".into()),
            on("COMP-A", "p0"),
        );
        let child = instance(
            2,
            "alice",
            Requester::Instance(InstanceGuid(1)),
            on("COMP-B", "p0"),
        );
        let shared = instance(
            3,
            "bob",
            Requester::User("bob".into()),
            Placement::Hosted {
                host: InstanceGuid(1),
            },
        );
        let facts = |instance, host_placement, callers_instance| InstanceFacts {
            instance,
            host_placement,
            callers_instance,
        };
        let alice = Actor::User("alice".into());
        let bob = Actor::User("bob".into());
        assert!(may_read_instance(&alice, facts(&root, None, None)).is_ok());
        assert!(may_read_instance(&bob, facts(&root, None, None)).is_err());
        assert!(may_read_instance(&bob, facts(&shared, None, None)).is_ok());

        let comp_a = Actor::Computer("COMP-A".into());
        assert!(may_read_instance(&comp_a, facts(&root, None, None)).is_ok());
        assert!(may_read_instance(&comp_a, facts(&child, None, None)).is_err());
        assert!(
            may_read_instance(&comp_a, facts(&shared, Some(&root.placement), None)).is_ok(),
            "the computer of the host serves the shared instance"
        );

        let p0 = Actor::Partition(PartitionId {
            computer: "COMP-A".into(),
            partition: "p0".into(),
        });
        let mine = Some(InstanceGuid(1));
        assert!(may_read_instance(&p0, facts(&root, None, mine)).is_ok());
        assert!(
            may_read_instance(&p0, facts(&child, None, mine)).is_ok(),
            "its child"
        );
        assert!(
            may_read_instance(&p0, facts(&shared, None, mine)).is_ok(),
            "what it hosts"
        );
        let other = Some(InstanceGuid(9));
        assert!(may_read_instance(&p0, facts(&root, None, other)).is_err());
        assert!(
            may_read_instance(&p0, facts(&root, None, None)).is_err(),
            "a free partition"
        );

        let operator = Actor::Operator("ops".into());
        assert!(may_read_instance(&operator, facts(&child, None, None)).is_ok());

        assert!(may_read_computer(&comp_a, &"COMP-A".into()).is_ok());
        assert!(may_read_computer(&comp_a, &"COMP-B".into()).is_err());
        assert!(may_read_computer(&alice, &"COMP-A".into()).is_err());
    }
}
