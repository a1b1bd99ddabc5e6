//! The master's tables in `state.redb`, and typed access to them.
//!
//! Every table maps bytes to bytes (raft-store snapshots byte tables without knowing them).
//! Keys are [`Key`]s, so they sort by their parts; values are a version byte followed by the
//! record in postcard. Index tables have empty values: the key says it all.
//!
//! | table | key | value |
//! |---|---|---|
//! | `catalog` | url | [`SoftwareRelease`] |
//! | `computers` | computer | [`Computer`] |
//! | `partitions` | computer, partition | [`Partition`] |
//! | `occupants` | computer, partition | guid of the instance holding it |
//! | `supply` | computer, url | [`Supply`] |
//! | `instances` | guid | [`Instance`] |
//! | `instance_parameters` | guid | [`Parameters`] |
//! | `instance_connections` | guid | [`Parameters`] |
//! | `roots` | owner, title | guid of a user's root instance |
//! | `titles` | root guid, title | guid, unique within a request tree |
//! | `children` | parent guid, child guid | — |
//! | `hosted` | host guid, shared reference | guid of the shared instance |
//! | `free_partitions` | computer, ordinal, partition | — |
//! | `placement` | url, dimension, free rank, computer | — (see `placement.rs`) |
//! | `pending` | url, guid | — instances waiting for a partition |
//! | `shared_hosts` | url, software type, guid | — instances that can host shared ones |
//! | `pending_shared` | url, software type, guid | — shared instances waiting for a host |
//! | `usage` | computer, partition, period start | [`UsageRecord`] |
//! | `usage_reports` | computer, reference, start date, stop date | [`UsageReport`](super::model::UsageReport) |
//! | `audit` | log index, command in the entry, sequence | [`AuditRecord`] |
//! | `computer_versions` | computer | log index of the last change to its view, u64 BE |
//! | `liveness` | computer | when its node last polled a replica, microseconds u64 BE |
//! | `counters` | name | u64 big-endian |
//! | `certificates` | serial | [`IssuedCertificate`](super::model::IssuedCertificate) |
//! | `enrollment_tokens` | token hash | [`EnrollmentToken`](super::model::EnrollmentToken) |
//! | `credential_tokens` | token hash | [`CredentialToken`](super::model::CredentialToken) |
//! | `revocations` | serial | [`Revocation`](super::model::Revocation) |
//! | `instance_certificates` | guid | [`InstanceCertificate`](super::model::InstanceCertificate) |
//! | `projects` | project | [`Project`] (the default project may have none) |
//! | `project_members` | project, user | [`ProjectRole`] |
//! | `user_projects` | user, project | [`ProjectRole`] — the same rows, by user |
//! | `quotas` | user (empty: everyone's default) | [`Quota`] set by an operator |
//! | `holdings` | user | [`Holding`]: what the user holds against their quota |
//! | `alerts` | alert id | [`Alert`](super::model::Alert), open or closed |
//! | `open_alerts` | subject (see [`subject_key`]) | id of its open alert, u64 BE |
//! | `status_history` | subject, sequence | [`StatusChange`](super::status::StatusChange) |

use redb::{ReadableTable, TableDefinition, TableHandle};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::keys::{Key, KeyError, KeyReader};
use super::model::{
    AuditRecord, Computer, ComputerId, Holding, Instance, InstanceGuid, Parameters, Partition,
    PartitionRef, Project, ProjectId, ProjectRole, Quota, SoftwareRelease, SoftwareReleaseUrl,
    Supply, UsageRecord, UserId,
};

type Def = TableDefinition<'static, &'static [u8], &'static [u8]>;

macro_rules! tables {
    ($($field:ident: $name:literal),* $(,)?) => {
        /// The open tables of one transaction: readable ones for queries, writable ones inside
        /// a write transaction.
        pub struct Tables<T> {
            $(pub $field: Table<T>,)*
        }

        const DEFINITIONS: &[Def] = &[$(Def::new($name),)*];

        impl<'txn> Tables<redb::Table<'txn, &'static [u8], &'static [u8]>> {
            pub fn open_write(txn: &'txn redb::WriteTransaction) -> Result<Self, StateError> {
                Ok(Self {
                    $($field: Table {
                        name: $name,
                        raw: txn
                            .open_table(Def::new($name))
                            .map_err(|e| StateError::storage($name, e))?,
                    },)*
                })
            }
        }

        impl Tables<redb::ReadOnlyTable<&'static [u8], &'static [u8]>> {
            pub fn open_read(txn: &redb::ReadTransaction) -> Result<Self, StateError> {
                Ok(Self {
                    $($field: Table {
                        name: $name,
                        raw: txn
                            .open_table(Def::new($name))
                            .map_err(|e| StateError::storage($name, e))?,
                    },)*
                })
            }
        }
    };
}

tables! {
    catalog: "catalog",
    computers: "computers",
    partitions: "partitions",
    occupants: "occupants",
    supply: "supply",
    instances: "instances",
    instance_parameters: "instance_parameters",
    instance_connections: "instance_connections",
    roots: "roots",
    titles: "titles",
    children: "children",
    hosted: "hosted",
    free_partitions: "free_partitions",
    placement: "placement",
    pending: "pending",
    shared_hosts: "shared_hosts",
    pending_shared: "pending_shared",
    usage: "usage",
    audit: "audit",
    computer_versions: "computer_versions",
    liveness: "liveness",
    counters: "counters",
    certificates: "certificates",
    enrollment_tokens: "enrollment_tokens",
    revocations: "revocations",
    instance_certificates: "instance_certificates",
    projects: "projects",
    project_members: "project_members",
    user_projects: "user_projects",
    quotas: "quotas",
    holdings: "holdings",
    credential_tokens: "credential_tokens",
    usage_reports: "usage_reports",
    alerts: "alerts",
    open_alerts: "open_alerts",
    status_history: "status_history",
}

/// The master's tables, in a fixed order.
pub fn definitions() -> &'static [Def] {
    DEFINITIONS
}

/// Creates every table (raft-store calls this at open and after a snapshot install).
pub fn create_all(txn: &redb::WriteTransaction) -> Result<(), StateError> {
    for definition in DEFINITIONS {
        txn.open_table(*definition)
            .map_err(|e| StateError::storage(definition.name(), e))?;
    }
    Ok(())
}

/// A failure of the state's storage: fatal to the replica (raft-store stops it). Distinct from
/// a [`super::command::Rejection`], which is the domain refusing a command.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state table {table}: {source}")]
    Storage {
        table: &'static str,
        #[source]
        source: redb::Error,
    },
    #[error("state table {table}: corrupt record under key {key:02x?}: {detail}")]
    Corrupt {
        table: &'static str,
        key: Vec<u8>,
        detail: String,
    },
}

impl StateError {
    pub fn storage(table: &'static str, error: impl Into<redb::Error>) -> Self {
        Self::Storage {
            table,
            source: error.into(),
        }
    }

    fn corrupt(table: &'static str, key: &[u8], detail: impl ToString) -> Self {
        Self::Corrupt {
            table,
            key: key.to_vec(),
            detail: detail.to_string(),
        }
    }
}

/// Version byte of every record this release writes.
const V2: u8 = 2;
/// Records written before projects: see [`Record::from_v1`].
const V1: u8 = 1;

/// A value stored in a table: how this release reads it, whichever release wrote it.
pub trait Record: Serialize + DeserializeOwned {
    /// Reads a version-1 record: the same layout as today, unless the type changed since
    /// (`upgrade.rs`).
    fn from_v1(bytes: &[u8]) -> postcard::Result<Self> {
        postcard::from_bytes(bytes)
    }
}

impl Record for SoftwareRelease {}
impl Record for Partition {}
impl Record for Supply {}
impl Record for Parameters {}
impl Record for UsageRecord {}
impl Record for super::model::UsageReport {}
impl Record for AuditRecord {}
impl Record for super::model::IssuedCertificate {}
impl Record for super::model::EnrollmentToken {}
impl Record for super::model::CredentialToken {}
impl Record for super::model::Revocation {}
impl Record for super::model::InstanceCertificate {}
impl Record for Quota {}
impl Record for Holding {}
impl Record for super::model::Alert {}
impl Record for super::status::StatusChange {}

pub fn encode<T: Record>(value: &T) -> Vec<u8> {
    postcard::to_extend(value, vec![V2]).expect(
        "postcard fails only on a full writer (a Vec never is) or a type serde cannot \
         represent (records are plain structs, maps, strings and numbers)",
    )
}

pub(super) fn decode<T: Record>(
    table: &'static str,
    key: &[u8],
    bytes: &[u8],
) -> Result<T, StateError> {
    match bytes.split_first() {
        Some((&V2, rest)) => {
            postcard::from_bytes(rest).map_err(|e| StateError::corrupt(table, key, e))
        }
        Some((&V1, rest)) => T::from_v1(rest).map_err(|e| StateError::corrupt(table, key, e)),
        Some((version, _)) => Err(StateError::corrupt(
            table,
            key,
            format!("unknown record version {version}"),
        )),
        None => Err(StateError::corrupt(table, key, "empty record")),
    }
}

/// A stored key and its raw value.
pub type Row = (Vec<u8>, Vec<u8>);

/// Decodes the records of a [`Table::scan`].
fn decode_all<T: Record>(name: &'static str, rows: Vec<Row>) -> Result<Vec<T>, StateError> {
    rows.iter().map(|(k, v)| decode(name, k, v)).collect()
}

/// Parses a stored key with `read`, reporting a malformed one as corruption of `table`.
pub fn parse_key<T>(
    table: &'static str,
    key: &[u8],
    read: impl FnOnce(&mut KeyReader<'_>) -> Result<T, KeyError>,
) -> Result<T, StateError> {
    let mut reader = KeyReader::new(key);
    let value = read(&mut reader).map_err(|e| StateError::corrupt(table, key, e))?;
    reader
        .finish()
        .map_err(|e| StateError::corrupt(table, key, e))?;
    Ok(value)
}

fn decode_u64(name: &'static str, key: &[u8], bytes: &[u8]) -> Result<u64, StateError> {
    let bytes: [u8; 8] = bytes
        .try_into()
        .map_err(|_| StateError::corrupt(name, key, "value is not 8 bytes"))?;
    Ok(u64::from_be_bytes(bytes))
}

/// One open table with its name: a read or a write names its table once, and the name is
/// what its errors report. Derefs to the redb table for what these helpers do not cover.
pub struct Table<T> {
    pub name: &'static str,
    raw: T,
}

impl<T> std::ops::Deref for Table<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.raw
    }
}

impl<T> std::ops::DerefMut for Table<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.raw
    }
}

impl<T: ReadableTable<&'static [u8], &'static [u8]>> Table<T> {
    /// Reads and decodes the record under `key`.
    pub fn get<R: Record>(&self, key: &[u8]) -> Result<Option<R>, StateError> {
        match self
            .raw
            .get(key)
            .map_err(|e| StateError::storage(self.name, e))?
        {
            None => Ok(None),
            Some(value) => decode(self.name, key, value.value()).map(Some),
        }
    }

    /// The entries under `prefix`, in key order.
    fn under(
        &self,
        prefix: &Key,
    ) -> Result<redb::Range<'_, &'static [u8], &'static [u8]>, StateError> {
        let (start, end) = prefix.prefix_range();
        self.raw
            .range::<&[u8]>((start, end.as_ref().map(Vec::as_slice)))
            .map_err(|e| StateError::storage(self.name, e))
    }

    /// Copies out the rows `range` yields.
    fn rows<'a>(
        &self,
        range: impl Iterator<
            Item = Result<
                (
                    redb::AccessGuard<'a, &'static [u8]>,
                    redb::AccessGuard<'a, &'static [u8]>,
                ),
                redb::StorageError,
            >,
        >,
    ) -> Result<Vec<Row>, StateError> {
        range
            .map(|row| {
                let (k, v) = row.map_err(|e| StateError::storage(self.name, e))?;
                Ok((k.value().to_vec(), v.value().to_vec()))
            })
            .collect()
    }

    /// The keys (and raw values) under `prefix`, in order, at most `limit` of them.
    pub fn scan(&self, prefix: &Key, limit: usize) -> Result<Vec<Row>, StateError> {
        self.rows(self.under(prefix)?.take(limit))
    }

    /// The last `limit` keys (and raw values) under `prefix`, the last first.
    pub fn scan_back(&self, prefix: &Key, limit: usize) -> Result<Vec<Row>, StateError> {
        self.rows(self.under(prefix)?.rev().take(limit))
    }

    /// How many keys are under `prefix` (read one by one, nothing kept).
    pub fn count(&self, prefix: &Key) -> Result<u64, StateError> {
        let mut count = 0;
        for row in self.under(prefix)? {
            row.map_err(|e| StateError::storage(self.name, e))?;
            count += 1;
        }
        Ok(count)
    }

    /// The records under `prefix`, decoded, in key order, at most `limit` of them.
    pub fn records<R: Record>(&self, prefix: &Key, limit: usize) -> Result<Vec<R>, StateError> {
        decode_all(self.name, self.scan(prefix, limit)?)
    }

    /// A guid stored as the value of an index entry (`roots`, `titles`, `hosted`,
    /// `occupants`).
    pub fn guid_at(&self, key: &Key) -> Result<Option<InstanceGuid>, StateError> {
        Ok(self.u64_value(key)?.map(InstanceGuid))
    }

    /// The big-endian u64 stored under `key` (a guid, a counter, a version, a time), if any.
    pub fn u64_value(&self, key: &Key) -> Result<Option<u64>, StateError> {
        match self
            .raw
            .get(key.as_bytes())
            .map_err(|e| StateError::storage(self.name, e))?
        {
            Some(value) => decode_u64(self.name, key.as_bytes(), value.value()).map(Some),
            None => Ok(None),
        }
    }

    /// Guids in the last key part of every entry under `prefix` (children, pending, hosts).
    pub fn trailing_guids(
        &self,
        prefix: &Key,
        limit: usize,
    ) -> Result<Vec<InstanceGuid>, StateError> {
        self.scan(prefix, limit)?
            .iter()
            .map(|(k, _)| {
                let tail = k.get(prefix.as_bytes().len()..).unwrap_or_default();
                parse_key(self.name, tail, |r| r.u64()).map(InstanceGuid)
            })
            .collect()
    }

    /// Guids stored as values under `prefix` (hosted shared instances, tree members).
    pub fn guid_values(&self, prefix: &Key) -> Result<Vec<InstanceGuid>, StateError> {
        self.scan(prefix, usize::MAX)?
            .iter()
            .map(|(k, v)| decode_u64(self.name, k, v).map(InstanceGuid))
            .collect()
    }
}

impl Table<redb::Table<'_, &'static [u8], &'static [u8]>> {
    pub fn put<R: Record>(&mut self, key: &[u8], value: &R) -> Result<(), StateError> {
        self.insert_raw(key, &encode(value))
    }

    /// An index entry: the key says it all.
    pub fn put_index(&mut self, key: &[u8]) -> Result<(), StateError> {
        self.insert_raw(key, &[])
    }

    /// A guid as the value of an index entry (`roots`, `titles`, `hosted`, `occupants`).
    pub fn put_guid(&mut self, key: &Key, guid: InstanceGuid) -> Result<(), StateError> {
        self.put_u64(key, guid.0)
    }

    /// A big-endian u64 (counters, computer versions).
    pub fn put_u64(&mut self, key: &Key, value: u64) -> Result<(), StateError> {
        self.insert_raw(key.as_bytes(), &value.to_be_bytes())
    }

    pub fn delete(&mut self, key: &[u8]) -> Result<(), StateError> {
        self.raw
            .remove(key)
            .map_err(|e| StateError::storage(self.name, e))?;
        Ok(())
    }

    fn insert_raw(&mut self, key: &[u8], value: &[u8]) -> Result<(), StateError> {
        self.raw
            .insert(key, value)
            .map_err(|e| StateError::storage(self.name, e))?;
        Ok(())
    }
}

// Keys of each table, in one place so that writers and readers agree.

pub fn catalog_key(url: &SoftwareReleaseUrl) -> Key {
    Key::new().str(url.as_str())
}

pub fn serial_key(serial: &str) -> Key {
    Key::new().str(serial)
}

pub fn computer_key(computer: &ComputerId) -> Key {
    Key::new().str(computer.as_str())
}

pub fn partition_key(computer: &ComputerId, partition: &PartitionRef) -> Key {
    computer_key(computer).str(partition.as_str())
}

pub fn supply_key(computer: &ComputerId, url: &SoftwareReleaseUrl) -> Key {
    computer_key(computer).str(url.as_str())
}

pub fn instance_key(guid: InstanceGuid) -> Key {
    Key::new().u64(guid.0)
}

pub fn user_key(user: &UserId) -> Key {
    Key::new().str(user.as_str())
}

/// A user's quota, or (`None`) everyone's default: no user is named by the empty string.
pub fn quota_key(user: Option<&UserId>) -> Key {
    Key::new().str(user.map_or("", UserId::as_str))
}

pub fn root_key(owner: &UserId, title: &str) -> Key {
    Key::new().str(owner.as_str()).str(title)
}

pub fn title_key(root: InstanceGuid, title: &str) -> Key {
    Key::new().u64(root.0).str(title)
}

pub fn child_key(parent: InstanceGuid, child: InstanceGuid) -> Key {
    Key::new().u64(parent.0).u64(child.0)
}

pub fn hosted_key(host: InstanceGuid, reference: &str) -> Key {
    Key::new().u64(host.0).str(reference)
}

pub fn free_key(computer: &ComputerId, partition: &Partition) -> Key {
    computer_key(computer)
        .u64(partition.ordinal)
        .str(partition.reference.as_str())
}

pub fn pending_key(url: &SoftwareReleaseUrl, guid: InstanceGuid) -> Key {
    Key::new().str(url.as_str()).u64(guid.0)
}

pub fn shared_host_key(url: &SoftwareReleaseUrl, software_type: &str, guid: InstanceGuid) -> Key {
    Key::new().str(url.as_str()).str(software_type).u64(guid.0)
}

pub fn usage_key(computer: &ComputerId, partition: &PartitionRef, period_start: u64) -> Key {
    partition_key(computer, partition).u64(period_start)
}

/// A usage report's key: what makes a report posted again the same one.
pub fn usage_report_key(computer: &ComputerId, report: &super::model::UsageReport) -> Key {
    computer_key(computer)
        .str(&report.reference)
        .str(&report.start_date)
        .str(&report.stop_date)
}

pub fn project_key(project: &ProjectId) -> Key {
    Key::new().str(project.as_str())
}

pub fn member_key(project: &ProjectId, user: &UserId) -> Key {
    project_key(project).str(user.as_str())
}

pub fn user_project_key(user: &UserId, project: &ProjectId) -> Key {
    Key::new().str(user.as_str()).str(project.as_str())
}

/// What an alert or a status history is about: instances under "i", computers under "c".
pub fn subject_key(subject: &super::model::AlertSubject) -> Key {
    match subject {
        super::model::AlertSubject::Instance(guid) => Key::new().str("i").u64(guid.0),
        super::model::AlertSubject::Computer(computer) => {
            Key::new().str("c").str(computer.as_str())
        }
    }
}

pub fn alert_key(id: u64) -> Key {
    Key::new().u64(id)
}

pub fn audit_key(index: u64, position: u64, sequence: u64) -> Key {
    Key::new().u64(index).u64(position).u64(sequence)
}

/// Typed record helpers shared by apply and the queries.
impl<T: ReadableTable<&'static [u8], &'static [u8]>> Tables<T> {
    pub fn computer(&self, id: &ComputerId) -> Result<Option<Computer>, StateError> {
        self.computers.get(computer_key(id).as_bytes())
    }

    pub fn partition(
        &self,
        computer: &ComputerId,
        partition: &PartitionRef,
    ) -> Result<Option<Partition>, StateError> {
        self.partitions
            .get(partition_key(computer, partition).as_bytes())
    }

    /// The instance holding a partition.
    pub fn occupant(
        &self,
        computer: &ComputerId,
        partition: &PartitionRef,
    ) -> Result<Option<InstanceGuid>, StateError> {
        self.occupants.guid_at(&partition_key(computer, partition))
    }

    /// The held partitions of a computer and their instances.
    pub fn occupants_of(
        &self,
        computer: &ComputerId,
    ) -> Result<std::collections::BTreeMap<PartitionRef, InstanceGuid>, StateError> {
        let prefix = computer_key(computer);
        self.occupants
            .scan(&prefix, usize::MAX)?
            .iter()
            .map(|(k, v)| {
                let (_, partition) = parse_key("occupants", k, |r| Ok((r.str()?, r.str()?)))?;
                let guid = decode_u64("occupants", k, v)?;
                Ok((PartitionRef(partition), InstanceGuid(guid)))
            })
            .collect()
    }

    /// The partitions of a computer, in key (reference) order.
    pub fn partitions_of(&self, computer: &ComputerId) -> Result<Vec<Partition>, StateError> {
        self.partitions.records(&computer_key(computer), usize::MAX)
    }

    pub fn supply(
        &self,
        computer: &ComputerId,
        url: &SoftwareReleaseUrl,
    ) -> Result<Option<Supply>, StateError> {
        self.supply.get(supply_key(computer, url).as_bytes())
    }

    /// The software releases a computer must have or remove, with their supply records.
    pub fn supplies_of(
        &self,
        computer: &ComputerId,
    ) -> Result<Vec<(SoftwareReleaseUrl, Supply)>, StateError> {
        let rows = self.supply.scan(&computer_key(computer), usize::MAX)?;
        rows.iter()
            .map(|(k, v)| {
                let (_, url) = parse_key("supply", k, |r| Ok((r.str()?, r.str()?)))?;
                Ok((SoftwareReleaseUrl(url), decode("supply", k, v)?))
            })
            .collect()
    }

    pub fn instance(&self, guid: InstanceGuid) -> Result<Option<Instance>, StateError> {
        self.instances.get(instance_key(guid).as_bytes())
    }

    pub fn parameters(&self, guid: InstanceGuid) -> Result<Parameters, StateError> {
        Ok(self
            .instance_parameters
            .get(instance_key(guid).as_bytes())?
            .unwrap_or_default())
    }

    pub fn connection(&self, guid: InstanceGuid) -> Result<Parameters, StateError> {
        Ok(self
            .instance_connections
            .get(instance_key(guid).as_bytes())?
            .unwrap_or_default())
    }

    pub fn usage_records(&self, prefix: &Key) -> Result<Vec<UsageRecord>, StateError> {
        self.usage.records(prefix, usize::MAX)
    }

    pub fn audit_records(&self, limit: usize) -> Result<Vec<AuditRecord>, StateError> {
        self.audit.records(&Key::new(), limit)
    }

    pub fn software_releases(&self) -> Result<Vec<SoftwareRelease>, StateError> {
        self.catalog.records(&Key::new(), usize::MAX)
    }

    /// The log index of the last change to a computer's view (0: never changed).
    pub fn computer_version(&self, computer: &ComputerId) -> Result<u64, StateError> {
        Ok(self
            .computer_versions
            .u64_value(&computer_key(computer))?
            .unwrap_or(0))
    }

    /// When the computer's node last polled a replica (as last summarised), if ever.
    pub fn last_seen(&self, computer: &ComputerId) -> Result<Option<u64>, StateError> {
        self.liveness.u64_value(&computer_key(computer))
    }

    /// A project: its record, or the default project as it is without one.
    pub fn project(&self, id: &ProjectId) -> Result<Option<Project>, StateError> {
        let stored = self.projects.get(project_key(id).as_bytes())?;
        Ok(
            stored
                .or_else(|| (*id == ProjectId::default_project()).then(Project::implicit_default)),
        )
    }

    pub fn projects(&self) -> Result<Vec<Project>, StateError> {
        let mut projects: Vec<Project> = self.projects.records(&Key::new(), usize::MAX)?;
        if !projects
            .iter()
            .any(|p| p.id == ProjectId::default_project())
        {
            projects.push(Project::implicit_default());
            projects.sort_by(|a, b| a.id.cmp(&b.id));
        }
        Ok(projects)
    }

    /// A user's role in a project: as a member, else what the project gives everyone.
    pub fn role(
        &self,
        user: &UserId,
        project: &ProjectId,
    ) -> Result<Option<ProjectRole>, StateError> {
        let member = self
            .project_members
            .get(member_key(project, user).as_bytes())?;
        match member {
            Some(role) => Ok(Some(role)),
            None => Ok(self.project(project)?.and_then(|p| p.everyone)),
        }
    }

    /// A project's members and their roles, by user.
    pub fn members(&self, project: &ProjectId) -> Result<Vec<(UserId, ProjectRole)>, StateError> {
        let rows = self
            .project_members
            .scan(&project_key(project), usize::MAX)?;
        rows.iter()
            .map(|(k, v)| {
                let (_, user) = parse_key("project_members", k, |r| Ok((r.str()?, r.str()?)))?;
                Ok((UserId(user), decode("project_members", k, v)?))
            })
            .collect()
    }

    /// The projects a user is a member of, by project.
    pub fn projects_of(&self, user: &UserId) -> Result<Vec<(ProjectId, ProjectRole)>, StateError> {
        let rows = self
            .user_projects
            .scan(&Key::new().str(user.as_str()), usize::MAX)?;
        rows.iter()
            .map(|(k, v)| {
                let (_, project) = parse_key("user_projects", k, |r| Ok((r.str()?, r.str()?)))?;
                Ok((ProjectId(project), decode("user_projects", k, v)?))
            })
            .collect()
    }

    /// The quota of `user`: theirs if an operator set one, else everyone's default as set,
    /// else [`Quota::DEFAULT`].
    pub fn quota(&self, user: &UserId) -> Result<Quota, StateError> {
        if let Some(quota) = self.quotas.get(quota_key(Some(user)).as_bytes())? {
            return Ok(quota);
        }
        Ok(self
            .quotas
            .get(quota_key(None).as_bytes())?
            .unwrap_or(Quota::DEFAULT))
    }

    /// The quota an operator set for `user` (`None`: everyone's default), if any.
    pub fn quota_set(&self, user: Option<&UserId>) -> Result<Option<Quota>, StateError> {
        self.quotas.get(quota_key(user).as_bytes())
    }

    pub fn holding(&self, user: &UserId) -> Result<Holding, StateError> {
        Ok(self
            .holdings
            .get(user_key(user).as_bytes())?
            .unwrap_or_default())
    }

    pub fn counter(&self, name: &'static str) -> Result<u64, StateError> {
        Ok(self.counters.u64_value(&Key::new().str(name))?.unwrap_or(0))
    }
}
