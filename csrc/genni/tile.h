// Block-level steps of the tiled CUDA sweep, written as functions of (thread, threads) so
// that the CUDA kernel runs them with a barrier between steps and a CPU harness
// (csrc/cpu/tile_emulate.cpp) runs them thread by thread, in either order, between the
// same barriers. The arithmetic is ops.h's.
//
// A block takes one grid point and a tile of T samples. The activations of the whole tile
// stay in shared memory, samples innermost (feature f of sample l at f * T + l), in an
// arena with two ends: a step reads its input from one end and writes its output at the
// other. A step is one op, or a Linear/Conv2d with the activation after it and (for a
// Conv2d) a non-overlapping pooling op after that, fused so that the convolution's full
// output is never stored. Each thread computes items of up to 8 output channels x L
// samples (a register tile); L is chosen per step so that the items spread over the threads.
// The grid point's parameters live in shared memory when they fit; otherwise each small
// layer's weights are staged there before it runs and large ones are read from global
// memory (through the L1 cache).
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "ops.h"

namespace genni {

constexpr int kTileOutBlock = 8;  // output channels per register tile
constexpr int kTileAlign = 8;     // tiles are multiples of this many samples
constexpr int kTileMaxThreads = 256;
// The kernel is compiled for two blocks per multiprocessor (128 registers a thread): a
// variant for one block (255 registers, no spills) measured 1.3-1.5x slower on every
// workload but LeNet-5 at 16-sample tiles, where it tied (benchmarks/README.md).
constexpr int kTileBlocksPerSm = 2;
// Bytes of one thread's lanes at most: its register tile is 8 outputs x these bytes, twice
// over for a fused pooling step (the convolution's tile and the pooled one). Larger tiles
// spill at the kernel's 128-register budget (kTileBlocksPerSm blocks of 256 threads).
constexpr int kTileLaneBytes = 32;
constexpr int kTilePoolLaneBytes = 16;

// The largest L the register tile of a step may take.
GENNI_HD constexpr int tile_lane_cap(bool pooled, int scalar_bytes) {
  return (pooled ? kTilePoolLaneBytes : kTileLaneBytes) / scalar_bytes;
}

GENNI_HD int tile_min(int a, int b) { return a < b ? a : b; }
GENNI_HD int tile_max(int a, int b) { return a > b ? a : b; }
// Walks index = start, start + step, ... as two digits (low, high) with low < radix, by
// carrying instead of dividing: the per-item index arithmetic of a tiny network would
// otherwise cost more than its arithmetic.
struct Digits {
  int low, high, step_low, step_high, radix;

  GENNI_HD Digits(int start, int step, int base)
      : low(start % base),
        high(start / base),
        step_low(step % base),
        step_high(step / base),
        radix(base) {}

  GENNI_HD void next() {
    low += step_low;
    high += step_high;
    if (low >= radix) {
      low -= radix;
      ++high;
    }
  }
};

GENNI_HD bool is_activation(int kind) { return kind >= kRelu; }
GENNI_HD bool is_pool(int kind) { return kind == kMaxPool2d || kind == kAvgPool2d; }

// Scalars of an op's weight and bias.
GENNI_HD int64_t op_param_count(const Op& op) {
  int64_t count = 0;
  if (op.kind == kLinear) count = int64_t(op.in_size()) * op.out_c;
  if (op.kind == kConv2d) count = int64_t(op.in_c) * op.out_c * op.kernel_h * op.kernel_w;
  if (op.parametric() && op.bias >= 0) count += op.out_c;
  return count;
}

// What the kernel and the harness need to know about a tiled sweep; made by tile_plan
// (tile_plan.h).
struct TilePlan {
  int samples;            // T: samples per tile, a multiple of kTileAlign
  int threads;            // threads per block, a multiple of 32
  int max_lanes;          // largest L a thread's register tile may take (1, 2, 4 or 8)
  int64_t tiles;          // ceil(N / T)
  bool params_in_shared;  // the whole parameter vector is copied into shared memory
  int64_t stage_elems;    // room for one layer's weights and bias (0 if params_in_shared)
  int64_t arena_elems;    // activations of the tile
  int64_t smem_bytes;     // dynamic shared memory per block
  bool transposed;        // weights in the transposed layout (below), else torch's
  bool tf32;              // Linear/Conv2d steps on tensor cores (float, transposed, T % 16 == 0)
  int64_t param_elems;    // scalars of one grid point's parameters in that layout
  // L of the step that starts at op i (tile_lanes, chosen once on the host).
  signed char lanes[kMaxOps];
  // Transposed layout: where op i's block (weights [fan-in, tile_wt(op)], then its bias
  // padded to 4) starts; -1 for ops without parameters.
  int weights_at[kMaxOps];
};

// Weights per input tap in the transposed layout: out_c rounded up to 4, so that every
// block of 4 or 8 output channels starts 16 bytes aligned.
GENNI_HD int64_t tile_wt(const Op& op) { return (op.out_c + 3) / 4 * 4; }

GENNI_HD int64_t op_fan_in(const Op& op) {
  return op.kind == kLinear ? int64_t(op.in_size()) : int64_t(op.in_c) * op.kernel_h * op.kernel_w;
}

// Scalars of op's block in the transposed layout.
GENNI_HD int64_t tile_block_elems(const Op& op) {
  return op_fan_in(op) * tile_wt(op) + (op.bias >= 0 ? (op.out_c + 3) / 4 * 4 : 0);
}

// Which entry of the flat parameter vector entry j of a grid point's parameters holds in
// the plan's layout, or -1 for padding (zero).
GENNI_HD int64_t tile_param_source(const Program& p, const TilePlan& plan, int64_t j) {
  if (!plan.transposed) return j;
  for (int i = 0; i < p.n_ops; ++i) {
    const Op& op = p.ops[i];
    if (!op.parametric() || j < plan.weights_at[i] ||
        j >= plan.weights_at[i] + tile_block_elems(op))
      continue;
    const int64_t r = j - plan.weights_at[i], wt = tile_wt(op), fan_in = op_fan_in(op);
    if (r < fan_in * wt) {
      const int64_t tap = r / wt, out = r % wt;
      return out < op.out_c ? op.weight + out * fan_in + tap : -1;
    }
    const int64_t b = r - fan_in * wt;
    return b < op.out_c ? op.bias + b : -1;
  }
  return -1;
}

// Entry j of grid point g's parameters in the plan's layout: grid_param (params.h) of the
// parameter it holds, 0 for padding.
template <typename S>
GENNI_HD S tile_param(const Program& p, const TilePlan& plan, const SweepArgs<S>& a, int64_t g,
                      int64_t j) {
  const int64_t k = tile_param_source(p, plan, j);
  return k >= 0 ? grid_param(a, g, k) : S(0);
}

// One step of the tiled schedule, starting at op i.
struct TileStep {
  int op;         // the op this step runs
  int act;        // a fused activation op after it, or -1
  int pool;       // a fused pooling op after that, or -1
  int next;       // the first op of the next step
  bool in_place;  // an activation on its own, applied where its input lies
  int in_size, out_size;
};

GENNI_HD TileStep tile_step(const Program& p, int i) {
  const Op& op = p.ops[i];
  TileStep s{i, -1, -1, i + 1, false, op.in_size(), op.out_size()};
  if (!op.parametric()) {
    s.in_place = is_activation(op.kind);
    return s;
  }
  int j = i + 1;
  if (j < p.n_ops && is_activation(p.ops[j].kind)) s.act = j++;
  if (op.kind == kConv2d && j < p.n_ops && is_pool(p.ops[j].kind)) {
    const Op& pool = p.ops[j];
    // Overlapping windows would compute convolution outputs more than once.
    if (pool.stride_h >= pool.kernel_h && pool.stride_w >= pool.kernel_w) {
      s.pool = j++;
      s.out_size = pool.out_size();
    }
  }
  s.next = j;
  return s;
}

// Scalars per sample the arena needs: the most any step holds at once.
GENNI_HD int tile_arena_per_sample(const Program& p) {
  int most = p.ops[0].in_size();
  for (int i = 0; i < p.n_ops;) {
    const TileStep s = tile_step(p, i);
    most = tile_max(most, s.in_place ? s.in_size : s.in_size + s.out_size);
    i = s.next;
  }
  return most;
}

// Output positions of a step: (block of 8 channels, pixel) for Linear/Conv2d, (channel,
// pixel) for pooling, features for an activation. `width` is how many outputs one position
// has (the register tile's height).
GENNI_HD int64_t tile_positions(const Program& p, const TileStep& s, int* width) {
  const Op& op = p.ops[s.op];
  if (op.parametric()) {
    const Op& shape = s.pool >= 0 ? p.ops[s.pool] : op;
    *width = tile_min(kTileOutBlock, op.out_c);
    return int64_t((op.out_c + kTileOutBlock - 1) / kTileOutBlock) * shape.out_h * shape.out_w;
  }
  *width = 1;
  return op.out_size();
}

// Grid point and tile data a block reads; all device (or, in the harness, host) memory.
template <typename S>
struct TileData {
  const S* params;   // [points, plan.param_elems]: each grid point's parameters
  const S* inputs;   // [N, input size]
  const S* targets;  // [N, output size]
  int64_t num_points;
  int64_t num_samples;
};

// Functions the kernel calls rather than inlines: one per (step kind, kernel width, L),
// so that the compiler sees a few dozen moderate functions instead of one huge kernel.
#if defined(__CUDACC__)
#define GENNI_HD_CALLED __host__ __device__ __noinline__
#else
#define GENNI_HD_CALLED inline
#endif

enum TileKind : int { kTileLinear = 0, kTileConv = 1, kTileConvPool = 2 };

// OB outputs x L lanes at output channel oc and pixel `pixel` of a Linear/Conv2d step,
// with its fused activation (and pooling).
template <typename S, int L, int OB, int Kind, int KW, bool Tr>
GENNI_HD void parametric_item(const Program& p, const TileStep& s, const S* weight, const S* bias,
                              const S* in, S* out, int T, int oc, int pixel) {
  const Op& op = p.ops[s.op];
  const long wt = Tr ? tile_wt(op) : 0;
  const int act = s.act >= 0 ? p.ops[s.act].kind : -1;
  const S slope = s.act >= 0 ? static_cast<S>(p.ops[s.act].slope) : S(0);
  if constexpr (Kind == kTileConvPool) {
    const Op& pool = p.ops[s.pool];
    conv_pool_block<S, L, OB, KW, Tr>(op, act, slope, pool, oc, pixel / pool.out_w,
                                      pixel % pool.out_w, weight, bias, in, T, out, T, wt);
    return;
  } else {
    long plane = 1;
    if constexpr (Kind == kTileLinear) {
      linear_block<S, L, OB, Tr>(oc, op.in_size(), weight, bias, in, T, out, T, wt);
    } else {
      plane = static_cast<long>(op.out_h) * op.out_w;
      conv_block<S, L, OB, KW, Tr>(op, oc, pixel / op.out_w, pixel % op.out_w, weight, bias, in, T,
                                   out, T, wt);
    }
    if (act < 0) return;
    // The activation of the outputs this thread just wrote: no other thread touches them.
    for (int k = 0; k < OB; ++k) {
      S* y = out + ((oc + k) * plane + pixel) * T;
      for (int l = 0; l < L; ++l) y[l] = activate(act, y[l], slope);
    }
  }
}

// This thread's items of a Linear/Conv2d step: blocks of 8 output channels (a last partial
// block as 4 + 2 + 1) x pixels x groups of L samples, groups fastest, so that the threads
// of a warp share weights and read neighbouring samples.
template <typename S, int L, int Kind, int KW, bool Tr>
GENNI_HD_CALLED void parametric_items(const Program& p, const TileStep s, const S* weight,
                                      const S* bias, const S* in, S* out, int T, int thread,
                                      int threads) {
#if defined(__CUDA_ARCH__)
  // The activations are in shared memory: say so, so that they are read with shared loads.
  __builtin_assume(__isShared(in));
  __builtin_assume(__isShared(out));
#endif
  const Op& op = p.ops[s.op];
  const Op& shape = s.pool >= 0 ? p.ops[s.pool] : op;
  const int pixels = shape.out_h * shape.out_w, groups = T / L;
  const int positions = (op.out_c + kTileOutBlock - 1) / kTileOutBlock * pixels;
  for (Digits item(thread, threads, groups); item.high < positions; item.next()) {
    const int lane0 = item.low * L;
    const int pixel = item.high % pixels;
    int oc = item.high / pixels * kTileOutBlock;
    const int width = tile_min(kTileOutBlock, op.out_c - oc);
    const S* x = in + lane0;
    S* y = out + lane0;
    if (width == kTileOutBlock) {
      parametric_item<S, L, kTileOutBlock, Kind, KW, Tr>(p, s, weight, bias, x, y, T, oc, pixel);
      continue;
    }
    if (width & 4) {
      parametric_item<S, L, 4, Kind, KW, Tr>(p, s, weight, bias, x, y, T, oc, pixel);
      oc += 4;
    }
    if (width & 2) {
      parametric_item<S, L, 2, Kind, KW, Tr>(p, s, weight, bias, x, y, T, oc, pixel);
      oc += 2;
    }
    if (width & 1) parametric_item<S, L, 1, Kind, KW, Tr>(p, s, weight, bias, x, y, T, oc, pixel);
  }
}

// The kernel-width variants of a step kind: 3 and 5 get unrolled taps.
template <typename S, int L, int Kind, bool Tr>
GENNI_HD void parametric_kind(const Program& p, const TileStep& s, const S* weight, const S* bias,
                              const S* in, S* out, int T, int thread, int threads) {
  if constexpr (Kind == kTileLinear) {
    parametric_items<S, L, Kind, 0, Tr>(p, s, weight, bias, in, out, T, thread, threads);
  } else {
    switch (p.ops[s.op].kernel_w) {
      case 3:
        parametric_items<S, L, Kind, 3, Tr>(p, s, weight, bias, in, out, T, thread, threads);
        break;
      case 5:
        parametric_items<S, L, Kind, 5, Tr>(p, s, weight, bias, in, out, T, thread, threads);
        break;
      default:
        parametric_items<S, L, Kind, 0, Tr>(p, s, weight, bias, in, out, T, thread, threads);
    }
  }
}

// TF32 steps (precision "tf32", float only): a warp computes items of 16 * MT samples x
// 8 * NB output channels at one output pixel with mma.sync m16n8k8 (TF32 inputs, fp32
// accumulation), MT = 2 row tiles per item where the tile allows (so that each weight
// fragment serves two multiplies) and NB = 2 column tiles where there are more than 8
// outputs (so that each input fragment serves two). The fan-in runs in torch's order in steps of 8;
// conv taps are decoded per step. Bias, activation and pooling are applied to the fp32
// accumulators as the fp32 step does. On the host (the harness) lane 0 of each warp runs
// all 32 lanes and the multiply is emulated on the same fragments, so that the fragment
// indexing is what CI tests.
constexpr int kMmaRows = 16;  // samples of one row tile; TF32 tiles are multiples of it

// v rounded to TF32 (10 mantissa bits; nearest, ties away from zero, as cvt.rna does), as
// the bits of a float.
GENNI_HD uint32_t to_tf32(float v) {
  uint32_t bits;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(bits) : "f"(v));
#else
  std::memcpy(&bits, &v, sizeof bits);
  if ((bits & 0x7f800000u) != 0x7f800000u) bits += 0x1000u;  // not inf or NaN
  bits &= 0xffffe000u;
#endif
  return bits;
}

GENNI_HD float tf32_value(uint32_t bits) {
  float v;
  std::memcpy(&v, &bits, sizeof v);
  return v;
}

// The fragments of one lane for one step of 8 in the fan-in: a[mt] of row tile mt
// (samples g and g + 8 at fan-in t and t + 4), b[nb] of column tile nb (output channel g at
// fan-in t and t + 4), where g = lane / 4 and t = lane % 4 (PTX ISA, mma.m16n8k8 .tf32).
template <int MT, int NB>
struct MmaFragments {
  uint32_t a[MT][4];
  uint32_t b[NB][2];
};

#if defined(__CUDA_ARCH__)
__device__ inline void mma_tf32(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
#if __CUDA_ARCH__ >= 800
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
  __trap();  // tile_plan refuses TF32 below compute capability 8.0
#endif
}
#endif

// d[lane] += A B for row tile mt and column tile nb of a whole warp's fragments.
template <int MT, int NB>
inline void mma_tf32_emulated(float (&d)[32][MT][NB][4], const MmaFragments<MT, NB> (&f)[32],
                              int mt, int nb) {
  float a[16][8], b[8][8];
  for (int lane = 0; lane < 32; ++lane) {
    const int g = lane >> 2, t = lane & 3;
    a[g][t] = tf32_value(f[lane].a[mt][0]);
    a[g + 8][t] = tf32_value(f[lane].a[mt][1]);
    a[g][t + 4] = tf32_value(f[lane].a[mt][2]);
    a[g + 8][t + 4] = tf32_value(f[lane].a[mt][3]);
    b[t][g] = tf32_value(f[lane].b[nb][0]);
    b[t + 4][g] = tf32_value(f[lane].b[nb][1]);
  }
  for (int lane = 0; lane < 32; ++lane) {
    const int g = lane >> 2, t = lane & 3;
    for (int r = 0; r < 4; ++r) {
      const int row = g + (r >= 2 ? 8 : 0), col = 2 * t + (r & 1);
      float sum = d[lane][mt][nb][r];
      for (int k = 0; k < 8; ++k) sum += a[row][k] * b[k][col];
      d[lane][mt][nb][r] = sum;
    }
  }
}

// Feature (row of the activation arena) that fan-in index k of a Linear/Conv2d reads at an
// output pixel whose window starts at input (iy0, ix0); -1 for padding and k past the fan-in.
template <int Kind, int KW>
GENNI_HD int mma_feature(const Op& op, int fan_in, int k, int iy0, int ix0) {
  if (k >= fan_in) return -1;
  if constexpr (Kind == kTileLinear) {
    return k;
  } else {
    const int kw = KW > 0 ? KW : op.kernel_w, taps = KW > 0 ? KW * KW : op.kernel_h * kw;
    const int ic = k / taps, r = k - ic * taps, ky = r / kw, kx = r - ky * kw;
    const int iy = iy0 + ky, ix = ix0 + kx;
    if (iy < 0 || iy >= op.in_h || ix < 0 || ix >= op.in_w) return -1;
    return (ic * op.in_h + iy) * op.in_w + ix;
  }
}

// One lane's fragments for fan-in indices k0 ... k0 + 7 (weights in the transposed layout).
template <int MT, int NB, int Kind, int KW>
GENNI_HD void mma_load(const Op& op, int fan_in, int k0, int iy0, int ix0, const float* weight,
                       int wt, int oc, const float* in, int T, int lane, MmaFragments<MT, NB>& f) {
  const int g = lane >> 2, t = lane & 3;
  const int f0 = mma_feature<Kind, KW>(op, fan_in, k0 + t, iy0, ix0);
  const int f1 = mma_feature<Kind, KW>(op, fan_in, k0 + t + 4, iy0, ix0);
  for (int mt = 0; mt < MT; ++mt) {
    const float* x = in + 16 * mt + g;
    f.a[mt][0] = to_tf32(f0 < 0 ? 0.0f : x[int64_t(f0) * T]);
    f.a[mt][1] = to_tf32(f0 < 0 ? 0.0f : x[int64_t(f0) * T + 8]);
    f.a[mt][2] = to_tf32(f1 < 0 ? 0.0f : x[int64_t(f1) * T]);
    f.a[mt][3] = to_tf32(f1 < 0 ? 0.0f : x[int64_t(f1) * T + 8]);
  }
  for (int nb = 0; nb < NB; ++nb) {
    const int o = oc + 8 * nb + g;
    const bool live = o < op.out_c;
    f.b[nb][0] = to_tf32(live && k0 + t < fan_in ? weight[int64_t(k0 + t) * wt + o] : 0.0f);
    f.b[nb][1] = to_tf32(live && k0 + t + 4 < fan_in ? weight[int64_t(k0 + t + 4) * wt + o] : 0.0f);
  }
}

// This thread's warp's items of a Linear/Conv2d step on tensor cores: blocks of 8 * NB
// output channels x pixels (pooled pixels for a fused pooling) x groups of 16 * MT
// samples, groups fastest.
template <int MT, int NB, int Kind, int KW>
GENNI_HD_CALLED void mma_items(const Program& p, const TileStep s, const float* weight,
                               const float* bias, const float* in, float* out, int T, int thread,
                               int threads) {
#if defined(__CUDA_ARCH__)
  __builtin_assume(__isShared(in));
  __builtin_assume(__isShared(out));
  constexpr int kLanes = 1;  // this thread's lane
  const int first_lane = thread & 31;
#else
  constexpr int kLanes = 32;  // lane 0 runs its warp
  const int first_lane = 0;
  if (thread & 31) return;
#endif
  const Op& op = p.ops[s.op];
  const bool pooled = Kind == kTileConvPool;
  const Op& shape = pooled ? p.ops[s.pool] : op;
  const int pixels = shape.out_h * shape.out_w, groups = T / (kMmaRows * MT);
  const int positions = (op.out_c + 8 * NB - 1) / (8 * NB) * pixels;
  const int fan_in = static_cast<int>(op_fan_in(op)), wt = static_cast<int>(tile_wt(op));
  const int act = s.act >= 0 ? p.ops[s.act].kind : -1;
  const float slope = s.act >= 0 ? static_cast<float>(p.ops[s.act].slope) : 0.0f;
  const bool is_max = pooled && shape.kind == kMaxPool2d;
  const int64_t plane = int64_t(shape.out_h) * shape.out_w;
  for (Digits item(thread >> 5, threads >> 5, groups); item.high < positions; item.next()) {
    const int l0 = item.low * (kMmaRows * MT);
    const int pixel = item.high % pixels, oc = item.high / pixels * (8 * NB);
    // The window of convolution outputs that make this output: one position but for pooling.
    Window win{0, 0, 1, 1, 1, 1};
    if constexpr (Kind != kTileLinear) {
      const int py = pixel / shape.out_w, px = pixel - py * shape.out_w;
      win = pooled ? pool_window(shape, py, px, op.out_h, op.out_w)
                   : Window{py, px, 1, 1, op.out_h, op.out_w};
    }
    float res[kLanes][MT][NB][4] = {};
    const int count = for_window(win, [&](int oy, int ox, bool first) {
      const int iy0 = oy * op.stride_h - op.pad_h, ix0 = ox * op.stride_w - op.pad_w;
      float acc[kLanes][MT][NB][4] = {};
      for (int k0 = 0; k0 < fan_in; k0 += 8) {
        MmaFragments<MT, NB> f[kLanes];
        for (int i = 0; i < kLanes; ++i)
          mma_load<MT, NB, Kind, KW>(op, fan_in, k0, iy0, ix0, weight, wt, oc, in + l0, T,
                                     first_lane + i, f[i]);
        for (int mt = 0; mt < MT; ++mt)
          for (int nb = 0; nb < NB; ++nb) {
#if defined(__CUDA_ARCH__)
            mma_tf32(acc[0][mt][nb], f[0].a[mt], f[0].b[nb]);
#else
            mma_tf32_emulated<MT, NB>(acc, f, mt, nb);
#endif
          }
      }
      for (int i = 0; i < kLanes; ++i) {
        const int t = (first_lane + i) & 3;
        for (int mt = 0; mt < MT; ++mt)
          for (int nb = 0; nb < NB; ++nb)
            for (int r = 0; r < 4; ++r) {
              const int ch = oc + 8 * nb + 2 * t + (r & 1);
              float v = acc[i][mt][nb][r] + (bias != nullptr && ch < op.out_c ? bias[ch] : 0.0f);
              if (act >= 0) v = activate(act, v, slope);
              res[i][mt][nb][r] = pool_fold(is_max, first, res[i][mt][nb][r], v);
            }
      }
    });
    const float scale = pooled ? pool_scale<float>(shape, count) : 1.0f;
    for (int i = 0; i < kLanes; ++i) {
      const int g = (first_lane + i) >> 2, t = (first_lane + i) & 3;
      for (int mt = 0; mt < MT; ++mt)
        for (int nb = 0; nb < NB; ++nb)
          for (int r = 0; r < 4; ++r) {
            const int ch = oc + 8 * nb + 2 * t + (r & 1);
            if (ch >= op.out_c) continue;
            const int l = l0 + 16 * mt + g + (r >= 2 ? 8 : 0);
            out[(ch * plane + pixel) * T + l] = res[i][mt][nb][r] * scale;
          }
    }
  }
}

// The TF32 variants of a step: two row tiles an item where T allows, two column tiles
// where there are more than 8 outputs.
template <int MT, int Kind>
GENNI_HD void mma_rows(const Program& p, const TileStep& s, const float* weight, const float* bias,
                       const float* in, float* out, int T, int thread, int threads) {
  const Op& op = p.ops[s.op];
  const bool wide = op.out_c > 8;
  if (Kind != kTileLinear && op.kernel_w == 5 && op.kernel_h == 5) {
    if (wide)
      mma_items<MT, 2, Kind, 5>(p, s, weight, bias, in, out, T, thread, threads);
    else
      mma_items<MT, 1, Kind, 5>(p, s, weight, bias, in, out, T, thread, threads);
  } else {
    if (wide)
      mma_items<MT, 2, Kind, 0>(p, s, weight, bias, in, out, T, thread, threads);
    else
      mma_items<MT, 1, Kind, 0>(p, s, weight, bias, in, out, T, thread, threads);
  }
}

template <int Kind>
GENNI_HD void mma_kind(const Program& p, const TileStep& s, const float* weight, const float* bias,
                       const float* in, float* out, int T, int thread, int threads) {
  if (T % (2 * kMmaRows) == 0)
    mma_rows<2, Kind>(p, s, weight, bias, in, out, T, thread, threads);
  else
    mma_rows<1, Kind>(p, s, weight, bias, in, out, T, thread, threads);
}

// One block's view of a tile: where the activations are, and the per-thread steps. Every
// thread holds its own copy; the walk state advances identically in all of them. Tf32
// (float only, for plans with tf32 set) runs the Linear/Conv2d steps on tensor cores; it is
// a template parameter so that the float32 kernel carries none of that code.
template <typename S, bool Tf32 = false>
struct TileBlock {
  static_assert(!Tf32 || std::is_same<S, float>::value, "TF32 steps are float steps");

  const Program& p;
  const TilePlan& plan;
  const TileData<S>& data;
  S* smem;  // [arena_elems | parameters or staged weights]

  const S* params = nullptr;  // this grid point's parameters (global memory)
  int64_t n0 = 0;             // first sample of the tile
  bool at_start = true;       // the current activation lies at the start of the arena
  int cur_size = 0;           // its size per sample

  GENNI_HD TileBlock(const Program& program, const TilePlan& tile_plan, const TileData<S>& d,
                     S* shared)
      : p(program), plan(tile_plan), data(d), smem(shared) {}

  GENNI_HD S* shared_params() const { return smem + plan.arena_elems; }

  GENNI_HD void begin(int64_t point, int64_t tile) {
    params = data.params + point * plan.param_elems;
    n0 = tile * plan.samples;
    at_start = true;
    cur_size = p.ops[0].in_size();
  }

  GENNI_HD void stage_params(int thread, int threads) const {
    S* dst = shared_params();
    for (int64_t k = thread; k < plan.param_elems; k += threads) dst[k] = params[k];
  }

  // The tile's inputs, transposed to samples-innermost; samples past N are zeros.
  GENNI_HD void stage_input(int thread, int threads) const {
    const int T = plan.samples, F = p.ops[0].in_size();
    for (Digits e(thread, threads, T); e.high < F; e.next()) {
      const int64_t n = n0 + e.low;
      smem[int64_t(e.high) * T + e.low] = n < data.num_samples ? data.inputs[n * F + e.high] : S(0);
    }
  }

  GENNI_HD bool stages_weights(const TileStep& s) const {
    const Op& op = p.ops[s.op];
    return op.parametric() && !plan.params_in_shared && stage_count(op) <= plan.stage_elems;
  }

  // Scalars staged for op: its block, or its weights and bias.
  GENNI_HD int64_t stage_count(const Op& op) const {
    return plan.transposed ? tile_block_elems(op) : op_param_count(op);
  }

  GENNI_HD void stage_weights(const TileStep& s, int thread, int threads) const {
    const Op& op = p.ops[s.op];
    S* dst = shared_params();
    if (plan.transposed) {
      const S* src = params + plan.weights_at[s.op];
      for (int64_t k = thread; k < tile_block_elems(op); k += threads) dst[k] = src[k];
      return;
    }
    const int64_t weights = op_param_count(op) - (op.bias >= 0 ? op.out_c : 0);
    for (int64_t k = thread; k < weights; k += threads) dst[k] = params[op.weight + k];
    if (op.bias >= 0)
      for (int64_t k = thread; k < op.out_c; k += threads) dst[weights + k] = params[op.bias + k];
  }

  // The current activation (the next step's input).
  GENNI_HD S* current() const {
    return at_start ? smem : smem + plan.arena_elems - int64_t(cur_size) * plan.samples;
  }

  GENNI_HD S* output_of(const TileStep& s) const {
    if (s.in_place) return current();
    return at_start ? smem + plan.arena_elems - int64_t(s.out_size) * plan.samples : smem;
  }

  GENNI_HD void compute(const TileStep& s, int thread, int threads) const {
    switch (plan.lanes[s.op]) {
      case 8:
        if constexpr (tile_lane_cap(false, int(sizeof(S))) >= 8)
          compute_lanes<8>(s, thread, threads);
        break;
      case 4:
        compute_lanes<4>(s, thread, threads);
        break;
      case 2:
        compute_lanes<2>(s, thread, threads);
        break;
      default:
        compute_lanes<1>(s, thread, threads);
    }
  }

  template <int L>
  GENNI_HD void compute_lanes(const TileStep& s, int thread, int threads) const {
    const Op& op = p.ops[s.op];
    const int T = plan.samples, groups = T / L;
    const S* in = current();
    S* out = output_of(s);
    if (op.parametric()) {
      if (plan.transposed) {
        const S* block = plan.params_in_shared ? shared_params() + plan.weights_at[s.op]
                         : stages_weights(s)   ? shared_params()
                                               : params + plan.weights_at[s.op];
        const S* bias = op.bias >= 0 ? block + op_fan_in(op) * tile_wt(op) : nullptr;
        if constexpr (Tf32) {
          mma(s, block, bias, in, out, thread, threads);
          return;
        }
        parametric<L, true>(s, block, bias, in, out, thread, threads);
        return;
      }
      const S *weight, *bias;
      if (plan.params_in_shared) {
        weight = shared_params() + op.weight;
        bias = op.bias >= 0 ? shared_params() + op.bias : nullptr;
      } else if (stages_weights(s)) {
        weight = shared_params();
        bias = op.bias >= 0 ? shared_params() + (op_param_count(op) - op.out_c) : nullptr;
      } else {
        weight = params + op.weight;
        bias = op.bias >= 0 ? params + op.bias : nullptr;
      }
      parametric<L, false>(s, weight, bias, in, out, thread, threads);
    } else if (is_pool(op.kind)) {
      const int pixels = op.out_h * op.out_w;
      for (Digits item(thread, threads, groups); item.high < op.out_size(); item.next()) {
        const int pixel = item.high % pixels, c = item.high / pixels;
        pool_item<S, L>(op, c, pixel / op.out_w, pixel % op.out_w, in + item.low * L, T,
                        out + item.low * L, T);
      }
    } else {
      const S slope = static_cast<S>(op.slope);
      for (Digits item(thread, threads, groups); item.high < op.out_size(); item.next()) {
        const int64_t at = int64_t(item.high) * T + item.low * L;
        for (int l = 0; l < L; ++l) out[at + l] = activate(op.kind, in[at + l], slope);
      }
    }
  }

  template <int L, bool Tr>
  GENNI_HD void parametric(const TileStep& s, const S* weight, const S* bias, const S* in, S* out,
                           int thread, int threads) const {
    const Op& op = p.ops[s.op];
    const int T = plan.samples;
    if (op.kind == kLinear) {
      parametric_kind<S, L, kTileLinear, Tr>(p, s, weight, bias, in, out, T, thread, threads);
    } else if (s.pool >= 0) {
      // tile_lanes never picks an L over the cap, so those variants are not compiled.
      if constexpr (L <= tile_lane_cap(true, int(sizeof(S))))
        parametric_kind<S, L, kTileConvPool, Tr>(p, s, weight, bias, in, out, T, thread, threads);
    } else {
      parametric_kind<S, L, kTileConv, Tr>(p, s, weight, bias, in, out, T, thread, threads);
    }
  }

  GENNI_HD void mma(const TileStep& s, const float* weight, const float* bias, const float* in,
                    float* out, int thread, int threads) const {
    const int T = plan.samples;
    if (p.ops[s.op].kind == kLinear)
      mma_kind<kTileLinear>(p, s, weight, bias, in, out, T, thread, threads);
    else if (s.pool >= 0)
      mma_kind<kTileConvPool>(p, s, weight, bias, in, out, T, thread, threads);
    else
      mma_kind<kTileConv>(p, s, weight, bias, in, out, T, thread, threads);
  }

  GENNI_HD void advance(const TileStep& s) {
    if (!s.in_place) at_start = !at_start;
    cur_size = s.out_size;
  }

  // This thread's share of the tile's sum of squared errors, in double.
  GENNI_HD double loss(int thread, int threads) const {
    const int T = plan.samples, out_size = cur_size;
    const S* y = current();
    double sum = 0.0;
    for (int l = thread; l < T; l += threads) {
      const int64_t n = n0 + l;
      if (n >= data.num_samples) break;
      for (int o = 0; o < out_size; ++o)
        add_squared_error(sum, y[int64_t(o) * T + l], data.targets[n * out_size + o]);
    }
    return sum;
  }
};

}  // namespace genni
