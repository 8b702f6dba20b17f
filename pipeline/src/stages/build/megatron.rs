//! Packed token ids in Megatron's indexed-dataset layout: `<prefix>.bin` holds every
//! sequence's ids back to back (little-endian, uint16 when the vocabulary has fewer than
//! 65,500 entries, else int32); `<prefix>.idx` holds
//!
//! | bytes | field |
//! | --- | --- |
//! | 9 | magic `MMIDIDX\0\0` |
//! | 8 | version, u64 = 1 |
//! | 1 | dtype code (u8): 8 = uint16, 4 = int32 |
//! | 8 | sequence count N (u64) |
//! | 8 | document-index length D = documents + 1 (u64) |
//! | 4N | tokens per sequence (i32) |
//! | 8N | byte offset of each sequence in `.bin` (i64) |
//! | 8D | document boundaries as sequence indices, starting at 0 (i64) |
//!
//! Every example is one sequence and one document.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

const MAGIC: &[u8; 9] = b"MMIDIDX\x00\x00";

/// How ids are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenType {
    U16,
    I32,
}

impl TokenType {
    /// Megatron's choice for a vocabulary size.
    pub fn for_vocabulary(size: usize) -> Self {
        if size < 65_500 { TokenType::U16 } else { TokenType::I32 }
    }
    pub fn code(self) -> u8 {
        match self {
            TokenType::U16 => 8,
            TokenType::I32 => 4,
        }
    }
    pub fn bytes(self) -> usize {
        match self {
            TokenType::U16 => 2,
            TokenType::I32 => 4,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            TokenType::U16 => "uint16",
            TokenType::I32 => "int32",
        }
    }
}

/// Writes one `.bin` + `.idx` pair.
pub struct MegatronWriter {
    bin: BufWriter<File>,
    bin_path: PathBuf,
    idx_path: PathBuf,
    dtype: TokenType,
    lengths: Vec<i32>,
    offsets: Vec<i64>,
    position: i64,
}

impl MegatronWriter {
    /// Starts `<prefix>.bin`; the `.idx` is written by [`MegatronWriter::finish`].
    pub fn create(prefix: &Path, dtype: TokenType) -> Result<Self> {
        let bin_path = prefix.with_extension("bin");
        if let Some(dir) = prefix.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let file = File::create(&bin_path).with_context(|| format!("cannot create {}", bin_path.display()))?;
        Ok(MegatronWriter {
            bin: BufWriter::with_capacity(1 << 20, file),
            bin_path,
            idx_path: prefix.with_extension("idx"),
            dtype,
            lengths: Vec::new(),
            offsets: Vec::new(),
            position: 0,
        })
    }

    /// Appends one sequence (one document).
    pub fn push(&mut self, ids: &[u32]) -> Result<()> {
        let mut buf = Vec::with_capacity(ids.len() * self.dtype.bytes());
        for &id in ids {
            match self.dtype {
                TokenType::U16 => {
                    let Ok(v) = u16::try_from(id) else { bail!("token id {id} does not fit uint16; the vocabulary is larger than the dtype") };
                    buf.extend_from_slice(&v.to_le_bytes());
                }
                TokenType::I32 => buf.extend_from_slice(&(id as i32).to_le_bytes()),
            }
        }
        self.bin.write_all(&buf).with_context(|| format!("cannot write {}", self.bin_path.display()))?;
        self.offsets.push(self.position);
        self.lengths.push(i32::try_from(ids.len()).context("a sequence longer than 2^31 tokens")?);
        self.position += buf.len() as i64;
        Ok(())
    }

    /// Flushes `.bin` and writes `.idx`; returns both paths.
    pub fn finish(self) -> Result<(PathBuf, PathBuf)> {
        let file = self.bin.into_inner().map_err(|e| e.into_error()).with_context(|| format!("cannot write {}", self.bin_path.display()))?;
        file.sync_all()?;
        let n = self.lengths.len();
        let mut idx = Vec::with_capacity(34 + n * 20 + 8);
        idx.extend_from_slice(MAGIC);
        idx.extend_from_slice(&1u64.to_le_bytes());
        idx.push(self.dtype.code());
        idx.extend_from_slice(&(n as u64).to_le_bytes());
        idx.extend_from_slice(&(n as u64 + 1).to_le_bytes());
        self.lengths.iter().for_each(|l| idx.extend_from_slice(&l.to_le_bytes()));
        self.offsets.iter().for_each(|o| idx.extend_from_slice(&o.to_le_bytes()));
        (0..=n as i64).for_each(|d| idx.extend_from_slice(&d.to_le_bytes()));
        let mut f = File::create(&self.idx_path).with_context(|| format!("cannot create {}", self.idx_path.display()))?;
        f.write_all(&idx).and_then(|_| f.sync_all()).with_context(|| format!("cannot write {}", self.idx_path.display()))?;
        Ok((self.bin_path, self.idx_path))
    }
}

/// What a `.idx` file says: the dtype, the tokens per sequence, their byte offsets in
/// `.bin` and the document boundaries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Index {
    pub dtype: TokenType,
    pub lengths: Vec<i32>,
    pub offsets: Vec<i64>,
    pub documents: Vec<i64>,
}

impl Index {
    /// Reads and checks an index: magic, version, dtype code and that the file has exactly
    /// the size its counts imply.
    pub fn read(path: &Path) -> Result<Index> {
        let b = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let bad = |what: &str| anyhow::anyhow!("{} is not a Megatron index: {what}", path.display());
        if b.len() < 34 || &b[..9] != MAGIC {
            return Err(bad("no MMIDIDX header"));
        }
        let u64_at = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"));
        if u64_at(9) != 1 {
            return Err(bad("version is not 1"));
        }
        let dtype = match b[17] {
            8 => TokenType::U16,
            4 => TokenType::I32,
            other => return Err(bad(&format!("dtype code {other} (expected 8 = uint16 or 4 = int32)"))),
        };
        let (n, d) = (u64_at(18) as usize, u64_at(26) as usize);
        if n.checked_mul(12).and_then(|x| x.checked_add(d.checked_mul(8)?)).and_then(|x| x.checked_add(34)) != Some(b.len()) {
            return Err(bad(&format!("{} bytes do not hold {n} sequences and {d} document boundaries", b.len())));
        }
        let lengths = (0..n).map(|i| i32::from_le_bytes(b[34 + 4 * i..38 + 4 * i].try_into().expect("4 bytes"))).collect();
        let offsets = (0..n).map(|i| u64_at(34 + 4 * n + 8 * i) as i64).collect();
        let documents = (0..d).map(|i| u64_at(34 + 12 * n + 8 * i) as i64).collect();
        Ok(Index { dtype, lengths, offsets, documents })
    }

    /// Tokens in all sequences.
    pub fn tokens(&self) -> u64 {
        self.lengths.iter().map(|&l| l.max(0) as u64).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u64_at(b: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
    }

    #[test]
    fn the_index_describes_the_sequences() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = MegatronWriter::create(&dir.path().join("train-00000-of-00001"), TokenType::I32).unwrap();
        w.push(&[128000, 5, 6]).unwrap();
        w.push(&[7]).unwrap();
        let (bin, idx) = w.finish().unwrap();
        let (bin, idx) = (std::fs::read(bin).unwrap(), std::fs::read(idx).unwrap());
        assert_eq!(bin.len(), 16);
        assert_eq!(&idx[..9], MAGIC);
        assert_eq!((u64_at(&idx, 9), idx[17], u64_at(&idx, 18), u64_at(&idx, 26)), (1, 4, 2, 3));
        assert_eq!(&idx[34..42], &[3, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!((u64_at(&idx, 42), u64_at(&idx, 50)), (0, 12));
        assert_eq!((u64_at(&idx, 58), u64_at(&idx, 66), u64_at(&idx, 74)), (0, 1, 2));
        assert_eq!(idx.len(), 82);
        let dir2 = tempfile::tempdir().unwrap();
        let path = dir2.path().join("i.idx");
        std::fs::write(&path, &idx).unwrap();
        let read = Index::read(&path).unwrap();
        assert_eq!(read, Index { dtype: TokenType::I32, lengths: vec![3, 1], offsets: vec![0, 12], documents: vec![0, 1, 2] });
        assert_eq!(read.tokens(), 4);
        std::fs::write(&path, &idx[..81]).unwrap();
        assert!(Index::read(&path).unwrap_err().to_string().contains("do not hold 2 sequences"));
    }

    #[test]
    fn small_vocabularies_use_uint16_and_refuse_big_ids() {
        assert_eq!(TokenType::for_vocabulary(50_257), TokenType::U16);
        assert_eq!(TokenType::for_vocabulary(128_256), TokenType::I32);
        let dir = tempfile::tempdir().unwrap();
        let mut w = MegatronWriter::create(&dir.path().join("x"), TokenType::U16).unwrap();
        w.push(&[1, 65_535]).unwrap();
        assert!(w.push(&[70_000]).unwrap_err().to_string().contains("does not fit uint16"));
    }
}
