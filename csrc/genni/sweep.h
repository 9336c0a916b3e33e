// The fused sweep's entry points: J(center + coeffs[g] . directions) for every grid point g
// (SweepArgs, genni/params.h), with no torch types.
#pragma once

#include <cstdint>

#include "params.h"
#include "program.h"
#include "tile_steps.h"

namespace genni {

// CPU: writes J (mean over samples, accumulated in double) to loss[G]. The result does not
// depend on num_threads: partial sums are reduced in a fixed order.
template <typename S>
void sweep_cpu(const Program& program, const SweepArgs<S>& args, double* loss, int num_threads);

// Whether sweep_cpu runs `program` on the small-net path (cpu/small_net.h): Linear layers,
// each followed by at most one ReLU or LeakyReLU, the last by none, hidden layers at most
// kSmallNetMaxWidth wide. Sweeps with affine_first take the general driver. The width limit,
// measured against the general driver (float32, 2 threads, mlp([4, w, w, 2]) with ReLU, a
// loaded machine): 3-4x faster at w = 8, 2x at 16, 1.2x at 24 and 32, where the activations
// no longer fit the 16 vector registers.
constexpr int kSmallNetMaxWidth = 16;
bool uses_small_net(const Program& program);

// CUDA launch plan: blocks of kCudaLanes samples; partial sums are [G, sample_blocks].
constexpr int kCudaLanes = 128;
struct CudaPlan {
  int64_t blocks;         // resident blocks, each with its own scratch
  int64_t sample_blocks;  // ceil(N / kCudaLanes)
  int64_t scratch_bytes;  // bytes of device scratch the caller allocates
  int64_t affine_bytes;   // bytes of first-layer responses (0 unless affine_first)
};
CudaPlan cuda_plan(const Program& program, int64_t num_params, int m, int64_t num_points,
                   int64_t num_samples, int scalar_bytes, bool affine_first);

// CUDA: writes per-(grid point, sample block) sums of squared errors to partial
// [G, sample_blocks] (double) on `stream`; the caller sums rows and divides by N.
template <typename S>
void sweep_cuda(const Program& program, const SweepArgs<S>& args, const CudaPlan& plan,
                double* partial, void* scratch, void* affine, void* stream);

// Tiled CUDA sweep (genni/tile.h, planned by genni/tile_plan.h). The caller allocates
// `params` for `points` grid points ([points, plan.param_elems]) and `partial` ([points,
// plan.tiles], double) and sums partial's rows. The kernel keeps no state between calls, so
// chunks of a grid can go to separate calls.
template <typename S>
void sweep_cuda_tiled(const Program& program, const SweepArgs<S>& args, const TilePlan& plan,
                      S* params, double* partial, void* stream);

// Shared memory a block may opt into, and multiprocessors, of the current device.
struct CudaLimits {
  int64_t smem_optin;   // per block, less the tiled kernel's static shared memory
  int64_t smem_per_sm;  // per multiprocessor
  int multiprocessors;
  int compute_capability;  // major * 10 + minor
};
CudaLimits cuda_limits();

// The tiled kernel's steps run on the CPU thread by thread (in reverse order when
// `reverse`), with the same plan: a check of the kernel's indexing and barriers on
// machines without a GPU. Writes partial [G, plan.tiles] like sweep_cuda_tiled.
template <typename S>
void sweep_tile_emulated(const Program& program, const SweepArgs<S>& args, const TilePlan& plan,
                         double* partial, bool reverse);

bool cuda_compiled();
int cuda_device_count();

}  // namespace genni
