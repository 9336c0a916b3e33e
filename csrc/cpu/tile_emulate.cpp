// The tiled CUDA kernel's block steps (genni/tile.h) run on the CPU, one thread after
// another between the kernel's barriers. Each step must only read what earlier steps
// wrote, so running the threads forwards or backwards must give the same J; the tests
// check both against torch.
#include <cmath>
#include <type_traits>
#include <vector>

#include "../genni/sweep.h"
#include "../genni/tile.h"

namespace genni {

namespace {

template <typename S, bool Tf32>
void emulate(const Program& program, const SweepArgs<S>& a, const TilePlan& plan, double* partial,
             bool reverse) {
  std::vector<S> params(plan.param_elems);
  std::vector<S> smem(plan.smem_bytes / sizeof(S));
  const TileData<S> data{params.data(), a.inputs, a.targets, a.num_points, a.num_samples};
  TileBlock<S, Tf32> block(program, plan, data, smem.data());
  std::vector<double> sums(plan.threads);
  const int threads = plan.threads;
  auto each_thread = [&](auto&& step) {
    for (int i = 0; i < threads; ++i) step(reverse ? threads - 1 - i : i);
  };
  for (int64_t g = 0; g < a.num_points; ++g) {
    // As the build kernel does.
    for (int64_t j = 0; j < plan.param_elems; ++j) params[j] = tile_param(program, plan, a, g, j);
    for (int64_t tile = 0; tile < plan.tiles; ++tile) {
      // Poisoned shared memory: a read of anything no step of this tile wrote shows up as
      // NaN in J.
      for (auto& v : smem) v = S(NAN);
      block.begin(0, tile);
      if (plan.params_in_shared) each_thread([&](int t) { block.stage_params(t, threads); });
      each_thread([&](int t) { block.stage_input(t, threads); });
      for (int i = 0; i < program.n_ops;) {
        const TileStep s = tile_step(program, i);
        if (block.stages_weights(s))
          each_thread([&](int t) { block.stage_weights(s, t, threads); });
        each_thread([&](int t) { block.compute(s, t, threads); });
        block.advance(s);
        i = s.next;
      }
      each_thread([&](int t) { sums[t] = block.loss(t, threads); });
      double total = 0.0;
      for (double v : sums) total += v;
      partial[g * plan.tiles + tile] = total;
    }
  }
}

}  // namespace

template <typename S>
void sweep_tile_emulated(const Program& program, const SweepArgs<S>& a, const TilePlan& plan,
                         double* partial, bool reverse) {
  if constexpr (std::is_same<S, float>::value) {
    if (plan.tf32) {
      emulate<S, true>(program, a, plan, partial, reverse);
      return;
    }
  }
  emulate<S, false>(program, a, plan, partial, reverse);
}

template void sweep_tile_emulated<float>(const Program&, const SweepArgs<float>&, const TilePlan&,
                                         double*, bool);
template void sweep_tile_emulated<double>(const Program&, const SweepArgs<double>&, const TilePlan&,
                                          double*, bool);

}  // namespace genni
