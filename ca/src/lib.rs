//! ca: the cluster's X509 identities (issue 5). It will own the root CA that `slapmaster init`
//! creates, an intermediate signing certificate per replica, and leaf certificates issued from
//! CSRs for the roles replica, user, computer, partition and operator, with the role and id
//! encoded in the certificate and parsed back into a typed identity; plus the certificate
//! policy (lifetimes, renewal, revocation checks) as plain functions without IO.
//!
//! Must never depend on: sockets, the async runtime, or any other slapcluster crate.
