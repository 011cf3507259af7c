//! StacyVM control plane.
