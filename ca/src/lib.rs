//! ca: the cluster's X509 identities, as plain logic without sockets, files or clocks (every
//! function takes `now`).
//!
//! - `identity.rs`: [`Identity`] (replica, operator, user, computer, partition) and its URI
//!   form `urn:slapcluster:ROLE:ID`, the one subject alternative name that says who a
//!   certificate speaks for.
//! - `authority.rs`: [`Authority`] — the root CA (`slapmaster init`), a replica's intermediate
//!   signing CA, and leaves signed from certificate signing requests ([`new_key_and_request`]
//!   runs on the key's owner), saying what the issuer's [`Grant`] says.
//! - `verify.rs`: [`TrustStore::verify`] accepts a peer's chain or refuses it with a
//!   [`Refusal`] that tells a foreign CA, an expired, a revoked and a missing certificate
//!   apart; the TLS layer and the authorisation of every call build on it.
//! - `policy.rs`: [`Lifetimes`] and [`renewal_due`].
//!
//! Must never depend on: sockets, the async runtime, or any other slapcluster crate.

mod authority;
mod cert;
mod error;
mod identity;
mod policy;
mod verify;

pub use authority::{
    Authority, Grant, KeyAndRequest, certifies_key, certifies_request, new_key_and_request,
    verify_request,
};
pub use cert::{CertificateInfo, Serial, der_from_pem, ders_from_pem};
pub use error::CaError;
pub use identity::{Identity, IdentityError, MAX_ID_BYTES, Role};
pub use policy::{Lifetimes, renewal_due};
pub use verify::{Refusal, TrustStore, Usage, Verified};
