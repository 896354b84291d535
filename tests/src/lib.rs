//! Shared fixtures of pylock's integration tests.
#![forbid(unsafe_code)]
