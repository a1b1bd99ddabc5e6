//! A state on an in-memory redb with a clock, and builders for the commands tests send.

use super::*;

pub(super) struct Fixture {
    pub(super) state: MemoryState,
    pub(super) clock: u64,
}

pub(super) const KVM: &str =
    "https://lab.nexedi.com/nexedi/slapos/raw/1.0/software/kvm/software.cfg";
pub(super) const ERP5: &str =
    "https://lab.nexedi.com/nexedi/slapos/raw/1.0/software/erp5/software.cfg";

pub(super) fn user(name: &str) -> Actor {
    Actor::User(UserId::from(name))
}

pub(super) fn url(u: &str) -> SoftwareReleaseUrl {
    SoftwareReleaseUrl::from(u)
}

pub(super) fn pid(computer: &str, partition: &str) -> PartitionId {
    PartitionId {
        computer: ComputerId::from(computer),
        partition: PartitionRef::from(partition),
    }
}

pub(super) use crate::state::sample::computer_definition as definition;

pub(super) use crate::state::sample::instance_request as request;

impl Fixture {
    pub(super) fn new() -> Self {
        Self {
            state: MemoryState::new().expect("in-memory state"),
            clock: 1_700_000_000_000_000,
        }
    }

    pub(super) fn run(&mut self, actor: Actor, op: Op) -> Response {
        self.clock += 1_000_000;
        let response = self
            .state
            .apply(Command {
                at: Timestamp(self.clock),
                actor,
                op,
            })
            .expect("storage works");
        check_invariants(&self.state);
        response
    }

    /// Runs a command that must be refused, and checks it changed nothing.
    pub(super) fn refused(&mut self, actor: Actor, op: Op) -> Rejection {
        let before = self.dump();
        match self.run(actor, op) {
            Err(rejection) => {
                assert_eq!(self.dump(), before, "refused command changed the state");
                rejection
            }
            Ok(outcome) => panic!("expected a rejection, got {outcome:?}"),
        }
    }

    pub(super) fn register(&mut self, id: &str, partitions: u32, attributes: &[(&str, &str)]) {
        let r = self.run(
            Actor::Computer(ComputerId::from(id)),
            Op::RegisterComputer(definition(id, partitions, attributes)),
        );
        assert!(r.is_ok(), "{r:?}");
    }

    pub(super) fn supply(&mut self, computer: &str, sr: &str) {
        let r = self.run(
            Actor::Operator(UserId::from("admin")),
            Op::Supply {
                computer: ComputerId::from(computer),
                url: url(sr),
                state: SupplyState::Available,
            },
        );
        assert!(r.is_ok(), "{r:?}");
    }

    pub(super) fn request(&mut self, actor: Actor, request: InstanceRequest) -> InstanceSummary {
        match self.run(actor, Op::RequestInstance(request)) {
            Ok(Outcome::Instance(summary)) => summary,
            other => panic!("request answered {other:?}"),
        }
    }

    pub(super) fn report(&mut self, partition: &PartitionId, report: InstanceReport) -> Response {
        self.run(
            Actor::Computer(partition.computer.clone()),
            Op::ReportInstance {
                partition: partition.clone(),
                shared_reference: None,
                report,
            },
        )
    }

    pub(super) fn dump(&self) -> Vec<(String, Vec<u8>, Vec<u8>)> {
        query::dump(&self.state.read().expect("read")).expect("dump")
    }

    pub(super) fn view(&self, computer: &str) -> query::ComputerView {
        query::computer_view(
            &self.state.read().expect("read"),
            &ComputerId::from(computer),
        )
        .expect("query")
        .expect("known computer")
    }

    pub(super) fn instance(&self, guid: InstanceGuid) -> Option<query::InstanceView> {
        query::instance(&self.state.read().expect("read"), guid).expect("query")
    }

    pub(super) fn free(&self, computer: &str) -> u32 {
        self.view(computer).computer.free_count
    }
}

pub(super) fn partition_of(summary: &InstanceSummary) -> PartitionId {
    match &summary.placement {
        Placement::Partition(p) => p.clone(),
        other => panic!("{} is not on a partition: {other:?}", summary.guid),
    }
}

/// Names the phase of a long test in its output.
pub(super) fn tracing_phase(what: &str) {
    eprintln!("--- {what}");
}
