/* A stand-in for libtamrt_trt.so (src/trt/shim.h's ABI, no TensorRT, no GPU) for
 * tests/trt_fake_shim.rs: it lets CI drive tamrt's engine building, caching, retry and
 * fallback logic and its FFI error paths. Behaviour is keyed by the graph file name:
 *
 *   prompt_decoder*    the ONNX parser rejects the graph (TAMRT_TRT_ERR_PARSE + messages)
 *   memory_encoder*    out of device memory while building (TAMRT_TRT_ERR_OOM)
 *   memory_attention*  the builder fails at the default optimization level
 *                      (TAMRT_TRT_ERR_BUILD, like TensorRT 10.3's Myelin crash) and
 *                      succeeds at any level set explicitly
 *   anything else      builds
 *
 * A built "engine" is a text file starting with FAKEPLAN; loading anything else fails
 * like TensorRT's deserializer does on a corrupt plan. Each build call appends a line to
 * fake_trt.log beside the engine. Contexts cannot be created (nothing runs). */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shim.h"

static __thread char last_error[1024];

static int32_t fail(int32_t status, const char *msg) {
  snprintf(last_error, sizeof last_error, "%s", msg);
  return status;
}

struct tamrt_trt_engine {
  int unused;
};

uint32_t tamrt_trt_abi(void) { return TAMRT_TRT_ABI; }

void tamrt_trt_version(int32_t *compiled, int32_t *loaded) {
  *compiled = 80601; /* 8.6.1 */
  *loaded = 80601;
}

int32_t tamrt_trt_device_info(char *name, int32_t name_len, int32_t *major, int32_t *minor) {
  snprintf(name, (size_t)name_len, "Fake GPU");
  *major = 8;
  *minor = 7;
  return TAMRT_TRT_OK;
}

const char *tamrt_trt_last_error(void) { return last_error; }

static void log_build(const char *engine_path, const char *graph, int32_t opt_level, int32_t status) {
  char log_path[4096];
  const char *slash = strrchr(engine_path, '/');
  size_t dir_len = slash ? (size_t)(slash - engine_path) : 0;
  snprintf(log_path, sizeof log_path, "%.*s%sfake_trt.log", (int)dir_len, engine_path, slash ? "/" : "");
  FILE *f = fopen(log_path, "a");
  if (f) {
    fprintf(f, "build %s opt=%d status=%d\n", graph, opt_level, status);
    fclose(f);
  }
}

int32_t tamrt_trt_build_engine(const char *onnx_path, const char *engine_path,
                               const tamrt_trt_profile_dims *dims, int32_t nb_dims,
                               const tamrt_trt_build_options *options) {
  const char *slash = strrchr(onnx_path, '/');
  const char *graph = slash ? slash + 1 : onnx_path;
  int32_t status = TAMRT_TRT_OK;
  if (nb_dims > 0 && dims == NULL) {
    status = fail(TAMRT_TRT_ERR_ARG, "profile dims missing");
  } else if (strncmp(graph, "prompt_decoder", 14) == 0) {
    status = fail(TAMRT_TRT_ERR_PARSE,
                  "ONNX parser: In node 12 (importMatMul): UNSUPPORTED_NODE: fake parser rejects this graph");
  } else if (strncmp(graph, "memory_encoder", 14) == 0) {
    status = fail(TAMRT_TRT_ERR_OOM, "out of device memory while building (fake: 0 bytes free)");
  } else if (strncmp(graph, "memory_attention", 16) == 0 && options->opt_level < 0) {
    status = fail(TAMRT_TRT_ERR_BUILD, "Myelin: internal error at the default optimization level (fake)");
  } else {
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", engine_path);
    FILE *f = fopen(tmp, "w");
    if (!f) {
      status = fail(TAMRT_TRT_ERR_IO, "cannot write the engine");
    } else {
      fprintf(f, "FAKEPLAN\nprecision=%d opt=%d profiles=%d graph=%s\n", options->precision, options->opt_level,
              nb_dims, graph);
      fclose(f);
      if (rename(tmp, engine_path) != 0) status = fail(TAMRT_TRT_ERR_IO, "cannot move the engine into place");
    }
  }
  log_build(engine_path, graph, options->opt_level, status);
  return status;
}

int32_t tamrt_trt_engine_load(const char *engine_path, tamrt_trt_engine **out) {
  char head[9] = {0};
  FILE *f = fopen(engine_path, "rb");
  if (!f) return fail(TAMRT_TRT_ERR_IO, "cannot open the engine file");
  size_t n = fread(head, 1, sizeof head, f);
  fclose(f);
  if (n != sizeof head || memcmp(head, "FAKEPLAN\n", sizeof head) != 0)
    return fail(TAMRT_TRT_ERR_RUNTIME,
                "IRuntime::deserializeCudaEngine: Serialization assertion magicTagRead == kMAGIC_TAG failed (fake)");
  *out = (tamrt_trt_engine *)calloc(1, sizeof(tamrt_trt_engine));
  return *out ? TAMRT_TRT_OK : fail(TAMRT_TRT_ERR_OOM, "out of host memory");
}

void tamrt_trt_engine_free(tamrt_trt_engine *engine) { free(engine); }

int32_t tamrt_trt_engine_num_io(const tamrt_trt_engine *engine) {
  (void)engine;
  return 0;
}

const char *tamrt_trt_engine_io_name(const tamrt_trt_engine *engine, int32_t i, int32_t *is_input) {
  (void)engine;
  (void)i;
  *is_input = 0;
  return NULL;
}

int64_t tamrt_trt_engine_device_memory(const tamrt_trt_engine *engine) {
  (void)engine;
  return 0;
}

int32_t tamrt_trt_context_create(tamrt_trt_engine *engine, tamrt_trt_context **out) {
  (void)engine;
  *out = NULL;
  return fail(TAMRT_TRT_ERR_RUNTIME, "fake shim: no GPU, nothing can execute");
}

void tamrt_trt_context_free(tamrt_trt_context *ctx) { (void)ctx; }

int32_t tamrt_trt_context_set_input_shape(tamrt_trt_context *ctx, const char *name, const int64_t *dims,
                                          int32_t nb_dims) {
  (void)ctx;
  (void)name;
  (void)dims;
  (void)nb_dims;
  return fail(TAMRT_TRT_ERR_ARG, "fake shim: no contexts");
}

int32_t tamrt_trt_context_get_shape(tamrt_trt_context *ctx, const char *name, int64_t *dims, int32_t *nb_dims) {
  (void)ctx;
  (void)name;
  (void)dims;
  *nb_dims = 0;
  return fail(TAMRT_TRT_ERR_ARG, "fake shim: no contexts");
}

int32_t tamrt_trt_context_set_address(tamrt_trt_context *ctx, const char *name, void *device_ptr) {
  (void)ctx;
  (void)name;
  (void)device_ptr;
  return fail(TAMRT_TRT_ERR_ARG, "fake shim: no contexts");
}

int32_t tamrt_trt_context_enqueue(tamrt_trt_context *ctx, void *stream) {
  (void)ctx;
  (void)stream;
  return fail(TAMRT_TRT_ERR_RUNTIME, "fake shim: no contexts");
}
