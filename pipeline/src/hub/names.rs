//! Names that come from a hub server and become file names here (a listing's paths, a
//! revision's commit, a file's blob id) are data, not paths: each is checked before it is
//! used, so that a hostile or broken server cannot name a file outside the cache or the
//! `--local-dir` it writes into.

pub use run_contract::relative_path_problem as repo_path_problem;

/// Whether `sha` is a git commit id as the hub gives it: 40 lowercase hex digits.
pub fn is_commit(sha: &str) -> bool {
    sha.len() == 40 && is_lower_hex(sha)
}

/// Whether `oid` names a blob: a git sha1 (40 hex digits) or an LFS sha256 (64).
pub fn is_blob_id(oid: &str) -> bool {
    (oid.len() == 40 || oid.len() == 64) && is_lower_hex(oid)
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_and_blob_ids_are_hex_of_their_length() {
        assert!(is_commit(&"a".repeat(40)));
        assert!(!is_commit("../../../../home/user/x"));
        assert!(!is_commit(&"a".repeat(39)));
        assert!(!is_commit(&"A".repeat(40)));
        assert!(is_blob_id(&"0".repeat(40)) && is_blob_id(&"f".repeat(64)));
        assert!(!is_blob_id(&"0".repeat(63)) && !is_blob_id("../x"));
    }
}
