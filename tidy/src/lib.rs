//! Nothing here: the checks are in `tests/tidy.rs`.
