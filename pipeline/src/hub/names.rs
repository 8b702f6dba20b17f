//! Names that come from a hub server and become file names here (a listing's paths, a
//! revision's commit, a file's blob id) are data, not paths: each is checked before it is
//! used, so that a hostile or broken server cannot name a file outside the cache or the
//! `--local-dir` it writes into.

/// Why a repo path from a server cannot be used: it must be relative, its components
/// non-empty and neither `.` nor `..`, with no backslash, NUL or drive prefix.
pub fn repo_path_problem(path: &str) -> Option<&'static str> {
    if path.is_empty() {
        return Some("it is empty");
    }
    if path.starts_with('/') {
        return Some("it is absolute");
    }
    if path.contains('\\') || path.contains('\0') {
        return Some("it holds a backslash or a NUL byte");
    }
    if path.split('/').next().is_some_and(|first| first.len() >= 2 && first.ends_with(':')) {
        return Some("it starts with a drive prefix");
    }
    for part in path.split('/') {
        match part {
            "" => return Some("it has an empty component"),
            "." | ".." => return Some("it has a `.` or `..` component"),
            _ => {}
        }
    }
    None
}

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
    fn server_paths_that_leave_their_folder_are_refused() {
        for ok in ["data/train-00000-of-00001.parquet", "a", "finemath-4plus/train-00001-of-00064.parquet", "dir/file..parquet"] {
            assert_eq!(repo_path_problem(ok), None, "{ok}");
        }
        for bad in [
            "",
            "/home/user/abs.parquet",
            "data/../../../../home/user/victim.parquet",
            "..",
            "./data/x.parquet",
            "data//x.parquet",
            "data/x.parquet/",
            "data\\..\\x.parquet",
            "data/x\0.parquet",
            "C:/x.parquet",
        ] {
            assert!(repo_path_problem(bad).is_some(), "{bad:?} must be refused");
        }
    }

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
