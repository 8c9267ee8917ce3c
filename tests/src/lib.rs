//! Test support: see `support`.
