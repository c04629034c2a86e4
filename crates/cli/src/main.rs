//! `gzship`: run a job locally, plan, verify, demo.

fn main() {}
