// Python bindings of the fused sweep. Tensors cross as integer addresses (tensor.data_ptr())
// so that the extension needs no torch headers; genni_ext/_fused.py validates them first.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "genni/sweep.h"

namespace py = pybind11;
using genni::Program;
using genni::SweepArgs;

namespace {

using Rows = std::vector<std::vector<int64_t>>;

template <typename S>
SweepArgs<S> make_args(uintptr_t center, uintptr_t directions, uintptr_t coeffs, uintptr_t inputs,
                       uintptr_t targets, int64_t num_params, int m, int64_t num_points,
                       int64_t num_samples, bool affine_first) {
  return SweepArgs<S>{reinterpret_cast<const S*>(center),
                      reinterpret_cast<const S*>(directions),
                      reinterpret_cast<const S*>(coeffs),
                      reinterpret_cast<const S*>(inputs),
                      reinterpret_cast<const S*>(targets),
                      num_params,
                      m,
                      num_points,
                      num_samples,
                      affine_first};
}

void check_sizes(int64_t num_params, int m, int64_t num_points, int64_t num_samples) {
  if (num_params <= 0 || m <= 0 || num_points <= 0 || num_samples <= 0)
    throw std::invalid_argument("genni: P, m, G and N must all be positive");
}

void sweep_cpu(const Rows& ops, const std::vector<double>& slopes, const std::string& dtype,
               uintptr_t center, uintptr_t directions, uintptr_t coeffs, uintptr_t inputs,
               uintptr_t targets, int64_t num_params, int m, int64_t num_points,
               int64_t num_samples, bool affine_first, uintptr_t loss, int num_threads) {
  check_sizes(num_params, m, num_points, num_samples);
  const Program program = genni::make_program(ops, slopes, num_params);
  auto* out = reinterpret_cast<double*>(loss);
  py::gil_scoped_release release;
  if (dtype == "float32") {
    genni::sweep_cpu(program,
                     make_args<float>(center, directions, coeffs, inputs, targets, num_params, m,
                                      num_points, num_samples, affine_first),
                     out, num_threads);
  } else if (dtype == "float64") {
    genni::sweep_cpu(program,
                     make_args<double>(center, directions, coeffs, inputs, targets, num_params, m,
                                       num_points, num_samples, affine_first),
                     out, num_threads);
  } else {
    throw std::invalid_argument("genni: dtype must be float32 or float64, not " + dtype);
  }
}

py::dict cuda_plan(const Rows& ops, const std::vector<double>& slopes, int64_t num_params, int m,
                   int64_t num_points, int64_t num_samples, int scalar_bytes, bool affine_first) {
  check_sizes(num_params, m, num_points, num_samples);
  const Program program = genni::make_program(ops, slopes, num_params);
  const genni::CudaPlan plan =
      genni::cuda_plan(program, num_params, m, num_points, num_samples, scalar_bytes, affine_first);
  py::dict out;
  out["blocks"] = plan.blocks;
  out["sample_blocks"] = plan.sample_blocks;
  out["scratch_bytes"] = plan.scratch_bytes;
  out["affine_bytes"] = plan.affine_bytes;
  return out;
}

void sweep_cuda(const Rows& ops, const std::vector<double>& slopes, const std::string& dtype,
                uintptr_t center, uintptr_t directions, uintptr_t coeffs, uintptr_t inputs,
                uintptr_t targets, int64_t num_params, int m, int64_t num_points,
                int64_t num_samples, const py::dict& plan_dict, uintptr_t partial,
                uintptr_t scratch, uintptr_t affine, uintptr_t stream) {
  check_sizes(num_params, m, num_points, num_samples);
  const Program program = genni::make_program(ops, slopes, num_params);
  genni::CudaPlan plan{};
  plan.blocks = plan_dict["blocks"].cast<int64_t>();
  plan.sample_blocks = plan_dict["sample_blocks"].cast<int64_t>();
  plan.scratch_bytes = plan_dict["scratch_bytes"].cast<int64_t>();
  plan.affine_bytes = plan_dict["affine_bytes"].cast<int64_t>();
  auto* out = reinterpret_cast<double*>(partial);
  auto* scratch_ptr = reinterpret_cast<void*>(scratch);
  auto* affine_ptr = reinterpret_cast<void*>(affine);
  auto* stream_ptr = reinterpret_cast<void*>(stream);
  const bool use_affine = plan.affine_bytes > 0;
  py::gil_scoped_release release;
  if (dtype == "float32") {
    genni::sweep_cuda(program,
                      make_args<float>(center, directions, coeffs, inputs, targets, num_params, m,
                                       num_points, num_samples, use_affine),
                      plan, out, scratch_ptr, affine_ptr, stream_ptr);
  } else if (dtype == "float64") {
    genni::sweep_cuda(program,
                      make_args<double>(center, directions, coeffs, inputs, targets, num_params, m,
                                        num_points, num_samples, use_affine),
                      plan, out, scratch_ptr, affine_ptr, stream_ptr);
  } else {
    throw std::invalid_argument("genni: dtype must be float32 or float64, not " + dtype);
  }
}

py::dict build_info() {
  py::dict info;
  info["cpu"] = true;
  info["cuda"] = genni::cuda_compiled();
  info["cuda_devices"] = genni::cuda_device_count();
#ifdef _OPENMP
  info["openmp"] = true;
  info["openmp_max_threads"] = omp_get_max_threads();
#else
  info["openmp"] = false;
  info["openmp_max_threads"] = 1;
#endif
  info["cuda_archs"] = std::string(GENNI_CUDA_ARCHS);
  info["cpu_flags"] = std::string(GENNI_CPU_FLAGS);
  info["compiler"] = std::string(GENNI_COMPILER);
  info["max_ops"] = genni::kMaxOps;
  info["cpu_lanes"] = std::vector<int>{16, 64, 256};  // tile widths, chosen by network width
  return info;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "genni_ext fused sweep engine (C++/OpenMP and CUDA)";
  m.def("build_info", &build_info, "What this build contains and what it sees now.");
  m.def("sweep_cpu", &sweep_cpu, "Fused sweep on the CPU; writes J to loss[G].");
  m.def("cuda_plan", &cuda_plan, "Launch plan and scratch sizes of a CUDA sweep.");
  m.def("sweep_cuda", &sweep_cuda, "Fused sweep on CUDA; writes partial sums [G, blocks].");
}
