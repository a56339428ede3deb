//! Per-sample rows (logits, features) that every rank computes for its chunks of an evaluation
//! and rank 0 needs whole: each chunk travels as a self-describing record, and rank 0 puts the
//! chunks back in chunk order, so the result is the same whatever the number of ranks.
use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};

/// One chunk's `[rows, width]` values as a gather record: chunk index, row count, width (u64
/// each), then the values as f32.
pub fn record(k: i64, rows: &Tensor) -> Vec<u8> {
    let rows = rows
        .to_kind(Kind::Float)
        .to_device(Device::Cpu)
        .contiguous();
    let (n, width) = rows.size2().expect("[n, width] rows");
    let mut out: Vec<u8> = [k, n, width]
        .iter()
        .flat_map(|&w| (w as u64).to_le_bytes())
        .collect();
    out.extend(
        Vec::<f32>::try_from(&rows.view([-1]))
            .expect("f32")
            .iter()
            .flat_map(|v| v.to_le_bytes()),
    );
    out
}

/// The gathered records (one byte string per rank) as one `[n, width]` float64 tensor in chunk
/// order; `what` names the rows in errors.
pub fn assemble(gathered: &[Vec<u8>], n: i64, what: &str) -> Result<Tensor> {
    let malformed = |r: usize| Error::Dist(format!("malformed {what} record from rank {r}"));
    let mut chunks_by_index = Vec::new();
    for (r, bytes) in gathered.iter().enumerate() {
        let mut at = 0;
        while at < bytes.len() {
            let word = |i: usize| -> Result<i64> {
                let b = bytes.get(at + 8 * i..at + 8 * i + 8).ok_or(malformed(r))?;
                Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")) as i64)
            };
            let (k, size, width) = (word(0)?, word(1)?, word(2)?);
            at += 24;
            let len = (size * width * 4) as usize;
            let values: Vec<f32> = bytes
                .get(at..at + len)
                .ok_or(malformed(r))?
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect();
            chunks_by_index.push((k, width, values));
            at += len;
        }
    }
    chunks_by_index.sort_by_key(|c| c.0);
    let width = chunks_by_index.first().map(|c| c.1).unwrap_or(0);
    let all: Vec<f32> = chunks_by_index.into_iter().flat_map(|c| c.2).collect();
    if all.len() as i64 != n * width {
        return Err(Error::Dist(format!(
            "gathered {} {what} values for {n} samples of width {width}",
            all.len()
        )));
    }
    Ok(Tensor::from_slice(&all)
        .view([n, width])
        .to_kind(Kind::Double))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_come_back_in_order_from_any_rank() {
        let chunk = |k: i64| Tensor::full([2, 3], k as f64, (Kind::Float, Device::Cpu));
        // Rank 0 had chunks 0 and 2, rank 1 chunk 1.
        let rank0 = [record(0, &chunk(0)), record(2, &chunk(2))].concat();
        let rank1 = record(1, &chunk(1));
        let rows = assemble(&[rank0, rank1], 6, "test").unwrap();
        let firsts: Vec<f64> = (0..6).map(|i| rows.double_value(&[i, 0])).collect();
        assert_eq!(firsts, vec![0.0, 0.0, 1.0, 1.0, 2.0, 2.0]);
        let short = assemble(&[record(0, &chunk(0))], 6, "feature").unwrap_err();
        assert!(
            short.to_string().contains("feature values for 6 samples"),
            "{short}"
        );
        let torn = assemble(&[vec![1, 2, 3]], 6, "logits").unwrap_err();
        assert!(
            torn.to_string()
                .contains("malformed logits record from rank 0"),
            "{torn}"
        );
    }
}
