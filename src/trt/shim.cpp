// tamrt's TensorRT shim: the C API of shim.h over TensorRT's C++ API, one code path for
// TensorRT 8.5 (JetPack 5.1), 8.6 (JetPack 6.0) and 10.x (JetPack 6.1/6.2), with version
// guards on NV_TENSORRT_MAJOR/MINOR. Compiled by build.rs into libtamrt_trt.so where the
// headers exist. Not compiled or run on the development machines (no TensorRT there).

#include "shim.h"

#include <NvInfer.h>
#include <NvInferVersion.h>
#include <NvOnnxParser.h>
#include <cuda_runtime_api.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <new>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#define TAMRT_TRT_AT_LEAST(maj, min) \
  (NV_TENSORRT_MAJOR > (maj) || (NV_TENSORRT_MAJOR == (maj) && NV_TENSORRT_MINOR >= (min)))

namespace {

thread_local std::string g_last_error;

int32_t fail(int32_t code, const std::string &msg) {
  g_last_error = msg;
  return code;
}

// Collects builder / parser / runtime messages; errors are appended to the last error.
class Logger : public nvinfer1::ILogger {
 public:
  void log(Severity severity, const char *msg) noexcept override {
    if (severity <= Severity::kERROR) {
      if (!errors.empty()) errors += "; ";
      errors += msg;
    }
  }
  std::string errors;
};

// Since TensorRT 8.0 every object may be released with `delete` (destroy() is
// deprecated in 8.x, gone in 10).
template <typename T>
using Ptr = std::unique_ptr<T>;

std::string trt_version_str() {
  return std::to_string(NV_TENSORRT_MAJOR) + "." + std::to_string(NV_TENSORRT_MINOR) + "." +
         std::to_string(NV_TENSORRT_PATCH);
}

nvinfer1::Dims to_dims(const int64_t *d, int32_t n) {
  nvinfer1::Dims dims{};
  dims.nbDims = n;
  for (int32_t i = 0; i < n && i < nvinfer1::Dims::MAX_DIMS; ++i) dims.d[i] = static_cast<std::remove_reference_t<decltype(dims.d[0])>>(d[i]);
  return dims;
}

bool read_file(const char *path, std::vector<char> &out) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) return false;
  std::streamsize n = f.tellg();
  if (n < 0) return false;
  out.resize(static_cast<size_t>(n));
  f.seekg(0);
  return static_cast<bool>(f.read(out.data(), n));
}

bool write_file_atomic(const std::string &path, const void *data, size_t n) {
  std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) return false;
    f.write(static_cast<const char *>(data), static_cast<std::streamsize>(n));
    if (!f) return false;
  }
  return std::rename(tmp.c_str(), path.c_str()) == 0;
}

// Layers kept in fp32 in reduced-precision engines: the decomposed LayerNorm
// (ReduceMean / Sub / Pow-or-Mul / Sqrt / Div), Softmax, and every reduction. fp16
// LayerNorm overflows on SAM 2's large activations otherwise.
#if NV_TENSORRT_MAJOR < 11
bool keep_fp32(nvinfer1::ILayer *layer) {
  using nvinfer1::LayerType;
  switch (layer->getType()) {
    case LayerType::kSOFTMAX:
    case LayerType::kREDUCE:
      return true;
    case LayerType::kUNARY: {
      auto *u = static_cast<nvinfer1::IUnaryLayer *>(layer);
      return u->getOperation() == nvinfer1::UnaryOperation::kSQRT ||
             u->getOperation() == nvinfer1::UnaryOperation::kEXP;
    }
    default:
      break;
  }
  const char *name = layer->getName();
  return name && (std::strstr(name, "norm") != nullptr);
}
#endif

}  // namespace

struct tamrt_trt_engine {
  Logger logger;
  Ptr<nvinfer1::IRuntime> runtime;
  Ptr<nvinfer1::ICudaEngine> engine;
};

struct tamrt_trt_context {
  tamrt_trt_engine *engine;
  Ptr<nvinfer1::IExecutionContext> ctx;
};

extern "C" {

uint32_t tamrt_trt_abi(void) { return TAMRT_TRT_ABI; }

void tamrt_trt_version(int32_t *compiled, int32_t *loaded) {
  if (compiled) *compiled = NV_TENSORRT_MAJOR * 10000 + NV_TENSORRT_MINOR * 100 + NV_TENSORRT_PATCH;
  if (loaded) *loaded = getInferLibVersion();
}

const char *tamrt_trt_last_error(void) { return g_last_error.c_str(); }

int32_t tamrt_trt_device_info(char *name, int32_t name_len, int32_t *major, int32_t *minor) {
  if (!name || name_len <= 0 || !major || !minor) return fail(TAMRT_TRT_ERR_ARG, "null argument");
  int dev = 0;
  cudaDeviceProp prop{};
  if (cudaGetDevice(&dev) != cudaSuccess || cudaGetDeviceProperties(&prop, dev) != cudaSuccess)
    return fail(TAMRT_TRT_ERR_RUNTIME, "no CUDA device");
  std::snprintf(name, static_cast<size_t>(name_len), "%s", prop.name);
  *major = prop.major;
  *minor = prop.minor;
  return TAMRT_TRT_OK;
}

int32_t tamrt_trt_build_engine(const char *onnx_path, const char *engine_path, const tamrt_trt_profile_dims *dims,
                               int32_t nb_dims, const tamrt_trt_build_options *options) {
  if (!onnx_path || !engine_path || !options || (nb_dims > 0 && !dims)) return fail(TAMRT_TRT_ERR_ARG, "null argument");
  g_last_error.clear();
  try {
    Logger logger;
    Ptr<nvinfer1::IBuilder> builder(nvinfer1::createInferBuilder(logger));
    if (!builder) return fail(TAMRT_TRT_ERR_BUILD, "createInferBuilder failed: " + logger.errors);
#if NV_TENSORRT_MAJOR >= 10
    uint32_t flags = 0;  // explicit batch is the only mode in TensorRT 10
#else
    uint32_t flags = 1U << static_cast<uint32_t>(nvinfer1::NetworkDefinitionCreationFlag::kEXPLICIT_BATCH);
#endif
    Ptr<nvinfer1::INetworkDefinition> network(builder->createNetworkV2(flags));
    Ptr<nvonnxparser::IParser> parser(nvonnxparser::createParser(*network, logger));
    if (!network || !parser) return fail(TAMRT_TRT_ERR_BUILD, "cannot create network/parser: " + logger.errors);
    if (!parser->parseFromFile(onnx_path, static_cast<int>(nvinfer1::ILogger::Severity::kWARNING))) {
      std::ostringstream msg;
      msg << "ONNX parser rejected '" << onnx_path << "':";
      for (int32_t i = 0; i < parser->getNbErrors(); ++i) {
        const nvonnxparser::IParserError *e = parser->getError(i);
        msg << " [node " << e->node() << "] " << e->desc() << ";";
      }
      return fail(TAMRT_TRT_ERR_PARSE, msg.str());
    }
    Ptr<nvinfer1::IBuilderConfig> config(builder->createBuilderConfig());
    if (options->workspace_bytes > 0) {
#if TAMRT_TRT_AT_LEAST(8, 4)
      config->setMemoryPoolLimit(nvinfer1::MemoryPoolType::kWORKSPACE, static_cast<size_t>(options->workspace_bytes));
#else
      config->setMaxWorkspaceSize(static_cast<size_t>(options->workspace_bytes));
#endif
    }
    if (options->opt_level >= 0) {
#if TAMRT_TRT_AT_LEAST(8, 6)
      config->setBuilderOptimizationLevel(options->opt_level);
#endif
    }
#if NV_TENSORRT_MAJOR >= 11
    // TensorRT 11 builds strongly typed networks only (the fp16/bf16 builder flags and
    // per-layer precision are gone): types come from the graph, and tamrt's graphs are fp32.
    if (options->precision != TAMRT_TRT_FP32) {
      return fail(TAMRT_TRT_ERR_UNSUPPORTED, "TensorRT " + trt_version_str() +
                                                 " builds strongly typed networks only and tamrt's graphs are "
                                                 "fp32: build with --precision fp32");
    }
#else
    bool reduced = false;
    if (options->precision == TAMRT_TRT_FP16) {
      if (!builder->platformHasFastFp16()) return fail(TAMRT_TRT_ERR_UNSUPPORTED, "this GPU has no fast fp16");
      config->setFlag(nvinfer1::BuilderFlag::kFP16);
      reduced = true;
    } else if (options->precision == TAMRT_TRT_BF16) {
#if NV_TENSORRT_MAJOR >= 9
      config->setFlag(nvinfer1::BuilderFlag::kBF16);
      reduced = true;
#else
      return fail(TAMRT_TRT_ERR_UNSUPPORTED, "bf16 needs TensorRT >= 9 (this is " + trt_version_str() + ")");
#endif
    }
    if (reduced && options->keep_norms_fp32) {
      config->setFlag(nvinfer1::BuilderFlag::kOBEY_PRECISION_CONSTRAINTS);
      for (int32_t i = 0; i < network->getNbLayers(); ++i) {
        nvinfer1::ILayer *layer = network->getLayer(i);
        if (keep_fp32(layer)) {
          layer->setPrecision(nvinfer1::DataType::kFLOAT);
          for (int32_t o = 0; o < layer->getNbOutputs(); ++o) layer->setOutputType(o, nvinfer1::DataType::kFLOAT);
        }
      }
    }
#endif
    nvinfer1::IOptimizationProfile *profile = builder->createOptimizationProfile();
    for (int32_t i = 0; i < nb_dims; ++i) {
      const tamrt_trt_profile_dims &d = dims[i];
      using nvinfer1::OptProfileSelector;
      if (!profile->setDimensions(d.name, OptProfileSelector::kMIN, to_dims(d.min, d.nb_dims)) ||
          !profile->setDimensions(d.name, OptProfileSelector::kOPT, to_dims(d.opt, d.nb_dims)) ||
          !profile->setDimensions(d.name, OptProfileSelector::kMAX, to_dims(d.max, d.nb_dims))) {
        return fail(TAMRT_TRT_ERR_ARG, std::string("bad profile for input '") + d.name + "': " + logger.errors);
      }
    }
    if (nb_dims > 0) config->addOptimizationProfile(profile);
    std::vector<char> cache_blob;
    Ptr<nvinfer1::ITimingCache> cache;
    if (options->timing_cache) {
      read_file(options->timing_cache, cache_blob);  // absent = start a new cache
      cache.reset(config->createTimingCache(cache_blob.data(), cache_blob.size()));
      if (cache) config->setTimingCache(*cache, false);
    }
    Ptr<nvinfer1::IHostMemory> plan(builder->buildSerializedNetwork(*network, *config));
    if (!plan) {
      int32_t code = logger.errors.find("out of memory") != std::string::npos ? TAMRT_TRT_ERR_OOM : TAMRT_TRT_ERR_BUILD;
      return fail(code, "engine build failed for '" + std::string(onnx_path) + "': " + logger.errors);
    }
    if (cache && options->timing_cache) {
      Ptr<nvinfer1::IHostMemory> blob(config->getTimingCache()->serialize());
      if (blob) write_file_atomic(options->timing_cache, blob->data(), blob->size());
    }
    if (!write_file_atomic(engine_path, plan->data(), plan->size()))
      return fail(TAMRT_TRT_ERR_IO, std::string("cannot write engine '") + engine_path + "'");
    return TAMRT_TRT_OK;
  } catch (const std::bad_alloc &) {
    return fail(TAMRT_TRT_ERR_OOM, "out of host memory while building");
  } catch (const std::exception &e) {
    return fail(TAMRT_TRT_ERR_BUILD, std::string("exception while building: ") + e.what());
  }
}

int32_t tamrt_trt_engine_load(const char *engine_path, tamrt_trt_engine **out) {
  if (!engine_path || !out) return fail(TAMRT_TRT_ERR_ARG, "null argument");
  *out = nullptr;
  std::vector<char> blob;
  if (!read_file(engine_path, blob)) return fail(TAMRT_TRT_ERR_IO, std::string("cannot read engine '") + engine_path + "'");
  try {
    std::unique_ptr<tamrt_trt_engine> e(new tamrt_trt_engine());
    e->runtime.reset(nvinfer1::createInferRuntime(e->logger));
    if (!e->runtime) return fail(TAMRT_TRT_ERR_RUNTIME, "createInferRuntime failed: " + e->logger.errors);
    // TensorRT checks the plan's version/GPU and refuses a foreign one (reported below).
    e->engine.reset(e->runtime->deserializeCudaEngine(blob.data(), blob.size()));
    if (!e->engine)
      return fail(TAMRT_TRT_ERR_RUNTIME,
                  std::string("cannot deserialize '") + engine_path + "' (corrupt, or built for another TensorRT/GPU): " +
                      e->logger.errors);
    *out = e.release();
    return TAMRT_TRT_OK;
  } catch (const std::bad_alloc &) {
    return fail(TAMRT_TRT_ERR_OOM, "out of memory while loading the engine");
  }
}

void tamrt_trt_engine_free(tamrt_trt_engine *engine) { delete engine; }

int32_t tamrt_trt_engine_num_io(const tamrt_trt_engine *engine) {
  return engine ? engine->engine->getNbIOTensors() : 0;
}

const char *tamrt_trt_engine_io_name(const tamrt_trt_engine *engine, int32_t i, int32_t *is_input) {
  if (!engine || i < 0 || i >= engine->engine->getNbIOTensors()) return nullptr;
  const char *name = engine->engine->getIOTensorName(i);
  if (is_input) *is_input = engine->engine->getTensorIOMode(name) == nvinfer1::TensorIOMode::kINPUT ? 1 : 0;
  return name;
}

int64_t tamrt_trt_engine_device_memory(const tamrt_trt_engine *engine) {
#if NV_TENSORRT_MAJOR >= 10
  return engine ? static_cast<int64_t>(engine->engine->getDeviceMemorySizeV2()) : 0;
#else
  return engine ? static_cast<int64_t>(engine->engine->getDeviceMemorySize()) : 0;
#endif
}

int32_t tamrt_trt_context_create(tamrt_trt_engine *engine, tamrt_trt_context **out) {
  if (!engine || !out) return fail(TAMRT_TRT_ERR_ARG, "null argument");
  *out = nullptr;
  std::unique_ptr<tamrt_trt_context> c(new (std::nothrow) tamrt_trt_context());
  if (!c) return fail(TAMRT_TRT_ERR_OOM, "out of host memory");
  c->engine = engine;
  c->ctx.reset(engine->engine->createExecutionContext());
  if (!c->ctx) return fail(TAMRT_TRT_ERR_OOM, "cannot create execution context (device memory?): " + engine->logger.errors);
  *out = c.release();
  return TAMRT_TRT_OK;
}

void tamrt_trt_context_free(tamrt_trt_context *ctx) { delete ctx; }

int32_t tamrt_trt_context_set_input_shape(tamrt_trt_context *ctx, const char *name, const int64_t *dims,
                                          int32_t nb_dims) {
  if (!ctx || !name || (!dims && nb_dims > 0)) return fail(TAMRT_TRT_ERR_ARG, "null argument");
  if (nb_dims > nvinfer1::Dims::MAX_DIMS) return fail(TAMRT_TRT_ERR_ARG, "too many dims");
  if (!ctx->ctx->setInputShape(name, to_dims(dims, nb_dims)))
    return fail(TAMRT_TRT_ERR_ARG, std::string("shape rejected for input '") + name +
                                       "' (outside the optimization profile?): " + ctx->engine->logger.errors);
  return TAMRT_TRT_OK;
}

int32_t tamrt_trt_context_get_shape(tamrt_trt_context *ctx, const char *name, int64_t *dims, int32_t *nb_dims) {
  if (!ctx || !name || !dims || !nb_dims) return fail(TAMRT_TRT_ERR_ARG, "null argument");
  nvinfer1::Dims d = ctx->ctx->getTensorShape(name);
  if (d.nbDims < 0) return fail(TAMRT_TRT_ERR_ARG, std::string("unknown tensor '") + name + "'");
  *nb_dims = d.nbDims;
  for (int32_t i = 0; i < d.nbDims; ++i) dims[i] = d.d[i];
  return TAMRT_TRT_OK;
}

int32_t tamrt_trt_context_set_address(tamrt_trt_context *ctx, const char *name, void *device_ptr) {
  if (!ctx || !name) return fail(TAMRT_TRT_ERR_ARG, "null argument");
  if (!ctx->ctx->setTensorAddress(name, device_ptr))
    return fail(TAMRT_TRT_ERR_ARG, std::string("cannot bind tensor '") + name + "'");
  return TAMRT_TRT_OK;
}

int32_t tamrt_trt_context_enqueue(tamrt_trt_context *ctx, void *stream) {
  if (!ctx) return fail(TAMRT_TRT_ERR_ARG, "null argument");
  if (!ctx->ctx->enqueueV3(static_cast<cudaStream_t>(stream)))
    return fail(TAMRT_TRT_ERR_RUNTIME, "enqueueV3 failed: " + ctx->engine->logger.errors);
  return TAMRT_TRT_OK;
}

}  // extern "C"
