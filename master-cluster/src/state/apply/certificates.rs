//! Certificates: issued ones recorded, enrollment (computer) and credential (user) tokens, an
//! instance's certificate bound to its partition, revocations.

use super::*;

impl Applier<'_, '_> {
    pub(super) fn record_certificate(
        &mut self,
        serial: &str,
        identity: &str,
        not_after: Timestamp,
    ) -> Handled {
        check_serial(serial)?;
        check_name("certificate identity", identity)?;
        let key = tables::serial_key(serial);
        if self
            .t
            .certificates
            .get::<IssuedCertificate>(key.as_bytes())?
            .is_some()
        {
            return Ok(Outcome::Unchanged);
        }
        let record = IssuedCertificate {
            serial: serial.to_string(),
            identity: identity.to_string(),
            not_after,
            issued_at: self.at,
            issued_by: self.actor.clone(),
        };
        self.t.certificates.put(key.as_bytes(), &record)?;
        self.audit("record certificate", format!("{serial} for {identity}"))?;
        Ok(Outcome::Done)
    }

    pub(super) fn create_enrollment_token(
        &mut self,
        token_hash: &str,
        computer: &ComputerId,
        expires_at: Timestamp,
    ) -> Handled {
        check_name("computer id", computer.as_str())?;
        let token = EnrollmentToken {
            computer: computer.clone(),
            expires_at,
            issued_by: self.actor.clone(),
            used_at: None,
        };
        if !keep(&mut self.t.enrollment_tokens, token_hash, &token)? {
            return Ok(Outcome::Unchanged);
        }
        self.audit("create enrollment token", computer.to_string())?;
        Ok(Outcome::Done)
    }

    pub(super) fn use_enrollment_token(&mut self, token_hash: &str) -> Handled {
        let token: EnrollmentToken = spend(&mut self.t.enrollment_tokens, token_hash, self.at)?;
        self.audit("use enrollment token", token.computer.to_string())?;
        Ok(Outcome::Enrolled {
            computer: token.computer,
        })
    }

    pub(super) fn create_credential_token(
        &mut self,
        token_hash: &str,
        user: &UserId,
        expires_at: Timestamp,
    ) -> Handled {
        check_name("user", user.as_str())?;
        let token = CredentialToken {
            user: user.clone(),
            expires_at,
            issued_by: self.actor.clone(),
            used_at: None,
        };
        if !keep(&mut self.t.credential_tokens, token_hash, &token)? {
            return Ok(Outcome::Unchanged);
        }
        self.audit("create credential token", user.to_string())?;
        Ok(Outcome::Done)
    }

    pub(super) fn use_credential_token(&mut self, token_hash: &str) -> Handled {
        let token: CredentialToken = spend(&mut self.t.credential_tokens, token_hash, self.at)?;
        self.audit("use credential token", token.user.to_string())?;
        Ok(Outcome::Credentialed { user: token.user })
    }

    pub(super) fn bind_instance_certificate(
        &mut self,
        guid: InstanceGuid,
        mut certificate: InstanceCertificate,
        replaces: Option<&str>,
    ) -> Handled {
        check_serial(&certificate.serial)?;
        for (what, pem) in [
            ("certificate chain", &certificate.chain_pem),
            ("certificate key", &certificate.key_pem),
        ] {
            if pem.len() > MAX_PEM_BYTES {
                return Err(Stop::Refused(Rejection::TooLarge {
                    what: what.into(),
                    bytes: pem.len(),
                    max: MAX_PEM_BYTES,
                }));
            }
        }
        let Some(instance) = self.t.instance(guid)? else {
            return Err(Stop::Refused(Rejection::UnknownInstance(guid)));
        };
        if instance.placement != Placement::Partition(certificate.partition.clone()) {
            return Err(Stop::Refused(Rejection::Invalid {
                what: "certificate binding".into(),
                reason: format!(
                    "instance {guid} does not run on partition {}",
                    certificate.partition
                ),
            }));
        }
        // An instance being destroyed still gets one: its node destroys it with it.
        let key = tables::instance_key(guid);
        let current: Option<InstanceCertificate> =
            self.t.instance_certificates.get(key.as_bytes())?;
        if let Some(current) = current {
            // Another replica bound one first, or renewed it first: the first stands, and the
            // certificate offered here is dropped with its key, unused.
            if replaces != Some(current.serial.as_str()) {
                return Ok(Outcome::InstanceCertificate(Box::new(current)));
            }
            certificate.serials = current.serials;
        }
        certificate.serials.push(certificate.serial.clone());
        self.t
            .instance_certificates
            .put(key.as_bytes(), &certificate)?;
        self.audit(
            "bind instance certificate",
            format!("{} to {guid}", certificate.serial),
        )?;
        Ok(Outcome::InstanceCertificate(Box::new(certificate)))
    }

    /// Revokes every certificate ever bound to an instance whose partition is being freed, so
    /// that none outlives it or serves the partition's next occupant.
    pub(super) fn revoke_instance_certificates(
        &mut self,
        guid: InstanceGuid,
    ) -> Result<(), StateError> {
        let key = tables::instance_key(guid);
        let Some(bound) = self
            .t
            .instance_certificates
            .get::<InstanceCertificate>(key.as_bytes())?
        else {
            return Ok(());
        };
        for serial in &bound.serials {
            self.revoke(serial, &format!("instance {guid} destroyed"))?;
        }
        self.t.instance_certificates.delete(key.as_bytes())?;
        self.audit("revoke instance certificates", guid.to_string())
    }

    pub(super) fn revoke_certificate(&mut self, serial: &str, reason: &str) -> Handled {
        check_serial(serial)?;
        if reason.len() > MAX_NAME_BYTES {
            return Err(Stop::Refused(Rejection::TooLarge {
                what: "revocation reason".into(),
                bytes: reason.len(),
                max: MAX_NAME_BYTES,
            }));
        }
        if !self.revoke(serial, reason)? {
            return Ok(Outcome::Unchanged);
        }
        self.audit("revoke certificate", serial.to_string())?;
        Ok(Outcome::Done)
    }

    /// Records `serial` as revoked, unless it already is; answers whether it was new.
    pub(super) fn revoke(&mut self, serial: &str, reason: &str) -> Result<bool, StateError> {
        let key = tables::serial_key(serial);
        if self
            .t
            .revocations
            .get::<Revocation>(key.as_bytes())?
            .is_some()
        {
            return Ok(false);
        }
        let revocation = Revocation {
            at: self.at,
            by: self.actor.clone(),
            reason: reason.to_string(),
        };
        self.t.revocations.put(key.as_bytes(), &revocation)?;
        self.changes.revocations = true;
        Ok(true)
    }
}

/// A one-time token's record: good once, before it expires.
trait OneTimeToken: tables::Record {
    fn expires_at(&self) -> Timestamp;
    fn used_at(&mut self) -> &mut Option<Timestamp>;
}

impl OneTimeToken for EnrollmentToken {
    fn expires_at(&self) -> Timestamp {
        self.expires_at
    }
    fn used_at(&mut self) -> &mut Option<Timestamp> {
        &mut self.used_at
    }
}

impl OneTimeToken for CredentialToken {
    fn expires_at(&self) -> Timestamp {
        self.expires_at
    }
    fn used_at(&mut self) -> &mut Option<Timestamp> {
        &mut self.used_at
    }
}

/// Keeps a new token under `token_hash` in `table`; false when that hash is there already (the
/// same command again).
fn keep<T: OneTimeToken>(
    table: &mut tables::Table<redb::Table<'_, &'static [u8], &'static [u8]>>,
    token_hash: &str,
    token: &T,
) -> Result<bool, Stop> {
    check_token_hash(token_hash)?;
    let key = tables::serial_key(token_hash);
    if table.get::<T>(key.as_bytes())?.is_some() {
        return Ok(false);
    }
    table.put(key.as_bytes(), token)?;
    Ok(true)
}

/// Marks the token of `token_hash` in `table` used at `at` and answers it; a token unknown,
/// used or expired is refused, and which of them is not said.
fn spend<T: OneTimeToken>(
    table: &mut tables::Table<redb::Table<'_, &'static [u8], &'static [u8]>>,
    token_hash: &str,
    at: Timestamp,
) -> Result<T, Stop> {
    check_token_hash(token_hash)?;
    let key = tables::serial_key(token_hash);
    let Some(mut token) = table.get::<T>(key.as_bytes())? else {
        return Err(Stop::Refused(Rejection::BadEnrollmentToken));
    };
    if token.used_at().is_some() || at >= token.expires_at() {
        return Err(Stop::Refused(Rejection::BadEnrollmentToken));
    }
    *token.used_at() = Some(at);
    table.put(key.as_bytes(), &token)?;
    Ok(token)
}
