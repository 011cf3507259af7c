//! The checked-in OpenAPI document, served at `/api/v1/openapi.json`. A test keeps it and the
//! router in step (both directions).

pub const DOCUMENT: &str = include_str!("../../openapi.json");
