// Host emulation of the CUDA built-ins the kernels in src/gpu/kernels.rs use, so that
// their CUDA C source runs on the CPU (tests/gpu_kernels_emulated.rs): threads of a block
// run one after the other, or as OS threads meeting at a barrier for kernels that call
// __syncthreads(); __shared__ arrays are function statics (blocks run one at a time);
// __fadd_rn / __fmul_rn are plain IEEE fp32 operations (compiled with -ffp-contract=off).
// What this cannot show: anything about real hardware (memory model, occupancy, NVRTC).
#include <barrier>
#include <cstring>
#include <thread>
#include <vector>
struct uint3_ { unsigned x, y, z; };
thread_local uint3_ blockIdx, threadIdx;
uint3_ blockDim;
#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __shared__ static
std::barrier<>* g_barrier = nullptr;
inline void __syncthreads() { g_barrier->arrive_and_wait(); }
inline unsigned __float_as_uint(float f) { unsigned u; std::memcpy(&u, &f, 4); return u; }
inline float __uint_as_float(unsigned u) { float f; std::memcpy(&f, &u, 4); return f; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fmul_rn(float a, float b) { return a * b; }
