//! The software release catalog, and what each computer must supply.

use super::*;

impl Applier<'_, '_> {
    pub(super) fn publish_software_release(
        &mut self,
        url: &SoftwareReleaseUrl,
        title: &str,
        software_types: &[String],
    ) -> Handled {
        check_url(url)?;
        check_name("title", title)?;
        for software_type in software_types {
            check_name("software type", software_type)?;
        }
        let release = SoftwareRelease {
            url: url.clone(),
            title: title.to_string(),
            software_types: software_types.iter().cloned().collect(),
            published_by: self.actor.clone(),
            published_at: self.at,
        };
        let key = tables::catalog_key(url);
        let existing: Option<SoftwareRelease> = self.t.catalog.get(key.as_bytes())?;
        if existing
            .is_some_and(|e| e.title == release.title && e.software_types == release.software_types)
        {
            return Ok(Outcome::Unchanged);
        }
        self.t.catalog.put(key.as_bytes(), &release)?;
        self.audit("publish software release", url.to_string())?;
        Ok(Outcome::Done)
    }

    pub(super) fn supply(
        &mut self,
        id: &ComputerId,
        url: &SoftwareReleaseUrl,
        state: SupplyState,
    ) -> Handled {
        check_url(url)?;
        let Some(computer) = self.t.computer(id)? else {
            return Err(Stop::Refused(Rejection::UnknownComputer(id.clone())));
        };
        let existing = self.t.supply(id, url)?;
        let supply = match (&existing, state) {
            (Some(s), _) if s.requested == state => return Ok(Outcome::Unchanged),
            (None, SupplyState::Destroyed) => return Ok(Outcome::Unchanged),
            (Some(s), _) => Supply {
                requested: state,
                reported: s.reported.clone(),
                updated_at: self.at,
            },
            (None, SupplyState::Available) => Supply {
                requested: state,
                reported: None,
                updated_at: self.at,
            },
        };
        let before = placement::index_keys(self.t, &computer)?;
        self.t
            .supply
            .put(tables::supply_key(id, url).as_bytes(), &supply)?;
        self.save_computer(&computer, &before)?;
        self.audit(
            match state {
                SupplyState::Available => "supply software release",
                SupplyState::Destroyed => "remove software release",
            },
            format!("{url} on {id}"),
        )?;
        let placed = self.place_pending_on(id)?;
        Ok(Outcome::Placed { placed })
    }

    pub(super) fn report_software(
        &mut self,
        id: &ComputerId,
        url: &SoftwareReleaseUrl,
        state: &SoftwareState,
    ) -> Handled {
        if self.t.computer(id)?.is_none() {
            return Err(Stop::Refused(Rejection::UnknownComputer(id.clone())));
        }
        let Some(mut supply) = self.t.supply(id, url)? else {
            return Err(Stop::Refused(Rejection::Invalid {
                what: "software report".into(),
                reason: format!("{url} is not supplied to {id}"),
            }));
        };
        let state = match state {
            SoftwareState::Error { log } => SoftwareState::Error {
                log: tail(log, MAX_LOG_BYTES),
            },
            other => other.clone(),
        };
        if supply.reported.as_ref() == Some(&state) {
            return Ok(Outcome::Unchanged);
        }
        let key = tables::supply_key(id, url);
        self.touched.insert(id.clone());
        if state == SoftwareState::Destroyed && supply.requested == SupplyState::Destroyed {
            // Removed as asked: the promise is fulfilled and forgotten.
            self.t.supply.delete(key.as_bytes())?;
        } else {
            supply.reported = Some(state);
            supply.updated_at = self.at;
            self.t.supply.put(key.as_bytes(), &supply)?;
        }
        self.audit("report software", format!("{url} on {id}"))?;
        Ok(Outcome::Done)
    }

    // --- instances ----------------------------------------------------------------------------
}
