//! [`Admission`]: how many connections each source address, and the broker
//! as a whole, may hold open.
//!
//! Every accepted connection asks for a [`Permit`] before anything else is
//! done for it; the permit lives as long as the connection (its request,
//! then its session) and gives its place back when dropped, however the
//! connection ends. A connection that gets no permit is answered 503 and
//! closed, so an address that opens connections in a loop costs the broker a
//! socket and a few hundred bytes each, for a moment.
//!
//! The per-address counts are striped: accepts on different stripes never
//! contend, and no lock is held for more than one map operation.

#![warn(clippy::arithmetic_side_effects)]

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use ahash::RandomState;
use parking_lot::Mutex;

use crate::metrics::{Limit, Metrics};

/// Stripes of the per-address table.
const STRIPES: usize = 64;

/// Connection counts per source address and in total.
#[derive(Debug)]
pub struct Admission {
    per_address: Box<[Mutex<HashMap<IpAddr, usize, RandomState>>]>,
    hasher: RandomState,
    total: AtomicUsize,
    max_per_address: usize,
    max_total: usize,
    metrics: Arc<Metrics>,
}

/// One admitted connection's place; given back on drop.
#[derive(Debug)]
pub struct Permit {
    admission: Arc<Admission>,
    address: IpAddr,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The source address holds `max_connections_per_ip` already.
    PerAddress,
    /// The broker holds `max_connections` already.
    Total,
}

impl Admission {
    /// A table allowing `max_per_address` connections per address and
    /// `max_total` in all; 0 means no limit.
    #[must_use]
    pub fn new(max_per_address: usize, max_total: usize, metrics: Arc<Metrics>) -> Self {
        Self {
            per_address: (0..STRIPES).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            total: AtomicUsize::new(0),
            max_per_address: if max_per_address == 0 { usize::MAX } else { max_per_address },
            max_total: if max_total == 0 { usize::MAX } else { max_total },
            metrics,
        }
    }

    fn stripe(&self, address: IpAddr) -> &Mutex<HashMap<IpAddr, usize, RandomState>> {
        let index = usize::try_from(self.hasher.hash_one(address).checked_rem(STRIPES as u64).unwrap_or(0))
            .unwrap_or(0);
        #[allow(clippy::indexing_slicing, reason = "index < STRIPES, the table's length")]
        &self.per_address[index]
    }

    /// Takes a place for a connection from `address`.
    ///
    /// # Errors
    /// [`Refused`] when the address or the broker is at its limit (counted
    /// in the metrics).
    pub fn admit(self: &Arc<Self>, address: IpAddr) -> Result<Permit, Refused> {
        if self.total.fetch_add(1, Ordering::Relaxed) >= self.max_total {
            self.total.fetch_sub(1, Ordering::Relaxed);
            self.metrics.refuse(Limit::Connections);
            return Err(Refused::Total);
        }
        let mut stripe = self.stripe(address).lock();
        let count = stripe.entry(address).or_insert(0);
        if *count >= self.max_per_address {
            drop(stripe);
            self.total.fetch_sub(1, Ordering::Relaxed);
            self.metrics.refuse(Limit::ConnectionsPerIp);
            return Err(Refused::PerAddress);
        }
        *count = count.saturating_add(1);
        Ok(Permit { admission: Arc::clone(self), address })
    }

    /// Connections admitted and still open.
    #[must_use]
    pub fn open(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// Connections admitted and still open from `address`.
    #[must_use]
    pub fn open_from(&self, address: IpAddr) -> usize {
        self.stripe(address).lock().get(&address).copied().unwrap_or(0)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut stripe = self.admission.stripe(self.address).lock();
        if let Some(count) = stripe.get_mut(&self.address) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                // Addresses come and go: an entry is kept only while in use.
                stripe.remove(&self.address);
            }
        }
        drop(stripe);
        self.admission.total.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_address_and_total_limits_hold_and_places_come_back() {
        let metrics = Arc::new(Metrics::default());
        let admission = Arc::new(Admission::new(2, 3, Arc::clone(&metrics)));
        let a: IpAddr = [127, 0, 0, 1].into();
        let b: IpAddr = [127, 0, 0, 2].into();
        let first = admission.admit(a).expect("room");
        let second = admission.admit(a).expect("room");
        assert_eq!(admission.admit(a).err(), Some(Refused::PerAddress));
        let third = admission.admit(b).expect("room");
        assert_eq!(admission.admit(b).err(), Some(Refused::Total));
        assert_eq!((admission.open(), admission.open_from(a)), (3, 2));
        drop((first, second, third));
        assert_eq!((admission.open(), admission.open_from(a)), (0, 0));
        assert!(admission.per_address.iter().all(|stripe| stripe.lock().is_empty()), "no entry left behind");
        assert_eq!(metrics.refusals(Limit::ConnectionsPerIp), 1);
        assert_eq!(metrics.refusals(Limit::Connections), 1);
    }

    #[test]
    fn zero_means_unlimited() {
        let admission = Arc::new(Admission::new(0, 0, Arc::new(Metrics::default())));
        let permits: Vec<Permit> =
            (0..1000).map(|_| admission.admit([10, 0, 0, 1].into()).expect("no limit")).collect();
        assert_eq!(admission.open(), permits.len());
    }
}
