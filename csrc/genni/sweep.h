// The fused sweep: J(center + coeffs[g] . directions) for every grid point g, with no torch
// types. Pointers are raw host (CPU) or device (CUDA) memory, all tensors C-contiguous.
#pragma once

#include <cstdint>

#include "program.h"

namespace genni {

template <typename S>
struct SweepArgs {
  const S* center;      // [P]
  const S* directions;  // [m, P]
  const S* coeffs;      // [G, m]
  const S* inputs;      // [N, input size]
  const S* targets;     // [N, output size]
  int64_t num_params;   // P
  int m;
  int64_t num_points;   // G
  int64_t num_samples;  // N
  bool affine_first;    // combine precomputed first-layer responses instead of running it
};

// CPU: writes J (mean over samples, accumulated in double) to loss[G]. The result does not
// depend on num_threads: partial sums are reduced in a fixed order.
template <typename S>
void sweep_cpu(const Program& program, const SweepArgs<S>& args, double* loss, int num_threads);

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

bool cuda_compiled();
int cuda_device_count();

}  // namespace genni
