//! Certificates: recorded, bound to an instance, revoked; the one-time tokens that stand for
//! one.

use super::*;

#[test]
fn certificates_are_recorded_by_replicas_and_revoked_by_operators() {
    let mut f = Fixture::new();
    let record = |serial: &str| Op::RecordCertificate {
        serial: serial.into(),
        identity: "urn:slapcluster:computer:COMP-1".into(),
        not_after: Timestamp(1),
    };
    let revoke = |serial: &str| Op::RevokeCertificate {
        serial: serial.into(),
        reason: "key lost".into(),
    };
    let operator = Actor::Operator(UserId::from("ops"));
    assert_eq!(f.run(Actor::Replica(1), record("4a01")), Ok(Outcome::Done));
    assert_eq!(
        f.run(Actor::Replica(2), record("4a01")),
        Ok(Outcome::Unchanged)
    );
    assert!(matches!(
        f.refused(Actor::Computer(ComputerId::from("COMP-1")), record("4a02")),
        Rejection::NotAllowed { .. }
    ));
    assert!(matches!(
        f.refused(user("mallory"), revoke("4a01")),
        Rejection::NotAllowed { .. }
    ));
    for bad in ["", "4A01", "xyz", &"a".repeat(41)] {
        assert!(
            matches!(
                f.refused(operator.clone(), revoke(bad)),
                Rejection::Invalid { .. }
            ),
            "{bad:?}"
        );
    }
    assert_eq!(f.run(operator.clone(), revoke("4a01")), Ok(Outcome::Done));
    assert_eq!(
        f.run(operator.clone(), revoke("4a01")),
        Ok(Outcome::Unchanged)
    );
    assert_eq!(
        f.run(operator, revoke("77")),
        Ok(Outcome::Done),
        "a serial without a record (an intermediate's) is revoked all the same"
    );
    let txn = f.state.read().expect("read");
    assert_eq!(
        query::revoked_serials(&txn).expect("query"),
        ["4a01".to_string(), "77".to_string()].into()
    );
}

#[test]
fn an_instance_keeps_one_certificate_revoked_when_its_partition_is_freed_for_the_next() {
    let mut f = Fixture::new();
    f.register("COMP-1", 1, &[]);
    f.supply("COMP-1", KVM);
    let web = f.request(user("alice"), request("web", KVM));
    let on = partition_of(&web);
    let bind = |instance: InstanceGuid, serial: &str, replaces: Option<&str>| {
        Op::BindInstanceCertificate {
            instance,
            partition: on.clone(),
            serial: serial.into(),
            chain_pem: format!("chain {serial}"),
            key_pem: format!("key {serial}"),
            not_before: Timestamp(1),
            not_after: Timestamp(2),
            replaces: replaces.map(str::to_string),
        }
    };
    let bound = |response: Response| match response {
        Ok(Outcome::InstanceCertificate(bound)) => bound,
        other => panic!("expected a bound certificate, got {other:?}"),
    };

    tracing_phase("the first binding stands; a racing replica is answered with it");
    let first = bound(f.run(Actor::Replica(1), bind(web.guid, "a1", None)));
    assert_eq!(
        (first.serial.as_str(), first.key_pem.as_str()),
        ("a1", "key a1")
    );
    let raced = bound(f.run(Actor::Replica(2), bind(web.guid, "b2", None)));
    assert_eq!(raced.serial, "a1");

    tracing_phase("only replicas bind, and only to the instance on that partition");
    assert!(matches!(
        f.refused(user("alice"), bind(web.guid, "c3", None)),
        Rejection::NotAllowed { .. }
    ));
    assert!(matches!(
        f.refused(Actor::Computer("COMP-1".into()), bind(web.guid, "c3", None)),
        Rejection::NotAllowed { .. }
    ));
    assert!(matches!(
        f.refused(Actor::Replica(1), bind(InstanceGuid(999), "c3", None)),
        Rejection::UnknownInstance(_)
    ));

    tracing_phase("a renewal replaces the current one");
    let renewed = bound(f.run(Actor::Replica(2), bind(web.guid, "d4", Some("a1"))));
    assert_eq!(renewed.serials, ["a1".to_string(), "d4".to_string()]);

    tracing_phase("being destroyed, it keeps it: its node destroys it with it");
    f.run(user("alice"), Op::DestroyInstance { instance: web.guid })
        .expect("destroyed");
    let still = bound(f.run(Actor::Replica(1), bind(web.guid, "e5", None)));
    assert_eq!(still.serial, "d4");
    assert!(
        query::revoked_serials(&f.state.read().expect("read"))
            .expect("query")
            .is_empty()
    );

    tracing_phase("its partition freed, every certificate it had is revoked");
    let freed = f.report(&on, InstanceReport::Destroyed);
    assert!(freed.is_ok(), "{freed:?}");
    let revoked = query::revoked_serials(&f.state.read().expect("read")).expect("query");
    assert_eq!(revoked, ["a1".to_string(), "d4".to_string()].into());
    assert!(matches!(
        f.refused(Actor::Replica(1), bind(web.guid, "e6", None)),
        Rejection::UnknownInstance(_)
    ));

    tracing_phase("the partition's next occupant gets a certificate of its own");
    let db = f.request(user("bob"), request("db", KVM));
    assert_eq!(partition_of(&db), on);
    let bobs = bound(f.run(Actor::Replica(1), bind(db.guid, "f6", None)));
    assert_eq!(bobs.serials, ["f6".to_string()]);
    let revoked = query::revoked_serials(&f.state.read().expect("read")).expect("query");
    assert!(!revoked.contains("f6") && revoked.contains("a1"));
}

#[test]
fn a_token_is_good_once_before_it_expires_and_only_for_its_kind() {
    let mut f = Fixture::new();
    let operator = Actor::Operator(UserId::from("ops"));
    let replica = Actor::Replica(1);
    let hash = |n: u8| format!("{n:02x}").repeat(32);
    let credential = |n: u8, user: &str, expires_at: u64| Op::CreateCredentialToken {
        token_hash: hash(n),
        user: UserId::from(user),
        expires_at: Timestamp(expires_at),
    };
    let far = u64::MAX;

    // Operators make credential tokens for anyone, a user for themselves only; no one else.
    assert_eq!(
        f.run(operator.clone(), credential(1, "alice", far)),
        Ok(Outcome::Done)
    );
    assert_eq!(
        f.run(user("bob"), credential(2, "bob", far)),
        Ok(Outcome::Done)
    );
    for (actor, n) in [
        (user("mallory"), 3),
        (Actor::Computer(ComputerId::from("COMP-1")), 4),
        (replica.clone(), 5),
    ] {
        assert!(
            matches!(
                f.refused(actor.clone(), credential(n, "alice", far)),
                Rejection::NotAllowed { .. }
            ),
            "{actor}"
        );
    }
    assert!(matches!(
        f.refused(operator.clone(), credential(6, "", far)),
        Rejection::Invalid { .. }
    ));

    // Only replicas spend them, once.
    let use_credential = |n: u8| Op::UseCredentialToken {
        token_hash: hash(n),
    };
    assert!(matches!(
        f.refused(user("alice"), use_credential(1)),
        Rejection::NotAllowed { .. }
    ));
    assert_eq!(
        f.run(replica.clone(), use_credential(1)),
        Ok(Outcome::Credentialed {
            user: UserId::from("alice")
        })
    );
    assert_eq!(
        f.refused(replica.clone(), use_credential(1)),
        Rejection::BadEnrollmentToken
    );

    // An expired one is refused; so is one of the other kind, which stays good for its own.
    assert_eq!(
        f.run(operator.clone(), credential(7, "carol", 1)),
        Ok(Outcome::Done)
    );
    assert_eq!(
        f.refused(replica.clone(), use_credential(7)),
        Rejection::BadEnrollmentToken
    );
    let enrollment = Op::CreateEnrollmentToken {
        token_hash: hash(8),
        computer: ComputerId::from("COMP-9"),
        expires_at: Timestamp(far),
    };
    assert_eq!(f.run(operator, enrollment), Ok(Outcome::Done));
    assert_eq!(
        f.refused(replica.clone(), use_credential(8)),
        Rejection::BadEnrollmentToken
    );
    assert_eq!(
        f.refused(
            replica.clone(),
            Op::UseEnrollmentToken {
                token_hash: hash(2)
            }
        ),
        Rejection::BadEnrollmentToken
    );
    assert_eq!(
        f.run(
            replica,
            Op::UseEnrollmentToken {
                token_hash: hash(8)
            }
        ),
        Ok(Outcome::Enrolled {
            computer: ComputerId::from("COMP-9")
        })
    );
}
