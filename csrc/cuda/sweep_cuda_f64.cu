// The double-precision instantiations of the CUDA sweep (see sweep_kernels.cuh).
#include "sweep_kernels.cuh"

namespace genni {

template void sweep_cuda<double>(const Program&, const SweepArgs<double>&, const CudaPlan&, double*,
                                 void*, void*, void*);
template void sweep_cuda_tiled<double>(const Program&, const SweepArgs<double>&, const TilePlan&,
                                       double*, double*, void*);

}  // namespace genni
