// The CPU sweep of small dense nets with every activation in registers.
//
// A program of Linear layers, each followed by at most one ReLU or LeakyReLU and the last by
// none, whose hidden layers are at most kSmallNetMaxWidth wide (genni/sweep.h; the paper's
// two-neuron net, small MLPs), spends the general driver's time on loop overhead and on
// writing each activation to memory and reading it back. Here a block of V SIMD vectors of
// samples runs the whole forward pass and the loss in registers: the hidden activations
// h[H][V] (H, the hidden width rounded up to a power of two, is a template argument, so
// the compiler keeps h in vector registers), the activation applied to a layer's
// accumulators before the next layer reads them, and the squared error summed per lane.
// The grid point's parameters are built once (grid_param, genni/params.h) into a packed
// layout with each hidden layer padded to H units with zero weights and biases, so every
// hidden layer is the same unrolled code and the padded units add nothing.
//
// Instructions per vector of samples are what the time goes to: ReLU is one max
// instruction, the last, partial block runs apart so that full blocks carry no mask, and a
// first layer with one input and no bias followed by ReLU (the paper's nets) reads its
// activations from rows made once per sweep (segment() says why that is exact), so that
// the two-neuron net costs 6 floating-point instructions a vector: 2 multiplies, 2
// multiply-adds, the subtraction of the target and 1 multiply-add into the sum. The
// output is computed in torch's order, bias first, then the target subtracted, so that J
// is exactly 0 where the net reproduces the targets it made (starting from the negated
// target saves one instruction but leaves the rounding of the products in J: 1e-33
// instead of 0 at θ itself).
//
// Sum order, fixed by the program and N alone (not by the threads, the grid or its
// chunks): the samples are cut into segments of kSmallNetSegmentBlocks blocks; within a
// segment each lane sums its squared errors in S, then the lanes are added in double in
// lane order; J is the segments' double sums added in segment order, divided by N.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__SSE2__)
#include <immintrin.h>
#endif

#include "../genni/ops.h"
#include "../genni/params.h"
#include "../genni/program.h"
#include "../genni/sweep.h"
#include "../genni/tile_steps.h"
#include "thread_pool.h"

namespace genni {

// Blocks of V vectors per segment: each lane sums this many squared errors in S before they
// join the double sum.
constexpr int kSmallNetSegmentBlocks = 64;

// Grid points per work item: each segment of samples is read from memory once per item and
// stays in the L1 cache while every point of the item runs on it.
constexpr int kSmallNetPointsPerItem = 16;

// Bytes per SIMD vector: the widest registers the build targets (GENNI_NATIVE=OFF: SSE2).
#if defined(__AVX512F__)
constexpr int kVectorBytes = 64;
#elif defined(__AVX__)
constexpr int kVectorBytes = 32;
#else
constexpr int kVectorBytes = 16;
#endif

// A GCC vector of S filling one register (an alias template cannot carry the attribute).
template <typename S>
struct VectorOf;
template <>
struct VectorOf<float> {
  typedef float type __attribute__((vector_size(kVectorBytes)));
};
template <>
struct VectorOf<double> {
  typedef double type __attribute__((vector_size(kVectorBytes)));
};
template <typename S>
using Lanes = typename VectorOf<S>::type;

// One Linear layer of a small net and the activation after it (kind -1: none).
struct SmallLayer {
  int in, out;
  int64_t weight, bias;  // offsets in the flat parameter vector (bias -1: none)
  int act;
  double slope;
  int64_t packed;  // offset of its weights in the packed layout
};

// How a program runs on this path (ok false: it does not).
struct SmallNetPlan {
  bool ok = false;
  int width = 0;  // H: the hidden width rounded up to a power of two
  int act = -1;   // the hidden layers' one activation kind, or -1 when they differ
  // The first layer has one input and no bias and ReLU follows it (the paper's nets): its
  // activations are |w| relu(x) or |w| relu(-x), from rows precomputed once per sweep.
  bool scalar_relu_first = false;
  std::vector<SmallLayer> layers;
  // packed[i] = params[source[i]], or 0 where source[i] is -1 (padding).
  std::vector<int64_t> source;
};

// The plan for `program`, or one with ok false. Packed layout per layer: the first layer's
// weights [in][H] (input-major) then bias [H]; each further hidden layer [H][H] then [H];
// the output layer [out][H] then bias [out].
inline SmallNetPlan small_net_plan(const Program& program) {
  SmallNetPlan plan;
  for (int i = 0; i < program.n_ops; ++i) {
    const Op& op = program.ops[i];
    if (op.kind != kLinear) return plan;
    SmallLayer layer{op.in_size(), op.out_c, op.weight, op.bias, -1, 0.0, 0};
    if (i + 1 < program.n_ops && is_activation(program.ops[i + 1].kind)) {
      layer.act = program.ops[i + 1].kind;
      // Tanh and sigmoid have no vector form here: lane by lane, each call spills every
      // register, slower than the general driver (0.8-0.9x measured).
      if (layer.act != kRelu && layer.act != kLeakyRelu) return plan;
      layer.slope = program.ops[i + 1].slope;
      ++i;
    }
    plan.layers.push_back(layer);
  }
  const int n = static_cast<int>(plan.layers.size());
  if (n < 2 || plan.layers[n - 1].act >= 0) return plan;  // the output layer is linear
  int hidden = 1;
  for (int k = 0; k + 1 < n; ++k) hidden = std::max(hidden, plan.layers[k].out);
  if (hidden > kSmallNetMaxWidth) return plan;
  int H = 2;  // a width of 1 runs as 2, with a zero unit: one fewer kernel to compile
  while (H < hidden) H *= 2;
  plan.width = H;
  plan.act = plan.layers[0].act;
  for (int k = 1; k + 1 < n; ++k) {
    const SmallLayer& l = plan.layers[k];
    if (l.act != plan.act || l.slope != plan.layers[0].slope) plan.act = -1;
  }
  for (int k = 0; k < n; ++k) {
    SmallLayer& l = plan.layers[k];
    l.packed = static_cast<int64_t>(plan.source.size());
    const bool first = k == 0, last = k + 1 == n;
    const int rows = first ? l.in : last ? l.out : H;  // packed rows, of H columns each
    const int units = last ? l.out : H;                // bias entries
    // Row r, column c: first and hidden layers (input r, unit c); output layer (output r,
    // input c). torch's weight is [out][in].
    for (int r = 0; r < rows; ++r) {
      for (int c = 0; c < H; ++c) {
        const int unit = last ? r : c, input = last ? c : r;
        const bool real = unit < l.out && input < l.in;
        plan.source.push_back(real ? l.weight + int64_t(unit) * l.in + input : -1);
      }
    }
    for (int u = 0; u < units; ++u)
      plan.source.push_back(l.bias >= 0 && u < l.out ? l.bias + u : -1);
  }
  const SmallLayer& first = plan.layers[0];
  plan.scalar_relu_first = first.in == 1 && first.bias < 0 && first.act == kRelu;
  plan.ok = true;
  return plan;
}

namespace small_net {

// {s, s, ..., s}: one broadcast instruction (a lane-by-lane fill compiles to inserts).
template <typename S, size_t... I>
inline Lanes<S> broadcast(S s, std::index_sequence<I...>) {
  return Lanes<S>{((void)I, s)...};
}
template <typename S>
inline Lanes<S> broadcast(S s) {
  return broadcast(s, std::make_index_sequence<kVectorBytes / sizeof(S)>{});
}

template <typename S>
inline Lanes<S> load(const S* p) {
  Lanes<S> v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// max(v, 0) lane by lane as one instruction: the same as relu_value (v > 0 ? v : 0) in
// every lane, NaN and -0 included, since max returns its second operand when either is NaN
// or both are zero; the compiler does not make a max of the comparison on its own.
template <typename S>
inline Lanes<S> relu_lanes(Lanes<S> v) {
#if defined(__AVX512F__)
  if constexpr (sizeof(S) == 4)
    return _mm512_max_ps(v, Lanes<S>{});
  else
    return _mm512_max_pd(v, Lanes<S>{});
#elif defined(__AVX__)
  if constexpr (sizeof(S) == 4)
    return _mm256_max_ps(v, Lanes<S>{});
  else
    return _mm256_max_pd(v, Lanes<S>{});
#elif defined(__SSE2__)
  if constexpr (sizeof(S) == 4)
    return _mm_max_ps(v, Lanes<S>{});
  else
    return _mm_max_pd(v, Lanes<S>{});
#else
  return relu_value<S>(v);
#endif
}

// The activation `kind` (kRelu, kLeakyRelu or -1: none) on H x V vectors, padding included
// (the next layer's zero weights ignore it); Act, when not -1, is `kind` known at compile
// time.
template <typename S, int Act, int H, int V>
inline void activate_all(Lanes<S> (&h)[H][V], int kind, S slope) {
  const int k = Act >= 0 ? Act : kind;
  if (k == kRelu) {
    for (int j = 0; j < H; ++j)
      for (int v = 0; v < V; ++v) h[j][v] = relu_lanes<S>(h[j][v]);
  } else if (k == kLeakyRelu) {
    for (int j = 0; j < H; ++j)
      for (int v = 0; v < V; ++v) h[j][v] = leaky_relu_value<S>(h[j][v], slope);
  }
}

// Adds to acc the squared errors of the block of V vectors of samples from sample n;
// Partial: the last block, whose lanes past N give 0. With plan.scalar_relu_first, unit j
// of the first layer is scale[j] times row[j] (relu(x) or relu(-x)). Inlined by force: as a call,
// once per block, the sums went through memory and the sweep ran 2x slower (GCC 12).
template <typename S, int H, int V, int Act, bool Partial>
__attribute__((always_inline)) inline void block(const SmallNetPlan& plan, const S* packed,
                                                 const S* x, const S* t, int64_t stride, int64_t n,
                                                 int64_t N, const S* const (&row)[H],
                                                 const S (&scale)[H], Lanes<S> (&acc)[V]) {
  using T = Lanes<S>;
  constexpr int kLanes = kVectorBytes / int(sizeof(S));
  const int n_layers = static_cast<int>(plan.layers.size());
  const SmallLayer& first = plan.layers[0];
  const SmallLayer& last = plan.layers[n_layers - 1];
  const S* w_first = packed + first.packed;
  const S* b_first = w_first + int64_t(first.in) * H;
  T h[H][V];
  if (plan.scalar_relu_first) {
    for (int j = 0; j < H; ++j) {
      const T w = broadcast(scale[j]);
      for (int v = 0; v < V; ++v) h[j][v] = w * load(row[j] + n + v * kLanes);
    }
  } else {
    for (int j = 0; j < H; ++j) {
      const T bias = broadcast(b_first[j]);
      for (int v = 0; v < V; ++v) h[j][v] = bias;
    }
    for (int i = 0; i < first.in; ++i) {
      T xv[V];
      for (int v = 0; v < V; ++v) xv[v] = load(x + i * stride + n + v * kLanes);
      for (int j = 0; j < H; ++j) {
        const T w = broadcast(w_first[i * H + j]);
        for (int v = 0; v < V; ++v) h[j][v] = w * xv[v] + h[j][v];
      }
    }
    activate_all<S, Act, H, V>(h, first.act, static_cast<S>(first.slope));
  }
  for (int k = 1; k + 1 < n_layers; ++k) {
    const SmallLayer& layer = plan.layers[k];
    const S* w = packed + layer.packed;
    T next[H][V];
    for (int j = 0; j < H; ++j) {
      const T bias = broadcast(w[H * H + j]);
      for (int v = 0; v < V; ++v) next[j][v] = bias;
    }
    for (int i = 0; i < H; ++i) {
      for (int j = 0; j < H; ++j) {
        const T wij = broadcast(w[i * H + j]);
        for (int v = 0; v < V; ++v) next[j][v] = wij * h[i][v] + next[j][v];
      }
    }
    activate_all<S, Act, H, V>(next, layer.act, static_cast<S>(layer.slope));
    for (int j = 0; j < H; ++j)
      for (int v = 0; v < V; ++v) h[j][v] = next[j][v];
  }
  const S* w_last = packed + last.packed;
  const S* b_last = w_last + int64_t(last.out) * H;
  for (int o = 0; o < last.out; ++o) {
    T e[V];
    const T bias = broadcast(b_last[o]);
    for (int v = 0; v < V; ++v) e[v] = bias;
    for (int j = 0; j < H; ++j) {
      const T w = broadcast(w_last[o * H + j]);
      for (int v = 0; v < V; ++v) e[v] = w * h[j][v] + e[v];
    }
    for (int v = 0; v < V; ++v) e[v] -= load(t + o * stride + n + v * kLanes);
    if constexpr (Partial) {
      for (int v = 0; v < V; ++v)
        for (int l = 0; l < kLanes; ++l)
          if (n + v * kLanes + l >= N) e[v][l] = S(0);
    }
    for (int v = 0; v < V; ++v) acc[v] = e[v] * e[v] + acc[v];
  }
}

// Sum of squared errors of blocks [b0, b1) of V vectors, lanes past N (in the last block)
// left out: each lane in S, then the lanes in double. With plan.scalar_relu_first, x holds
// relu(input) and relu(-input) as rows 0 and 1 (the input itself is never read).
//
// That shortcut is exact: relu(w x) is |w| relu(x) for w >= 0 and |w| relu(-x) for w < 0,
// bitwise, since rounding a product does not depend on the signs and a product with 0 is 0.
// Unit j's row is chosen once per grid point from the sign of w_j, and a sample costs one
// multiply per unit instead of a multiply and a max (the two-neuron net: 1.2x faster).
template <typename S, int H, int V, int Act>
double segment(const SmallNetPlan& plan, const S* packed, const S* x, const S* t, int64_t stride,
               int64_t b0, int64_t b1, int64_t N) {
  using T = Lanes<S>;
  constexpr int kLanes = kVectorBytes / int(sizeof(S));
  constexpr int kBlock = V * kLanes;
  const int64_t full = std::min(b1, N / kBlock);  // blocks with every lane a sample
  const S* row[H] = {};
  S scale[H] = {};
  if (plan.scalar_relu_first) {
    const S* w = packed + plan.layers[0].packed;
    for (int j = 0; j < H; ++j) {
      row[j] = x + (w[j] >= S(0) ? 0 : 1) * stride;
      scale[j] = std::abs(w[j]);
    }
  }
  T acc[V];
  for (int v = 0; v < V; ++v) acc[v] = T{};
  for (int64_t b = b0; b < full; ++b)
    block<S, H, V, Act, false>(plan, packed, x, t, stride, b * kBlock, N, row, scale, acc);
  if (full < b1)
    block<S, H, V, Act, true>(plan, packed, x, t, stride, full * kBlock, N, row, scale, acc);
  double sum = 0.0;
  for (int v = 0; v < V; ++v)
    for (int l = 0; l < kLanes; ++l) sum += double(acc[v][l]);
  return sum;
}

// Vectors per block: enough independent chains to hide the FMA latency, few enough that
// h and the next layer's accumulators stay in the 16 vector registers of AVX2 and SSE2.
// For H = 2, 3 vectors ran 4-6 % faster than 2 and 20 % faster than 4 (the two-neuron net,
// float32, AVX2), whose h, sums and weights no longer fit the registers.
template <int H>
constexpr int vectors_per_block() {
  return H <= 2 ? 3 : H <= 4 ? 2 : 1;
}

}  // namespace small_net

// J for every grid point of `a` (mean squared error, summed in double) on the small-net
// path: `plan` from small_net_plan(program), H = plan.width, Act = plan.act or -1.
template <typename S, int H, int Act>
void sweep_small_net(const SmallNetPlan& plan, const SweepArgs<S>& a, double* loss, int threads) {
  constexpr int V = small_net::vectors_per_block<H>();
  constexpr int kLanes = kVectorBytes / int(sizeof(S));
  constexpr int kBlock = V * kLanes;
  const int64_t G = a.num_points, N = a.num_samples;
  const int in = plan.layers.front().in, out = plan.layers.back().out;
  const int64_t blocks = (N + kBlock - 1) / kBlock;
  const int64_t stride = blocks * kBlock;
  const int64_t segments = (blocks + kSmallNetSegmentBlocks - 1) / kSmallNetSegmentBlocks;

  // Feature-major probes (with plan.scalar_relu_first, relu of the probe and of its
  // negative instead) and targets, zero past N.
  const int x_rows = plan.scalar_relu_first ? 2 : in;
  std::vector<S> x(int64_t(x_rows) * stride, S(0)), t(int64_t(out) * stride, S(0));
  bool eager = false;  // thread_pool.h
  const int64_t rows_per_item = 4096;
  ThreadPool::run((N + rows_per_item - 1) / rows_per_item, threads, eager, [&](int64_t item, int) {
    const int64_t end = std::min(N, (item + 1) * rows_per_item);
    for (int64_t n = item * rows_per_item; n < end; ++n) {
      if (plan.scalar_relu_first) {
        x[n] = relu_value<S>(a.inputs[n]);
        x[stride + n] = relu_value<S>(-a.inputs[n]);
      } else {
        for (int f = 0; f < in; ++f) x[f * stride + n] = a.inputs[n * in + f];
      }
      for (int o = 0; o < out; ++o) t[o * stride + n] = a.targets[n * out + o];
    }
  });

  const int64_t packed_size = static_cast<int64_t>(plan.source.size());
  auto build = [&](S* packed, int64_t g) {
    for (int64_t i = 0; i < packed_size; ++i)
      packed[i] = plan.source[i] >= 0 ? grid_param(a, g, plan.source[i]) : S(0);
  };
  auto run_segment = [&](const S* packed, int64_t s) {
    const int64_t b0 = s * kSmallNetSegmentBlocks;
    const int64_t b1 = std::min(blocks, b0 + kSmallNetSegmentBlocks);
    return small_net::segment<S, H, V, Act>(plan, packed, x.data(), t.data(), stride, b0, b1, N);
  };

  // Few points: one item per (point, segment), the segments' sums kept and added in order
  // afterwards; many points: one item per kSmallNetPointsPerItem points, each adding its
  // segments in the same order.
  const bool split = G < 8 * int64_t(threads) && segments > 1;
  if (split) {
    struct alignas(64) Own {
      std::vector<S> packed;
      int64_t built = -1;
    };
    std::vector<Own> own(threads);
    for (Own& o : own) o.packed.resize(packed_size);
    std::vector<double> partial(G * segments);
    ThreadPool::run(G * segments, threads, eager, [&](int64_t item, int slot) {
      Own& o = own[slot];
      const int64_t g = item / segments;
      if (o.built != g) build(o.packed.data(), g);
      o.built = g;
      partial[item] = run_segment(o.packed.data(), item % segments);
    });
    for (int64_t g = 0; g < G; ++g) {
      double total = 0.0;
      for (int64_t s = 0; s < segments; ++s) total += partial[g * segments + s];
      loss[g] = total / double(N);
    }
  } else {
    // Up to kSmallNetPointsPerItem points per item, as long as every thread gets 8 items.
    const int64_t P = std::clamp<int64_t>(G / (8 * int64_t(threads)), 1, kSmallNetPointsPerItem);
    std::vector<std::vector<S>> own(threads, std::vector<S>(P * packed_size));
    ThreadPool::run((G + P - 1) / P, threads, eager, [&](int64_t item, int slot) {
      const int64_t g0 = item * P, points = std::min<int64_t>(P, G - g0);
      S* packed = own[slot].data();
      for (int64_t p = 0; p < points; ++p) build(packed + p * packed_size, g0 + p);
      double total[kSmallNetPointsPerItem] = {};
      for (int64_t s = 0; s < segments; ++s)
        for (int64_t p = 0; p < points; ++p) total[p] += run_segment(packed + p * packed_size, s);
      for (int64_t p = 0; p < points; ++p) loss[g0 + p] = total[p] / double(N);
    });
  }
}

// Runs the sweep on the small-net path when `plan` allows it; false (nothing written) when
// it does not.
template <typename S>
bool try_sweep_small_net(const SmallNetPlan& plan, const SweepArgs<S>& a, double* loss,
                         int threads) {
  if (!plan.ok || a.affine_first) return false;
  auto with_width = [&](auto width) {
    constexpr int H = decltype(width)::value;
    if (plan.act == kRelu)
      sweep_small_net<S, H, kRelu>(plan, a, loss, threads);
    else if (plan.act == kLeakyRelu)
      sweep_small_net<S, H, kLeakyRelu>(plan, a, loss, threads);
    else
      sweep_small_net<S, H, -1>(plan, a, loss, threads);
  };
  switch (plan.width) {
    case 2:
      with_width(std::integral_constant<int, 2>{});
      return true;
    case 4:
      with_width(std::integral_constant<int, 4>{});
      return true;
    case 8:
      with_width(std::integral_constant<int, 8>{});
      return true;
    default:
      with_width(std::integral_constant<int, 16>{});
      return true;
  }
}

}  // namespace genni
