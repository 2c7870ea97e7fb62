//! Concurrency accounting: a per-host limit shared by functions without a reservation,
//! and per-function reserved concurrency carved out of it (Lambda's model).

use crate::spec::ThrottleReason;
use std::collections::HashMap;

#[derive(Debug, Default, Clone, Copy)]
struct FnCount {
    inflight: u32,
    reserved: Option<u32>,
}

/// Which pool a granted slot was taken from, so release returns it there even if the
/// function's reservation changed meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    Reserved,
    Unreserved,
}

#[derive(Debug)]
pub struct Concurrency {
    host_limit: u32,
    per_fn: HashMap<String, FnCount>,
    reserved_sum: u32,
    unreserved_inflight: u32,
}

impl Concurrency {
    pub fn new(host_limit: u32) -> Self {
        Self {
            host_limit,
            per_fn: HashMap::new(),
            reserved_sum: 0,
            unreserved_inflight: 0,
        }
    }

    fn set_reservation(&mut self, function: &str, reserved: Option<u32>) {
        let entry = self.per_fn.entry(function.to_string()).or_default();
        if entry.reserved != reserved {
            entry.reserved = reserved;
            self.reserved_sum = self
                .per_fn
                .values()
                .filter_map(|c| c.reserved)
                .fold(0u32, u32::saturating_add);
        }
    }

    /// Grants one concurrent execution to `function` (all its versions share it).
    pub fn try_acquire(
        &mut self,
        function: &str,
        reserved: Option<u32>,
    ) -> Result<Slot, ThrottleReason> {
        self.set_reservation(function, reserved);
        let unreserved_cap = self.host_limit.saturating_sub(self.reserved_sum);
        let unreserved_inflight = self.unreserved_inflight;
        let entry = self.per_fn.entry(function.to_string()).or_default();
        match reserved {
            Some(r) => {
                if entry.inflight >= r {
                    return Err(ThrottleReason::ReservedFunctionConcurrentInvocationLimitExceeded);
                }
                entry.inflight += 1;
                Ok(Slot::Reserved)
            }
            None => {
                if unreserved_inflight >= unreserved_cap {
                    return Err(ThrottleReason::ConcurrentInvocationLimitExceeded);
                }
                entry.inflight += 1;
                self.unreserved_inflight += 1;
                Ok(Slot::Unreserved)
            }
        }
    }

    pub fn release(&mut self, function: &str, slot: Slot) {
        if let Some(entry) = self.per_fn.get_mut(function) {
            entry.inflight = entry.inflight.saturating_sub(1);
        }
        if slot == Slot::Unreserved {
            self.unreserved_inflight = self.unreserved_inflight.saturating_sub(1);
        }
    }

    pub fn inflight(&self, function: &str) -> u32 {
        self.per_fn.get(function).map_or(0, |c| c.inflight)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_limit_applies_per_function() {
        let mut c = Concurrency::new(100);
        for _ in 0..5 {
            assert_eq!(c.try_acquire("f", Some(5)), Ok(Slot::Reserved));
        }
        assert_eq!(
            c.try_acquire("f", Some(5)),
            Err(ThrottleReason::ReservedFunctionConcurrentInvocationLimitExceeded)
        );
        c.release("f", Slot::Reserved);
        assert!(c.try_acquire("f", Some(5)).is_ok());
        assert!(c.try_acquire("g", None).is_ok());
    }

    #[test]
    fn reservations_shrink_the_shared_pool() {
        let mut c = Concurrency::new(10);
        assert!(c.try_acquire("reserved", Some(8)).is_ok());
        assert!(c.try_acquire("a", None).is_ok());
        assert!(c.try_acquire("b", None).is_ok());
        assert_eq!(
            c.try_acquire("a", None),
            Err(ThrottleReason::ConcurrentInvocationLimitExceeded)
        );
        c.release("a", Slot::Unreserved);
        assert!(c.try_acquire("b", None).is_ok());
        assert_eq!(c.inflight("b"), 2);
    }

    #[test]
    fn zero_reservation_disables() {
        let mut c = Concurrency::new(10);
        assert_eq!(
            c.try_acquire("off", Some(0)),
            Err(ThrottleReason::ReservedFunctionConcurrentInvocationLimitExceeded)
        );
    }

    #[test]
    fn release_follows_the_slot_kind() {
        let mut c = Concurrency::new(2);
        let slot = c.try_acquire("f", None).unwrap();
        // Reservation added while the invoke runs: release still frees the shared slot.
        c.try_acquire("f", Some(1)).unwrap_err();
        c.release("f", slot);
        assert!(c.try_acquire("g", None).is_ok());
    }
}
