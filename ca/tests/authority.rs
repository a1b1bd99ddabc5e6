//! A cluster CA built in code, by role, with expired, not-yet-valid, revoked and foreign
//! fixtures: what each certificate says, and how a peer presenting it is accepted or refused.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use ca::{
    Authority, CertificateInfo, Grant, Identity, Lifetimes, Refusal, Serial, TrustStore, Usage,
    der_from_pem, new_key_and_request, renewal_due,
};
use rustls_pki_types::CertificateDer;

const DAY: Duration = Duration::from_secs(24 * 3600);

/// 2026-11-24, a fixed "now" so that every validity is exact.
fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_478_400)
}

/// The root, replica 1's intermediate, and a way to issue leaves from it.
struct TestCa {
    root: Authority,
    intermediate: Authority,
    trust: TrustStore,
}

impl TestCa {
    fn new(cluster: &str) -> Self {
        let lifetimes = Lifetimes::default();
        let root = Authority::create_root(cluster, now(), lifetimes.root).expect("root");
        let request = new_key_and_request().expect("key");
        let cert = root
            .sign_intermediate(&request.csr_pem, 1, now(), lifetimes.intermediate)
            .expect("intermediate");
        let intermediate = Authority::load(&cert, &request.key_pem).expect("loads");
        let trust = TrustStore::new(&[root.cert_pem()]).expect("trust");
        Self {
            root,
            intermediate,
            trust,
        }
    }

    /// A leaf for `identity`, issued at `issued`, as the chain its holder presents.
    fn chain(&self, identity: Identity, issued: SystemTime) -> Vec<CertificateDer<'static>> {
        let request = new_key_and_request().expect("key");
        let grant = Grant {
            lifetime: Lifetimes::default().leaf(identity.role()),
            server_names: vec!["::1".into(), "replica-1.example".into()],
            identity,
        };
        let leaf = self
            .intermediate
            .sign_leaf(&request.csr_pem, &grant, issued)
            .expect("leaf");
        vec![
            der_from_pem(&leaf).expect("der"),
            der_from_pem(self.intermediate.cert_pem()).expect("der"),
        ]
    }
}

fn computer(id: &str) -> Identity {
    Identity::Computer(id.into())
}

#[test]
fn every_role_is_issued_and_read_back() {
    let ca = TestCa::new("test");
    let none = BTreeSet::new();
    for identity in [
        Identity::Replica(1),
        Identity::Operator("ops".into()),
        Identity::User("alice".into()),
        computer("COMP-1"),
        Identity::Partition {
            computer: "COMP-1".into(),
            partition: "slappart0".into(),
        },
    ] {
        let chain = ca.chain(identity.clone(), now());
        let verified = ca
            .trust
            .verify(&chain, Usage::Client, now(), &none)
            .unwrap_or_else(|e| panic!("{identity}: {e}"));
        assert_eq!(verified.identity, identity);
        let lifetime = Lifetimes::default().leaf(identity.role());
        assert_eq!(verified.not_after, now() + lifetime);
        let server = ca.trust.verify(&chain, Usage::Server, now(), &none);
        assert_eq!(
            server.is_ok(),
            identity == Identity::Replica(1),
            "only replicas serve: {identity}"
        );
    }
    let root = ca.root.info();
    assert!(root.is_ca && root.identity.is_none());
    assert!(ca.intermediate.info().issuer.contains("root CA"));
}

#[test]
fn refusals_say_why() {
    let ca = TestCa::new("test");
    let none = BTreeSet::new();
    let verify = |chain: &[CertificateDer<'_>], at, revoked: &BTreeSet<Serial>| {
        ca.trust.verify(chain, Usage::Client, at, revoked)
    };

    assert_eq!(verify(&[], now(), &none), Err(Refusal::NoCertificate));

    let foreign = TestCa::new("other").chain(computer("COMP-1"), now());
    assert_eq!(verify(&foreign, now(), &none), Err(Refusal::UnknownIssuer));

    let expired = ca.chain(computer("COMP-1"), now() - 100 * DAY);
    assert_eq!(verify(&expired, now(), &none), Err(Refusal::Expired));

    let early = ca.chain(computer("COMP-1"), now() + 10 * DAY);
    assert_eq!(verify(&early, now(), &none), Err(Refusal::NotYetValid));

    let chain = ca.chain(computer("COMP-1"), now());
    let serial = CertificateInfo::from_der(&chain[0]).expect("reads").serial;
    let revoked = BTreeSet::from([serial.clone()]);
    assert_eq!(
        verify(&chain, now(), &revoked),
        Err(Refusal::Revoked(serial))
    );

    an_intermediate_revocation_covers_its_leaves(&ca, &chain);

    let without_intermediate = &chain[..1];
    assert_eq!(
        verify(without_intermediate, now(), &none),
        Err(Refusal::UnknownIssuer),
        "a leaf alone does not reach the root"
    );
}

fn an_intermediate_revocation_covers_its_leaves(ca: &TestCa, chain: &[CertificateDer<'static>]) {
    let intermediate = ca.intermediate.info().serial.clone();
    let revoked = BTreeSet::from([intermediate.clone()]);
    assert_eq!(
        ca.trust.verify(chain, Usage::Client, now(), &revoked),
        Err(Refusal::Revoked(intermediate))
    );
}

#[test]
fn the_issuer_decides_what_a_certificate_says() {
    let ca = TestCa::new("test");
    // A request that asks for another identity in its own subject alternative names.
    let key = rcgen::KeyPair::generate().expect("key");
    let mut asked = rcgen::CertificateParams::new(vec!["evil.example".to_string()]).expect("p");
    asked.subject_alt_names.push(rcgen::SanType::URI(
        "urn:slapcluster:operator:root"
            .to_string()
            .try_into()
            .expect("ia5"),
    ));
    let csr = asked
        .serialize_request(&key)
        .expect("csr")
        .pem()
        .expect("pem");
    let grant = Grant {
        identity: computer("COMP-7"),
        lifetime: Lifetimes::default().client,
        server_names: vec!["evil.example".into()],
    };
    let leaf = ca
        .intermediate
        .sign_leaf(&csr, &grant, now())
        .expect("leaf");
    let info = CertificateInfo::from_pem(&leaf).expect("reads");
    assert_eq!(info.identity, Some(computer("COMP-7")));
    // The certificate is for the request's key, and for no other.
    assert!(ca::certifies_key(&leaf, &key.serialize_pem()).expect("compares"));
    let other = new_key_and_request().expect("key");
    assert!(!ca::certifies_key(&leaf, &other.key_pem).expect("compares"));
    assert!(ca::certifies_request(&leaf, &csr).expect("compares"));
    assert!(!ca::certifies_request(&leaf, &other.csr_pem).expect("compares"));

    // A request whose signature does not match its key is refused.
    let mut tampered = csr.clone().into_bytes();
    let middle = tampered.len() / 2;
    tampered[middle] = if tampered[middle] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).expect("ascii");
    assert!(ca.intermediate.sign_leaf(&tampered, &grant, now()).is_err());

    // Ids this crate would not read back are not issued.
    let bad = Grant {
        identity: computer("COMP 7"),
        ..grant
    };
    assert!(ca.intermediate.sign_leaf(&csr, &bad, now()).is_err());
}

#[test]
fn serials_differ_and_a_ca_reloads_from_pem() {
    let ca = TestCa::new("test");
    let serials: BTreeSet<Serial> = (0..20)
        .map(|_| {
            let chain = ca.chain(computer("COMP-1"), now());
            CertificateInfo::from_der(&chain[0]).expect("reads").serial
        })
        .collect();
    assert_eq!(serials.len(), 20);

    let reloaded = Authority::load(ca.root.cert_pem(), &ca.root.key_pem()).expect("reloads");
    let request = new_key_and_request().expect("key");
    let cert = reloaded
        .sign_intermediate(
            &request.csr_pem,
            2,
            now(),
            Lifetimes::default().intermediate,
        )
        .expect("signs after reload");
    let second = Authority::load(&cert, &request.key_pem).expect("loads");
    let leaf_request = new_key_and_request().expect("key");
    let grant = Grant {
        identity: Identity::User("bob".into()),
        lifetime: DAY,
        server_names: Vec::new(),
    };
    let leaf = second
        .sign_leaf(&leaf_request.csr_pem, &grant, now())
        .expect("leaf");
    let chain = [
        der_from_pem(&leaf).expect("der"),
        der_from_pem(&cert).expect("der"),
    ];
    let verified = ca
        .trust
        .verify(&chain, Usage::Client, now(), &BTreeSet::new())
        .expect("trusted by the original root");
    assert_eq!(verified.identity, Identity::User("bob".into()));

    let leaf_as_ca = Authority::load(&leaf, &leaf_request.key_pem);
    assert!(leaf_as_ca.is_err(), "a leaf cannot sign");
}

#[test]
fn a_ca_rotation_trusts_both_roots_until_the_old_one_goes() {
    let old = TestCa::new("test");
    let new = TestCa::new("test");
    // As operators deploy it: one roots file holding both.
    let bundle = format!("{}{}", old.root.cert_pem(), new.root.cert_pem());
    let both = TrustStore::new(&[&bundle]).expect("trust");
    let none = BTreeSet::new();
    for ca in [&old, &new] {
        let chain = ca.chain(computer("COMP-1"), now());
        assert!(both.verify(&chain, Usage::Client, now(), &none).is_ok());
    }
    assert_ne!(old.root.info().subject, new.root.info().subject);
    let only_new = TrustStore::new(&[new.root.cert_pem()]).expect("trust");
    let old_chain = old.chain(computer("COMP-1"), now());
    assert_eq!(
        only_new.verify(&old_chain, Usage::Client, now(), &none),
        Err(Refusal::UnknownIssuer)
    );
}

#[test]
fn renewal_comes_in_the_last_third_of_a_leaf() {
    let ca = TestCa::new("test");
    let chain = ca.chain(computer("COMP-1"), now());
    let info = CertificateInfo::from_der(&chain[0]).expect("reads");
    assert!(!renewal_due(
        info.not_before,
        info.not_after,
        now() + 50 * DAY
    ));
    assert!(renewal_due(
        info.not_before,
        info.not_after,
        now() + 70 * DAY
    ));
}
