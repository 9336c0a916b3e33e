// Host-only planning of the tiled CUDA sweep (genni/tile.h): the tile size, threads, lanes
// per step and weight layout of a TilePlan, and the check of a plan that comes back from
// Python. It throws and runs on the host only, so that tile.h holds device code alone.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

#include "tile_mma.h"
#include "tile_steps.h"

namespace genni {

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
  bool tf32 = false;
};

constexpr int kTileDefaultThreads = 256;
// Transposed weights for float (1.04-1.16x faster than torch's layout, H200 run 3), torch's
// for double (2.8-3.5x faster than transposed on LeNet-5 and the MLP, run 4).
constexpr int tile_default_layout(int scalar_bytes) { return scalar_bytes == 8 ? 1 : 2; }
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
  plan.transposed = (options.layout > 0 ? options.layout : tile_default_layout(scalar_bytes)) == 2;
  plan.tf32 = options.tf32;
  if (plan.tf32 && (scalar_bytes != 4 || !plan.transposed))
    throw std::invalid_argument("genni: TF32 runs float32 sweeps in the transposed weight layout");
  if (plan.tf32 && options.samples % kMmaRows != 0)
    throw std::invalid_argument("genni: TF32 tiles are multiples of 16 samples");
  const int align = plan.tf32 ? kMmaRows : kTileAlign;
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
  const int64_t needed = (num_samples + align - 1) / align * align;
  auto bytes = [&](int64_t samples) { return fixed + per_sample * samples; };
  int64_t samples = options.samples;
  if (samples <= 0) {
    const int64_t share = smem_per_sm / kTileBlocksPerSm - kTileReservedBytes;
    const int64_t target = smem_limit < share ? smem_limit : share;
    samples = align;
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
  if (plan.tf32 && (plan.samples % kMmaRows != 0 || !plan.transposed || scalar_bytes != 4))
    fail("a TF32 plan runs float32, transposed weights and tiles of a multiple of 16 samples");
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
