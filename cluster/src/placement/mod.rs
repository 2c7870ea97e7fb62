//! Placement of invokes on workers (being written).
