//! The public services of the wire contract: `Node` for computers' agents, `User` for users
//! (and instances requesting children), `Admin` for operators (and `enroll`, computers
//! enrolling with a token). Requests are decoded by `convert`; answers are mapped by the
//! parent module's functions, imported here for each service.

mod admin;
mod convert;
mod enroll;
mod node;
mod user;

pub(super) use admin::AdminService;
pub(super) use node::NodeService;
pub(super) use user::UserService;

use super::{
    ACTOR_HEADER, bounded, caller, consistency, failed, rejected, unavailable, write, write_reply,
};
