//! In-memory/host-directory provider for tests and demos. No isolation. (Placeholder: the mock task replaces this file.)

/// Placeholder until the mock task lands.
pub struct MockProvider;
