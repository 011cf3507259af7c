//! In-memory/host-directory provider for tests and demos. No isolation. (Filled in by the mock task.)
