//! Random ids and secrets, from the OS's random source.

pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::getrandom(&mut b).expect("the OS's random source");
    b
}

/// A fresh random id with a readable prefix (`job_…`, `up_…`): 128 bits.
pub(crate) fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", hex::encode(random_bytes::<16>()))
}
