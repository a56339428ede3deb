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

/// Rank 0 runs `decide` and every rank returns its answer (or its error, as an error naming rank
/// 0). The other ranks do not run `decide`.
pub fn rank0_decides<T, F>(comm: &dyn Comm, decide: F) -> Result<T>
where
    T: Serialize + DeserializeOwned,
    F: FnOnce() -> Result<T>,
{
    if comm.size() == 1 {
        return decide();
    }
    let mut bytes = Vec::new();
    let mut own_error = None;
    if comm.rank() == 0 {
        bytes = match decide() {
            Ok(v) => serde_json::to_vec(&Ok::<T, String>(v)),
            Err(e) => {
                let text = e.to_string();
                own_error = Some(e);
                serde_json::to_vec(&Err::<T, String>(text))
            }
        }
        .map_err(|e| Error::Dist(format!("encoding rank 0's decision: {e}")))?;
    }
    comm.broadcast_bytes(&mut bytes, 0)?;
    if let Some(e) = own_error {
        return Err(e);
    }
    let decided: std::result::Result<T, String> = serde_json::from_slice(&bytes)
        .map_err(|e| Error::Dist(format!("decoding rank 0's decision: {e}")))?;
    decided.map_err(|e| Error::Dist(format!("rank 0 failed: {e}")))
}
