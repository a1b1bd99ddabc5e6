//! The marketplace: which free partition (or, for a shared instance, which host) a request gets.
//!
//! **Rule.** Candidates are the free partitions of open computers that are asked to supply the
//! request's software release, admit the request's tree by their allocation scope, and match
//! every SLA key. A computer's scope admits: `open/public`, every project's trees;
//! `open/project`, its own project's; `open/personal`, those its project's managers request;
//! `close/*`, none (what it runs stays). Among the candidates the marketplace takes a
//! computer of the highest *free tier* — the bit length of its free partition count: 1, 2-3,
//! 4-7, 8-15, ... — and within the tier the lowest computer id; then that computer's lowest
//! partition (`slappart2` before `slappart10`). Tiers spread load like "most free first" while
//! a computer's index keys move only when its free count crosses a power of two, not at every
//! placement. Shared instances go to the first matching host
//! (lowest guid) running the same software release and type, or to the one `instance_guid`
//! names.
//!
//! **Index.** The `placement` table holds, for every open computer with a free partition and
//! every software release it supplies, one key per *dimension* of the computer — `*`, and
//! `key=value` for each of its SLA attributes and capabilities, prefixed `@project/` unless the
//! computer is public: `(release, dimension, 32 - free tier, computer)`. A request reads the
//! first keys of two ranges, its project's and the public one, of one dimension: that of its
//! first SLA attribute, or `*`; the better of the two firsts wins. The first key is the answer unless
//! the computer fails another SLA key, so a placement costs O(log n) in the number of
//! partitions; computers skipped for failing a second key are the only extra reads. A
//! `computer_guid` request goes straight to its computer. Keys move only when a computer's free
//! count, scope, attributes or supply change.

use std::collections::{BTreeMap, BTreeSet};

use redb::ReadableTable;

use super::keys::Key;
use super::model::{
    AllocationScope, Computer, ComputerId, Instance, InstanceGuid, Parameters, Partition,
    Placement, ProjectId, ProjectRole, SoftwareReleaseUrl, SupplyState, UserId,
};
use super::tables::{self, StateError, Tables};

/// SLA category keys matched against a computer's attributes, as the real master knows them.
pub const CATEGORY_KEYS: &[&str] = &[
    "group",
    "cpu_core",
    "cpu_frequency",
    "cpu_type",
    "local_area_network_type",
    "region",
    "memory_size",
    "memory_type",
    "storage_capacity",
    "storage_interface",
    "storage_redundancy",
    "network_guid",
];

/// The SLA key that names the project a new tree is requested in (the master's `project_guid`).
/// It is not matched against computers: the tree's project is, through their scopes.
pub const PROJECT_KEY: &str = "project_guid";

/// The instance tree a placement is for: whose computers' scopes admit it.
#[derive(Debug, Clone, Copy)]
pub struct Tree<'a> {
    pub project: &'a ProjectId,
    pub owner: &'a UserId,
}

impl<'a> Tree<'a> {
    pub fn of(instance: &'a Instance) -> Self {
        Self {
            project: &instance.project,
            owner: &instance.owner,
        }
    }
}

/// What an SLA asks of a placement, parsed and checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub computer: Option<ComputerId>,
    pub host: Option<InstanceGuid>,
    /// Attributes the computer must have with exactly these values.
    pub attributes: BTreeMap<String, String>,
    pub capability: Option<String>,
    /// `mode=unique_by_network`: no other instance of the tree on the same network.
    pub unique_by_network: bool,
}

/// Parses an SLA. An `Err` is the reason the request can never be placed as asked.
pub fn parse_sla(sla: &Parameters, shared: bool) -> Result<Filter, String> {
    let mut filter = Filter::default();
    for (key, value) in sla {
        match key.as_str() {
            "computer_guid" => filter.computer = Some(ComputerId(value.clone())),
            "instance_guid" if shared => {
                filter.host = Some(InstanceGuid::parse(value).ok_or_else(|| {
                    format!("instance_guid {value:?} is not an instance reference (SOFTINST-n)")
                })?);
            }
            "instance_guid" => {
                return Err("instance_guid selects the host of a shared instance only".into());
            }
            "mode" if value == "unique_by_network" => filter.unique_by_network = true,
            "mode" => return Err(format!("unknown SLA mode {value:?}")),
            "capability" => filter.capability = Some(value.clone()),
            k if CATEGORY_KEYS.contains(&k) => {
                filter.attributes.insert(key.clone(), value.clone());
            }
            // Carried for the node, not used for placement; the project is the tree's.
            k if k == "retention_delay" || k == PROJECT_KEY || k.starts_with("fw_") => {}
            _ => return Err(format!("unknown SLA key {key:?}")),
        }
    }
    Ok(filter)
}

/// Whether `computer` matches `filter`'s computer, attribute and capability keys.
pub fn computer_matches(computer: &Computer, filter: &Filter) -> bool {
    filter.computer.as_ref().is_none_or(|c| *c == computer.id)
        && filter
            .attributes
            .iter()
            .all(|(k, v)| computer.attributes.get(k) == Some(v))
        && filter
            .capability
            .as_ref()
            .is_none_or(|c| computer.capabilities.contains(c))
}

/// Whether `computer`'s scope admits new instances of `tree`.
pub fn admits<T: ReadableTable<&'static [u8], &'static [u8]>>(
    t: &Tables<T>,
    computer: &Computer,
    tree: &Tree<'_>,
) -> Result<bool, StateError> {
    Ok(computer.allocation_scope.is_open() && serves(t, computer, tree)?)
}

/// Whose trees a computer's scope is for: every project's if it is public, else its own
/// project's (its managers' only, if personal). A closed computer's instances still host the
/// shared instances of their own project.
fn serves<T: ReadableTable<&'static [u8], &'static [u8]>>(
    t: &Tables<T>,
    computer: &Computer,
    tree: &Tree<'_>,
) -> Result<bool, StateError> {
    Ok(match computer.allocation_scope {
        AllocationScope::OpenPublic => true,
        AllocationScope::OpenPersonal => {
            computer.project == *tree.project
                && t.role(tree.owner, &computer.project)? == Some(ProjectRole::Manager)
        }
        _ => computer.project == *tree.project,
    })
}

/// The prefix of a computer's index dimensions: none for a public computer, its project's
/// for one that serves its project only.
fn audience(scope: AllocationScope, project: &ProjectId) -> String {
    match scope {
        AllocationScope::OpenPublic => String::new(),
        _ => format!("@{project}/"),
    }
}

/// The network a computer is on, for `unique_by_network`. A computer without `network_guid` is
/// a network of its own.
pub fn network_of(computer: &Computer) -> String {
    match computer.attributes.get("network_guid") {
        Some(network) => format!("network:{network}"),
        None => format!("computer:{}", computer.id),
    }
}

const ALL: &str = "*";

fn dimensions(computer: &Computer) -> Vec<String> {
    let audience = audience(computer.allocation_scope, &computer.project);
    let mut dims = vec![format!("{audience}{ALL}")];
    dims.extend(
        computer
            .attributes
            .iter()
            .map(|(k, v)| format!("{audience}{k}={v}")),
    );
    dims.extend(
        computer
            .capabilities
            .iter()
            .map(|c| format!("{audience}capability={c}")),
    );
    dims
}

/// The range a request with `filter` reads: its most specific indexed key, or `*`.
fn driving_dimension(filter: &Filter) -> String {
    match (filter.attributes.iter().next(), &filter.capability) {
        (Some((k, v)), _) => format!("{k}={v}"),
        (None, Some(c)) => format!("capability={c}"),
        (None, None) => ALL.to_string(),
    }
}

/// The bit length of a free count: 0 for none, 1 for one, 2 for two or three, ...
pub fn free_tier(free: u32) -> u32 {
    u32::BITS - free.leading_zeros()
}

fn index_key(url: &SoftwareReleaseUrl, dimension: &str, free: u32, computer: &ComputerId) -> Key {
    // Higher tiers sort first.
    Key::new()
        .str(url.as_str())
        .str(dimension)
        .u64(u64::from(u32::BITS - free_tier(free)))
        .str(computer.as_str())
}

/// The index keys `computer` should have, given the software releases it supplies.
pub fn index_keys<T: ReadableTable<&'static [u8], &'static [u8]>>(
    t: &Tables<T>,
    computer: &Computer,
) -> Result<BTreeSet<Vec<u8>>, StateError> {
    let mut keys = BTreeSet::new();
    if !computer.allocation_scope.is_open() || computer.free_count == 0 {
        return Ok(keys);
    }
    let dims = dimensions(computer);
    for (url, supply) in t.supplies_of(&computer.id)? {
        if supply.requested == SupplyState::Available {
            for dim in &dims {
                keys.insert(index_key(&url, dim, computer.free_count, &computer.id).into_bytes());
            }
        }
    }
    Ok(keys)
}

/// Replaces a computer's index keys `before` by `after`, touching only the difference.
pub fn reindex(
    t: &mut Tables<redb::Table<'_, &'static [u8], &'static [u8]>>,
    before: &BTreeSet<Vec<u8>>,
    after: &BTreeSet<Vec<u8>>,
) -> Result<(), StateError> {
    for gone in before.difference(after) {
        t.placement.delete(gone)?;
    }
    for new in after.difference(before) {
        t.placement.put_index(new)?;
    }
    Ok(())
}

/// A partition the marketplace chose, or why there is none.
#[derive(Debug)]
pub enum Choice<T> {
    Found(T),
    NotFound(String),
}

/// Chooses a free partition for a normal instance of `url` with `filter` in `tree`.
/// `tree_networks` are the networks the rest of its tree uses (for `unique_by_network`).
pub fn choose_partition<T: ReadableTable<&'static [u8], &'static [u8]>>(
    t: &Tables<T>,
    url: &SoftwareReleaseUrl,
    filter: &Filter,
    tree: &Tree<'_>,
    tree_networks: &BTreeSet<String>,
) -> Result<Choice<(Computer, Partition)>, StateError> {
    let acceptable = |computer: &Computer| -> Result<bool, StateError> {
        Ok(computer_matches(computer, filter)
            && !(filter.unique_by_network && tree_networks.contains(&network_of(computer)))
            && admits(t, computer, tree)?)
    };
    if let Some(id) = &filter.computer {
        let Some(computer) = t.computer(id)? else {
            return Ok(Choice::NotFound(format!(
                "computer_guid {id} is not a known computer"
            )));
        };
        let supplied = t
            .supply(id, url)?
            .is_some_and(|s| s.requested == SupplyState::Available);
        if !supplied {
            return Ok(Choice::NotFound(format!(
                "computer {id} does not supply {url}"
            )));
        }
        if !acceptable(&computer)? {
            return Ok(Choice::NotFound(format!(
                "computer {id} is {} and does not admit project {}, or does not match the SLA",
                computer.allocation_scope, tree.project
            )));
        }
        return Ok(match first_free_partition(t, &computer)? {
            Some(partition) => Choice::Found((computer, partition)),
            None => Choice::NotFound(format!("computer {id} has no free partition")),
        });
    }

    let dimension = driving_dimension(filter);
    let own = audience(AllocationScope::OpenProject, tree.project);
    let mut best: Option<(u64, Computer, Partition)> = None;
    for audience in [own.as_str(), ""] {
        let prefix = Key::new()
            .str(url.as_str())
            .str(&format!("{audience}{dimension}"));
        if let Some(found) = first_acceptable(t, &prefix, &acceptable)?
            && best
                .as_ref()
                .is_none_or(|(tier, c, _)| (found.0, &found.1.id) < (*tier, &c.id))
        {
            best = Some(found);
        }
    }
    Ok(match best {
        Some((_, computer, partition)) => Choice::Found((computer, partition)),
        None => Choice::NotFound(format!(
            "no free partition on a computer open to project {} that supplies {url} and \
             matches the SLA",
            tree.project
        )),
    })
}

/// The first computer of one index range that is `acceptable` and has a free partition,
/// with its tier key (lower is better).
fn first_acceptable<T: ReadableTable<&'static [u8], &'static [u8]>>(
    t: &Tables<T>,
    prefix: &Key,
    acceptable: &impl Fn(&Computer) -> Result<bool, StateError>,
) -> Result<Option<(u64, Computer, Partition)>, StateError> {
    let (start, end) = prefix.prefix_range();
    let range = t
        .placement
        .range::<&[u8]>((start, end.as_ref().map(Vec::as_slice)))
        .map_err(|e| StateError::storage("placement", e))?;
    for row in range {
        let (key, _) = row.map_err(|e| StateError::storage("placement", e))?;
        let (tier, id) = tables::parse_key("placement", key.value(), |r| {
            r.str()?;
            r.str()?;
            Ok((r.u64()?, r.str()?))
        })?;
        let Some(computer) = t.computer(&ComputerId(id))? else {
            continue;
        };
        if acceptable(&computer)?
            && let Some(partition) = first_free_partition(t, &computer)?
        {
            return Ok(Some((tier, computer, partition)));
        }
    }
    Ok(None)
}

fn first_free_partition<T: ReadableTable<&'static [u8], &'static [u8]>>(
    t: &Tables<T>,
    computer: &Computer,
) -> Result<Option<Partition>, StateError> {
    let rows = t
        .free_partitions
        .scan(&tables::computer_key(&computer.id), 1)?;
    let Some((key, _)) = rows.first() else {
        return Ok(None);
    };
    let (_, _, reference) = tables::parse_key("free_partitions", key, |r| {
        Ok((r.str()?, r.u64()?, r.str()?))
    })?;
    t.partition(&computer.id, &super::model::PartitionRef(reference))
}

/// Whether `host` can host a shared instance of `url` and `software_type`.
pub fn can_host(host: &Instance, url: &SoftwareReleaseUrl, software_type: &str) -> bool {
    !host.shared
        && host.software_release == *url
        && host.software_type == software_type
        && host.requested_state != super::model::RequestedState::Destroyed
        && matches!(host.placement, Placement::Partition(_))
}

/// Networks used by the instances of a request tree other than `except`, for
/// `mode=unique_by_network`. Reads the tree: O(tree size).
pub fn tree_networks<T: ReadableTable<&'static [u8], &'static [u8]>>(
    t: &Tables<T>,
    root: InstanceGuid,
    except: InstanceGuid,
) -> Result<BTreeSet<String>, StateError> {
    let mut networks = BTreeSet::new();
    for guid in t.titles.guid_values(&tables::instance_key(root))? {
        if guid == except {
            continue;
        }
        if let Some(Instance {
            placement: Placement::Partition(p),
            ..
        }) = t.instance(guid)?
            && let Some(computer) = t.computer(&p.computer)?
        {
            networks.insert(network_of(&computer));
        }
    }
    Ok(networks)
}

/// Chooses the host of a shared instance of `tree`: an instance on a computer that serves it.
pub fn choose_host<T: ReadableTable<&'static [u8], &'static [u8]>>(
    t: &Tables<T>,
    url: &SoftwareReleaseUrl,
    software_type: &str,
    filter: &Filter,
    tree: &Tree<'_>,
) -> Result<Choice<Instance>, StateError> {
    let host_fits = |host: &Instance| -> Result<bool, StateError> {
        let Placement::Partition(partition) = &host.placement else {
            return Ok(false);
        };
        if !can_host(host, url, software_type) {
            return Ok(false);
        }
        Ok(match t.computer(&partition.computer)? {
            Some(c) => {
                filter.computer.as_ref().is_none_or(|id| *id == c.id)
                    && filter
                        .attributes
                        .iter()
                        .all(|(k, v)| c.attributes.get(k) == Some(v))
                    && serves(t, &c, tree)?
            }
            None => false,
        })
    };
    if let Some(guid) = filter.host {
        return Ok(match t.instance(guid)? {
            Some(host) if host_fits(&host)? => Choice::Found(host),
            Some(_) => Choice::NotFound(format!(
                "instance {guid} does not run {url} with software type {software_type:?}"
            )),
            None => Choice::NotFound(format!("instance_guid {guid} is not a known instance")),
        });
    }
    let prefix = Key::new().str(url.as_str()).str(software_type);
    for guid in t.shared_hosts.trailing_guids(&prefix, usize::MAX)? {
        if let Some(host) = t.instance(guid)?
            && host_fits(&host)?
        {
            return Ok(Choice::Found(host));
        }
    }
    Ok(Choice::NotFound(format!(
        "no instance of {url} with software type {software_type:?} can host it"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sla(pairs: &[(&str, &str)]) -> Parameters {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn known_sla_keys_parse_and_unknown_ones_make_the_request_unplaceable() {
        let filter = parse_sla(
            &sla(&[
                ("region", "eu-west"),
                ("cpu_type", "x86_64"),
                ("computer_guid", "COMP-1"),
                ("capability", "gpu"),
                ("mode", "unique_by_network"),
                ("retention_delay", "7"),
                ("fw_allowed_network", "x"),
            ]),
            false,
        )
        .expect("valid sla");
        assert_eq!(filter.computer, Some(ComputerId::from("COMP-1")));
        assert_eq!(filter.attributes.len(), 2);
        assert!(filter.unique_by_network);
        assert_eq!(driving_dimension(&filter), "cpu_type=x86_64");

        assert_eq!(
            parse_sla(&sla(&[("colour", "blue")]), false),
            Err("unknown SLA key \"colour\"".to_string())
        );
        assert!(parse_sla(&sla(&[("mode", "fast")]), false).is_err());
        assert!(parse_sla(&sla(&[("instance_guid", "SOFTINST-3")]), false).is_err());
        assert_eq!(
            parse_sla(&sla(&[("instance_guid", "SOFTINST-3")]), true)
                .expect("shared")
                .host,
            Some(InstanceGuid(3))
        );
        assert!(parse_sla(&sla(&[("instance_guid", "3")]), true).is_err());
    }

    #[test]
    fn higher_free_tiers_sort_first_then_computer_id() {
        let url = SoftwareReleaseUrl::from("https://sr/kvm.cfg");
        let key = |free, id| index_key(&url, ALL, free, &ComputerId::from(id));
        assert!(key(90, "COMP-Y") < key(90, "COMP-Z"));
        assert!(key(90, "COMP-Z") < key(3, "COMP-A"));
        assert_eq!(
            key(64, "COMP-A"),
            key(127, "COMP-A"),
            "one tier: the key does not move"
        );
        assert!(key(127, "COMP-A") < key(63, "COMP-A"));
        assert_eq!(
            [
                free_tier(0),
                free_tier(1),
                free_tier(3),
                free_tier(4),
                free_tier(100)
            ],
            [0, 1, 2, 3, 7]
        );
    }
}
