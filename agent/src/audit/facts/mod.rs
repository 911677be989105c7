//! Facts: what the agent knows about the audited system, gathered once per
//! run through the [`Host`] and shared by every check that needs them.
//!
//! Each kind of fact is a type implementing [`Gather`]. [`Facts::get`]
//! gathers it on first use and caches it for the rest of the run, so a
//! profile that runs only the ssh checks never reads the dpkg database, and
//! ten sysctl checks parse `/etc/sysctl.d` once. Gathering never fails:
//! problems are kept inside the fact (as [`FactError`]) and become `error`
//! findings in the checks that needed it.

pub mod accounts;
pub mod clock;
pub mod confd;
pub mod controlplane;
pub mod firewall;
pub mod kernel_cmdline;
pub mod kernel_modules;
pub mod kubelet;
pub mod logging;
pub mod login_defs;
pub mod mounts;
pub mod node;
pub mod packages;
pub mod sockets;
pub mod sshd;
pub mod sudoers;
pub mod sysctl;
pub mod systemd_units;
pub mod wireguard;
pub mod world_writable;

use std::any::{Any, TypeId};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use crate::audit::host::Host;

/// The day a run judges dates against (waivers, end of life). It is the
/// current UTC date unless the run says otherwise (`check --as-of`), so that
/// a report can be reproduced for a given day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Today(pub chrono::NaiveDate);

impl Gather for Today {
    fn gather(_facts: &Facts<'_>) -> Self {
        Today(chrono::Utc::now().date_naive())
    }
}

/// Why a fact could not be established. Becomes the `reason` of an `error`
/// finding, so it must name the file or command at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FactError(pub String);

impl FactError {
    pub fn new(msg: impl Into<String>) -> Self {
        FactError(msg.into())
    }
}

impl From<crate::audit::host::HostError> for FactError {
    fn from(e: crate::audit::host::HostError) -> Self {
        FactError(e.to_string())
    }
}

impl From<crate::audit::host::CommandError> for FactError {
    fn from(e: crate::audit::host::CommandError) -> Self {
        FactError(e.to_string())
    }
}

/// A kind of fact that can be gathered from a host.
pub trait Gather: Any + Sized {
    fn gather(facts: &Facts<'_>) -> Self;
}

/// The per-run fact cache. Single-threaded by design: a full run takes a few
/// milliseconds and the facts are shared by reference counting.
pub struct Facts<'h> {
    host: &'h Host,
    cache: RefCell<HashMap<TypeId, Rc<dyn Any>>>,
}

impl std::fmt::Debug for Facts<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Facts").field("host", &self.host).finish_non_exhaustive()
    }
}

impl<'h> Facts<'h> {
    pub fn new(host: &'h Host) -> Self {
        Facts { host, cache: RefCell::new(HashMap::new()) }
    }

    pub fn host(&self) -> &'h Host {
        self.host
    }

    /// Supply a fact from outside the host (the run's state, e.g. the
    /// previous drift snapshot read by the CLI), before any check asks for it.
    pub fn provide<T: Gather>(&self, value: T) {
        self.cache.borrow_mut().insert(TypeId::of::<T>(), Rc::new(value) as Rc<dyn Any>);
    }

    /// The fact of type `T` if some check already gathered it (post-run hooks
    /// use this so that they never trigger gathering themselves).
    pub fn gathered<T: Gather>(&self) -> Option<Rc<T>> {
        let hit = self.cache.borrow().get(&TypeId::of::<T>()).cloned();
        hit.and_then(|h| h.downcast::<T>().ok())
    }

    /// The fact of type `T`, gathered on first use.
    pub fn get<T: Gather>(&self) -> Rc<T> {
        let key = TypeId::of::<T>();
        let hit = self.cache.borrow().get(&key).cloned();
        if let Some(v) = hit.and_then(|h| h.downcast::<T>().ok()) {
            return v;
        }
        // Not borrowed while gathering: a fact may depend on other facts.
        let value = Rc::new(T::gather(self));
        self.cache.borrow_mut().insert(key, value.clone() as Rc<dyn Any>);
        value
    }
}
