// The tiled CUDA sweep's plan and step descriptions, device-safe: its limits, TilePlan, the
// transposed weight layout, TileStep (which ops one step fuses) and the sizes of a step.
#pragma once

#include <cstdint>

#include "params.h"
#include "program.h"

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

}  // namespace genni
