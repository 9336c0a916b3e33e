// CUDA launch, indexing and reduction of the fused sweep. The arithmetic lives in
// genni/ops.h and is the same code the CPU runs.
//
// Two kernels:
// - tiled (genni/tile.h): a block takes (grid point, tile of samples) items in a grid-stride
//   loop, keeps the tile's activations in shared memory and runs the steps of tile.h with a
//   barrier between them; the grid points' parameters are built once per call by
//   build_params_kernel.
// - reference: a block of kCudaLanes threads takes (grid point, block of samples) items,
//   builds the grid point's parameters into its own global scratch slice, and each thread
//   runs one sample through the program with activations in global scratch. Slower; kept as
//   the twin the tiled kernel is tested against.
#include "sweep_kernels.cuh"

namespace genni {

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

CudaLimits cuda_limits() {
  int device = 0;
  check(cudaGetDevice(&device), "cudaGetDevice");
  CudaLimits limits{};
  int smem = 0;
  check(cudaDeviceGetAttribute(&smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, device),
        "cudaDeviceGetAttribute");
  check(cudaDeviceGetAttribute(&limits.multiprocessors, cudaDevAttrMultiProcessorCount, device),
        "cudaDeviceGetAttribute");
  int per_sm = 0;
  check(cudaDeviceGetAttribute(&per_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, device),
        "cudaDeviceGetAttribute");
  limits.smem_per_sm = per_sm;
  int major = 0, minor = 0;
  check(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device),
        "cudaDeviceGetAttribute");
  check(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device),
        "cudaDeviceGetAttribute");
  limits.compute_capability = major * 10 + minor;
  // The kernel's static shared memory (the warp sums) comes out of the same budget.
  limits.smem_optin = smem - int64_t(kTileMaxThreads / 32) * int64_t(sizeof(double));
  return limits;
}

template void sweep_cuda<float>(const Program&, const SweepArgs<float>&, const CudaPlan&, double*,
                                void*, void*, void*);
template void sweep_cuda_tiled<float>(const Program&, const SweepArgs<float>&, const TilePlan&,
                                      float*, double*, void*);

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
