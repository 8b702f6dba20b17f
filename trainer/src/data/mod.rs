//! Training data: a built set's token shards (`set`), packed into fixed-length windows
//! with their labels (`pack`).

pub mod pack;
pub mod set;
