//! Random names: tokens, ids of tasks, agents, uploads and files, keys of signed URLs.

use rand::Rng;

/// Random `[a-z0-9]` string.
pub fn random_id(n: usize) -> String {
    const A: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..n).map(|_| A[rng.random_range(0..A.len())] as char).collect()
}
