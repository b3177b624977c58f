//! End-to-end tests: they run the real `duanlian` binary and speak raw HTTP to it.
mod acme;
mod api;
mod browser;
mod cli;
mod cluster;
mod durability;
mod edge;
mod fresh;
mod hostile;
mod http;
mod ops;
mod readme;
mod stats;
mod tls;
mod util;
mod validity;
