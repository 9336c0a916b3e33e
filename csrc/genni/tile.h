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
#include <stdexcept>
#include <string>

#include "ops.h"

namespace genni {

constexpr int kTileOutBlock = 8;  // output channels per register tile
constexpr int kTileAlign = 8;     // tiles are multiples of this many samples
constexpr int kTileMaxThreads = 256;
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

// What the kernel and the harness need to know about a tiled sweep; made by tile_plan.
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

// Lanes per item for a step: the L in {1, 2, 4, 8} (dividing T, at most max_lanes) that
// minimises rounds x cost per round, where a round gives each thread one item and an item
// costs L x width multiply-adds plus its loads (one vector of lanes and `width` weights per
// tap, a load counted as 4 multiply-adds). Ties go to the larger L.
inline int tile_lanes(const Program& p, const TileStep& s, const TilePlan& plan, int scalar_bytes) {
  int width = 1;
  const int64_t positions = tile_positions(p, s, &width);
  const bool parametric = p.ops[s.op].parametric();
  const int cap = tile_lane_cap(s.pool >= 0, scalar_bytes);
  int best = 1;
  int64_t best_cost = -1;
  for (int lanes = 1; lanes <= plan.max_lanes && lanes <= cap; lanes *= 2) {
    if (plan.samples % lanes != 0) continue;
    const int64_t items = positions * (plan.samples / lanes);
    const int64_t rounds = (items + plan.threads - 1) / plan.threads;
    const int vectors = tile_max(1, lanes * scalar_bytes / 16);
    const int64_t per_item =
        parametric ? lanes * width + 4 * (vectors + width) : lanes + 4 * vectors;
    const int64_t cost = rounds * per_item;
    if (best_cost < 0 || cost <= best_cost) {
      best = lanes;
      best_cost = cost;
    }
  }
  return best;
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

// One block's view of a tile: where the activations are, and the per-thread steps. Every
// thread holds its own copy; the walk state advances identically in all of them.
template <typename S>
struct TileBlock {
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
      for (int o = 0; o < out_size; ++o) {
        const double d = double(y[int64_t(o) * T + l]) - double(data.targets[n * out_size + o]);
        sum += d * d;
      }
    }
    return sum;
  }
};

// A tiled plan for N samples, or one with samples == 0 when not even the smallest tile fits
// `smem_limit` bytes of shared memory (the caller then uses the reference kernel). The tile
// size depends on the program, N and the options only, never on the number of grid points,
// so that any chunking of a grid gives bitwise the same J.
// Options of 0 take the defaults.
struct TileOptions {
  int samples = 0;
  int threads = 0;
  int max_lanes = 0;
  int layout = 0;  // 1: torch's weight layout, 2: transposed
};

constexpr int kTileDefaultThreads = 256;
// The kernel is compiled for two blocks per multiprocessor (128 registers a thread): a
// variant for one block (255 registers, no spills) measured 1.3-1.5x slower on every
// workload but LeNet-5 at 16-sample tiles, where it tied (benchmarks/README.md).
constexpr int kTileBlocksPerSm = 2;
constexpr int kTileDefaultLayout = 2;  // transposed
constexpr int kTileMaxSamples = 2048;
constexpr int64_t kTileParamBytes = 48 << 10;  // parameters kept in shared memory up to this
constexpr int64_t kTileStageMax = 8192;        // largest layer staged into shared memory
constexpr int64_t kTileReservedBytes = (1 << 10) + 256;  // runtime reserve and static shared memory

// smem_limit: shared memory one block may use; smem_per_sm: what a multiprocessor has. The
// default tile is the largest (up to kTileMaxSamples, and no larger than N needs) that lets
// kTileBlocksPerSm blocks share a multiprocessor.
inline TilePlan tile_plan(const Program& p, int64_t num_params, int64_t num_samples,
                          int scalar_bytes, const TileOptions& options, int64_t smem_limit,
                          int64_t smem_per_sm) {
  TilePlan plan{};
  plan.threads = options.threads > 0 ? options.threads : kTileDefaultThreads;
  plan.max_lanes = options.max_lanes > 0 ? options.max_lanes : kTileOutBlock;
  plan.transposed = (options.layout > 0 ? options.layout : kTileDefaultLayout) == 2;
  plan.param_elems = num_params;
  for (int i = 0; i < kMaxOps; ++i) plan.weights_at[i] = -1;
  if (plan.transposed) {
    plan.param_elems = 0;
    for (int i = 0; i < p.n_ops; ++i) {
      if (!p.ops[i].parametric()) continue;
      plan.weights_at[i] = static_cast<int>(plan.param_elems);
      plan.param_elems += tile_block_elems(p.ops[i]);
    }
  }
  plan.params_in_shared = plan.param_elems * scalar_bytes <= kTileParamBytes;
  plan.stage_elems = 0;
  if (!plan.params_in_shared) {
    for (int i = 0; i < p.n_ops; ++i) {
      if (!p.ops[i].parametric()) continue;
      const int64_t count = plan.transposed ? tile_block_elems(p.ops[i]) : op_param_count(p.ops[i]);
      if (count <= kTileStageMax && count > plan.stage_elems) plan.stage_elems = count;
    }
  }
  const int64_t fixed =
      (plan.params_in_shared ? plan.param_elems : plan.stage_elems) * scalar_bytes;
  const int64_t per_sample = int64_t(tile_arena_per_sample(p)) * scalar_bytes;
  const int64_t needed = (num_samples + kTileAlign - 1) / kTileAlign * kTileAlign;
  auto bytes = [&](int64_t samples) { return fixed + per_sample * samples; };
  int64_t samples = options.samples;
  if (samples <= 0) {
    const int64_t share = smem_per_sm / kTileBlocksPerSm - kTileReservedBytes;
    const int64_t target = smem_limit < share ? smem_limit : share;
    samples = kTileAlign;
    while (samples * 2 <= kTileMaxSamples && samples < needed && bytes(samples * 2) <= target)
      samples *= 2;
  }
  if (bytes(samples) > smem_limit) return plan;  // samples stays 0: does not fit
  plan.samples = static_cast<int>(samples);
  plan.tiles = (num_samples + samples - 1) / samples;
  plan.arena_elems = int64_t(tile_arena_per_sample(p)) * samples;
  plan.smem_bytes = bytes(samples);
  for (int i = 0; i < kMaxOps; ++i) plan.lanes[i] = 0;
  for (int i = 0; i < p.n_ops;) {
    const TileStep s = tile_step(p, i);
    plan.lanes[i] = static_cast<signed char>(tile_lanes(p, s, plan, scalar_bytes));
    i = s.next;
  }
  return plan;
}

// Throws unless `plan` is one tile_plan could have made for `p` (lanes that divide the tile
// and respect the register caps at every step): a plan the kernel would silently misrun.
inline void check_tile_plan(const Program& p, const TilePlan& plan, int scalar_bytes) {
  auto fail = [](const char* what) { throw std::invalid_argument(std::string("genni: ") + what); };
  if (plan.samples <= 0 || plan.samples % kTileAlign != 0)
    fail("tile samples must be a positive multiple of 8");
  if (plan.threads <= 0 || plan.threads % 32 != 0 || plan.threads > kTileMaxThreads)
    fail("tile threads must be a multiple of 32, at most 256");
  if (plan.arena_elems < int64_t(tile_arena_per_sample(p)) * plan.samples)
    fail("the tile plan's arena is too small for this program");
  int64_t elems = 0;
  for (int i = 0; i < p.n_ops; ++i) {
    if (!plan.transposed || !p.ops[i].parametric()) continue;
    if (plan.weights_at[i] != elems)
      fail("the tile plan's weight layout does not fit this program");
    elems += tile_block_elems(p.ops[i]);
  }
  if (plan.transposed && plan.param_elems != elems)
    fail("the tile plan's weight layout does not fit this program");
  for (int i = 0; i < p.n_ops;) {
    const TileStep s = tile_step(p, i);
    const int lanes = plan.lanes[i];
    if (lanes < 1 || plan.samples % lanes != 0 || lanes > tile_lane_cap(s.pool >= 0, scalar_bytes))
      fail("the tile plan's lanes do not fit this program");
    i = s.next;
  }
}

}  // namespace genni
