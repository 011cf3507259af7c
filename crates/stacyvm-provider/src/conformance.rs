//! Checks every Provider must pass. (Filled in by the mock task.)
