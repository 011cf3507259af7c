//! SQLite backend. (Filled in by the store task.)
