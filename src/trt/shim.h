/* tamrt's C interface to TensorRT (8.5 .. 10.x). Opaque handles, integer status codes
 * (0 = OK), and a per-thread last-error string; never a bare bool. Built by build.rs
 * into libtamrt_trt.so only where TensorRT headers are found; tamrt loads it at run time
 * (src/trt/ffi.rs), so a tamrt binary without TensorRT still runs everywhere. */
#ifndef TAMRT_TRT_SHIM_H
#define TAMRT_TRT_SHIM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TAMRT_TRT_ABI 1

enum tamrt_trt_status {
  TAMRT_TRT_OK = 0,
  TAMRT_TRT_ERR_ARG = 1,         /* bad argument (null, unknown tensor name, bad rank) */
  TAMRT_TRT_ERR_PARSE = 2,       /* the ONNX parser rejected the graph (messages in last error) */
  TAMRT_TRT_ERR_BUILD = 3,       /* the builder failed (messages in last error) */
  TAMRT_TRT_ERR_UNSUPPORTED = 4, /* feature needs a newer TensorRT (e.g. bf16 before 9.0) */
  TAMRT_TRT_ERR_IO = 5,          /* reading or writing a file failed */
  TAMRT_TRT_ERR_RUNTIME = 6,     /* deserialize / context / enqueue failed */
  TAMRT_TRT_ERR_OOM = 7          /* out of memory (host or device) */
};

enum tamrt_trt_precision { TAMRT_TRT_FP32 = 0, TAMRT_TRT_FP16 = 1, TAMRT_TRT_BF16 = 2 };

typedef struct tamrt_trt_engine tamrt_trt_engine;   /* runtime + deserialized engine */
typedef struct tamrt_trt_context tamrt_trt_context; /* execution context */

/* One optimization-profile entry for a named input. */
typedef struct {
  const char *name;
  int32_t nb_dims;
  int64_t min[8];
  int64_t opt[8];
  int64_t max[8];
} tamrt_trt_profile_dims;

typedef struct {
  int32_t precision;          /* enum tamrt_trt_precision */
  int64_t workspace_bytes;    /* 0 = TensorRT default */
  int32_t opt_level;          /* builder optimization level (TRT >= 8.6), -1 = default */
  int32_t keep_norms_fp32;    /* 1: LayerNorm / Softmax / reductions stay fp32 */
  const char *timing_cache;   /* path (read if present, written back), or NULL */
} tamrt_trt_build_options;

uint32_t tamrt_trt_abi(void);
/* TensorRT version the shim was compiled against and the one loaded at run time. */
void tamrt_trt_version(int32_t *compiled, int32_t *loaded);
/* Name and compute capability of the current CUDA device. */
int32_t tamrt_trt_device_info(char *name, int32_t name_len, int32_t *major, int32_t *minor);
/* Last error of this thread ("" if none). Valid until the next shim call on the thread. */
const char *tamrt_trt_last_error(void);

/* Parse `onnx_path`, build an engine with the given profile(s) and options, and write the
 * serialized plan to `engine_path` (written to a temp file then renamed). */
int32_t tamrt_trt_build_engine(const char *onnx_path, const char *engine_path,
                               const tamrt_trt_profile_dims *dims, int32_t nb_dims,
                               const tamrt_trt_build_options *options);

int32_t tamrt_trt_engine_load(const char *engine_path, tamrt_trt_engine **out);
void tamrt_trt_engine_free(tamrt_trt_engine *engine);
int32_t tamrt_trt_engine_num_io(const tamrt_trt_engine *engine);
/* Name of I/O tensor `i`; *is_input = 1 for inputs. NULL on a bad index. */
const char *tamrt_trt_engine_io_name(const tamrt_trt_engine *engine, int32_t i, int32_t *is_input);
/* Device memory the engine needs for activations (bytes). */
int64_t tamrt_trt_engine_device_memory(const tamrt_trt_engine *engine);

int32_t tamrt_trt_context_create(tamrt_trt_engine *engine, tamrt_trt_context **out);
void tamrt_trt_context_free(tamrt_trt_context *ctx);
int32_t tamrt_trt_context_set_input_shape(tamrt_trt_context *ctx, const char *name,
                                          const int64_t *dims, int32_t nb_dims);
/* Shape of any I/O tensor once all input shapes are set. */
int32_t tamrt_trt_context_get_shape(tamrt_trt_context *ctx, const char *name, int64_t *dims,
                                    int32_t *nb_dims);
int32_t tamrt_trt_context_set_address(tamrt_trt_context *ctx, const char *name, void *device_ptr);
/* enqueueV3 on `stream` (a cudaStream_t / CUstream). */
int32_t tamrt_trt_context_enqueue(tamrt_trt_context *ctx, void *stream);

#ifdef __cplusplus
}
#endif
#endif
