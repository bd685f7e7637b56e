// The tLSTM cell after the cross-layer convolution, as one ONNX Runtime CPU kernel.
//
// Op ai.tlstm::LstmCell (version 1), spec steps 4-6 with CN (docs/tlstm-spec.md, section 4)
// at N locations (a band) of a batch of B sequences:
//
//   inputs   a        (B, N, G)     the convolution's output A_t, bias included; G = 4M + W
//                                   with the memory-cell convolution (W = kappa), else G = 4M;
//                                   or (B, G) for one location (N = 1)
//            windows  (B, N, W, M)  C_{t-1} around each location (replicate padding); W = 1
//                                   without the memory-cell convolution (C_{t-1} itself);
//                                   (B, W, M) when a is (B, G)
//            gamma_a, beta_a (N, G) CN of A_t, per location
//            gamma_c, beta_c (N, M) CN of C_t, per location
//            kept_h, kept_c (B, n, M), optional: the rest of the level, placed after the band
//   outputs  h        (B, N + n, M) H_t = tanh(CN(C_t)) * o at the band, then kept_h
//            c        (B, N + n, M) C_t = g * i + (Q conv C_{t-1}) * f at the band, then kept_c
//            h_band   (B, N * M)    H_t at the band, flattened (what the next level's product reads)
//   attribute eps (float)           the normalisation's epsilon
//
// The graph with this op computes what model/incremental_band.finish_band computes with
// standard ops, and the package keeps that standard graph beside it: a runtime without this
// library, or a GPU provider, runs the standard one (tlstm/ort_ops/__init__.py).
//
// Built against ONNX Runtime's C API headers; it asks the runtime for that header's API
// version, which every later runtime also serves.

#include <cmath>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#define ORT_API_MANUAL_INIT
#include <onnxruntime_cxx_api.h>
#undef ORT_API_MANUAL_INIT

namespace {

constexpr const char* kDomain = "ai.tlstm";

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
// One copy for AVX2 + FMA machines, one for any x86-64; the loader picks at run time.
#define TLSTM_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define TLSTM_CLONES
#endif

// exp(x) for x clamped to [-87.3, 88.3]: Cody-Waite range reduction to |r| <= ln(2)/2, then
// 1 + r + r^2 p(r) with Cephes' expf coefficients (relative error about 2e-7); branch- and
// call-free so that the loops below vectorise.
inline float exp_approx(float x) {
  x = x < -87.3f ? -87.3f : (x > 88.3f ? 88.3f : x);
  const float t = x * 1.44269504088896341f;
  const int32_t whole = static_cast<int32_t>(t + (t < 0.0f ? -0.5f : 0.5f));  // t rounded
  const float n = static_cast<float>(whole);
  const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const uint32_t bits = static_cast<uint32_t>(whole + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

inline float sigmoid(float x) { return 1.0f / (1.0f + exp_approx(-x)); }
inline float tanh_approx(float x) { return 1.0f - 2.0f / (1.0f + exp_approx(2.0f * x)); }

// Mean and 1/sqrt(var + eps) of n values (biased variance, as LayerNormalization).
inline void moments(const float* x, int64_t n, float eps, float* mean, float* rstd) {
  float sum = 0.0f;
  for (int64_t k = 0; k < n; ++k) sum += x[k];
  const float mu = sum / static_cast<float>(n);
  float sq = 0.0f;
  for (int64_t k = 0; k < n; ++k) sq += (x[k] - mu) * (x[k] - mu);
  *mean = mu;
  *rstd = 1.0f / std::sqrt(sq / static_cast<float>(n) + eps);
}

struct Sizes {
  int64_t rows;        // B * N
  int64_t locations;   // N
  int64_t gates;       // G
  int64_t channels;    // M
  int64_t window;      // W
  int64_t level_rows;  // N + n: rows per sequence in h and c (the band, then the kept cone)
};

// One (sequence, location) row: y = CN(a); gates; memory-cell convolution; CN(C); H, written
// at the band's rows of each sequence's level. ``y`` is scratch of G floats.
TLSTM_CLONES
void cell_rows(const Sizes& s, float eps, const float* a, const float* windows, const float* gamma_a,
               const float* beta_a, const float* gamma_c, const float* beta_c, float* h, float* c,
               float* y) {
  const int64_t m = s.channels, g_count = s.gates, w_count = s.window;
  const bool memory_conv = g_count > 4 * m;
  for (int64_t row = 0; row < s.rows; ++row) {
    const int64_t n = row % s.locations;
    const float* a_row = a + row * g_count;
    const float* ga = gamma_a + n * g_count;
    const float* ba = beta_a + n * g_count;
    float mean, rstd;
    moments(a_row, g_count, eps, &mean, &rstd);
    for (int64_t k = 0; k < g_count; ++k) y[k] = (a_row[k] - mean) * rstd * ga[k] + ba[k];

    float q[64];  // the dynamic kernel Q (softmax over W <= 64 entries)
    if (memory_conv) {
      float top = y[4 * m];
      for (int64_t w = 1; w < w_count; ++w) top = std::fmax(top, y[4 * m + w]);
      float total = 0.0f;
      for (int64_t w = 0; w < w_count; ++w) {
        q[w] = std::exp(y[4 * m + w] - top);
        total += q[w];
      }
      for (int64_t w = 0; w < w_count; ++w) q[w] /= total;
    } else {
      q[0] = 1.0f;
    }

    const float* win = windows + row * w_count * m;
    const int64_t out = (row / s.locations) * s.level_rows + n;  // the row's place in its level
    float* c_row = c + out * m;
    for (int64_t k = 0; k < m; ++k) c_row[k] = q[0] * win[k];
    for (int64_t w = 1; w < w_count; ++w) {
      const float qw = q[w];
      const float* src = win + w * m;
      for (int64_t k = 0; k < m; ++k) c_row[k] += qw * src[k];
    }
    const float* gate_g = y;
    const float* gate_i = y + m;
    const float* gate_f = y + 2 * m;
    for (int64_t k = 0; k < m; ++k) {
      c_row[k] = tanh_approx(gate_g[k]) * sigmoid(gate_i[k]) + c_row[k] * sigmoid(gate_f[k]);
    }

    moments(c_row, m, eps, &mean, &rstd);
    const float* gc = gamma_c + n * m;
    const float* bc = beta_c + n * m;
    const float* gate_o = y + 3 * m;
    float* h_row = h + out * m;
    for (int64_t k = 0; k < m; ++k) {
      h_row[k] = tanh_approx((c_row[k] - mean) * rstd * gc[k] + bc[k]) * sigmoid(gate_o[k]);
    }
  }
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string text = "(";
  for (size_t k = 0; k < shape.size(); ++k) text += (k ? ", " : "") + std::to_string(shape[k]);
  return text + ")";
}

struct LstmCellKernel {
  float eps = 1e-5f;

  OrtStatusPtr ComputeV2(OrtKernelContext* raw) {
    try {
      compute(raw);
      return nullptr;
    } catch (const Ort::Exception& error) {
      return Ort::GetApi().CreateStatus(error.GetOrtErrorCode(), error.what());
    } catch (const std::exception& error) {
      return Ort::GetApi().CreateStatus(ORT_FAIL, error.what());
    }
  }

  void compute(OrtKernelContext* raw) {
    Ort::KernelContext context(raw);
    const auto a = context.GetInput(0);
    const auto windows = context.GetInput(1);
    const auto a_shape = a.GetTensorTypeAndShapeInfo().GetShape();
    const auto w_shape = windows.GetTensorTypeAndShapeInfo().GetShape();
    // (B, N, G) with (B, N, W, M), or (B, G) with (B, W, M) for one location
    const bool one = a_shape.size() == 2;
    if (!((a_shape.size() == 3 && w_shape.size() == 4) || (one && w_shape.size() == 3)) || w_shape[0] != a_shape[0] ||
        (!one && w_shape[1] != a_shape[1])) {
      throw Ort::Exception("LstmCell: expected a (B, N, G) with windows (B, N, W, M), or a (B, G) with windows "
                           "(B, W, M); got a " + shape_text(a_shape) + " and windows " + shape_text(w_shape),
                           ORT_INVALID_ARGUMENT);
    }
    const int64_t batch = a_shape[0], locations = one ? 1 : a_shape[1];
    Sizes s{batch * locations, locations, a_shape.back(), w_shape.back(), w_shape[w_shape.size() - 2], locations};
    const bool memory_conv = s.gates > 4 * s.channels;
    if (s.gates < 4 * s.channels || (memory_conv ? s.gates - 4 * s.channels != s.window : s.window != 1) ||
        s.window > 64) {
      throw Ort::Exception("LstmCell: expected G = 4M + W (memory-cell convolution, W <= 64) or G = 4M and W = 1, "
                           "got G = " + std::to_string(s.gates) + ", M = " + std::to_string(s.channels) +
                               ", W = " + std::to_string(s.window),
                           ORT_INVALID_ARGUMENT);
    }
    const std::vector<int64_t> gate_params{s.locations, s.gates}, cell_params{s.locations, s.channels};
    const float* params[4];
    for (size_t k = 0; k < 4; ++k) {
      const auto value = context.GetInput(2 + k);
      const auto shape = value.GetTensorTypeAndShapeInfo().GetShape();
      if (shape != (k < 2 ? gate_params : cell_params)) {
        throw Ort::Exception("LstmCell: input " + std::to_string(2 + k) + " should be " +
                                 shape_text(k < 2 ? gate_params : cell_params) + ", got " + shape_text(shape),
                             ORT_INVALID_ARGUMENT);
      }
      params[k] = value.GetTensorData<float>();
    }
    // optional kept_h, kept_c (B, n, M): the rest of the level, after the band
    const float* kept[2] = {nullptr, nullptr};
    int64_t kept_rows = 0;
    if (context.GetInputCount() > 6) {
      for (size_t k = 0; k < 2; ++k) {
        const auto value = context.GetInput(6 + k);
        if (!value) continue;
        const auto shape = value.GetTensorTypeAndShapeInfo().GetShape();
        if (shape.size() != 3 || shape[0] != batch || shape[2] != s.channels || (k == 1 && shape[1] != kept_rows)) {
          throw Ort::Exception("LstmCell: kept_h and kept_c should both be (B, n, M) with B = " + std::to_string(batch) +
                                   ", M = " + std::to_string(s.channels) + ", got " + shape_text(shape),
                               ORT_INVALID_ARGUMENT);
        }
        kept_rows = shape[1];
        kept[k] = value.GetTensorData<float>();
      }
      if ((kept[0] == nullptr) != (kept[1] == nullptr)) {
        throw Ort::Exception("LstmCell: give both kept_h and kept_c, or neither", ORT_INVALID_ARGUMENT);
      }
    }
    const int64_t m = s.channels, level_rows = locations + kept_rows;
    s.level_rows = level_rows;
    auto h = context.GetOutput(0, {batch, level_rows, m});
    auto c = context.GetOutput(1, {batch, level_rows, m});
    auto h_band = context.GetOutput(2, {batch, locations * m});
    if (batch == 0) return;
    float* h_out = h.GetTensorMutableData<float>();
    float* c_out = c.GetTensorMutableData<float>();
    std::vector<float> scratch(static_cast<size_t>(s.gates));
    cell_rows(s, eps, a.GetTensorData<float>(), windows.GetTensorData<float>(), params[0], params[1], params[2],
              params[3], h_out, c_out, scratch.data());
    const int64_t band = locations * m, stride = level_rows * m;
    if (kept_rows > 0) {  // the kept cone after the band, sequence by sequence
      const int64_t rest = kept_rows * m;
      for (int64_t b = 0; b < batch; ++b) {
        std::memcpy(h_out + b * stride + band, kept[0] + b * rest, sizeof(float) * rest);
        std::memcpy(c_out + b * stride + band, kept[1] + b * rest, sizeof(float) * rest);
      }
    }
    float* flat = h_band.GetTensorMutableData<float>();
    for (int64_t b = 0; b < batch; ++b) std::memcpy(flat + b * band, h_out + b * stride, sizeof(float) * band);
  }
};

struct LstmCellOp : Ort::CustomOpBase<LstmCellOp, LstmCellKernel, true> {
  OrtStatusPtr CreateKernelV2(const OrtApi& /*api*/, const OrtKernelInfo* info, void** kernel) const {
    try {
      auto made = new LstmCellKernel();
      made->eps = Ort::ConstKernelInfo(info).GetAttribute<float>("eps");
      *kernel = made;
      return nullptr;
    } catch (const Ort::Exception& error) {
      return Ort::GetApi().CreateStatus(error.GetOrtErrorCode(), error.what());
    }
  }
  const char* GetName() const { return "LstmCell"; }
  const char* GetExecutionProviderType() const { return "CPUExecutionProvider"; }
  size_t GetInputTypeCount() const { return 8; }
  ONNXTensorElementDataType GetInputType(size_t /*index*/) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t index) const {
    return index < 6 ? INPUT_OUTPUT_REQUIRED : INPUT_OUTPUT_OPTIONAL;
  }
  size_t GetOutputTypeCount() const { return 3; }
  ONNXTensorElementDataType GetOutputType(size_t /*index*/) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }
};

// Domains must outlive every session that uses them: kept for the life of the process.
std::mutex domains_lock;
std::vector<Ort::CustomOpDomain>& domains() {
  static auto* kept = new std::vector<Ort::CustomOpDomain>();
  return *kept;
}

}  // namespace

extern "C" __attribute__((visibility("default"))) OrtStatus* ORT_API_CALL
RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* api_base) {
  const OrtApi* api = api_base->GetApi(ORT_API_VERSION);
  if (api == nullptr) {  // a runtime older than the headers; API version 1 has CreateStatus
    return api_base->GetApi(1)->CreateStatus(ORT_NOT_IMPLEMENTED, "tlstm ops: this ONNX Runtime is older than 1.21");
  }
  Ort::InitApi(api);
  static LstmCellOp op;
  try {
    Ort::CustomOpDomain domain(kDomain);
    domain.Add(&op);
    Ort::UnownedSessionOptions(options).Add(domain);
    std::lock_guard<std::mutex> guard(domains_lock);
    domains().push_back(std::move(domain));
    return nullptr;
  } catch (const Ort::Exception& error) {
    return api->CreateStatus(error.GetOrtErrorCode(), error.what());
  }
}
