// Python bindings of the fused sweep. Tensors cross as integer addresses (tensor.data_ptr())
// so that the extension needs no torch headers; genni_ext/engine/front_door.py validates them
// first. The op program and the CUDA kernels' plans are bound objects (Program, TilePlan,
// CudaPlan): built and checked once per sweep, then passed to every chunk's call as they are.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "genni/program_build.h"
#include "genni/sweep.h"
#include "genni/tile_plan.h"

namespace py = pybind11;
using genni::SweepArgs;
using genni::TilePlan;

namespace {

using Rows = std::vector<std::vector<int64_t>>;

// A Program as Python holds it: checked once when built from the rows of
// lowering.Program.ops, and kept with them (they are what it pickles to).
struct BoundProgram {
  genni::Program program;
  Rows rows;
  std::vector<double> slopes;
  int64_t num_params;

  BoundProgram(Rows r, std::vector<double> s, int64_t p)
      : program(genni::make_program(r, s, p)), rows(std::move(r)), slopes(std::move(s)),
        num_params(p) {}
};

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

// Returns f(S{}) for the scalar type S that `dtype` names: float for "float32", double for
// "float64". Every entry point that takes a dtype dispatches through here.
template <typename F>
auto with_scalar(const std::string& dtype, F&& f) {
  if (dtype == "float32") return f(float{});
  if (dtype == "float64") return f(double{});
  throw std::invalid_argument("genni: dtype must be float32 or float64, not " + dtype);
}

// The sizes of a call, against the program it runs (whose offsets were checked against
// its own parameter count).
void check_sizes(const BoundProgram& program, int64_t num_params, int m, int64_t num_points,
                 int64_t num_samples) {
  if (num_params <= 0 || m <= 0 || num_points <= 0 || num_samples <= 0)
    throw std::invalid_argument("genni: P, m, G and N must all be positive");
  if (num_params != program.num_params)
    throw std::invalid_argument("genni: the program was built for " +
                                std::to_string(program.num_params) + " parameters, not " +
                                std::to_string(num_params));
}

void sweep_cpu(const BoundProgram& program, const std::string& dtype, uintptr_t center,
               uintptr_t directions, uintptr_t coeffs, uintptr_t inputs, uintptr_t targets,
               int64_t num_params, int m, int64_t num_points, int64_t num_samples,
               bool affine_first, uintptr_t loss, int num_threads) {
  check_sizes(program, num_params, m, num_points, num_samples);
  auto* out = reinterpret_cast<double*>(loss);
  py::gil_scoped_release release;
  with_scalar(dtype, [&](auto zero) {
    using S = decltype(zero);
    genni::sweep_cpu(program.program,
                     make_args<S>(center, directions, coeffs, inputs, targets, num_params, m,
                                  num_points, num_samples, affine_first),
                     out, num_threads);
  });
}

genni::CudaPlan cuda_plan(const BoundProgram& program, int m, int64_t num_points,
                          int64_t num_samples, int scalar_bytes, bool affine_first) {
  check_sizes(program, program.num_params, m, num_points, num_samples);
  return genni::cuda_plan(program.program, program.num_params, m, num_points, num_samples,
                          scalar_bytes, affine_first);
}

void sweep_cuda(const BoundProgram& program, const std::string& dtype, uintptr_t center,
                uintptr_t directions, uintptr_t coeffs, uintptr_t inputs, uintptr_t targets,
                int64_t num_params, int m, int64_t num_points, int64_t num_samples,
                const genni::CudaPlan& plan, uintptr_t partial, uintptr_t scratch,
                uintptr_t affine, uintptr_t stream) {
  check_sizes(program, num_params, m, num_points, num_samples);
  auto* out = reinterpret_cast<double*>(partial);
  auto* scratch_ptr = reinterpret_cast<void*>(scratch);
  auto* affine_ptr = reinterpret_cast<void*>(affine);
  auto* stream_ptr = reinterpret_cast<void*>(stream);
  const bool use_affine = plan.affine_bytes > 0;
  py::gil_scoped_release release;
  with_scalar(dtype, [&](auto zero) {
    using S = decltype(zero);
    genni::sweep_cuda(program.program,
                      make_args<S>(center, directions, coeffs, inputs, targets, num_params, m,
                                   num_points, num_samples, use_affine),
                      plan, out, scratch_ptr, affine_ptr, stream_ptr);
  });
}

// Entries of a per-op table of a TilePlan, which holds kMaxOps of them.
template <typename T>
std::vector<int> per_op(const T (&values)[genni::kMaxOps]) {
  return std::vector<int>(values, values + genni::kMaxOps);
}

py::dict plan_to_dict(const TilePlan& plan) {
  py::dict out;
  out["samples"] = plan.samples;
  out["threads"] = plan.threads;
  out["max_lanes"] = plan.max_lanes;
  out["tiles"] = plan.tiles;
  out["params_in_shared"] = plan.params_in_shared;
  out["stage_elems"] = plan.stage_elems;
  out["arena_elems"] = plan.arena_elems;
  out["smem_bytes"] = plan.smem_bytes;
  out["lanes"] = per_op(plan.lanes);
  out["transposed"] = plan.transposed;
  out["tf32"] = plan.tf32;
  out["param_elems"] = plan.param_elems;
  out["weights_at"] = per_op(plan.weights_at);
  return out;
}

TilePlan plan_from_dict(const py::dict& d) {
  TilePlan plan{};
  plan.samples = d["samples"].cast<int>();
  plan.threads = d["threads"].cast<int>();
  plan.max_lanes = d["max_lanes"].cast<int>();
  plan.tiles = d["tiles"].cast<int64_t>();
  plan.params_in_shared = d["params_in_shared"].cast<bool>();
  plan.stage_elems = d["stage_elems"].cast<int64_t>();
  plan.arena_elems = d["arena_elems"].cast<int64_t>();
  plan.smem_bytes = d["smem_bytes"].cast<int64_t>();
  plan.transposed = d["transposed"].cast<bool>();
  plan.tf32 = d["tf32"].cast<bool>();
  plan.param_elems = d["param_elems"].cast<int64_t>();
  const auto weights_at = d["weights_at"].cast<std::vector<int>>();
  if (weights_at.size() != static_cast<size_t>(genni::kMaxOps))
    throw std::invalid_argument("genni: a tile plan has one weights_at entry per possible op");
  for (int i = 0; i < genni::kMaxOps; ++i) plan.weights_at[i] = weights_at[i];
  const auto lanes = d["lanes"].cast<std::vector<int>>();
  if (lanes.size() != static_cast<size_t>(genni::kMaxOps))
    throw std::invalid_argument("genni: a tile plan has one lanes entry per possible op");
  for (int i = 0; i < genni::kMaxOps; ++i) {
    if (lanes[i] != 0 && lanes[i] != 1 && lanes[i] != 2 && lanes[i] != 4 && lanes[i] != 8)
      throw std::invalid_argument("genni: tile lanes must be 1, 2, 4 or 8");
    plan.lanes[i] = static_cast<signed char>(lanes[i]);
  }
  return plan;
}

// samples, threads, max_lanes and layout of 0 take the defaults; smem_limit and
// smem_per_sm are the shared memory of a block and of a multiprocessor (cuda_limits()).
TilePlan tile_plan(const BoundProgram& program, int64_t num_samples, int scalar_bytes, int samples,
                   int threads, int max_lanes, int layout, bool tf32, int64_t smem_limit,
                   int64_t smem_per_sm) {
  if (num_samples <= 0) throw std::invalid_argument("genni: N must be positive");
  if (samples < 0 || samples % genni::kTileAlign != 0)
    throw std::invalid_argument("genni: tile samples must be a multiple of " +
                                std::to_string(genni::kTileAlign));
  if (threads < 0 || threads % 32 != 0 || threads > genni::kTileMaxThreads)
    throw std::invalid_argument("genni: tile threads must be a multiple of 32, at most " +
                                std::to_string(genni::kTileMaxThreads));
  if (max_lanes != 0 && max_lanes != 1 && max_lanes != 2 && max_lanes != 4 && max_lanes != 8)
    throw std::invalid_argument("genni: max_lanes must be 1, 2, 4 or 8");
  if (layout < 0 || layout > 2)
    throw std::invalid_argument("genni: layout must be 1 (torch's) or 2 (transposed)");
  return genni::tile_plan(program.program, program.num_params, num_samples, scalar_bytes,
                          genni::TileOptions{samples, threads, max_lanes, layout, tf32},
                          smem_limit, smem_per_sm);
}

void check_plan(const BoundProgram& program, const TilePlan& plan, int scalar_bytes) {
  if (plan.samples <= 0)
    throw std::invalid_argument("genni: the tile plan has no tile (it did not fit)");
  genni::check_tile_plan(program.program, plan, scalar_bytes);
}

int scalar_bytes_of(const std::string& dtype) {
  return with_scalar(dtype, [](auto zero) { return static_cast<int>(sizeof(zero)); });
}

// The steps of a tiled sweep as the kernel runs them: fused ops, lanes per item, items.
py::list tile_schedule(const BoundProgram& bound, const TilePlan& plan, const std::string& dtype) {
  const genni::Program& program = bound.program;
  check_plan(bound, plan, scalar_bytes_of(dtype));
  py::list steps;
  for (int i = 0; i < program.n_ops;) {
    const genni::TileStep s = genni::tile_step(program, i);
    const int lanes = plan.lanes[i];
    int width = 1;
    const int64_t positions = genni::tile_positions(program, s, &width);
    py::dict step;
    step["op"] = s.op;
    step["activation"] = s.act;
    step["pool"] = s.pool;
    step["lanes"] = lanes;
    step["items"] = positions * (plan.samples / lanes);
    const int64_t count = plan.transposed ? genni::tile_block_elems(program.ops[i])
                                          : genni::op_param_count(program.ops[i]);
    step["staged"] =
        !plan.params_in_shared && program.ops[i].parametric() && count <= plan.stage_elems;
    steps.append(step);
    i = s.next;
  }
  return steps;
}

py::dict cuda_limits() {
  const genni::CudaLimits limits = genni::cuda_limits();
  py::dict out;
  out["smem_optin"] = limits.smem_optin;
  out["smem_per_sm"] = limits.smem_per_sm;
  out["multiprocessors"] = limits.multiprocessors;
  out["compute_capability"] = limits.compute_capability;
  return out;
}

void sweep_cuda_tiled(const BoundProgram& program, const std::string& dtype, uintptr_t center,
                      uintptr_t directions, uintptr_t coeffs, uintptr_t inputs, uintptr_t targets,
                      int64_t num_params, int m, int64_t num_points, int64_t num_samples,
                      const TilePlan& plan, uintptr_t params, uintptr_t partial,
                      uintptr_t stream) {
  check_sizes(program, num_params, m, num_points, num_samples);
  check_plan(program, plan, scalar_bytes_of(dtype));
  auto* out = reinterpret_cast<double*>(partial);
  auto* stream_ptr = reinterpret_cast<void*>(stream);
  py::gil_scoped_release release;
  with_scalar(dtype, [&](auto zero) {
    using S = decltype(zero);
    genni::sweep_cuda_tiled(program.program,
                            make_args<S>(center, directions, coeffs, inputs, targets, num_params, m,
                                         num_points, num_samples, false),
                            plan, reinterpret_cast<S*>(params), out, stream_ptr);
  });
}

void sweep_tile_emulated(const BoundProgram& program, const std::string& dtype, uintptr_t center,
                         uintptr_t directions, uintptr_t coeffs, uintptr_t inputs,
                         uintptr_t targets, int64_t num_params, int m, int64_t num_points,
                         int64_t num_samples, const TilePlan& plan, uintptr_t partial,
                         bool reverse) {
  check_sizes(program, num_params, m, num_points, num_samples);
  check_plan(program, plan, scalar_bytes_of(dtype));
  auto* out = reinterpret_cast<double*>(partial);
  py::gil_scoped_release release;
  with_scalar(dtype, [&](auto zero) {
    using S = decltype(zero);
    genni::sweep_tile_emulated(program.program,
                               make_args<S>(center, directions, coeffs, inputs, targets, num_params,
                                            m, num_points, num_samples, false),
                               plan, out, reverse);
  });
}

py::dict build_info() {
  py::dict info;
  info["cpu"] = true;
  info["cuda"] = genni::cuda_compiled();
  info["cuda_devices"] = genni::cuda_device_count();
  // Compiled with OpenMP: its simd pragmas. The CPU threads are the engine's own pool
  // (cpu/thread_pool.h), not OpenMP's, so OpenMP's thread settings do not apply to them.
#ifdef _OPENMP
  info["openmp"] = true;
#else
  info["openmp"] = false;
#endif
  info["cuda_archs"] = std::string(GENNI_CUDA_ARCHS);
  info["cuda_note"] = std::string(GENNI_CUDA_NOTE);  // why CUDA was not built, and how to
  info["cpu_flags"] = std::string(GENNI_CPU_FLAGS);
  info["compiler"] = std::string(GENNI_COMPILER);
  info["max_ops"] = genni::kMaxOps;
  info["cpu_lanes"] = std::vector<int>{16, 64, 256};  // tile widths, chosen by network width
  info["small_net_max_width"] = genni::kSmallNetMaxWidth;  // widest hidden layer of that path
  return info;
}

// {name: value} of a genni::Named table, in its (value) order.
template <typename E, size_t N>
py::dict names_to_values(const genni::Named<E> (&names)[N]) {
  py::dict out;
  for (const auto& entry : names) out[entry.name] = static_cast<int>(entry.value);
  return out;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "genni_ext fused sweep engine (C++ with its own CPU threads, and CUDA)";
  // The op program's layout (genni/program.h), which genni_ext/engine/lowering.py builds on.
  m.attr("OP_KINDS") = names_to_values(genni::kOpKindNames);
  m.attr("OP_FIELD_INDEX") = names_to_values(genni::kOpFieldNames);
  m.attr("OP_FIELDS") = static_cast<int>(genni::kOpFields);
  m.attr("MAX_OPS") = genni::kMaxOps;

  py::class_<BoundProgram>(m, "Program",
                           "An op program, checked once: Program(rows, slopes, num_params) from "
                           "the rows of lowering.Program.ops; raises ValueError for rows the "
                           "engine cannot run.")
      .def(py::init<Rows, std::vector<double>, int64_t>(), py::arg("rows"), py::arg("slopes"),
           py::arg("num_params"))
      .def_property_readonly("n_ops", [](const BoundProgram& p) { return p.program.n_ops; })
      .def_readonly("num_params", &BoundProgram::num_params)
      .def_readonly("rows", &BoundProgram::rows)
      .def_readonly("slopes", &BoundProgram::slopes)
      .def(py::pickle(
          [](const BoundProgram& p) { return py::make_tuple(p.rows, p.slopes, p.num_params); },
          [](const py::tuple& t) {
            return BoundProgram(t[0].cast<Rows>(), t[1].cast<std::vector<double>>(),
                                t[2].cast<int64_t>());
          }));

  py::class_<TilePlan>(m, "TilePlan",
                       "The tiled CUDA kernel's plan (tile_plan()); samples == 0 where the "
                       "smallest tile does not fit. as_dict() and TilePlan.from_dict() give "
                       "and take its fields.")
      .def_readonly("samples", &TilePlan::samples)
      .def_readonly("threads", &TilePlan::threads)
      .def_readonly("max_lanes", &TilePlan::max_lanes)
      .def_readonly("tiles", &TilePlan::tiles)
      .def_readonly("params_in_shared", &TilePlan::params_in_shared)
      .def_readonly("stage_elems", &TilePlan::stage_elems)
      .def_readonly("arena_elems", &TilePlan::arena_elems)
      .def_readonly("smem_bytes", &TilePlan::smem_bytes)
      .def_readonly("transposed", &TilePlan::transposed)
      .def_readonly("tf32", &TilePlan::tf32)
      .def_readonly("param_elems", &TilePlan::param_elems)
      .def_property_readonly("lanes", [](const TilePlan& p) { return per_op(p.lanes); })
      .def_property_readonly("weights_at", [](const TilePlan& p) { return per_op(p.weights_at); })
      .def("as_dict", &plan_to_dict)
      .def_static("from_dict", &plan_from_dict, py::arg("fields"))
      .def(py::pickle(&plan_to_dict, [](const py::dict& d) { return plan_from_dict(d); }));

  m.def("build_info", &build_info,
        "What the compiled engine contains and sees now: cpu, cuda (the CUDA kernel was "
        "compiled), cuda_devices (visible now), openmp, cuda_archs, cuda_note (why CUDA was "
        "not built and how to add it; empty when it was), the compiler and its flags, "
        "max_ops, cpu_lanes and small_net_max_width (the widest hidden layer of the CPU's "
        "small-net path, see uses_small_net).");
  m.def("sweep_cpu", &sweep_cpu, "Fused sweep on the CPU; writes J to loss[G].");
  m.def(
      "uses_small_net",
      [](const BoundProgram& program) { return genni::uses_small_net(program.program); },
      "Whether the CPU sweep runs this program on its small-net path (all activations in "
      "registers) rather than the general driver; decided from its shapes alone. The "
      "first_layer='affine' option still takes the general driver.");
  py::class_<genni::CudaPlan>(m, "CudaPlan",
                              "The reference CUDA kernel's launch plan (cuda_plan()): resident "
                              "blocks, sample blocks per grid point and the bytes of device "
                              "scratch and first-layer responses the caller allocates. A plan "
                              "made for n grid points runs any chunk of at most n.")
      .def_readonly("blocks", &genni::CudaPlan::blocks)
      .def_readonly("sample_blocks", &genni::CudaPlan::sample_blocks)
      .def_readonly("scratch_bytes", &genni::CudaPlan::scratch_bytes)
      .def_readonly("affine_bytes", &genni::CudaPlan::affine_bytes);
  m.def("cuda_plan", &cuda_plan,
        "Launch plan and scratch sizes of a CUDA sweep of up to num_points grid points.");
  m.def("sweep_cuda", &sweep_cuda,
        "Fused sweep on CUDA, reference kernel; writes partial sums [G, blocks].");
  m.def("tile_plan", &tile_plan, "Tile size, threads and shared memory of a tiled CUDA sweep.");
  m.def("tile_schedule", &tile_schedule, "The fused steps of a tiled sweep and their work split.");
  m.def("cuda_limits", &cuda_limits, "Opt-in shared memory per block and SMs of the device.");
  m.def("sweep_cuda_tiled", &sweep_cuda_tiled,
        "Fused sweep on CUDA, tiled kernel; writes partial sums [G, tiles].");
  m.def("sweep_tile_emulated", &sweep_tile_emulated,
        "The tiled CUDA kernel's block steps run on the CPU (a test of the kernel's indexing).");
}
