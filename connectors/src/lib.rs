//! Ferry's built-in connectors and the `ferry` command line.

pub mod cli;
