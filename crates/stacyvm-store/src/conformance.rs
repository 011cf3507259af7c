//! Store conformance suite. (Filled in by the store task.)
