// The op program that genni_ext/lowering.py produces, as the kernels read it.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#if defined(__CUDACC__)
#define GENNI_HD __host__ __device__ __forceinline__
#else
#define GENNI_HD inline
#endif

namespace genni {

// Keep in step with genni_ext/lowering.py.
enum OpKind : int {
  kLinear = 0,
  kConv2d = 1,
  kMaxPool2d = 2,
  kAvgPool2d = 3,
  kRelu = 4,
  kLeakyRelu = 5,
  kTanh = 6,
  kSigmoid = 7,
};
constexpr int kOpFields = 16;
// The CUDA kernel takes the program by value as a kernel argument, which bounds its size.
constexpr int kMaxOps = 40;

struct Op {
  int kind;
  int in_c, in_h, in_w;
  int out_c, out_h, out_w;
  int kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w;
  int flag;              // AvgPool2d: count_include_pad
  int64_t weight, bias;  // offsets into the flat parameter vector, -1 for none
  double slope;          // LeakyReLU negative slope

  GENNI_HD int in_size() const { return in_c * in_h * in_w; }
  GENNI_HD int out_size() const { return out_c * out_h * out_w; }
  GENNI_HD bool parametric() const { return kind == kLinear || kind == kConv2d; }
};

struct Program {
  Op ops[kMaxOps];
  int n_ops;
  int max_activation;  // largest per-sample activation, input included
};

// Builds and checks a Program from the rows of lowering.Program.ops.
inline Program make_program(const std::vector<std::vector<int64_t>>& rows,
                            const std::vector<double>& slopes, int64_t num_params) {
  if (rows.empty()) throw std::invalid_argument("genni: empty op program");
  if (rows.size() > static_cast<size_t>(kMaxOps))
    throw std::invalid_argument("genni: the program has " + std::to_string(rows.size()) +
                                " ops; the fused engine runs at most " + std::to_string(kMaxOps));
  if (slopes.size() != rows.size())
    throw std::invalid_argument("genni: one slope per op is required");
  Program p{};
  p.n_ops = static_cast<int>(rows.size());
  p.max_activation = 0;
  for (size_t i = 0; i < rows.size(); ++i) {
    const auto& r = rows[i];
    if (r.size() != static_cast<size_t>(kOpFields))
      throw std::invalid_argument("genni: op rows must have 16 fields");
    Op& op = p.ops[i];
    op.kind = static_cast<int>(r[0]);
    op.in_c = static_cast<int>(r[1]);
    op.in_h = static_cast<int>(r[2]);
    op.in_w = static_cast<int>(r[3]);
    op.out_c = static_cast<int>(r[4]);
    op.out_h = static_cast<int>(r[5]);
    op.out_w = static_cast<int>(r[6]);
    op.kernel_h = static_cast<int>(r[7]);
    op.kernel_w = static_cast<int>(r[8]);
    op.stride_h = static_cast<int>(r[9]);
    op.stride_w = static_cast<int>(r[10]);
    op.pad_h = static_cast<int>(r[11]);
    op.pad_w = static_cast<int>(r[12]);
    op.weight = r[13];
    op.bias = r[14];
    op.flag = static_cast<int>(r[15]);
    op.slope = slopes[i];
    if (op.kind < kLinear || op.kind > kSigmoid)
      throw std::invalid_argument("genni: unknown op kind " + std::to_string(op.kind));
    if (op.in_size() <= 0 || op.out_size() <= 0)
      throw std::invalid_argument("genni: op " + std::to_string(i) + " has an empty shape");
    if (i > 0 && op.in_size() != p.ops[i - 1].out_size())
      throw std::invalid_argument("genni: op " + std::to_string(i) +
                                  " does not take the previous op's output");
    int64_t weight_count = 0;
    if (op.kind == kLinear) weight_count = int64_t(op.in_size()) * op.out_c;
    if (op.kind == kConv2d) weight_count = int64_t(op.in_c) * op.out_c * op.kernel_h * op.kernel_w;
    if (op.parametric()) {
      if (op.weight < 0 || op.weight + weight_count > num_params)
        throw std::invalid_argument("genni: op " + std::to_string(i) +
                                    " has its weight outside the parameter vector");
      if (op.bias >= 0 && op.bias + op.out_c > num_params)
        throw std::invalid_argument("genni: op " + std::to_string(i) +
                                    " has its bias outside the parameter vector");
    }
    if (op.in_size() > p.max_activation) p.max_activation = op.in_size();
    if (op.out_size() > p.max_activation) p.max_activation = op.out_size();
  }
  return p;
}

}  // namespace genni
