//! CUDA C source of the kernels, compiled once per context with NVRTC (`--fmad=false`;
//! the fp32 sums also use `__fadd_rn` / `__fmul_rn`, which are never fused, so every fp32
//! operation is one IEEE round-to-nearest operation in the CPU's order). Each kernel's
//! host-side arithmetic twin is the `apply_host` of its table in `plan.rs`.

/// Kernel names, in the order `device::Gpu` loads them.
pub const NAMES: [&str; 8] = [
    "pil_horizontal",
    "pil_vertical_normalize",
    "bilinear_threshold",
    "f32_to_bf16_kernel",
    "gather_memory_token_major",
    "gather_memory_channel_major",
    "gather_ptrs",
    "fill_holes_bounded",
];

/// The program. `PREC_BITS` must equal `resize::PRECISION_BITS` (22) and `TILE` / `ROWS`
/// `plan::GATHER_TILE` / `plan::GATHER_ROWS`; `kernels_match_host_constants` checks both.
pub const SOURCE: &str = r#"
#define PREC_BITS 22
#define PIL_HALF (1u << (PREC_BITS - 1))
#define TILE 32
#define ROWS 8
#define HOLE_MAX 64

__device__ __forceinline__ unsigned char clip8(unsigned int acc) {
    int v = ((int)acc) >> PREC_BITS;
    return (unsigned char)(v < 0 ? 0 : (v > 255 ? 255 : v));
}

// Pillow ImagingResampleHorizontal_8bpc on RGB8: source rows row0 .. row0+rows-1 into
// tmp [rows][out_w][3]. Fixed-point sums wrap like the CPU's i32 wrapping_add.
extern "C" __global__ void pil_horizontal(
    const unsigned char* __restrict__ src, int in_w, int row0, int rows,
    const int* __restrict__ xb, const int* __restrict__ xw, int kx, int out_w,
    unsigned char* __restrict__ tmp)
{
    int xx = blockIdx.x * blockDim.x + threadIdx.x;
    int r = blockIdx.y * blockDim.y + threadIdx.y;
    if (xx >= out_w || r >= rows) return;
    int xmin = xb[2 * xx], n = xb[2 * xx + 1];
    const int* k = xw + (size_t)xx * kx;
    const unsigned char* s = src + ((size_t)(row0 + r) * in_w + xmin) * 3;
    unsigned int a0 = PIL_HALF, a1 = PIL_HALF, a2 = PIL_HALF;
    for (int x = 0; x < n; ++x) {
        unsigned int w = (unsigned int)k[x];
        a0 += (unsigned int)s[3 * x] * w;
        a1 += (unsigned int)s[3 * x + 1] * w;
        a2 += (unsigned int)s[3 * x + 2] * w;
    }
    unsigned char* d = tmp + ((size_t)r * out_w + xx) * 3;
    d[0] = clip8(a0);
    d[1] = clip8(a1);
    d[2] = clip8(a2);
}

// Pillow ImagingResampleVertical_8bpc, then (x / 255 - mean) / std through the host's
// table lut[c * 256 + v], planar [3][out_h][out_w]; optionally the RGB8 result too.
extern "C" __global__ void pil_vertical_normalize(
    const unsigned char* __restrict__ tmp, int out_w, int out_h,
    const int* __restrict__ yb, const int* __restrict__ yw, int ky,
    const float* __restrict__ lut, float* __restrict__ out,
    unsigned char* __restrict__ rgb_out, int write_rgb)
{
    int xx = blockIdx.x * blockDim.x + threadIdx.x;
    int yy = blockIdx.y * blockDim.y + threadIdx.y;
    if (xx >= out_w || yy >= out_h) return;
    int ymin = yb[2 * yy], n = yb[2 * yy + 1];
    const int* k = yw + (size_t)yy * ky;
    size_t row_len = (size_t)out_w * 3;
    const unsigned char* p = tmp + (size_t)ymin * row_len + (size_t)xx * 3;
    unsigned int a0 = PIL_HALF, a1 = PIL_HALF, a2 = PIL_HALF;
    for (int y = 0; y < n; ++y) {
        unsigned int w = (unsigned int)k[y];
        a0 += (unsigned int)p[0] * w;
        a1 += (unsigned int)p[1] * w;
        a2 += (unsigned int)p[2] * w;
        p += row_len;
    }
    unsigned char v0 = clip8(a0), v1 = clip8(a1), v2 = clip8(a2);
    size_t plane = (size_t)out_w * out_h;
    size_t o = (size_t)yy * out_w + xx;
    out[o] = lut[v0];
    out[plane + o] = lut[256 + v1];
    out[2 * plane + o] = lut[512 + v2];
    if (write_rgb) {
        rgb_out[3 * o] = v0;
        rgb_out[3 * o + 1] = v1;
        rgb_out[3 * o + 2] = v2;
    }
}

// torch bilinear (align_corners=False) of blockIdx.z's [in_h][in_w] plane to
// [out_h][out_w] through the host's index / weight tables, as resize::bilinear_into:
// width interpolation of two rows, then height. Mask = logits > 0.
extern "C" __global__ void bilinear_threshold(
    const float* __restrict__ src, int in_h, int in_w,
    const int* __restrict__ yi, const float* __restrict__ yw,
    const int* __restrict__ xi, const float* __restrict__ xw,
    int out_h, int out_w, int identity,
    float* __restrict__ logits, int write_logits, unsigned char* __restrict__ mask)
{
    int ox = blockIdx.x * blockDim.x + threadIdx.x;
    int oy = blockIdx.y * blockDim.y + threadIdx.y;
    if (ox >= out_w || oy >= out_h) return;
    const float* plane = src + (size_t)blockIdx.z * in_h * in_w;
    float v;
    if (identity) {
        v = plane[(size_t)oy * in_w + ox];
    } else {
        const float* r0 = plane + (size_t)yi[2 * oy] * in_w;
        const float* r1 = plane + (size_t)yi[2 * oy + 1] * in_w;
        int x0 = xi[2 * ox], x1 = xi[2 * ox + 1];
        float lx0 = xw[2 * ox], lx1 = xw[2 * ox + 1];
        float t0 = __fadd_rn(__fmul_rn(r0[x0], lx0), __fmul_rn(r0[x1], lx1));
        float t1 = __fadd_rn(__fmul_rn(r1[x0], lx0), __fmul_rn(r1[x1], lx1));
        v = __fadd_rn(__fmul_rn(t0, yw[2 * oy]), __fmul_rn(t1, yw[2 * oy + 1]));
    }
    size_t o = ((size_t)blockIdx.z * out_h + oy) * out_w + ox;
    if (write_logits) logits[o] = v;
    mask[o] = v > 0.0f ? 1 : 0;
}

// half::bf16::from_f32 / to_f32, bit for bit.
__device__ __forceinline__ unsigned short f32_to_bf16(float f) {
    unsigned int x = __float_as_uint(f);
    if ((x & 0x7FFFFFFFu) > 0x7F800000u) return (unsigned short)((x >> 16) | 0x40u);
    if ((x & 0x8000u) != 0u && (x & (3u * 0x8000u - 1u)) != 0u) return (unsigned short)((x >> 16) + 1u);
    return (unsigned short)(x >> 16);
}

__device__ __forceinline__ float bf16_to_f32(unsigned short b) {
    unsigned int i = b;
    if ((i & 0x7FFFu) > 0x7F80u) i |= 0x40u;
    return __uint_as_float(i << 16);
}

extern "C" __global__ void f32_to_bf16_kernel(
    const float* __restrict__ src, unsigned short* __restrict__ dst, long long n)
{
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) dst[i] = f32_to_bf16(src[i]);
}

// memory / memory_pos [B][n_mem * n_tok][m] from bank slots stored token-major [n_tok][m].
// table[2 * (bi * n_mem + j)] = slot, table[.. + 1] = row of tpos (num_maskmem - t_pos - 1).
extern "C" __global__ void gather_memory_token_major(
    const unsigned short* __restrict__ bank, long long per,
    const float* __restrict__ maskmem_pos, const float* __restrict__ tpos,
    const int* __restrict__ table, int n_tok, int m,
    float* __restrict__ memory, float* __restrict__ memory_pos, long long total)
{
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= total) return;
    int ch = (int)(idx % m);
    long long rest = idx / m;
    int t = (int)(rest % n_tok);
    long long bj = rest / n_tok;
    int slot = table[2 * bj], row = table[2 * bj + 1];
    long long src = (long long)t * m + ch;
    memory[idx] = bf16_to_f32(bank[slot * per + src]);
    memory_pos[idx] = __fadd_rn(maskmem_pos[src], tpos[row * m + ch]);
}

// The same for slots stored channel-major [m][n_tok]: a TILE x TILE transpose through
// shared memory (blocks TILE x ROWS; grid x over tokens, y over channels, z over bi*n_mem+j).
extern "C" __global__ void gather_memory_channel_major(
    const unsigned short* __restrict__ bank, long long per,
    const float* __restrict__ maskmem_pos, const float* __restrict__ tpos,
    const int* __restrict__ table, int n_tok, int m,
    float* __restrict__ memory, float* __restrict__ memory_pos)
{
    __shared__ float tv[TILE][TILE + 1];
    __shared__ float tp[TILE][TILE + 1];
    long long bj = blockIdx.z;
    int slot = table[2 * bj], row = table[2 * bj + 1];
    int t0 = blockIdx.x * TILE, c0 = blockIdx.y * TILE;
    const unsigned short* s = bank + slot * per;
    for (int k = threadIdx.y; k < TILE; k += ROWS) {
        int ch = c0 + k, t = t0 + threadIdx.x;
        if (ch < m && t < n_tok) {
            long long src = (long long)ch * n_tok + t;
            tv[k][threadIdx.x] = bf16_to_f32(s[src]);
            tp[k][threadIdx.x] = __fadd_rn(maskmem_pos[src], tpos[row * m + ch]);
        }
    }
    __syncthreads();
    for (int k = threadIdx.y; k < TILE; k += ROWS) {
        int t = t0 + k, ch = c0 + threadIdx.x;
        if (t < n_tok && ch < m) {
            long long o = (bj * n_tok + t) * m + ch;
            memory[o] = tv[threadIdx.x][k];
            memory_pos[o] = tp[threadIdx.x][k];
        }
    }
}

// obj_ptrs / obj_ptrs_pos [B][n_ptr * split][m] from pointer slots [c] and the host's
// temporal encodings pos_rows [rows][m]; table[2 * (bi * n_ptr + j)] = slot, pos row.
extern "C" __global__ void gather_ptrs(
    const float* __restrict__ ptr_bank, int c, const float* __restrict__ pos_rows,
    const int* __restrict__ table, int split, int m,
    float* __restrict__ ptrs, float* __restrict__ ptrs_pos, long long total)
{
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= total) return;
    int ch = (int)(idx % m);
    long long rest = idx / m;
    int k2 = (int)(rest % split);
    long long bj = rest / split;
    int slot = table[2 * bj], prow = table[2 * bj + 1];
    ptrs[idx] = ptr_bank[(long long)slot * c + k2 * m + ch];
    ptrs_pos[idx] = pos_rows[(long long)prow * m + ch];
}

// fill_holes_in_mask_scores on blockIdx.z's [h][w] plane, out of place: a background
// pixel (v <= 0) becomes 0.1 when its 8-connected background component has at most
// max_area (<= HOLE_MAX) pixels. Each thread explores its own pixel's component
// breadth-first in the scan order of tracker::ops::fill_holes and stops at max_area + 1
// pixels, which is enough to tell; no atomics, no communication between threads.
extern "C" __global__ void fill_holes_bounded(
    const float* __restrict__ src, float* __restrict__ dst, int h, int w, int max_area)
{
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= w || y >= h) return;
    const float* plane = src + (size_t)blockIdx.z * h * w;
    size_t o = (size_t)blockIdx.z * h * w + (size_t)y * w + x;
    float v = plane[(size_t)y * w + x];
    if (!(v <= 0.0f)) {
        dst[o] = v;
        return;
    }
    int seen[HOLE_MAX + 1];
    int n = 1, head = 0;
    seen[0] = y * w + x;
    while (head < n && n <= max_area) {
        int p = seen[head++];
        int py = p / w, px = p % w;
        for (int dy = -1; dy <= 1 && n <= max_area; ++dy) {
            int yy = py + dy;
            if (yy < 0 || yy >= h) continue;
            for (int dx = -1; dx <= 1 && n <= max_area; ++dx) {
                int xx = px + dx;
                if (xx < 0 || xx >= w) continue;
                int q = yy * w + xx;
                if (!(plane[q] <= 0.0f)) continue;
                int known = 0;
                for (int k = 0; k < n; ++k) known |= seen[k] == q;
                if (!known) seen[n++] = q;
            }
        }
    }
    dst[o] = n <= max_area ? 0.1f : v;
}
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_match_host_constants() {
        assert!(SOURCE.contains(&format!("#define PREC_BITS {}", crate::tracker::resize::PRECISION_BITS)));
        assert!(SOURCE.contains(&format!("#define TILE {}", super::super::plan::GATHER_TILE)));
        assert!(SOURCE.contains(&format!("#define ROWS {}", super::super::plan::GATHER_ROWS)));
        assert!(SOURCE.contains(&format!("#define HOLE_MAX {}", super::super::plan::HOLE_MAX)));
        for n in NAMES {
            assert!(SOURCE.contains(&format!("extern \"C\" __global__ void {n}(")), "kernel {n} in the source");
        }
        // no NUL (NVRTC takes a C string) and balanced braces
        assert!(!SOURCE.contains('\0'));
        assert_eq!(SOURCE.matches('{').count(), SOURCE.matches('}').count());
    }
}
