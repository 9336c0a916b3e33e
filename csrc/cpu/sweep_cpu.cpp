// Threaded driver of the fused sweep on the CPU. The arithmetic lives in genni/ops.h, the
// threads in thread_pool.h (why not OpenMP: see there). Small dense nets take their own
// path, with every activation in registers (small_net.h); the rest run here.
//
// The probe set is cut into tiles of kLanes samples, transposed once per chunk of tiles
// into the feature-major layout the ops read. Work items are (grid point, group of tiles),
// claimed one at a time by whichever thread is free; each thread builds the parameters of
// its current grid point once and keeps them while the items it takes share that point.
// Partial sums land in fixed slots and are added in a fixed order, so the result does not
// depend on the number of threads or on which thread ran which item.
#include <algorithm>
#include <thread>
#include <vector>

#include "../genni/ops.h"
#include "../genni/sweep.h"
#include "small_net.h"
#include "thread_pool.h"

namespace genni {
namespace {

// Samples per tile: the SIMD dimension. Small networks use wide tiles, which spread the
// per-op loop overhead over more samples; large ones narrow tiles, whose activations stay
// in the L2 cache.
constexpr int kNarrowLanes = 16;
constexpr int kWideLanes = 64;
constexpr int kWidestLanes = 256;
constexpr int64_t kWideScratchBytes = int64_t(256) << 10;
// Networks this narrow (the paper's two-neuron net) are all loop overhead: widest tiles.
constexpr int kWidestMaxActivation = 8;
// Bytes of transposed inputs and first-layer responses shared by all grid points of a chunk.
constexpr int64_t kChunkBytes = int64_t(512) << 10;
// Below this many grid points, the tiles of a chunk are split into groups for parallelism.
constexpr int64_t kSplitBelowPoints = 64;
constexpr int64_t kMaxGroups = 64;

// Grid point g's parameters (genni/params.h), vectorised across parameters.
template <typename S>
void build_params(const SweepArgs<S>& a, int64_t g, S* params) {
#pragma omp simd
  for (int64_t k = 0; k < a.num_params; ++k) params[k] = grid_param(a, g, k);
}

// One thread's parameters and activations, reused while its items share a grid point.
template <typename S>
struct alignas(64) Scratch {
  std::vector<S> params, buf_a, buf_b;
  int64_t built = -1;
};

// 0 asks for one thread per hardware thread.
int resolve_threads(int requested) {
  if (requested > 0) return requested;
  return std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
}

}  // namespace

template <typename S, int kLanes>
void sweep_tiles(const Program& program, const SweepArgs<S>& a, double* loss, int threads) {
  const Op& first = program.ops[0];
  const bool affine = a.affine_first && first.parametric();
  const int in_size = first.in_size();
  const int first_out = first.out_size();
  const int out_size = program.ops[program.n_ops - 1].out_size();
  const int64_t G = a.num_points, N = a.num_samples, m = a.m;
  const int64_t tiles_total = (N + kLanes - 1) / kLanes;

  const int64_t tile_bytes =
      int64_t(in_size + (affine ? (m + 1) * first_out : 0)) * kLanes * int64_t(sizeof(S));
  const int64_t chunk_tiles = std::max<int64_t>(1, std::min(tiles_total, kChunkBytes / tile_bytes));
  const int64_t groups = G >= kSplitBelowPoints ? 1 : std::min(chunk_tiles, kMaxGroups);
  std::vector<double> partial(G * groups, 0.0);
  std::vector<S> tiled(chunk_tiles * in_size * kLanes);
  std::vector<S> tiled_targets(chunk_tiles * out_size * kLanes);
  std::vector<S> responses(affine ? (m + 1) * chunk_tiles * first_out * kLanes : 0);
  std::vector<Scratch<S>> scratch(threads);
  for (Scratch<S>& own : scratch) {
    own.params.resize(a.num_params);
    own.buf_a.resize(int64_t(program.max_activation) * kLanes);
    own.buf_b.resize(int64_t(program.max_activation) * kLanes);
  }

  bool eager = false;  // set once a step has woken the workers (thread_pool.h)
  for (int64_t start = 0; start < tiles_total; start += chunk_tiles) {
    const int64_t nt = std::min(chunk_tiles, tiles_total - start);

    ThreadPool::run(nt, threads, eager, [&](int64_t t, int) {
      S* dst = tiled.data() + t * in_size * kLanes;
      S* target = tiled_targets.data() + t * out_size * kLanes;
      for (int l = 0; l < kLanes; ++l) {
        const int64_t n = (start + t) * kLanes + l;
        for (int f = 0; f < in_size; ++f)
          dst[f * kLanes + l] = n < N ? a.inputs[n * in_size + f] : S(0);
        for (int o = 0; o < out_size; ++o)
          target[o * kLanes + l] = n < N ? a.targets[n * out_size + o] : S(0);
      }
    });

    const int64_t part = nt * first_out * kLanes;  // scalars between two responses
    if (affine) {
      ThreadPool::run((m + 1) * nt, threads, eager, [&](int64_t item, int) {
        const int64_t j = item / nt, t = item % nt;
        const S* params = j == 0 ? a.center : a.directions + (j - 1) * a.num_params;
        run_op<S, kLanes>(first, params, tiled.data() + t * in_size * kLanes, kLanes,
                          responses.data() + j * part + t * first_out * kLanes, kLanes);
      });
    }

    ThreadPool::run(G * groups, threads, eager, [&](int64_t item, int slot) {
      Scratch<S>& own = scratch[slot];
      const int64_t g = item / groups, k = item % groups;
      if (g != own.built) {
        build_params(a, g, own.params.data());
        own.built = g;
      }
      double sum = 0.0;
      for (int64_t t = k * nt / groups; t < (k + 1) * nt / groups; ++t) {
        const S* x = tiled.data() + t * in_size * kLanes;
        int first_op = 0;
        if (affine) {
          combine_affine<S, kLanes>(responses.data() + t * first_out * kLanes, part, kLanes,
                                    a.coeffs + g * m, static_cast<int>(m), first_out,
                                    own.buf_a.data(), kLanes);
          x = own.buf_a.data();
          first_op = 1;
        }
        const S* y = run_program<S, kLanes>(program, first_op, own.params.data(), x, kLanes,
                                            own.buf_a.data(), own.buf_b.data(), kLanes);
        const int valid = static_cast<int>(std::min<int64_t>(kLanes, N - (start + t) * kLanes));
        sum += squared_error<S, kLanes>(y, kLanes, tiled_targets.data() + t * out_size * kLanes,
                                        kLanes, out_size, valid);
      }
      partial[item] += sum;
    });
  }

  for (int64_t g = 0; g < G; ++g) {
    double total = 0.0;
    for (int64_t k = 0; k < groups; ++k) total += partial[g * groups + k];
    loss[g] = total / double(N);
  }
}

template <typename S>
void sweep_cpu(const Program& program, const SweepArgs<S>& args, double* loss, int num_threads) {
  const int threads = resolve_threads(num_threads);
  if (try_sweep_small_net(small_net_plan(program), args, loss, threads)) return;
  const int64_t wide_scratch = int64_t(2) * program.max_activation * kWideLanes * sizeof(S);
  if (program.max_activation <= kWidestMaxActivation)
    sweep_tiles<S, kWidestLanes>(program, args, loss, threads);
  else if (wide_scratch <= kWideScratchBytes)
    sweep_tiles<S, kWideLanes>(program, args, loss, threads);
  else
    sweep_tiles<S, kNarrowLanes>(program, args, loss, threads);
}

bool uses_small_net(const Program& program) { return small_net_plan(program).ok; }

template void sweep_cpu<float>(const Program&, const SweepArgs<float>&, double*, int);
template void sweep_cpu<double>(const Program&, const SweepArgs<double>&, double*, int);

}  // namespace genni
