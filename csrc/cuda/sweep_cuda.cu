// CUDA launch, indexing and reduction of the fused sweep. The arithmetic lives in
// genni/ops.h and is the same code the CPU runs, with one sample lane per thread.
//
// A block of kCudaLanes threads takes work items (grid point, block of samples) in a grid-
// stride loop. It builds the grid point's parameters once into its scratch slice, each
// thread runs its sample through the program with activations at stride kCudaLanes (so
// neighbouring threads touch neighbouring addresses), and the block reduces the squared
// errors in double into one partial sum per item.
#include <cuda_runtime.h>

#include <algorithm>
#include <stdexcept>
#include <string>

#include "../genni/ops.h"
#include "../genni/sweep.h"

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
      for (int64_t k = lane; k < a.num_params; k += kCudaLanes) {
        S v = a.center[k];
        for (int i = 0; i < a.m; ++i) v += c[i] * a.directions[i * a.num_params + k];
        params[k] = v;
      }
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

}  // namespace

CudaPlan cuda_plan(const Program& program, int64_t num_params, int m, int64_t num_points,
                   int64_t num_samples, int scalar_bytes, bool affine_first) {
  int device = 0;
  check(cudaGetDevice(&device), "cudaGetDevice");
  int sms = 0;
  check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device),
        "cudaDeviceGetAttribute");
  CudaPlan plan{};
  plan.sample_blocks = (num_samples + kCudaLanes - 1) / kCudaLanes;
  const int64_t per_block = block_scalars(program, num_params) * scalar_bytes;
  const int64_t items = num_points * plan.sample_blocks;
  plan.blocks = std::max<int64_t>(
      1, std::min({items, int64_t(sms) * kBlocksPerSm, kScratchBudget / per_block}));
  plan.scratch_bytes = plan.blocks * per_block;
  plan.affine_bytes =
      affine_first && program.ops[0].parametric()
          ? (m + 1) * int64_t(program.ops[0].out_size()) * num_samples * scalar_bytes
          : 0;
  return plan;
}

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

template void sweep_cuda<float>(const Program&, const SweepArgs<float>&, const CudaPlan&, double*,
                                void*, void*, void*);
template void sweep_cuda<double>(const Program&, const SweepArgs<double>&, const CudaPlan&, double*,
                                 void*, void*, void*);

bool cuda_compiled() { return true; }

int cuda_device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error
    return 0;
  }
  return count;
}

}  // namespace genni
