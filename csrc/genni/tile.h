// The tiled CUDA sweep's block (TileBlock): the kernel body that strings the steps together.
// Its plan and steps are in tile_steps.h, their per-thread work in tile_compute.h (and
// tile_mma.h for TF32), the arithmetic in ops.h. Everything is written as functions of
// (thread, threads), so that the CUDA kernel runs them with a barrier between steps and a CPU
// harness (csrc/cpu/tile_emulate.cpp) runs them thread by thread, in either order, between
// the same barriers.
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
#include <type_traits>

#include "ops.h"
#include "tile_compute.h"
#include "tile_mma.h"
#include "tile_steps.h"

namespace genni {

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
      pool_items<S, L>(op, in, out, plan.samples, thread, threads);
    } else {
      activation_items<S, L>(op, in, out, plan.samples, thread, threads);
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
