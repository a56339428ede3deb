//! Decisions that guard collectives are made once, for every rank.
//!
//! A choice taken per rank (does this file exist? was this rank signalled?) can differ between
//! ranks, and ranks that then issue different collectives wait for each other forever. These
//! helpers make such choices collective.
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::comm::Comm;
use crate::error::{Error, Result};

/// True on every rank when `mine` is true on any rank.
pub fn any(comm: &dyn Comm, mine: bool) -> Result<bool> {
    if comm.size() == 1 {
        return Ok(mine);
    }
    let all = comm.all_gather_bytes(&[u8::from(mine)])?;
    Ok(all.iter().any(|b| b.first() == Some(&1)))
}

/// Rank 0 runs `decide` and every rank returns its bytes, or its error (the original on rank 0,
/// its message on the others). The other ranks do not run `decide`, so every rank takes the same
/// branch afterwards, whatever it could see itself.
pub fn rank0_decides_bytes(
    comm: &dyn Comm,
    decide: impl FnOnce() -> Result<Vec<u8>>,
) -> Result<Vec<u8>> {
    if comm.size() == 1 {
        return decide();
    }
    let (mut msg, own_error) = if comm.rank() == 0 {
        match decide() {
            Ok(bytes) => ([&[1u8][..], &bytes].concat(), None),
            Err(e) => ([&[0u8][..], e.to_string().as_bytes()].concat(), Some(e)),
        }
    } else {
        (Vec::new(), None)
    };
    comm.broadcast_bytes(&mut msg, 0)?;
    if let Some(e) = own_error {
        return Err(e);
    }
    match msg.split_first() {
        Some((1, bytes)) => Ok(bytes.to_vec()),
        Some((_, text)) => Err(Error::Dist(format!(
            "rank 0 failed: {}",
            String::from_utf8_lossy(text)
        ))),
        None => Err(Error::Dist("rank 0 sent an empty decision".into())),
    }
}

/// [`rank0_decides_bytes`] for a value that serialises (small decisions: JSON on the wire).
pub fn rank0_decides<T, F>(comm: &dyn Comm, decide: F) -> Result<T>
where
    T: Serialize + DeserializeOwned,
    F: FnOnce() -> Result<T>,
{
    if comm.size() == 1 {
        return decide();
    }
    let mut value = None;
    let bytes = rank0_decides_bytes(comm, || {
        let v = decide()?;
        let bytes = serde_json::to_vec(&v)
            .map_err(|e| Error::Dist(format!("encoding rank 0's decision: {e}")))?;
        value = Some(v);
        Ok(bytes)
    })?;
    match value {
        Some(v) => Ok(v),
        None => serde_json::from_slice(&bytes)
            .map_err(|e| Error::Dist(format!("decoding rank 0's decision: {e}"))),
    }
}
