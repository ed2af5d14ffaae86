//! Host side of the memory gather (plain Rust, tested without CUDA): the table the gather
//! kernels read and their index arithmetic emulated on the host.

use super::plan::{bf16_bits_to_f32, launch_gather_channel_major, GATHER_ROWS, GATHER_TILE};
use crate::error::{Error, ErrorKind, Result};
use crate::tracker::mem_inputs::{MemInputs, MemLayout};

/// Shapes of one gather: `[b, t_tokens, M]` memories and `[b, p_tokens, M]` pointers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GatherShape {
    pub b: usize,
    pub n_mem: usize,
    pub n_ptr: usize,
    pub t_tokens: usize,
    pub p_tokens: usize,
}

/// The gather kernels' table: per object and memory `(slot, tpos row)` with tpos row
/// `num_maskmem - t_pos - 1`, then per object and pointer `(slot, pos row)`. Every object
/// must select as many memories and pointers (the tracker groups them so).
pub fn gather_table(
    layout: &MemLayout,
    mems: &[Vec<(usize, usize)>],
    ptrs: &[Vec<(usize, usize)>],
    pos_rows: usize,
) -> Result<(Vec<i32>, GatherShape)> {
    let b = mems.len();
    let n_mem = mems.first().map_or(0, |v| v.len());
    let n_ptr = ptrs.first().map_or(0, |v| v.len());
    if ptrs.len() != b || mems.iter().any(|v| v.len() != n_mem) || ptrs.iter().any(|v| v.len() != n_ptr) {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "memory gather: objects of one call must select as many memories and pointers",
        ));
    }
    let mut table = Vec::with_capacity(2 * b * (n_mem + n_ptr));
    for &(slot, t_pos) in mems.iter().flatten() {
        if t_pos >= layout.num_maskmem {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("memory gather: t_pos {t_pos} >= num_maskmem {}", layout.num_maskmem),
            ));
        }
        table.extend([slot as i32, (layout.num_maskmem - t_pos - 1) as i32]);
    }
    for &(slot, row) in ptrs.iter().flatten() {
        if row >= pos_rows {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("memory gather: pointer encoding row {row} of {pos_rows}"),
            ));
        }
        table.extend([slot as i32, row as i32]);
    }
    let shape = GatherShape { b, n_mem, n_ptr, t_tokens: n_mem * layout.n_tok, p_tokens: n_ptr * layout.split };
    Ok((table, shape))
}

/// The gather kernels' index arithmetic on the host (`gather_memory_token_major` element
/// by element, `gather_memory_channel_major` block by block through its tiles,
/// `gather_ptrs`), reading slot buffers as the device holds them.
#[allow(clippy::too_many_arguments)]
pub fn gather_host(
    layout: &MemLayout,
    table: &[i32],
    shape: &GatherShape,
    bank: &[u16],
    ptr_bank: &[f32],
    maskmem_pos: &[f32],
    tpos: &[f32],
    pos_rows: &[f32],
) -> MemInputs {
    let (m, n_tok, per) = (layout.m, layout.n_tok, layout.per_frame());
    let mem_n = shape.b * shape.t_tokens * m;
    let mut memory = vec![0f32; mem_n];
    let mut memory_pos = vec![0f32; mem_n];
    if layout.token_major {
        for idx in 0..mem_n {
            let ch = idx % m;
            let rest = idx / m;
            let t = rest % n_tok;
            let bj = rest / n_tok;
            let (slot, row) = (table[2 * bj] as usize, table[2 * bj + 1] as usize);
            let src = t * m + ch;
            memory[idx] = bf16_bits_to_f32(bank[slot * per + src]);
            memory_pos[idx] = maskmem_pos[src] + tpos[row * m + ch];
        }
    } else if mem_n > 0 {
        let ((gx, gy, gz), _) = launch_gather_channel_major(n_tok, m, shape.b * shape.n_mem).expect("geometry");
        let mut tv = [[0f32; GATHER_TILE + 1]; GATHER_TILE];
        let mut tp = [[0f32; GATHER_TILE + 1]; GATHER_TILE];
        for bj in 0..gz as usize {
            let (slot, row) = (table[2 * bj] as usize, table[2 * bj + 1] as usize);
            for by in 0..gy as usize {
                for bx in 0..gx as usize {
                    let (t0, c0) = (bx * GATHER_TILE, by * GATHER_TILE);
                    for ty in 0..GATHER_ROWS as usize {
                        for tx in 0..GATHER_TILE {
                            for k in (ty..GATHER_TILE).step_by(GATHER_ROWS as usize) {
                                let (ch, t) = (c0 + k, t0 + tx);
                                if ch < m && t < n_tok {
                                    let src = ch * n_tok + t;
                                    tv[k][tx] = bf16_bits_to_f32(bank[slot * per + src]);
                                    tp[k][tx] = maskmem_pos[src] + tpos[row * m + ch];
                                }
                            }
                        }
                    }
                    for ty in 0..GATHER_ROWS as usize {
                        for tx in 0..GATHER_TILE {
                            for k in (ty..GATHER_TILE).step_by(GATHER_ROWS as usize) {
                                let (t, ch) = (t0 + k, c0 + tx);
                                if t < n_tok && ch < m {
                                    let o = (bj * n_tok + t) * m + ch;
                                    memory[o] = tv[tx][k];
                                    memory_pos[o] = tp[tx][k];
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    let ptr_n = shape.b * shape.p_tokens * m;
    let ptab = &table[2 * shape.b * shape.n_mem..];
    let mut ptrs = vec![0f32; ptr_n];
    let mut ptrs_pos = vec![0f32; ptr_n];
    for idx in 0..ptr_n {
        let ch = idx % m;
        let rest = idx / m;
        let k2 = rest % layout.split;
        let bj = rest / layout.split;
        let (slot, prow) = (ptab[2 * bj] as usize, ptab[2 * bj + 1] as usize);
        ptrs[idx] = ptr_bank[slot * layout.c + k2 * m + ch];
        ptrs_pos[idx] = pos_rows[prow * m + ch];
    }
    MemInputs { memory, memory_pos, ptrs, ptrs_pos }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::plan::SplitMix;
    use crate::tracker::mem_inputs::{assemble, ObjectSelection};
    use half::bf16;

    /// The gather's table and the kernels' index arithmetic give `mem_inputs::assemble`'s
    /// tensors, for SAM 2's channel-major and EdgeTAM's token-major memories.
    #[test]
    fn gather_table_and_kernel_arithmetic_equal_assemble() {
        let mut rng = SplitMix(4);
        for layout in [
            MemLayout::new(8, 32, 40, false, 7),
            MemLayout::new(8, 32, 24, true, 7),
            MemLayout::new(16, 16, 9, false, 3),
        ] {
            let (per, c, m) = (layout.per_frame(), layout.c, layout.m);
            let slots = 12;
            let feats: Vec<Vec<f32>> = (0..slots).map(|_| (0..per).map(|_| rng.uniform(-3.0, 3.0)).collect()).collect();
            let bf: Vec<Vec<bf16>> = feats.iter().map(|f| f.iter().map(|&v| bf16::from_f32(v)).collect()).collect();
            let bank: Vec<u16> = bf.iter().flatten().map(|v| v.to_bits()).collect();
            let ptr_bank: Vec<f32> = (0..slots * c).map(|_| rng.uniform(-1.0, 1.0)).collect();
            let maskmem_pos: Vec<f32> = (0..per).map(|_| rng.uniform(-1.0, 1.0)).collect();
            let tpos: Vec<f32> = (0..layout.num_maskmem * m).map(|_| rng.uniform(-0.1, 0.1)).collect();
            let pos_rows: Vec<f32> = (0..5 * m).map(|_| rng.uniform(-1.0, 1.0)).collect();
            // 2 objects, 3 memories and 2 pointers each, slots in any order
            let mems = vec![vec![(5, 0), (2, 1), (9, 2)], vec![(0, 0), (11, 1), (7, 2)]];
            let ptrs = vec![vec![(1, 4), (3, 0)], vec![(10, 2), (6, 2)]];
            let (table, shape) = gather_table(&layout, &mems, &ptrs, 5).unwrap();
            let got = gather_host(&layout, &table, &shape, &bank, &ptr_bank, &maskmem_pos, &tpos, &pos_rows);
            let sel: Vec<ObjectSelection> = mems
                .iter()
                .zip(&ptrs)
                .map(|(ms, ps)| ObjectSelection {
                    mems: ms.iter().map(|&(s, t)| (&bf[s][..], t)).collect(),
                    ptrs: ps
                        .iter()
                        .map(|&(s, r)| (&ptr_bank[s * c..(s + 1) * c], &pos_rows[r * m..(r + 1) * m]))
                        .collect(),
                })
                .collect();
            let want = assemble(&layout, &maskmem_pos, &tpos, &sel);
            assert_eq!(want.memory.len(), 2 * 3 * layout.n_tok * m);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got.memory), bits(&want.memory), "{layout:?}");
            assert_eq!(bits(&got.memory_pos), bits(&want.memory_pos));
            assert_eq!(bits(&got.ptrs), bits(&want.ptrs));
            assert_eq!(bits(&got.ptrs_pos), bits(&want.ptrs_pos));
        }
        let l = MemLayout::new(8, 32, 4, true, 7);
        assert!(gather_table(&l, &[vec![(0, 7)]], &[vec![]], 0).is_err(), "t_pos beyond num_maskmem");
        assert!(gather_table(&l, &[vec![(0, 1)], vec![]], &[vec![], vec![]], 0).is_err(), "unequal selections");
        assert!(gather_table(&l, &[vec![]], &[vec![(0, 3)]], 3).is_err(), "pos row out of range");
    }
}
