//! stockctl (placeholder).
fn main() {}
