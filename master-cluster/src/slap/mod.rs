//! The SLAP HTTP protocol that existing SlapOS nodes and clients (`slapos.core`) speak
//! (`shared/slap-protocol.md`), mapped onto the same commands and queries as the gRPC services.
//! Pure pieces first, then the listener:
//! - [`marshal`]: xml_marshaller, the encoding of every structured value in the protocol (in
//!   the wire-contract crate, which the load tool shares).
//! - [`definition`]: the computer definition `slapos node format` posts.
//! - [`journal`]: the usage journal `slapos node report` posts.
//! - [`view`]: a computer's view as the marshalled `Computer` a node polls for.
//! - [`form`]: a call's arguments (query string or urlencoded body) and a partition's
//!   `X-SlapPartition` authorization.
//! - [`hateoas`]: the JSON API `slapos service|computer list|info` read, its queries and
//!   documents.
//! - [`server`]: the listener (HTTPS with client certificates, or plain HTTP when configured)
//!   and who calls; `calls`: each call as its command or query; `tokens`: the two web
//!   methods that give a certificate for a one-time token instead.

mod calls;
pub mod definition;
pub mod form;
pub mod hateoas;
pub mod journal;
pub use slapcluster_api::marshal;
pub mod server;
mod tokens;
pub mod view;

#[cfg(test)]
mod tests {
    use crate::state::policy::slap_operation;

    /// The one authorisation policy names every call the listener serves (a call it does not
    /// name would be refused to everyone; see `state/policy/tests.rs` for the gRPC methods).
    #[test]
    fn every_slap_call_is_named_by_the_policy() {
        for call in super::calls::CALLS {
            assert!(
                slap_operation(call).is_some(),
                "{call} is not in the policy"
            );
        }
    }
}
