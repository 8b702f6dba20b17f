//! `--shard i/n`: a deterministic split of the work units (input files) over `n` workers,
//! so that Slurm job arrays can run the same command with a different index.

use std::fmt;
use std::str::FromStr;

/// Worker `index` of `count` (0-based index, `index < count`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// The whole job as one shard.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// Whether the work unit with this ordinal belongs to this shard.
    pub fn owns(&self, ordinal: usize) -> bool {
        ordinal % self.count == self.index
    }

    pub fn is_all(&self) -> bool {
        self.count == 1
    }
}

impl FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("invalid shard `{s}`: expected `i/n` with 0 <= i < n, e.g. `0/4` (Slurm: `$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT`)");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let index: usize = i.trim().parse().map_err(|_| bad())?;
        let count: usize = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_partitions() {
        let shards: Vec<Shard> = (0..3).map(|i| format!("{i}/3").parse().unwrap()).collect();
        for ordinal in 0..20 {
            assert_eq!(shards.iter().filter(|s| s.owns(ordinal)).count(), 1);
        }
        assert!("3/3".parse::<Shard>().is_err());
        assert!("1/0".parse::<Shard>().is_err());
        assert!("x".parse::<Shard>().is_err());
    }
}
