// LSTM kernels for the CPU, as XLA FFI custom calls: one layer over a
// whole sequence, forward (LstmForward, keeping what the backward pass
// reads; LstmInfer, keeping only the outputs) and backward
// (LstmBackward), and a stack of cells with a linear head decoding
// free-running (LstmDecode).
//
// Arrays are time-major and row-major: xs [T, B, F], hs and cs [T, B, H],
// acts [T, B, 4H] (the activated gates i, f, g, o, as Flax orders them).
// The kernel w is [F + H, 4H], multiplying [x, h_prev]; the bias b is [4H].
//
// The batch's rows are independent, so they are cut into at most
// kMaxChunks chunks, of at least kMinChunkRows rows each, and the chunks
// are shared among threads. The weight gradients of each chunk are summed
// in chunk order afterwards: the chunks depend on the batch size alone,
// so the results do not depend on the thread count.

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace ffi = xla::ffi;

namespace {

constexpr int kLanes = 16;
constexpr int64_t kMinChunkRows = 16;
constexpr int64_t kMaxChunks = 8;

// 16 floats; unaligned loads and stores. GCC lowers it to AVX-512 or to
// pairs of AVX2 registers, as -march allows.
using Vec = float __attribute__((vector_size(4 * kLanes), aligned(4)));

inline Vec Load(const float* p) { return *reinterpret_cast<const Vec*>(p); }
inline void Store(float* p, Vec v) { *reinterpret_cast<Vec*>(p) = v; }

// out[r, j] = init[j] (or out[r, j] if init is null) + sum_i a[r, i] m[i, j]
// for `rows` rows and the columns j in [begin, end); a has row stride lda,
// m n, out ldo. The rows are a template argument so that the accumulators
// stay in registers.
template <int rows>
void AddRowsTimesMatrix(const float* a, int64_t lda, const float* m,
                        int64_t k, int64_t n, int64_t begin, int64_t end,
                        const float* init, float* out, int64_t ldo) {
  auto start = [&](int r, int64_t j) {
    return Load((init ? init : out + r * ldo) + j);
  };
  int64_t j = begin;
  for (; j + 4 * kLanes <= end; j += 4 * kLanes) {
    Vec acc[rows][4];
    for (int r = 0; r < rows; ++r)
      for (int v = 0; v < 4; ++v) acc[r][v] = start(r, j + v * kLanes);
    for (int64_t i = 0; i < k; ++i) {
      const float* row = m + i * n + j;
      Vec m0 = Load(row), m1 = Load(row + kLanes),
          m2 = Load(row + 2 * kLanes), m3 = Load(row + 3 * kLanes);
      // Held in registers: folded into each row's multiply-add instead,
      // every load would be repeated once per row.
#if defined(__x86_64__)
      asm("" : "+v"(m0), "+v"(m1), "+v"(m2), "+v"(m3));
#endif
      for (int r = 0; r < rows; ++r) {
        float s = a[r * lda + i];
        acc[r][0] += s * m0;
        acc[r][1] += s * m1;
        acc[r][2] += s * m2;
        acc[r][3] += s * m3;
      }
    }
    for (int r = 0; r < rows; ++r)
      for (int v = 0; v < 4; ++v)
        Store(out + r * ldo + j + v * kLanes, acc[r][v]);
  }
  for (; j + kLanes <= end; j += kLanes) {
    Vec acc[rows];
    for (int r = 0; r < rows; ++r) acc[r] = start(r, j);
    for (int64_t i = 0; i < k; ++i) {
      Vec m0 = Load(m + i * n + j);
      for (int r = 0; r < rows; ++r) acc[r] += a[r * lda + i] * m0;
    }
    for (int r = 0; r < rows; ++r) Store(out + r * ldo + j, acc[r]);
  }
  for (; j < end; ++j) {
    for (int r = 0; r < rows; ++r) {
      float acc = init ? init[j] : out[r * ldo + j];
      for (int64_t i = 0; i < k; ++i) acc += a[r * lda + i] * m[i * n + j];
      out[r * ldo + j] = acc;
    }
  }
}

// AddRowsTimesMatrix over any number of rows and all n columns: four rows
// at a time, a panel of columns at a time, so that the panel of m (up to
// kPanelBytes) stays in cache while every row block passes over it.
void AddMatmul(int64_t rows, const float* a, int64_t lda, const float* m,
               int64_t k, int64_t n, const float* init, float* out,
               int64_t ldo) {
  constexpr int64_t kPanelBytes = 128 * 1024;
  const int64_t block = 4 * kLanes;
  const int64_t panel = std::max<int64_t>(
      block, kPanelBytes / (4 * k * block) * block);
  for (int64_t begin = 0; begin < n; begin += panel) {
    const int64_t end = std::min(n, begin + panel);
    int64_t r = 0;
    for (; r + 4 <= rows; r += 4)
      AddRowsTimesMatrix<4>(a + r * lda, lda, m, k, n, begin, end, init,
                            out + r * ldo, ldo);
    const float* a_rest = a + r * lda;
    float* out_rest = out + r * ldo;
    switch (rows - r) {
      case 3:
        AddRowsTimesMatrix<3>(a_rest, lda, m, k, n, begin, end, init,
                              out_rest, ldo);
        break;
      case 2:
        AddRowsTimesMatrix<2>(a_rest, lda, m, k, n, begin, end, init,
                              out_rest, ldo);
        break;
      case 1:
        AddRowsTimesMatrix<1>(a_rest, lda, m, k, n, begin, end, init,
                              out_rest, ldo);
        break;
    }
  }
}

// exp(x) to about one ulp by Cephes' polynomial, in a form GCC
// vectorizes (with -fno-trapping-math). A NaN stays NaN, so a diverged
// model still shows a NaN loss.
inline float Exp(float x) {
  x = x < -87.3f ? -87.3f : x;
  x = x > 88.3f ? 88.3f : x;
  float n = __builtin_floorf(x * 1.44269504088896341f + 0.5f);
  x = x - n * 0.693359375f + n * 2.12194440e-4f;
  n = n == n ? n : 0.0f;  // converting a NaN to int is undefined
  float y = 1.9875691500e-4f;
  y = y * x + 1.3981999507e-3f;
  y = y * x + 8.3334519073e-3f;
  y = y * x + 4.1665795894e-2f;
  y = y * x + 1.6666665459e-1f;
  y = y * x + 5.0000001201e-1f;
  y = y * x * x + x + 1.0f;
  int32_t two_to_n = (static_cast<int32_t>(n) + 127) << 23;
  return y * __builtin_bit_cast(float, two_to_n);
}

inline float Sigmoid(float x) { return 1.0f / (1.0f + Exp(-x)); }
inline float Tanh(float x) { return 2.0f / (1.0f + Exp(-2.0f * x)) - 1.0f; }

#if defined(__AVX512F__)
// Exp, Sigmoid and Tanh of 16 lanes: the scalar versions' steps, with
// one vscalefps for the multiply by 2^n, where GCC's vectorization of
// the scalar code spends five instructions and a guard against NaN. The
// clamps' operand order keeps a NaN a NaN. Each fused multiply-add sits
// where GCC (-ffp-contract=fast) fuses the scalar code, here and in the
// gates below, so the lanes round as the scalar loop that takes the
// units left over (a test compares the two).
inline __m512 Exp16(__m512 x) {
  x = _mm512_max_ps(_mm512_set1_ps(-87.3f), x);
  x = _mm512_min_ps(_mm512_set1_ps(88.3f), x);
  const __m512 n = _mm512_roundscale_ps(
      _mm512_fmadd_ps(x, _mm512_set1_ps(1.44269504088896341f),
                      _mm512_set1_ps(0.5f)),
      _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
  x = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  x = _mm512_fmadd_ps(n, _mm512_set1_ps(2.12194440e-4f), x);
  __m512 y = _mm512_set1_ps(1.9875691500e-4f);
  for (float c : {1.3981999507e-3f, 8.3334519073e-3f, 4.1665795894e-2f,
                  1.6666665459e-1f, 5.0000001201e-1f})
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(c));
  y = _mm512_fmadd_ps(_mm512_mul_ps(y, x), x, x);
  return _mm512_scalef_ps(_mm512_add_ps(y, _mm512_set1_ps(1.0f)), n);
}

inline __m512 Sigmoid16(__m512 x) {
  const __m512 one = _mm512_set1_ps(1.0f);
  return _mm512_div_ps(one, _mm512_add_ps(one, Exp16(_mm512_sub_ps(
                                   _mm512_setzero_ps(), x))));
}

inline __m512 Tanh16(__m512 x) {
  const __m512 one = _mm512_set1_ps(1.0f);
  const __m512 e = Exp16(_mm512_mul_ps(_mm512_set1_ps(-2.0f), x));
  return _mm512_sub_ps(
      _mm512_div_ps(_mm512_set1_ps(2.0f), _mm512_add_ps(one, e)), one);
}
#endif

// One row's step from its gate pre-activations p [4H]: writes the
// activated gates a [4H] and the new cell c and hidden state h [H].
void ForwardGates(const float* __restrict p, const float* __restrict c_prev,
                  float* __restrict a, float* __restrict c,
                  float* __restrict h, int64_t hidden) {
  int64_t u = 0;
#if defined(__AVX512F__)
  for (; u + kLanes <= hidden; u += kLanes) {
    const __m512 i = Sigmoid16(_mm512_loadu_ps(p + u)),
                 f = Sigmoid16(_mm512_loadu_ps(p + hidden + u)),
                 g = Tanh16(_mm512_loadu_ps(p + 2 * hidden + u)),
                 o = Sigmoid16(_mm512_loadu_ps(p + 3 * hidden + u));
    const __m512 cu =
        _mm512_fmadd_ps(f, _mm512_loadu_ps(c_prev + u), _mm512_mul_ps(i, g));
    _mm512_storeu_ps(a + u, i);
    _mm512_storeu_ps(a + hidden + u, f);
    _mm512_storeu_ps(a + 2 * hidden + u, g);
    _mm512_storeu_ps(a + 3 * hidden + u, o);
    _mm512_storeu_ps(c + u, cu);
    _mm512_storeu_ps(h + u, _mm512_mul_ps(o, Tanh16(cu)));
  }
#endif
  for (; u < hidden; ++u) {
    float i = Sigmoid(p[u]), f = Sigmoid(p[hidden + u]),
          g = Tanh(p[2 * hidden + u]), o = Sigmoid(p[3 * hidden + u]);
    float cu = f * c_prev[u] + i * g;
    a[u] = i;
    a[hidden + u] = f;
    a[2 * hidden + u] = g;
    a[3 * hidden + u] = o;
    c[u] = cu;
    h[u] = o * Tanh(cu);
  }
}

// One row's step back: from the gradients reaching h (dh) and c (dc, in
// and out) to those of the gate pre-activations d [4H].
void BackwardGates(const float* __restrict a, const float* __restrict c,
                   const float* __restrict c_prev,
                   const float* __restrict dh, float* __restrict dc,
                   float* __restrict d, int64_t hidden) {
  int64_t u = 0;
#if defined(__AVX512F__)
  // Products as operators, in the order of the scalar lines below.
  const __m512 one = _mm512_set1_ps(1.0f);
  for (; u + kLanes <= hidden; u += kLanes) {
    const __m512 i = _mm512_loadu_ps(a + u),
                 f = _mm512_loadu_ps(a + hidden + u),
                 g = _mm512_loadu_ps(a + 2 * hidden + u),
                 o = _mm512_loadu_ps(a + 3 * hidden + u);
    const __m512 tc = Tanh16(_mm512_loadu_ps(c + u));
    const __m512 dhu = _mm512_loadu_ps(dh + u);
    const __m512 dcu = _mm512_fmadd_ps(dhu * o, _mm512_fnmadd_ps(tc, tc, one),
                                       _mm512_loadu_ps(dc + u));
    _mm512_storeu_ps(d + u, dcu * g * i * (one - i));
    _mm512_storeu_ps(d + hidden + u,
                     dcu * _mm512_loadu_ps(c_prev + u) * f * (one - f));
    _mm512_storeu_ps(d + 2 * hidden + u,
                     dcu * i * _mm512_fnmadd_ps(g, g, one));
    _mm512_storeu_ps(d + 3 * hidden + u, dhu * tc * o * (one - o));
    _mm512_storeu_ps(dc + u, dcu * f);
  }
#endif
  for (; u < hidden; ++u) {
    float i = a[u], f = a[hidden + u], g = a[2 * hidden + u],
          o = a[3 * hidden + u];
    float tc = Tanh(c[u]);
    float dcu = dc[u] + dh[u] * o * (1.0f - tc * tc);
    d[u] = dcu * g * i * (1.0f - i);
    d[hidden + u] = dcu * c_prev[u] * f * (1.0f - f);
    d[2 * hidden + u] = dcu * i * (1.0f - g * g);
    d[3 * hidden + u] = dh[u] * tc * o * (1.0f - o);
    dc[u] = dcu * f;
  }
}

struct Shape {
  int64_t time, batch, features, hidden;

  int64_t width() const { return features + hidden; }  // of [x, h_prev]
  int64_t gates() const { return 4 * hidden; }
  int64_t chunk_rows() const {  // a multiple of the matmul's 4 rows
    const int64_t even = (batch + kMaxChunks - 1) / kMaxChunks;
    return std::max(kMinChunkRows, (even + 3) / 4 * 4);
  }
  int64_t chunks() const { return (batch + chunk_rows() - 1) / chunk_rows(); }
};

// Calls work(chunk, first_row, end_row) for every chunk: on this thread
// and on up to threads - 1 tasks of XLA's own pool (threads 0: one per
// thread of the pool), which take chunks as they come free. A task the
// pool starts late, busy with a run beside this one, finds none left.
template <typename Work>
void ForEachChunk(const Shape& s, int64_t threads, ffi::ThreadPool& pool,
                  Work& work) {
  struct Progress {
    std::atomic<int64_t> next{0}, done{0};
  };
  auto progress = std::make_shared<Progress>();
  const int64_t chunks = s.chunks(), rows = s.chunk_rows(), batch = s.batch;
  auto take_chunks = [progress, chunks, rows, batch, &work] {
    for (int64_t q; (q = progress->next.fetch_add(1)) < chunks;) {
      work(q, q * rows, std::min(batch, (q + 1) * rows));
      progress->done.fetch_add(1, std::memory_order_release);
    }
  };
  if (threads <= 0) threads = std::max<int64_t>(1, pool.num_threads());
  const int64_t helpers = std::min(threads, chunks) - 1;
  for (int64_t p = 0; p < helpers; ++p)
    pool.Schedule(decltype(take_chunks)(take_chunks));
  take_chunks();
  while (progress->done.load(std::memory_order_acquire) < chunks)
    std::this_thread::yield();
}

// Copies [x_t, h_prev] of rows [begin, end) into xh [end - begin, F + H].
void GatherInputs(const Shape& s, const float* xs, const float* h0,
                  const float* hs, int64_t t, int64_t begin, int64_t end,
                  float* xh) {
  const int64_t F = s.features, H = s.hidden, K = s.width();
  for (int64_t row = begin; row < end; ++row) {
    const float* h = t ? hs + ((t - 1) * s.batch + row) * H : h0 + row * H;
    float* out = xh + (row - begin) * K;
    std::memcpy(out, xs + (t * s.batch + row) * F, F * sizeof(float));
    std::memcpy(out + F, h, H * sizeof(float));
  }
}

// With acts and cs, every step's gates and c, which the backward pass
// reads. Without them (null: inference), the gates go to scratch and
// each row's c only to the next step, the last to c_last (given only
// then): storing what nothing reads cost 7-9% of a forecast.
void ForwardRows(const Shape& s, const float* xs, const float* h0,
                 const float* c0, const float* w, const float* b, float* hs,
                 float* cs, float* acts, float* c_last, int64_t begin,
                 int64_t end) {
  const int64_t H = s.hidden, K = s.width(), G = s.gates();
  const int64_t rows = end - begin;
  std::vector<float> xh(rows * K), pre(rows * G), gates(acts ? 0 : G),
      c_kept(cs ? 0 : 2 * rows * H);
  for (int64_t t = 0; t < s.time; ++t) {
    GatherInputs(s, xs, h0, hs, t, begin, end, xh.data());
    AddMatmul(rows, xh.data(), K, w, K, G, b, pre.data(), G);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t at = t * s.batch + row, r = row - begin;
      const float* c_prev;
      float* c;
      if (cs) {
        c_prev = t ? cs + (at - s.batch) * H : c0 + row * H;
        c = cs + at * H;
      } else {
        c_prev = t ? &c_kept[((t - 1) % 2 * rows + r) * H] : c0 + row * H;
        c = &c_kept[(t % 2 * rows + r) * H];
      }
      ForwardGates(&pre[r * G], c_prev, acts ? acts + at * G : gates.data(),
                   c, hs + at * H, H);
    }
  }
  if (c_last == nullptr) return;
  for (int64_t row = begin; row < end; ++row) {
    const int64_t r = row - begin, last = s.time - 1;
    const float* c =
        last < 0 ? c0 + row * H : &c_kept[(last % 2 * rows + r) * H];
    std::memcpy(c_last + row * H, c, H * sizeof(float));
  }
}

// wt is w transposed, [4H, width_padded], its extra columns zero; dw
// [F + H, 4H] and db [4H] are this chunk's own, zeroed by the caller.
void BackwardRows(const Shape& s, const float* xs, const float* h0,
                  const float* c0, const float* wt, int64_t width_padded,
                  const float* hs, const float* cs, const float* acts,
                  const float* dhs, const float* dc_last, float* dxs,
                  float* dh0, float* dc0, float* dw, float* db, int64_t begin,
                  int64_t end) {
  const int64_t F = s.features, H = s.hidden, K = s.width(), G = s.gates();
  const int64_t rows = end - begin;
  std::vector<float> xh(rows * K), xh_t(K * rows), d(rows * G),
      dxh(rows * width_padded), dh_in(rows * H, 0.0f), dh(rows * H),
      dc(rows * H);
  for (int64_t row = begin; row < end; ++row)
    std::memcpy(&dc[(row - begin) * H], dc_last + row * H, H * sizeof(float));

  for (int64_t t = s.time - 1; t >= 0; --t) {
    GatherInputs(s, xs, h0, hs, t, begin, end, xh.data());
    for (int64_t row = begin; row < end; ++row) {
      const int64_t at = t * s.batch + row, r = row - begin;
      const float* c_prev = t ? cs + (at - s.batch) * H : c0 + row * H;
      for (int64_t u = 0; u < H; ++u)
        dh[r * H + u] = dhs[at * H + u] + dh_in[r * H + u];
      BackwardGates(acts + at * G, cs + at * H, c_prev, &dh[r * H],
                    &dc[r * H], &d[r * G], H);
    }

    // [dx, dh_prev] = d @ w^T
    std::fill(dxh.begin(), dxh.end(), 0.0f);
    AddMatmul(rows, d.data(), G, wt, G, width_padded, nullptr, dxh.data(),
              width_padded);
    for (int64_t row = begin; row < end; ++row) {
      const float* from = &dxh[(row - begin) * width_padded];
      std::memcpy(dxs + (t * s.batch + row) * F, from, F * sizeof(float));
      std::memcpy(&dh_in[(row - begin) * H], from + F, H * sizeof(float));
    }

    // dw += [x, h_prev]^T @ d, db += the column sums of d
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t i = 0; i < K; ++i) xh_t[i * rows + r] = xh[r * K + i];
    AddMatmul(K, xh_t.data(), rows, d.data(), rows, G, nullptr, dw, G);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < G; ++j) db[j] += d[r * G + j];
  }

  for (int64_t row = begin; row < end; ++row) {
    const int64_t r = row - begin;
    std::memcpy(dh0 + row * H, &dh_in[r * H], H * sizeof(float));
    std::memcpy(dc0 + row * H, &dc[r * H], H * sizeof(float));
  }
}

// One layer of a decoder: its state before the first step, c0 and h0
// [B, H], and its kernel w [F + H, 4H] and bias b [4H].
struct DecoderLayer {
  const float *c0, *h0, *w, *b;
  int64_t features;
};

// Free-running decoding of rows [begin, end) for `steps` steps: each step
// runs the layers, bottom first, from the previous value, and the head
// adds head_w . h_top + head_b to that value, which is the step's
// prediction (values [B, steps]) and the next step's input.
void DecodeRows(const Shape& s, const std::vector<DecoderLayer>& layers,
                const float* first, const float* head_w, float head_b,
                float* values, int64_t begin, int64_t end) {
  const int64_t H = s.hidden, G = s.gates(), rows = end - begin;
  const int64_t depth = static_cast<int64_t>(layers.size());
  int64_t widest = 0;
  for (const DecoderLayer& layer : layers)
    widest = std::max(widest, layer.features);
  std::vector<float> c(depth * rows * H), h(depth * rows * H),
      xh(rows * (widest + H)), pre(rows * G), acts(G), c_new(H),
      previous(first + begin, first + end);
  for (int64_t k = 0; k < depth; ++k)
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t from = (begin + r) * H, to = (k * rows + r) * H;
      std::memcpy(&c[to], layers[k].c0 + from, H * sizeof(float));
      std::memcpy(&h[to], layers[k].h0 + from, H * sizeof(float));
    }

  for (int64_t t = 0; t < s.time; ++t) {
    const float* x = previous.data();  // [rows, F], F = 1 at the bottom
    for (int64_t k = 0; k < depth; ++k) {
      const int64_t F = layers[k].features, K = F + H;
      float* ck = &c[k * rows * H];
      float* hk = &h[k * rows * H];
      for (int64_t r = 0; r < rows; ++r) {
        std::memcpy(&xh[r * K], x + r * F, F * sizeof(float));
        std::memcpy(&xh[r * K + F], hk + r * H, H * sizeof(float));
      }
      AddMatmul(rows, xh.data(), K, layers[k].w, K, G, layers[k].b,
                pre.data(), G);
      for (int64_t r = 0; r < rows; ++r) {
        ForwardGates(&pre[r * G], ck + r * H, acts.data(), c_new.data(),
                     hk + r * H, H);
        std::memcpy(ck + r * H, c_new.data(), H * sizeof(float));
      }
      x = hk;
    }
    for (int64_t r = 0; r < rows; ++r) {
      float change = 0.0f;
      for (int64_t u = 0; u < H; ++u) change += x[r * H + u] * head_w[u];
      previous[r] += change + head_b;
      values[(begin + r) * s.time + t] = previous[r];
    }
  }
}

using Buffer = ffi::Buffer<ffi::F32>;
using Result = ffi::ResultBuffer<ffi::F32>;

Shape ShapeOf(const Buffer& xs, const Buffer& h0) {
  auto x = xs.dimensions();
  return {x[0], x[1], x[2], h0.dimensions()[1]};
}

ffi::Error Forward(ffi::ThreadPool pool, Buffer xs, Buffer h0, Buffer c0,
                   Buffer w, Buffer b, Result hs, Result cs, Result acts,
                   int64_t threads) {
  const Shape s = ShapeOf(xs, h0);
  auto work = [&](int64_t, int64_t begin, int64_t end) {
    ForwardRows(s, xs.typed_data(), h0.typed_data(), c0.typed_data(),
                w.typed_data(), b.typed_data(), hs->typed_data(),
                cs->typed_data(), acts->typed_data(), nullptr, begin, end);
  };
  ForEachChunk(s, threads, pool, work);
  return ffi::Error::Success();
}

// The forward pass for inference: hs and the last c, no residuals.
ffi::Error Infer(ffi::ThreadPool pool, Buffer xs, Buffer h0, Buffer c0,
                 Buffer w, Buffer b, Result hs, Result c_last,
                 int64_t threads) {
  const Shape s = ShapeOf(xs, h0);
  auto work = [&](int64_t, int64_t begin, int64_t end) {
    ForwardRows(s, xs.typed_data(), h0.typed_data(), c0.typed_data(),
                w.typed_data(), b.typed_data(), hs->typed_data(), nullptr,
                nullptr, c_last->typed_data(), begin, end);
  };
  ForEachChunk(s, threads, pool, work);
  return ffi::Error::Success();
}

ffi::Error Backward(ffi::ThreadPool pool, Buffer xs, Buffer h0, Buffer c0,
                    Buffer w, Buffer hs, Buffer cs, Buffer acts, Buffer dhs,
                    Buffer dc_last, Result dxs, Result dh0, Result dc0,
                    Result dw, Result db, int64_t threads) {
  const Shape s = ShapeOf(xs, h0);
  const int64_t K = s.width(), G = s.gates();
  // Padded to whole vectors: no scalar tail in d @ w^T.
  const int64_t width_padded = (K + kLanes - 1) / kLanes * kLanes;
  std::vector<float> wt(G * width_padded, 0.0f);
  for (int64_t i = 0; i < K; ++i)
    for (int64_t j = 0; j < G; ++j)
      wt[j * width_padded + i] = w.typed_data()[i * G + j];

  const int64_t per_chunk = K * G + G;
  std::vector<float> partial(s.chunks() * per_chunk, 0.0f);
  auto work = [&](int64_t q, int64_t begin, int64_t end) {
    float* dw_chunk = &partial[q * per_chunk];
    BackwardRows(s, xs.typed_data(), h0.typed_data(), c0.typed_data(),
                 wt.data(), width_padded, hs.typed_data(), cs.typed_data(),
                 acts.typed_data(), dhs.typed_data(), dc_last.typed_data(),
                 dxs->typed_data(), dh0->typed_data(), dc0->typed_data(),
                 dw_chunk, dw_chunk + K * G, begin, end);
  };
  ForEachChunk(s, threads, pool, work);

  float* sum = dw->typed_data();  // dw and db, summed in chunk order
  std::memcpy(sum, partial.data(), K * G * sizeof(float));
  std::memcpy(db->typed_data(), partial.data() + K * G, G * sizeof(float));
  for (int64_t q = 1; q < s.chunks(); ++q) {
    const float* part = &partial[q * per_chunk];
    for (int64_t j = 0; j < K * G; ++j) sum[j] += part[j];
    for (int64_t j = 0; j < G; ++j) db->typed_data()[j] += part[K * G + j];
  }
  return ffi::Error::Success();
}

// The layers come as four buffers each: c0, h0, w and b.
ffi::Error Decode(ffi::ThreadPool pool, Buffer first, Buffer head_w,
                  Buffer head_b, ffi::RemainingArgs layer_buffers,
                  Result values, int64_t threads) {
  if (layer_buffers.size() == 0 || layer_buffers.size() % 4 != 0)
    return ffi::Error::InvalidArgument(
        "LstmDecode: c0, h0, w and b for each layer, got " +
        std::to_string(layer_buffers.size()) + " buffers");
  const int64_t head_hidden = head_w.dimensions()[0];
  std::vector<DecoderLayer> layers;
  for (size_t at = 0; at < layer_buffers.size(); at += 4) {
    auto c0 = layer_buffers.get<Buffer>(at);
    auto h0 = layer_buffers.get<Buffer>(at + 1);
    auto w = layer_buffers.get<Buffer>(at + 2);
    auto b = layer_buffers.get<Buffer>(at + 3);
    for (auto* part : {&c0, &h0, &w, &b})
      if (part->has_error()) return part->error();
    const int64_t hidden = h0->dimensions()[1];
    if (hidden != head_hidden)
      return ffi::Error::InvalidArgument(
          "LstmDecode: every layer's hidden size must be the head's, " +
          std::to_string(head_hidden) + ", got " + std::to_string(hidden));
    layers.push_back({c0->typed_data(), h0->typed_data(), w->typed_data(),
                      b->typed_data(), w->dimensions()[0] - hidden});
  }
  const int64_t batch = first.dimensions()[0];
  const Shape s{values->dimensions()[1], batch, 1, head_hidden};
  auto work = [&](int64_t, int64_t begin, int64_t end) {
    DecodeRows(s, layers, first.typed_data(), head_w.typed_data(),
               head_b.typed_data()[0], values->typed_data(), begin, end);
  };
  ForEachChunk(s, threads, pool, work);
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(LstmForward, Forward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<Buffer>()  // xs
                                  .Arg<Buffer>()  // h0
                                  .Arg<Buffer>()  // c0
                                  .Arg<Buffer>()  // w
                                  .Arg<Buffer>()  // b
                                  .Ret<Buffer>()  // hs
                                  .Ret<Buffer>()  // cs
                                  .Ret<Buffer>()  // acts
                                  .Attr<int64_t>("threads"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(LstmInfer, Infer,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<Buffer>()  // xs
                                  .Arg<Buffer>()  // h0
                                  .Arg<Buffer>()  // c0
                                  .Arg<Buffer>()  // w
                                  .Arg<Buffer>()  // b
                                  .Ret<Buffer>()  // hs
                                  .Ret<Buffer>()  // c_last
                                  .Attr<int64_t>("threads"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(LstmBackward, Backward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<Buffer>()  // xs
                                  .Arg<Buffer>()  // h0
                                  .Arg<Buffer>()  // c0
                                  .Arg<Buffer>()  // w
                                  .Arg<Buffer>()  // hs
                                  .Arg<Buffer>()  // cs
                                  .Arg<Buffer>()  // acts
                                  .Arg<Buffer>()  // dhs
                                  .Arg<Buffer>()  // dc_last
                                  .Ret<Buffer>()  // dxs
                                  .Ret<Buffer>()  // dh0
                                  .Ret<Buffer>()  // dc0
                                  .Ret<Buffer>()  // dw
                                  .Ret<Buffer>()  // db
                                  .Attr<int64_t>("threads"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(LstmDecode, Decode,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<Buffer>()  // first
                                  .Arg<Buffer>()  // head_w
                                  .Arg<Buffer>()  // head_b
                                  .RemainingArgs()  // c0, h0, w, b a layer
                                  .Ret<Buffer>()  // values
                                  .Attr<int64_t>("threads"));
