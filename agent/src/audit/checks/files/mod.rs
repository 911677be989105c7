//! The `files` family: permissions and ownership of the account databases
//! ([`permissions`]), and world-writable files and non-sticky world-writable
//! directories under the system paths ([`world_writable`]).

use crate::audit::check::Check;

pub mod permissions;
pub mod world_writable;

pub fn checks() -> Vec<Check> {
    let mut all = permissions::checks();
    all.extend(world_writable::checks());
    all
}
