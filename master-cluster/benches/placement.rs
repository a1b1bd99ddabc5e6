//! Apply + placement cost per request, as the state grows: 10, 100, 1,000 and 10,000 computers
//! of 100 partitions (1k to 1M partitions), every computer supplying the software release and
//! in one of four regions.
//!
//! Each measured iteration applies one `RequestInstance` in its own transaction (the in-memory
//! redb backend, the same code raft-store runs) and the marketplace places it. Every 200
//! placements the instances are destroyed and their partitions reported free, outside the
//! timing, so that capacity stays the same whatever the iteration count.
//!
//! `placement/plain/N` has no SLA; `placement/region/N` asks for one region (an indexed SLA
//! dimension). The goal: the cost at 1M partitions at most 1.5x the cost at 10k.
//!
//! `placement_batch/N` applies N requests as one log entry (as the leader's batcher coalesces
//! concurrent writes) on 10k partitions: the cost per command inside batches of 1, 16, 64 and
//! 256, i.e. what one apply transaction costs and what each command adds to it.
//! `PLACEMENT_BENCH_COMPUTERS=100,10000` measures only those sizes.

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use master_cluster::state::model::{
    Actor, ComputerDefinition, ComputerId, InstanceGuid, PartitionId, Placement, RequestedState,
    SoftwareReleaseUrl, SupplyState, Timestamp, UserId,
};
use master_cluster::state::{
    Command, InstanceReport, InstanceRequest, MemoryState, Op, Outcome, Response, sample,
};

const SR: &str = "https://lab.nexedi.com/nexedi/slapos/raw/1.0/software/kvm/software.cfg";
const PARTITIONS_PER_COMPUTER: u32 = 100;
const REGIONS: [&str; 4] = ["eu-west", "eu-north", "us-east", "asia"];
/// Placements between two untimed clean-ups: below the smallest capacity a request can use
/// (one region of 10 computers holds 200 or 300 partitions).
const CYCLE: usize = 200;

struct Bench {
    state: MemoryState,
    clock: u64,
    placed: Vec<(InstanceGuid, PartitionId)>,
    next_title: u64,
}

impl Bench {
    fn command(&mut self, actor: Actor, op: Op) -> Command {
        self.clock += 1;
        Command {
            at: Timestamp(self.clock),
            actor,
            op,
        }
    }

    fn build(computers: u32) -> Self {
        let started = Instant::now();
        let mut bench = Self {
            state: MemoryState::new().expect("state"),
            clock: 1,
            placed: Vec::new(),
            next_title: 0,
        };
        let admin = Actor::Operator(UserId::from("admin"));
        let ids: Vec<u32> = (0..computers).collect();
        for chunk in ids.chunks(25) {
            let commands: Vec<Command> = chunk
                .iter()
                .flat_map(|&n| {
                    let id = ComputerId(format!("COMP-{n:05}"));
                    [
                        Op::RegisterComputer(definition(&id, REGIONS[n as usize % 4])),
                        Op::Supply {
                            computer: id,
                            url: SoftwareReleaseUrl::from(SR),
                            state: SupplyState::Available,
                        },
                    ]
                })
                .map(|op| bench.command(admin.clone(), op))
                .collect();
            for response in bench.state.apply_batch(commands).expect("storage") {
                response.expect("accepted");
            }
        }
        eprintln!(
            "built {} partitions on {computers} computers in {:.1} s",
            u64::from(computers) * u64::from(PARTITIONS_PER_COMPUTER),
            started.elapsed().as_secs_f64()
        );
        bench
    }

    /// The next request of the bench user (a new title), optionally in `region`.
    fn next_request(&mut self, region: Option<&str>) -> Command {
        self.next_title += 1;
        let mut request = InstanceRequest {
            title: format!("instance-{}", self.next_title),
            software_release: SoftwareReleaseUrl::from(SR),
            software_type: "default".into(),
            parameters: [("ram".to_string(), "2048".to_string())].into(),
            sla: Default::default(),
            shared: false,
            state: RequestedState::Started,
        };
        if let Some(region) = region {
            request.sla.insert("region".into(), region.into());
        }
        self.command(
            Actor::User(UserId::from("bench")),
            Op::RequestInstance(request),
        )
    }

    /// Records where a request was placed (every one must be).
    fn placed(&mut self, response: Response) {
        match response {
            Ok(Outcome::Instance(summary)) => match summary.placement {
                Placement::Partition(p) => self.placed.push((summary.guid, p)),
                other => panic!("not placed: {other:?}"),
            },
            other => panic!("request answered {other:?}"),
        }
    }

    /// Applies one request and returns how long apply + placement took.
    fn request(&mut self, region: Option<&str>) -> Duration {
        if self.placed.len() >= CYCLE {
            self.free_all();
        }
        let command = self.next_request(region);
        let started = Instant::now();
        let response = self.state.apply(command).expect("storage");
        let elapsed = started.elapsed();
        self.placed(response);
        elapsed
    }

    /// Applies `n` requests as one log entry and returns how long it took.
    fn request_entry(&mut self, n: usize) -> Duration {
        // Under the default quota of the bench user (1,000 instances).
        if self.placed.len() + n > 512 {
            self.free_all();
        }
        let commands: Vec<Command> = (0..n).map(|_| self.next_request(None)).collect();
        let started = Instant::now();
        let responses = self.state.apply_entry(commands).expect("storage");
        let elapsed = started.elapsed();
        for response in responses {
            self.placed(response);
        }
        elapsed
    }

    fn free_all(&mut self) {
        let placed = std::mem::take(&mut self.placed);
        let user = Actor::User(UserId::from("bench"));
        let mut commands = Vec::new();
        for (guid, partition) in placed {
            commands.push(self.command(user.clone(), Op::DestroyInstance { instance: guid }));
            commands.push(self.command(
                Actor::Computer(partition.computer.clone()),
                Op::ReportInstance {
                    partition,
                    shared_reference: None,
                    report: InstanceReport::Destroyed,
                },
            ));
        }
        for response in self.state.apply_batch(commands).expect("storage") {
            response.expect("freed");
        }
    }
}

fn definition(id: &ComputerId, region: &str) -> ComputerDefinition {
    sample::computer_definition(id.as_str(), PARTITIONS_PER_COMPUTER, &[("region", region)])
}

fn placement(c: &mut Criterion) {
    // `PLACEMENT_BENCH_COMPUTERS=100,10000` measures only those sizes.
    let sizes: Vec<u32> = match std::env::var("PLACEMENT_BENCH_COMPUTERS") {
        Ok(list) => list
            .split(',')
            .map(|n| {
                n.trim()
                    .parse()
                    .expect("PLACEMENT_BENCH_COMPUTERS: numbers")
            })
            .collect(),
        Err(_) => vec![10, 100, 1_000, 10_000],
    };
    let mut group = c.benchmark_group("placement");
    for computers in sizes {
        let mut bench = Bench::build(computers);
        let partitions = u64::from(computers) * u64::from(PARTITIONS_PER_COMPUTER);
        group.bench_function(BenchmarkId::new("plain", partitions), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| bench.request(None)).sum())
        });
        group.bench_function(BenchmarkId::new("region", partitions), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| bench.request(Some("eu-north"))).sum())
        });
    }
    group.finish();

    let mut group = c.benchmark_group("placement_batch");
    let mut bench = Bench::build(100);
    for n in [1usize, 16, 64, 256] {
        group.throughput(criterion::Throughput::Elements(n as u64));
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| bench.request_entry(n)).sum())
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    targets = placement
}
criterion_main!(benches);
