//! Each SLAP call (`shared/slap-protocol.md`) as the command or query it is: the arguments are
//! read and checked here, the command decides (and refuses) as it does for gRPC callers.
//!
//! Over 800 lines on purpose: one dispatch over every call, each a few lines; split by call, the
//! table would scatter.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::StatusCode;

use super::form::Form;
use super::marshal::{self, Object, SlapClass, Value};
use super::server::{Answer, Caller, Failure, json, text, xml};
use super::{definition, hateoas, journal, view};
use crate::replica::signing::{Signed, sign};
use crate::replica::{CallError, Consistency, ReplicaCore, now};
use crate::state::model::{
    Actor, ComputerId, Parameters, PartitionId, PartitionRef, Placement, RequestedState,
    SoftwareState, SupplyState, Timestamp,
};
use crate::state::policy::{self, InstanceFacts, Operation, Target};
use crate::state::query::{self, PartitionView};
use crate::state::{InstanceReport, InstanceRequest, Op, Outcome, Rejection};

/// One call being answered.
pub(super) struct Call<'a> {
    pub core: &'a ReplicaCore,
    /// What the policy calls this call (see `policy::slap_operation`).
    pub operation: Operation,
    pub form: Form,
    pub caller: Caller,
    pub document_cache: Arc<DocumentCache>,
    /// What the call holds of the replica's decode budget: marshalled arguments add to it.
    pub charge: &'a crate::limits::DecodeCharge,
    /// How the caller reached this listener (the HATEOAS URLs are built from it).
    pub reached: super::server::Reached<'a>,
}

/// The last `Computer` document encoded for each computer, with the version of the computer's
/// view it was read at: nodes poll far more often than their computer changes, and the
/// document of a computer with a hundred busy partitions is a few hundred kilobytes to
/// encode. Every change a document shows moves its computer's version (see
/// `computer_versions` in `state/tables.rs`), so a document of the current version is the
/// one a fresh read would encode.
#[derive(Default)]
pub(super) struct DocumentCache(Mutex<HashMap<ComputerId, (u64, Bytes)>>);

/// At most this many documents are kept; beyond, the cache starts again (computers polling
/// one replica at their own pace refill it).
const MAX_DOCUMENTS: usize = 4096;

impl DocumentCache {
    fn get(&self, computer: &ComputerId, version: u64) -> Option<Bytes> {
        let documents = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match documents.get(computer) {
            Some((at, document)) if *at == version => Some(document.clone()),
            _ => None,
        }
    }

    fn put(&self, computer: &ComputerId, version: u64, document: Bytes) {
        let mut documents = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if documents.len() >= MAX_DOCUMENTS && !documents.contains_key(computer) {
            documents.clear();
        }
        documents.insert(computer.clone(), (version, document));
    }
}

/// Every call the listener answers: [`Call::run`], and the token calls (`tokens.rs`).
pub(crate) const CALLS: &[&str] = &[
    "getFullComputerInformation",
    "getComputerInformation",
    "registerComputerPartition",
    "getComputerPartitionCertificate",
    "buildingSoftwareRelease",
    "availableSoftwareRelease",
    "destroyedSoftwareRelease",
    "softwareReleaseError",
    "startedComputerPartition",
    "stoppedComputerPartition",
    "destroyedComputerPartition",
    "softwareInstanceError",
    "updateComputerPartitionRelatedInstanceList",
    "useComputer",
    "loadComputerConfigurationFromXML",
    "computerBang",
    "getHateoasUrl",
    "hateoas",
    "requestComputerPartition",
    "setComputerPartitionConnectionXml",
    "getHostingSubscriptionIpList",
    "softwareInstanceBang",
    "softwareInstanceRename",
    "supplySupply",
    "getSoftwareReleaseListFromSoftwareProduct",
    "requestComputer",
    "generateComputerCertificate",
    "revokeComputerCertificate",
    "getComputerStatus",
    "getComputerPartitionStatus",
    // Answered by `tokens.rs`, before a certificate is asked for.
    "Person_requestComputer",
    "Person_getCertificate",
];

impl Call<'_> {
    /// Runs the call `name`. GET and POST are both accepted for every call: clients use the
    /// method the protocol gives, and the arguments are read from either place.
    pub async fn run(&self, name: &str) -> Answer {
        match name {
            "getFullComputerInformation" | "getComputerInformation" => self.computer().await,
            "registerComputerPartition" => self.register_partition().await,
            "getComputerPartitionCertificate" => self.partition_certificate().await,
            "buildingSoftwareRelease" => self.report_software(SoftwareState::Building).await,
            "availableSoftwareRelease" => self.report_software(SoftwareState::Available).await,
            "destroyedSoftwareRelease" => self.report_software(SoftwareState::Destroyed).await,
            "softwareReleaseError" => {
                let log = self.form.get("error_log").unwrap_or_default().to_string();
                self.report_software(SoftwareState::Error { log }).await
            }
            "startedComputerPartition" => self.report_instance(InstanceReport::Started).await,
            "stoppedComputerPartition" => self.report_instance(InstanceReport::Stopped).await,
            "destroyedComputerPartition" => self.report_instance(InstanceReport::Destroyed).await,
            "softwareInstanceError" => {
                let log = self.form.get("error_log").unwrap_or_default().to_string();
                self.report_instance(InstanceReport::Error { log }).await
            }
            "updateComputerPartitionRelatedInstanceList" => self.related_instances().await,
            "useComputer" => self.use_computer().await,
            "loadComputerConfigurationFromXML" => self.load_computer().await,
            "computerBang" => self.computer_bang().await,
            "getHateoasUrl" => text(&self.hateoas_url()?),
            "hateoas" => self.hateoas().await,
            "requestComputerPartition" => self.request().await,
            "setComputerPartitionConnectionXml" => self.set_connection().await,
            "getHostingSubscriptionIpList" => self.tree_addresses().await,
            "softwareInstanceBang" => self.instance_bang().await,
            "softwareInstanceRename" => self.rename().await,
            "supplySupply" => self.supply().await,
            "getSoftwareReleaseListFromSoftwareProduct" => self.software_list().await,
            "requestComputer" => self.request_computer().await,
            "generateComputerCertificate" => self.computer_certificate().await,
            "revokeComputerCertificate" => self.revoke_computer_certificate().await,
            "getComputerStatus" => self.computer_status().await,
            "getComputerPartitionStatus" => self.partition_status().await,
            other => Err(Failure::not_found(format!("no SLAP call {other:?}"))),
        }
    }

    /// Asks the policy whether `actor` may perform this call on `target`. Writes are decided
    /// again when applied, from the replicated state.
    fn allow(&self, actor: &Actor, target: Target<'_>) -> Result<(), Failure> {
        Ok(policy::decide(actor, self.operation, target)?)
    }

    async fn write(&self, actor: Actor, op: Op) -> Result<(Outcome, u64), Failure> {
        Ok(self.core.execute(actor, op).await?)
    }

    fn computer_id(&self, name: &'static str) -> Result<ComputerId, Failure> {
        Ok(self.form.required(name)?.into())
    }

    /// A marshalled argument, decoded; absent reads as `None`.
    fn marshalled(&self, name: &'static str) -> Result<Value, Failure> {
        match self.form.get(name) {
            None => Ok(Value::None),
            Some(text) => {
                let base = self.charge.charged();
                let mut afford = |weight: usize| {
                    let cost = marshal::BYTES_PER_WEIGHT.saturating_mul(weight as u64);
                    self.charge.grow_to(base.saturating_add(cost)).is_ok()
                };
                marshal::decode_within(text, &mut afford).map_err(|e| match e {
                    marshal::MarshalError::Unaffordable => {
                        Failure(StatusCode::TOO_MANY_REQUESTS, format!("{name}: {e}"))
                    }
                    e => Failure::bad(format!("{name}: {e}")),
                })
            }
        }
    }

    /// The partition the caller acts as.
    fn partition(&self) -> Result<PartitionId, Failure> {
        match self.caller.partition()? {
            Actor::Partition(partition) => Ok(partition),
            other => Err(Failure::forbidden(format!("{other} is not a partition"))),
        }
    }

    // --- node calls -------------------------------------------------------------------------

    /// The marshalled `Computer` a node polls for: read from this replica's applied state,
    /// like a gRPC poll, and encoded off the runtime's workers. Its `ETag` is its view's
    /// version: a client that sends it back (`If-None-Match`) is answered 304 while nothing
    /// it shows changed, without the document being read or encoded.
    async fn computer(&self) -> Answer {
        let computer = self.computer_id("computer_id")?;
        self.allow(
            &self.caller.computer(&computer),
            Target::Computer(&computer),
        )?;
        self.core.saw(&computer);
        let id = computer.clone();
        let document_cache = self.document_cache.clone();
        let known = self.reached.if_none_match();
        let (tag, document) = self
            .core
            .read(Consistency::Stale, move |txn| {
                // The view changes only with its version (see `DocumentCache`).
                let version = query::computer_version(txn, &id)?;
                let tag = format!("\"{version}\"");
                // Version 0: never registered (registering is a change), so unknown.
                if version > 0 && known.iter().any(|k| *k == tag || k == "*") {
                    return Ok((tag, Polled::Unchanged));
                }
                if let Some(document) = document_cache.get(&id, version) {
                    return Ok((tag, Polled::Document(document)));
                }
                let Some(view) = query::computer_view(txn, &id)? else {
                    return Ok((tag, Polled::Unknown));
                };
                let mut full_ip_lists = BTreeMap::new();
                for partition in &view.partitions {
                    if let Some(instance) = &partition.instance {
                        full_ip_lists.insert(
                            partition.partition.reference.clone(),
                            query::tree_addresses(txn, instance.instance.guid)?,
                        );
                    }
                }
                let document = Bytes::from(marshal::encode(&view::computer(&view, &full_ip_lists)));
                document_cache.put(&id, version, document.clone());
                Ok((tag, Polled::Document(document)))
            })
            .await?;
        match document {
            Polled::Unchanged => Ok(super::server::not_modified(&tag)),
            Polled::Unknown => Err(Failure::not_found(format!("unknown computer {computer}"))),
            Polled::Document(document) => Ok(super::server::xml_document(document, &tag)),
        }
    }

    async fn register_partition(&self) -> Answer {
        let computer = self.computer_id("computer_reference")?;
        let reference: PartitionRef = self.form.required("computer_partition_reference")?.into();
        let wanted = PartitionId {
            computer: computer.clone(),
            partition: reference.clone(),
        };
        self.allow(&self.caller.computer(&computer), Target::Partition(&wanted))?;
        let partition = self
            .core
            .read(Consistency::Stale, move |txn| {
                let Some(partition) = query::partition(txn, &wanted)? else {
                    return Ok(None);
                };
                let (instance, full) = match query::occupant(txn, &wanted)? {
                    Some(guid) => (
                        query::instance(txn, guid)?,
                        query::tree_addresses(txn, guid)?,
                    ),
                    None => (None, Vec::new()),
                };
                let view = PartitionView {
                    partition,
                    instance,
                };
                Ok(Some(view::computer_partition(
                    wanted.computer.as_str(),
                    &view,
                    &full,
                )))
            })
            .await?;
        match partition {
            Some(partition) => xml(&partition),
            None => Err(Failure::not_found(format!(
                "unknown partition {computer}/{reference}"
            ))),
        }
    }

    /// The key and certificate of the instance on a partition, asked by its node as it
    /// prepares the partition on every run: the same ones every time, until they are due for
    /// renewal, then new ones (signed by this replica's CA and bound to the instance through
    /// Raft, so that every replica answers them). They are revoked when the instance's
    /// partition is freed.
    async fn partition_certificate(&self) -> Answer {
        let computer = self.computer_id("computer_id")?;
        let reference: PartitionRef = self.form.required("computer_partition_id")?.into();
        let partition = PartitionId {
            computer: computer.clone(),
            partition: reference.clone(),
        };
        self.allow(
            &self.caller.computer(&computer),
            Target::Partition(&partition),
        )?;
        let wanted = partition.clone();
        let (instance, bound) = self
            .core
            .read(Consistency::Linearizable, move |txn| {
                query::occupant_certificate(txn, &wanted)
            })
            .await?
            .ok_or_else(|| {
                Failure::not_found(format!("partition {partition} holds no instance"))
            })?;
        let current = match bound {
            Some(bound) if !renewal_due(&bound) => bound,
            bound => {
                let identity = ca::Identity::Partition {
                    computer: computer.to_string(),
                    partition: reference.to_string(),
                };
                let (signed, key_pem) = sign_new_key(self.core, &identity).await?;
                let op = Op::BindInstanceCertificate {
                    instance,
                    partition: partition.clone(),
                    serial: signed.serial,
                    chain_pem: signed.chain_pem,
                    key_pem,
                    not_before: now(),
                    not_after: Timestamp(signed.not_after),
                    replaces: bound.map(|b| b.serial),
                };
                match self.write(Actor::Replica(self.core.id()), op).await?.0 {
                    Outcome::InstanceCertificate(bound) => *bound,
                    other => {
                        return Err(Failure(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            format!("binding a certificate answered {other:?}"),
                        ));
                    }
                }
            }
        };
        xml(&Value::dict([
            ("certificate", Value::String(current.chain_pem)),
            ("key", Value::String(current.key_pem)),
        ]))
    }

    async fn report_software(&self, state: SoftwareState) -> Answer {
        let computer = self.computer_id("computer_id")?;
        let op = Op::ReportSoftware {
            computer: computer.clone(),
            url: self.form.required("url")?.into(),
            state,
        };
        self.write(self.caller.computer(&computer), op).await?;
        text("OK")
    }

    async fn report_instance(&self, report: InstanceReport) -> Answer {
        let partition = self.partition()?;
        let op = Op::ReportInstance {
            partition: partition.clone(),
            shared_reference: self.form.get("slave_reference").map(str::to_string),
            report,
        };
        self.write(Actor::Partition(partition), op).await?;
        text("OK")
    }

    /// The titles of the instances a partition's instance requested on its last run (the
    /// node sends them once the run succeeded): the children it no longer requests are
    /// destroyed. An absent list is refused, never read as "none".
    async fn related_instances(&self) -> Answer {
        let partition = self.partition()?;
        let titles = self.marshalled("instance_reference_xml")?;
        let titles: Option<Vec<String>> = match &titles {
            Value::List(items) | Value::Tuple(items) => items
                .iter()
                .map(|t| t.as_str().map(str::to_string))
                .collect(),
            _ => None,
        };
        let titles = titles
            .ok_or_else(|| Failure::bad("instance_reference_xml: a list of instance titles"))?;
        let op = Op::UpdateRelatedInstances {
            partition: partition.clone(),
            titles,
        };
        self.write(Actor::Partition(partition), op).await?;
        text("OK")
    }

    /// The usage journal a node's report or collect posts, stored whole: each transaction a
    /// usage report, under its reference and dates.
    async fn use_computer(&self) -> Answer {
        let computer = self.computer_id("computer_id")?;
        // Decided before the journal is read; apply decides again.
        self.allow(
            &self.caller.computer(&computer),
            Target::Computer(&computer),
        )?;
        let reports = journal::parse(self.form.required("use_string")?).map_err(Failure::bad)?;
        let op = Op::PostUsageReports {
            computer: computer.clone(),
            reports,
        };
        self.write(self.caller.computer(&computer), op).await?;
        text("OK")
    }

    /// The definition `slapos node format` posts: registers the computer or updates it.
    async fn load_computer(&self) -> Answer {
        // The computer is the one the call names, else the certificate's; in plaintext, else
        // the one the definition names. Who may register it is decided before the definition
        // is read.
        let named = match (self.form.get("computer_id"), self.caller.verified()) {
            (Some(id), _) => Some(ComputerId::from(id)),
            (None, Some(Actor::Computer(id))) => Some(id.clone()),
            (None, Some(other)) => {
                return Err(Failure::bad(format!(
                    "{other} must name the computer: computer_id"
                )));
            }
            (None, None) => None,
        };
        if let Some(computer) = &named {
            self.allow(&self.caller.computer(computer), Target::Computer(computer))?;
        }
        let value = self.marshalled("xml")?;
        let computer = match named {
            Some(computer) => computer,
            None => match value.get("reference") {
                Some(Value::String(reference)) => reference.as_str().into(),
                Some(_) => return Err(Failure::bad("computer definition: reference: not text")),
                None => return Err(Failure::bad("computer definition: reference: missing")),
            },
        };
        let definition =
            definition::computer_definition(&value, computer.as_str()).map_err(Failure::bad)?;
        self.write(
            self.caller.computer(&computer),
            Op::RegisterComputer(definition),
        )
        .await?;
        text("done")
    }

    async fn computer_bang(&self) -> Answer {
        let computer = self.computer_id("computer_id")?;
        let op = Op::BangComputer {
            computer: computer.clone(),
            message: self.form.get("message").unwrap_or_default().to_string(),
        };
        self.write(self.caller.computer(&computer), op).await?;
        xml(&Value::string(""))
    }

    // --- instance and user calls --------------------------------------------------------------

    /// An instance request, by a user (a root) or a partition (a child). Answers the
    /// marshalled `SoftwareInstance` once placed, 408 while it waits for a partition (the
    /// client asks again), 404 when it can never be placed as asked.
    async fn request(&self) -> Answer {
        let actor = self.caller.requester()?;
        let state = match self.marshalled("state")? {
            Value::None => RequestedState::Started,
            Value::String(state) => match state.as_str() {
                "started" => RequestedState::Started,
                "stopped" => RequestedState::Stopped,
                "destroyed" => RequestedState::Destroyed,
                other => {
                    return Err(Failure::bad(format!(
                        "state {other:?}: started, stopped or destroyed"
                    )));
                }
            },
            _ => return Err(Failure::bad("state: a string")),
        };
        let shared = match self.marshalled("shared_xml")? {
            Value::None => false,
            Value::Bool(shared) => shared,
            _ => return Err(Failure::bad("shared_xml: a boolean")),
        };
        let request = InstanceRequest {
            title: self.form.required("partition_reference")?.to_string(),
            software_release: self.form.required("software_release")?.into(),
            software_type: self
                .form
                .get("software_type")
                .filter(|t| !t.is_empty())
                .unwrap_or("default")
                .to_string(),
            parameters: strings(
                "partition_parameter_xml",
                &self.marshalled("partition_parameter_xml")?,
            )?,
            sla: strings("filter_xml", &self.marshalled("filter_xml")?)?,
            shared,
            state,
        };
        let destroyed = view::destroyed_instance(&request.software_release, &request.software_type);
        let written = self.core.execute(actor, Op::RequestInstance(request)).await;
        let (outcome, index) = match written {
            // Destroying what is already gone succeeds (the reference mini-master's answer to
            // a destroyed shared instance, without a host to name).
            Err(CallError::Rejected(Rejection::NothingToDestroy { .. })) => {
                return xml(&destroyed);
            }
            written => written?,
        };
        let Outcome::Instance(summary) = outcome else {
            return Err(Failure(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("a request answered {outcome:?} instead of an instance"),
            ));
        };
        match &summary.placement {
            // Never placed (a pending request, a shared instance never hosted): gone at once.
            Placement::Pending { .. } | Placement::Unplaceable { .. }
                if summary.requested_state == RequestedState::Destroyed =>
            {
                return xml(&destroyed);
            }
            Placement::Pending { reason } => {
                return Err(Failure(
                    StatusCode::REQUEST_TIMEOUT,
                    format!("instance {} waits for a partition: {reason}", summary.guid),
                ));
            }
            Placement::Unplaceable { reason } => {
                return Err(Failure::not_found(format!(
                    "instance {} cannot be placed: {reason}",
                    summary.guid
                )));
            }
            Placement::Partition(_) | Placement::Hosted { .. } => {}
        }
        // Read our own write, on whichever replica this is.
        self.core
            .wait_applied(index, self.core.write_timeout())
            .await?;
        let guid = summary.guid;
        let answer = self
            .core
            .read(Consistency::Stale, move |txn| {
                let Some(instance) = query::instance(txn, guid)? else {
                    return Ok(None);
                };
                let (host, on) = match &instance.instance.placement {
                    Placement::Partition(on) => (None, on.clone()),
                    Placement::Hosted { host } => {
                        let Some(host) = query::instance(txn, *host)? else {
                            return Ok(None);
                        };
                        let Placement::Partition(on) = host.instance.placement.clone() else {
                            return Ok(None);
                        };
                        (Some(host), on)
                    }
                    _ => return Ok(None),
                };
                let Some(partition) = query::partition(txn, &on)? else {
                    return Ok(None);
                };
                Ok(Some(view::software_instance(
                    &instance,
                    host.as_ref(),
                    &on,
                    &partition,
                )))
            })
            .await?;
        match answer {
            Some(answer) => xml(&answer),
            // Destroyed or moved between the write and the read: ask again.
            None => Err(Failure(
                StatusCode::REQUEST_TIMEOUT,
                format!("instance {guid} changed while being answered"),
            )),
        }
    }

    async fn set_connection(&self) -> Answer {
        let partition = self.partition()?;
        let op = Op::PublishConnection {
            partition: partition.clone(),
            shared_reference: self.form.get("slave_reference").map(str::to_string),
            parameters: strings("connection_xml", &self.marshalled("connection_xml")?)?,
        };
        self.write(Actor::Partition(partition), op).await?;
        text("done")
    }

    fn hateoas_url(&self) -> Result<String, Failure> {
        self.reached
            .hateoas_url()
            .ok_or_else(|| Failure::bad("the Host header names no host"))
    }

    /// The HATEOAS API ([`hateoas`]): the root document, a search, or one document.
    async fn hateoas(&self) -> Answer {
        let reader = match self.caller.requester()? {
            person @ (Actor::User(_) | Actor::Operator(_)) => person,
            other => return Err(Failure::forbidden(format!("{other} is not a person"))),
        };
        let answer = match self.form.get("mode") {
            None => hateoas::root(&self.hateoas_url()?),
            Some("search") => {
                let search =
                    hateoas::Search::parse(self.form.required("query")?).map_err(Failure::bad)?;
                self.core
                    .read(Consistency::Linearizable, move |txn| {
                        hateoas_search(txn, &reader, &search)
                    })
                    .await?
            }
            Some("traverse") => {
                let url = self.form.required("relative_url")?;
                let document = hateoas::Document::parse(url).map_err(Failure::not_found)?;
                let wanted = document.clone();
                self.core
                    .read(Consistency::Linearizable, move |txn| {
                        hateoas_document(txn, &reader, &wanted)
                    })
                    .await?
                    .ok_or_else(|| Failure::not_found(format!("no {}", document.relative_url())))?
            }
            Some(other) => return Err(Failure::bad(format!("mode {other:?}: search or traverse"))),
        };
        json(&answer)
    }

    /// The `(tap, address)` pairs of every partition of the caller's request tree.
    async fn tree_addresses(&self) -> Answer {
        let partition = self.partition()?;
        self.allow(
            &Actor::Partition(partition.clone()),
            Target::Partition(&partition),
        )?;
        let wanted = partition.clone();
        let addresses = self
            .core
            .read(Consistency::Stale, move |txn| {
                match query::occupant(txn, &wanted)? {
                    Some(guid) => query::tree_addresses(txn, guid).map(Some),
                    None => Ok(None),
                }
            })
            .await?
            .ok_or_else(|| {
                Failure::not_found(format!("partition {partition} holds no instance"))
            })?;
        xml(&Value::List(
            addresses
                .into_iter()
                .map(|(tap, ip)| Value::Tuple(vec![Value::String(tap), Value::String(ip)]))
                .collect(),
        ))
    }

    async fn instance_bang(&self) -> Answer {
        let partition = self.partition()?;
        let op = Op::BangInstance {
            partition: partition.clone(),
            message: self.form.get("message").unwrap_or_default().to_string(),
        };
        self.write(Actor::Partition(partition), op).await?;
        text("OK")
    }

    async fn rename(&self) -> Answer {
        let partition = self.partition()?;
        let op = Op::RenameInstance {
            partition: partition.clone(),
            shared_reference: self.form.get("slave_reference").map(str::to_string),
            new_title: self.form.required("new_name")?.to_string(),
        };
        self.write(Actor::Partition(partition), op).await?;
        text("done")
    }

    async fn supply(&self) -> Answer {
        let state = match self.form.get("state").unwrap_or("available") {
            "available" => SupplyState::Available,
            "destroyed" => SupplyState::Destroyed,
            other => {
                return Err(Failure::bad(format!(
                    "state {other:?}: available or destroyed"
                )));
            }
        };
        let op = Op::Supply {
            computer: self.computer_id("computer_id")?,
            url: self.form.required("url")?.into(),
            state,
        };
        self.write(self.caller.itself(), op).await?;
        text("OK")
    }

    /// The catalog's releases of a product (by title), or the release a URL names if the
    /// catalog has it.
    async fn software_list(&self) -> Answer {
        let url = self.form.get("software_release_url").map(str::to_string);
        let product = self
            .form
            .get("software_product_reference")
            .map(str::to_string);
        if url.is_none() && product.is_none() {
            return Err(Failure::bad(
                "give software_product_reference or software_release_url",
            ));
        }
        let catalog = self.core.read(Consistency::Stale, query::catalog).await?;
        let urls = catalog
            .into_iter()
            .filter(|r| match (&url, &product) {
                (Some(url), _) => r.url.as_str() == url,
                (None, Some(product)) => r.title == *product,
                (None, None) => false,
            })
            .map(|r| Value::String(r.url.to_string()))
            .collect();
        xml(&Value::List(urls))
    }

    /// Computers register themselves (`slapos node format`, or enrollment): this answers a
    /// registered one, and says so for any other.
    async fn request_computer(&self) -> Answer {
        let computer = self.computer_id("computer_title")?;
        self.allow(&self.caller.itself(), Target::Computer(&computer))?;
        let id = computer.clone();
        let exists = self
            .core
            .read(Consistency::Linearizable, move |txn| {
                query::computer_view(txn, &id).map(|v| v.is_some())
            })
            .await?;
        if !exists {
            return Err(Failure::not_found(format!(
                "no computer {computer}: computers register themselves, with `slapos node \
                 format` or by enrolling with a token from `slapctl computer token`"
            )));
        }
        let id = computer.to_string();
        xml(&Value::Object(Object {
            class: SlapClass::Computer,
            args: vec![Value::String(id.clone())],
            attributes: vec![(Value::string("_computer_id"), Value::String(id))],
        }))
    }

    async fn computer_certificate(&self) -> Answer {
        let computer = self.computer_id("computer_id")?;
        self.allow(&self.caller.itself(), Target::Computer(&computer))?;
        let identity = ca::Identity::Computer(computer.to_string());
        let (signed, key) = sign_new_key(self.core, &identity).await?;
        xml(&Value::dict([
            ("certificate", Value::String(signed.chain_pem)),
            ("key", Value::String(key)),
        ]))
    }

    /// Revokes every certificate the cluster issued to the computer and has not revoked.
    async fn revoke_computer_certificate(&self) -> Answer {
        let computer = self.computer_id("computer_id")?;
        self.allow(&self.caller.itself(), Target::Computer(&computer))?;
        let identity = ca::Identity::Computer(computer.to_string()).to_uri();
        let certificates = self
            .core
            .read(Consistency::Linearizable, query::certificates)
            .await?;
        let serials: Vec<String> = certificates
            .into_iter()
            .filter(|(c, revocation)| c.identity == identity && revocation.is_none())
            .map(|(c, _)| c.serial)
            .collect();
        if serials.is_empty() {
            return Err(Failure::not_found(format!(
                "computer {computer} has no certificate to revoke"
            )));
        }
        for serial in serials {
            let op = Op::RevokeCertificate {
                serial,
                reason: "revokeComputerCertificate".into(),
            };
            self.write(self.caller.itself(), op).await?;
        }
        text("OK")
    }

    async fn computer_status(&self) -> Answer {
        let computer = self.computer_id("computer_id")?;
        self.allow(&self.caller.itself(), Target::Computer(&computer))?;
        let id = computer.clone();
        let view = self
            .core
            .read(Consistency::Stale, move |txn| {
                query::computer_view(txn, &id)
            })
            .await?
            .ok_or_else(|| Failure::not_found(format!("unknown computer {computer}")))?;
        let last_seen = view.last_seen.map(|t| t.0.to_string());
        xml(&Value::dict([
            ("computer_id", Value::string(computer.as_str())),
            (
                "last_poll_microseconds",
                last_seen.map_or(Value::None, Value::String),
            ),
            (
                "text",
                Value::string(match view.last_seen {
                    Some(_) => "#access the node polls",
                    None => "#error no poll from the node yet",
                }),
            ),
        ]))
    }

    async fn partition_status(&self) -> Answer {
        let partition = PartitionId {
            computer: self.computer_id("computer_id")?,
            partition: self.form.required("computer_partition_id")?.into(),
        };
        let wanted = partition.clone();
        let caller = self.caller.itself();
        let reader = caller.clone();
        let (found, role) = self
            .core
            .read(Consistency::Stale, move |txn| {
                let Some(guid) = query::occupant(txn, &wanted)? else {
                    return Ok(None);
                };
                let Some(view) = query::instance(txn, guid)? else {
                    return Ok(None);
                };
                let role = query::role(txn, &reader, &view.instance.project)?;
                Ok(Some((view, role)))
            })
            .await?
            .ok_or_else(|| {
                Failure::not_found(format!("partition {partition} holds no instance"))
            })?;
        self.allow(
            &caller,
            Target::Instance(InstanceFacts {
                instance: &found.instance,
                host_placement: None,
                callers_instance: match &caller {
                    Actor::Partition(p) if *p == partition => Some(found.instance.guid),
                    _ => None,
                },
                role,
            }),
        )?;
        let i = &found.instance;
        xml(&Value::dict([
            ("instance_guid", Value::string(i.guid.to_string())),
            ("requested_state", Value::string(i.requested_state.as_str())),
            (
                "text",
                i.access_status.clone().map_or(Value::None, Value::String),
            ),
            (
                "last_error",
                i.last_error.clone().map_or(Value::None, Value::String),
            ),
        ]))
    }
}

/// What a node's poll finds of its computer.
enum Polled {
    /// What the node holds (its `If-None-Match`) is current.
    Unchanged,
    Unknown,
    Document(Bytes),
}

/// Parameters as SLAP sends them: a dictionary of names to text (numbers and booleans are
/// turned into the text Python prints for them); absent is empty.
fn strings(name: &str, value: &Value) -> Result<Parameters, Failure> {
    let Value::Dict(pairs) = value else {
        return match value {
            Value::None => Ok(Parameters::new()),
            _ => Err(Failure::bad(format!("{name}: not a dictionary"))),
        };
    };
    let mut out = Parameters::new();
    for (key, value) in pairs {
        let Some(key) = key.as_str() else {
            return Err(Failure::bad(format!("{name}: a key is not text")));
        };
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => f.to_string(),
            Value::Bool(true) => "True".into(),
            Value::Bool(false) => "False".into(),
            Value::None => "None".into(),
            _ => {
                return Err(Failure::bad(format!(
                    "{name}: {key}: not text (nested values travel serialised)"
                )));
            }
        };
        out.insert(key.to_string(), text);
    }
    Ok(out)
}

/// Whether a bound certificate is in the last third of its life (`ca::renewal_due`).
fn renewal_due(bound: &crate::state::model::InstanceCertificate) -> bool {
    let at = |t: Timestamp| std::time::UNIX_EPOCH + std::time::Duration::from_micros(t.0);
    ca::renewal_due(
        at(bound.not_before),
        at(bound.not_after),
        std::time::SystemTime::now(),
    )
}

/// A HATEOAS search's rows: the reader's own trees (not destroyed: the master archives a
/// destroyed tree at once), or the computers it may inspect; by title or reference if named.
fn hateoas_search(
    txn: &redb::ReadTransaction,
    reader: &Actor,
    search: &hateoas::Search,
) -> Result<serde_json::Value, crate::state::StateError> {
    let mut rows = Vec::new();
    match search {
        hateoas::Search::Trees { title } => {
            let (Actor::User(owner) | Actor::Operator(owner)) = reader else {
                return Ok(hateoas::rows(rows));
            };
            let roots = match title {
                Some(title) => query::root_by_title(txn, owner, title)?
                    .into_iter()
                    .collect(),
                None => query::roots_of(txn, owner)?,
            };
            for root in roots {
                if let Some(view) = query::instance(txn, root)?
                    && view.instance.requested_state != RequestedState::Destroyed
                {
                    rows.push(hateoas::tree_row(&view));
                }
                if rows.len() == hateoas::MAX_ROWS {
                    break;
                }
            }
        }
        hateoas::Search::Computers { reference } => {
            for computer in query::computers(txn)? {
                if reference
                    .as_ref()
                    .is_some_and(|r| r != computer.id.as_str())
                {
                    continue;
                }
                let role = query::role(txn, reader, &computer.project)?;
                let target = policy::computer_target(&computer, role);
                if policy::decide(reader, Operation::InspectComputer, target).is_ok() {
                    rows.push(hateoas::computer_row(&computer.id));
                }
                if rows.len() == hateoas::MAX_ROWS {
                    break;
                }
            }
        }
    }
    Ok(hateoas::rows(rows))
}

/// One HATEOAS document, if it exists and the reader may see it (a tree: its root instance,
/// as `ReadInstance` decides; a computer: as `InspectComputer` does).
fn hateoas_document(
    txn: &redb::ReadTransaction,
    reader: &Actor,
    document: &hateoas::Document,
) -> Result<Option<serde_json::Value>, crate::state::StateError> {
    match document {
        hateoas::Document::Tree(guid) => {
            let Some(root) = query::instance(txn, *guid)? else {
                return Ok(None);
            };
            let instance = &root.instance;
            if instance.guid != instance.root
                || instance.requested_state == RequestedState::Destroyed
            {
                return Ok(None);
            }
            let facts = InstanceFacts {
                instance,
                host_placement: None,
                callers_instance: None,
                role: query::role(txn, reader, &instance.project)?,
            };
            if policy::decide(reader, Operation::ReadInstance, Target::Instance(facts)).is_err() {
                return Ok(None);
            }
            // What every instance of the tree last reported, for its news.
            let reports: Vec<Option<String>> = query::tree(txn, instance.guid)?
                .into_iter()
                .filter(|i| !i.shared)
                .map(|i| i.access_status)
                .collect();
            Ok(Some(hateoas::tree(&root, &reports)))
        }
        hateoas::Document::Computer(id) => {
            let Some(view) = query::computer_view(txn, id)? else {
                return Ok(None);
            };
            let role = query::role(txn, reader, &view.computer.project)?;
            let target = policy::computer_target(&view.computer, role);
            Ok(policy::decide(reader, Operation::InspectComputer, target)
                .is_ok()
                .then(|| hateoas::computer(id)))
        }
    }
}

/// A key made here and its certificate for `identity`, recorded by this replica: for callers
/// that send no request to sign (the SlapOS client never does).
pub(super) async fn sign_new_key(
    core: &ReplicaCore,
    identity: &ca::Identity,
) -> Result<(Signed, String), Failure> {
    let request = ca::new_key_and_request()
        .map_err(|e| Failure(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let lifetime = ca::Lifetimes::default().leaf(identity.role());
    let signed = sign(
        core,
        &request.csr_pem,
        identity,
        lifetime,
        Actor::Replica(core.id()),
    )
    .await?;
    tracing::info!(%identity, serial = %signed.serial, "SLAP: issued a certificate");
    Ok((signed, request.key_pem))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_text_as_python_prints_them() {
        let value = Value::dict([
            ("name", Value::string("web")),
            ("port", Value::Int(8080)),
            ("ratio", Value::Float(0.5)),
            ("on", Value::Bool(true)),
            ("off", Value::Bool(false)),
            ("nothing", Value::None),
        ]);
        let parameters = strings("partition_parameter_xml", &value).expect("parameters");
        assert_eq!(parameters["name"], "web");
        assert_eq!(parameters["port"], "8080");
        assert_eq!(parameters["ratio"], "0.5");
        assert_eq!(parameters["on"], "True");
        assert_eq!(parameters["off"], "False");
        assert_eq!(parameters["nothing"], "None");
        assert!(
            strings("filter_xml", &Value::None)
                .expect("empty")
                .is_empty()
        );
    }

    #[test]
    fn nested_parameters_and_other_shapes_are_refused_by_name() {
        let nested = Value::dict([("deep", Value::List(vec![]))]);
        let refused = strings("partition_parameter_xml", &nested).map_err(|f| (f.0, f.1));
        assert!(
            matches!(&refused, Err((StatusCode::BAD_REQUEST, m)) if m.contains("deep")),
            "{refused:?}"
        );
        let refused = strings("filter_xml", &Value::string("x")).map_err(|f| f.0);
        assert_eq!(refused, Err(StatusCode::BAD_REQUEST));
    }
}
