//! The state machine's behaviour, command by command, and the invariants that must hold after
//! any sequence of commands (checked by `invariants::check_invariants` in every test, and by
//! `properties` over seeded random sequences). `fixture` builds the state and the commands;
//! the other files hold the tests, one topic each.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::MemoryState;
use super::command::{
    Command, InstanceReport, InstanceRequest, InstanceSummary, Op, Outcome, Rejection, Response,
};
use super::keys::Key;
use super::model::*;
use super::placement::{self, Choice};
use super::query::{self, Explanation};
use super::tables::{self, Tables};

mod alerts;
mod certificates;
mod computers;
mod fixture;
mod instances;
mod invariants;
mod placing;
mod properties;
mod refusals;
mod tenancy;

use fixture::*;
use invariants::check_invariants;
