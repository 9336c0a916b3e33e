// Stands in for sweep_cuda.cu in builds without nvcc (GENNI_CUDA=OFF or none found).
#include <stdexcept>

#include "../genni/sweep.h"

namespace genni {

namespace {
[[noreturn]] void not_built() {
  throw std::runtime_error(
      "genni_ext was built without CUDA; reinstall with nvcc on PATH and GENNI_CUDA=ON");
}
}  // namespace

CudaPlan cuda_plan(const Program&, int64_t, int, int64_t, int64_t, int, bool) { not_built(); }

template <typename S>
void sweep_cuda(const Program&, const SweepArgs<S>&, const CudaPlan&, double*, void*, void*,
                void*) {
  not_built();
}
template void sweep_cuda<float>(const Program&, const SweepArgs<float>&, const CudaPlan&, double*,
                                void*, void*, void*);
template void sweep_cuda<double>(const Program&, const SweepArgs<double>&, const CudaPlan&, double*,
                                 void*, void*, void*);

template <typename S>
void sweep_cuda_tiled(const Program&, const SweepArgs<S>&, const TilePlan&, S*, double*, void*) {
  not_built();
}
template void sweep_cuda_tiled<float>(const Program&, const SweepArgs<float>&, const TilePlan&,
                                      float*, double*, void*);
template void sweep_cuda_tiled<double>(const Program&, const SweepArgs<double>&, const TilePlan&,
                                       double*, double*, void*);

CudaLimits cuda_limits() { not_built(); }

bool cuda_compiled() { return false; }
int cuda_device_count() { return 0; }

}  // namespace genni
