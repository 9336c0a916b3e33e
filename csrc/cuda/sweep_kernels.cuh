// CUDA kernels of the fused sweep and their launches, as templates over the scalar type;
// sweep_cuda.cu instantiates them for float and sweep_cuda_f64.cu for double, so that the
// two compile in parallel.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "../genni/ops.h"
#include "../genni/sweep.h"
#include "../genni/tile.h"

namespace genni {
namespace {

constexpr int64_t kScratchBudget = int64_t(1) << 30;
constexpr int kBlocksPerSm = 8;

void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess)
    throw std::runtime_error(std::string("genni CUDA: ") + what + ": " +
                             cudaGetErrorString(status));
}

GENNI_HD int64_t params_stride(int64_t num_params) { return (num_params + 31) / 32 * 32; }

GENNI_HD int64_t block_scalars(const Program& program, int64_t num_params) {
  return params_stride(num_params) + 2 * int64_t(program.max_activation) * kCudaLanes;
}

// Response of the first layer to the center (j = 0) and to each direction (j = 1..m),
// stored [j][feature][sample].
template <typename S>
__global__ void first_layer_kernel(Program program, SweepArgs<S> a, S* responses) {
  const Op& first = program.ops[0];
  const int64_t N = a.num_samples;
  const int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= (a.m + 1) * N) return;
  const int64_t j = idx / N, n = idx % N;
  const S* params = j == 0 ? a.center : a.directions + (j - 1) * a.num_params;
  run_op<S, 1>(first, params, a.inputs + n * first.in_size(), 1,
               responses + j * first.out_size() * N + n, static_cast<int>(N));
}

template <typename S>
__global__ void sweep_kernel(Program program, SweepArgs<S> a, int64_t sample_blocks, S* scratch,
                             const S* responses, double* partial) {
  __shared__ double sums[kCudaLanes];
  const int lane = threadIdx.x;
  const Op& first = program.ops[0];
  const int out_size = program.ops[program.n_ops - 1].out_size();
  S* params = scratch + blockIdx.x * block_scalars(program, a.num_params);
  S* buf_a = params + params_stride(a.num_params);
  S* buf_b = buf_a + int64_t(program.max_activation) * kCudaLanes;
  const int64_t items = a.num_points * sample_blocks;
  int64_t built = -1;
  for (int64_t item = blockIdx.x; item < items; item += gridDim.x) {
    const int64_t g = item / sample_blocks, n = (item % sample_blocks) * kCudaLanes + lane;
    const S* c = a.coeffs + g * a.m;
    if (g != built) {
      __syncthreads();  // the previous item is done with the parameters
      for (int64_t k = lane; k < a.num_params; k += kCudaLanes) params[k] = grid_param(a, g, k);
      __syncthreads();
      built = g;
    }
    double sum = 0.0;
    if (n < a.num_samples) {
      const S* x = a.inputs + n * first.in_size();
      int in_stride = 1, first_op = 0;
      if (a.affine_first) {
        const int64_t N = a.num_samples;
        combine_affine<S, 1>(responses + n, first.out_size() * N, static_cast<int>(N), c, a.m,
                             first.out_size(), buf_a + lane, kCudaLanes);
        x = buf_a + lane;
        in_stride = kCudaLanes;
        first_op = 1;
      }
      const S* y = run_program<S, 1>(program, first_op, params, x, in_stride, buf_a + lane,
                                     buf_b + lane, kCudaLanes);
      sum = squared_error<S, 1>(y, kCudaLanes, a.targets + n * out_size, 1, out_size, 1);
    }
    sums[lane] = sum;
    __syncthreads();
    for (int width = kCudaLanes / 2; width > 0; width /= 2) {
      if (lane < width) sums[lane] += sums[lane + width];
      __syncthreads();
    }
    if (lane == 0) partial[item] = sums[0];
  }
}

// params[g, j]: entry j of grid point g's parameters in the plan's layout (tile_param).
template <typename S>
__global__ void build_params_kernel(const __grid_constant__ Program program,
                                    const __grid_constant__ TilePlan plan, SweepArgs<S> a,
                                    S* params) {
  const int64_t total = a.num_points * plan.param_elems;
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t g = idx / plan.param_elems, j = idx % plan.param_elems;
    params[idx] = tile_param(program, plan, a, g, j);
  }
}

template <typename S, bool Tf32>
__global__ void __launch_bounds__(kTileMaxThreads, kTileBlocksPerSm)
    tile_kernel(const __grid_constant__ Program program, const __grid_constant__ TilePlan plan,
                const __grid_constant__ TileData<S> data, double* partial) {
  extern __shared__ float4 shared_vectors[];  // 16-byte aligned
  __shared__ double warp_sums[kTileMaxThreads / 32];
  S* smem = reinterpret_cast<S*>(shared_vectors);
  TileBlock<S, Tf32> block(program, plan, data, smem);
  const int thread = threadIdx.x, threads = blockDim.x;
  const int64_t items = data.num_points * plan.tiles;
  // item = g * tiles + tile, advanced by gridDim with a carry instead of a division.
  const int64_t step_g = gridDim.x / plan.tiles, step_tile = gridDim.x % plan.tiles;
  int64_t g = blockIdx.x / plan.tiles, tile = blockIdx.x % plan.tiles;
  int64_t staged = -1;
  for (int64_t item = blockIdx.x; item < items; item += gridDim.x) {
    block.begin(g, tile);
    if (plan.params_in_shared && g != staged) {
      block.stage_params(thread, threads);  // the last barrier of the previous item is behind us
      staged = g;
    }
    block.stage_input(thread, threads);
    __syncthreads();
    for (int i = 0; i < program.n_ops;) {
      const TileStep s = tile_step(program, i);
      if (block.stages_weights(s)) {
        block.stage_weights(s, thread, threads);
        __syncthreads();
      }
      block.compute(s, thread, threads);
      __syncthreads();
      block.advance(s);
      i = s.next;
    }
    double sum = block.loss(thread, threads);
    for (int offset = 16; offset > 0; offset /= 2)
      sum += __shfl_down_sync(0xffffffffu, sum, offset);
    if ((thread & 31) == 0) warp_sums[thread >> 5] = sum;
    __syncthreads();
    if (thread == 0) {
      double total = 0.0;
      for (int w = 0; w < threads / 32; ++w) total += warp_sums[w];
      partial[item] = total;
    }
    g += step_g;
    tile += step_tile;
    if (tile >= plan.tiles) {
      tile -= plan.tiles;
      ++g;
    }
  }
}

template <typename S, bool Tf32>
void launch_tiled(const Program& program, const SweepArgs<S>& args, const TilePlan& plan, S* params,
                  double* partial, cudaStream_t stream) {
  check(cudaFuncSetAttribute(tile_kernel<S, Tf32>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             static_cast<int>(plan.smem_bytes)),
        "cudaFuncSetAttribute");
  int per_sm = 0;
  check(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, tile_kernel<S, Tf32>, plan.threads,
                                                      static_cast<size_t>(plan.smem_bytes)),
        "cudaOccupancyMaxActiveBlocksPerMultiprocessor");
  if (per_sm < 1)
    throw std::runtime_error("genni CUDA: the tile plan does not fit one block per SM");
  const int64_t items = args.num_points * plan.tiles;
  const int64_t blocks = std::max<int64_t>(
      1, std::min<int64_t>(items, int64_t(per_sm) * cuda_limits().multiprocessors));
  const TileData<S> data{params, args.inputs, args.targets, args.num_points, args.num_samples};
  tile_kernel<S, Tf32><<<static_cast<unsigned>(blocks), plan.threads, plan.smem_bytes, stream>>>(
      program, plan, data, partial);
  check(cudaGetLastError(), "tiled sweep launch");
}

}  // namespace

template <typename S>
void sweep_cuda(const Program& program, const SweepArgs<S>& args, const CudaPlan& plan,
                double* partial, void* scratch, void* affine, void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  SweepArgs<S> a = args;
  a.affine_first = plan.affine_bytes > 0;
  S* responses = static_cast<S*>(affine);
  if (a.affine_first) {
    const int64_t threads = (a.m + 1) * a.num_samples;
    const int per_block = 256;
    first_layer_kernel<S>
        <<<static_cast<unsigned>((threads + per_block - 1) / per_block), per_block, 0, s>>>(
            program, a, responses);
    check(cudaGetLastError(), "first-layer launch");
  }
  sweep_kernel<S><<<static_cast<unsigned>(plan.blocks), kCudaLanes, 0, s>>>(
      program, a, plan.sample_blocks, static_cast<S*>(scratch), responses, partial);
  check(cudaGetLastError(), "sweep launch");
}

template <typename S>
void sweep_cuda_tiled(const Program& program, const SweepArgs<S>& args, const TilePlan& plan,
                      S* params, double* partial, void* stream) {
  if (plan.samples <= 0 || plan.threads <= 0 || plan.threads % 32 != 0 ||
      plan.threads > kTileMaxThreads)
    throw std::invalid_argument("genni CUDA: invalid tile plan");
  auto s = static_cast<cudaStream_t>(stream);
  const int64_t total = args.num_points * plan.param_elems;
  const int build_threads = 256;
  const int64_t build_blocks =
      std::min<int64_t>((total + build_threads - 1) / build_threads, 65535);
  build_params_kernel<S>
      <<<static_cast<unsigned>(build_blocks), build_threads, 0, s>>>(program, plan, args, params);
  check(cudaGetLastError(), "parameter build launch");

  if constexpr (std::is_same<S, float>::value) {
    if (plan.tf32) {
      launch_tiled<S, true>(program, args, plan, params, partial, s);
      return;
    }
  }
  launch_tiled<S, false>(program, args, plan, params, partial, s);
}

}  // namespace genni
