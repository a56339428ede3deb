//! Keeping state identical across ranks: broadcasts from rank 0 and the periodic agreement check.
use tch::{Kind, Tensor};

use super::comm::Comm;
use crate::error::{Error, Result};

/// Overwrites every tensor with rank 0's value.
pub fn broadcast_from_root(comm: &dyn Comm, tensors: &[(String, Tensor)]) -> Result<()> {
    if comm.size() == 1 {
        return Ok(());
    }
    tch::no_grad(|| {
        for (_, t) in tensors {
            let mut t = t.shallow_clone();
            comm.broadcast(&mut t, 0)?;
        }
        Ok(())
    })
}

/// Replaces every tensor with its mean over ranks.
pub fn average(comm: &dyn Comm, tensors: &[(String, Tensor)]) -> Result<()> {
    if comm.size() == 1 {
        return Ok(());
    }
    let world = comm.size() as f64;
    tch::no_grad(|| {
        for (_, t) in tensors {
            let mut t = t.shallow_clone();
            comm.all_reduce_sum(&mut t)?;
            let _ = t.g_div_scalar_(world);
        }
        Ok(())
    })
}

/// FNV-1a over the tensor's bytes: equal exactly when the values are bitwise equal.
pub fn fingerprint(t: &Tensor) -> u64 {
    // Reinterpreting, not converting: the f32 bytes seen as u8.
    let bytes = t
        .detach()
        .to_device(tch::Device::Cpu)
        .contiguous()
        .view([-1])
        .view_dtype(Kind::Uint8);
    let v = Vec::<u8>::try_from(&bytes).expect("u8 tensor");
    let mut h: u64 = 0xcbf29ce484222325;
    for b in v {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// Fails, naming them, when any tensor differs between ranks (after a broadcast that must have
/// made them equal, e.g. the state a resume loaded on rank 0).
pub fn verify_identical(comm: &dyn Comm, tensors: &[(String, Tensor)]) -> Result<()> {
    if comm.size() == 1 {
        return Ok(());
    }
    let mine: Vec<u8> = tensors
        .iter()
        .flat_map(|(_, t)| fingerprint(t).to_le_bytes())
        .collect();
    let all = comm.all_gather_bytes(&mine)?;
    let differing: Vec<&str> = tensors
        .iter()
        .enumerate()
        .filter(|(i, _)| {
            all.iter()
                .any(|a| a.get(i * 8..i * 8 + 8) != mine.get(i * 8..i * 8 + 8))
        })
        .map(|(_, (n, _))| n.as_str())
        .take(5)
        .collect();
    if differing.is_empty() {
        return Ok(());
    }
    Err(Error::Dist(format!(
        "ranks hold different state after the start-up broadcast ({}...)",
        differing.join(", ")
    )))
}

/// Compares every tensor across ranks; those that differ from rank 0 anywhere are re-broadcast from
/// rank 0. Every rank reaches the same decision (fingerprints are all-gathered). Returns the names
/// of the repaired tensors.
pub fn check_and_repair(comm: &dyn Comm, tensors: &[(String, Tensor)]) -> Result<Vec<String>> {
    if comm.size() == 1 {
        return Ok(Vec::new());
    }
    let mine: Vec<u8> = tensors
        .iter()
        .flat_map(|(_, t)| fingerprint(t).to_le_bytes())
        .collect();
    let all = comm.all_gather_bytes(&mine)?;
    if all.iter().any(|a| a.len() != mine.len()) {
        return Err(Error::Dist(format!(
            "ranks hold different numbers of buffers ({:?})",
            all.iter().map(|a| a.len() / 8).collect::<Vec<_>>()
        )));
    }
    let mut repaired = Vec::new();
    for (i, (name, t)) in tensors.iter().enumerate() {
        let root = &all[0][i * 8..i * 8 + 8];
        if all.iter().any(|a| &a[i * 8..i * 8 + 8] != root) {
            let mut t = t.shallow_clone();
            tch::no_grad(|| comm.broadcast(&mut t, 0))?;
            repaired.push(name.clone());
        }
    }
    Ok(repaired)
}
