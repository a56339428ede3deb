//! IDX files (MNIST, Fashion-MNIST), gzipped or plain.
use std::io::Read;
use std::path::Path;

use crate::error::{Error, IoContext, Result};

/// Dimensions and bytes of an unsigned-byte IDX file.
#[derive(Debug)]
pub struct Idx {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

pub fn read_idx(path: &Path) -> Result<Idx> {
    let raw = std::fs::read(path).at(path)?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .at(path)?;
        out
    } else {
        raw
    };
    parse_idx(&bytes).map_err(|msg| Error::Data {
        path: path.to_path_buf(),
        msg,
    })
}

fn parse_idx(b: &[u8]) -> std::result::Result<Idx, String> {
    if b.len() < 4 || b[0] != 0 || b[1] != 0 {
        return Err("not an IDX file (bad magic)".into());
    }
    if b[2] != 0x08 {
        return Err(format!(
            "IDX element type 0x{:02x}; only unsigned bytes (0x08) are supported",
            b[2]
        ));
    }
    let ndim = b[3] as usize;
    let header = 4 + 4 * ndim;
    if b.len() < header {
        return Err("truncated IDX header".into());
    }
    let dims: Vec<usize> = (0..ndim)
        .map(|i| u32::from_be_bytes(b[4 + 4 * i..8 + 4 * i].try_into().unwrap()) as usize)
        .collect();
    let n: usize = dims.iter().product();
    if b.len() != header + n {
        return Err(format!(
            "IDX dims {dims:?} need {} data bytes, file has {}",
            n,
            b.len() - header
        ));
    }
    Ok(Idx {
        dims,
        data: b[header..].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let mut f = vec![0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3];
        f.extend([1, 2, 3, 4, 5, 6]);
        let idx = parse_idx(&f).unwrap();
        assert_eq!(idx.dims, vec![2, 3]);
        assert_eq!(idx.data, vec![1, 2, 3, 4, 5, 6]);
        f.pop();
        assert!(parse_idx(&f).unwrap_err().contains("need 6 data bytes"));
        assert!(parse_idx(&[1, 2, 3, 4]).is_err());
    }
}
