//! The SRAM contents a program's placements ask for, built from the
//! artifact's weights by the loader (and by tests): every placed form is
//! a pure function of the weight, so the program text and the artifact's
//! weights together are the whole machine state before a run.

use super::program::{Form, Placement};
use super::tile::{f32_rows, pack_row, pack_tile, row_codes, segment_params};
use crate::{Payload, QuantizedTensor};

/// The bytes `placement` puts at its slice and row.
pub fn placement_bytes(placement: &Placement, weight: &QuantizedTensor, lanes: usize) -> Result<Vec<u8>, String> {
    let name = &placement.weight;
    let coded = || -> Result<(), String> {
        if weight.kind().is_coded() {
            Ok(())
        } else {
            Err(format!("`{name}` is {}, but its placement needs coded weights", weight.kind()))
        }
    };
    match placement.form {
        Form::Tile { n0, k0, cols } | Form::Params { n0, k0, cols } => {
            coded()?;
            let (n0, k0, cols) = (n0 as usize, k0 as usize, cols as usize);
            if n0 >= weight.rows() || k0 + cols > weight.cols() || cols == 0 || cols > lanes {
                return Err(format!("`{name}` has no tile of rows from {n0}, columns {k0}..{}", k0 + cols));
            }
            if matches!(placement.form, Form::Params { .. }) {
                return Ok(segment_params(weight, n0, k0, cols, lanes));
            }
            let rows: Vec<Vec<u8>> = (n0..(n0 + lanes).min(weight.rows())).map(|r| row_codes(weight, r)).collect();
            Ok(pack_tile(weight.kind(), &rows, k0, cols, lanes).concat())
        }
        Form::Rows { stride } => {
            coded()?;
            let span = stride as usize * lanes;
            let mut out = vec![0u8; span * weight.rows()];
            for n in 0..weight.rows() {
                let row = pack_row(weight, n);
                if row.len() > span {
                    return Err(format!("a stored row of `{name}` takes {} bytes, its placement gives {span}", row.len()));
                }
                out[n * span..n * span + row.len()].copy_from_slice(&row);
            }
            Ok(out)
        }
        Form::Vector => {
            let values: Vec<f32> = match weight.payload() {
                Payload::F32(v) => v.clone(),
                _ => weight.dequantize(),
            };
            Ok(values.chunks(lanes).flat_map(|c| {
                let mut c = c.to_vec();
                c.resize(lanes, 0.0);
                f32_rows(&c)
            }).collect())
        }
    }
}
