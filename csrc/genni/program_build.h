// Host-only construction of a Program (genni/program.h) from the rows Python sends: checked
// once, with exceptions, and included by host code only (the bindings).
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "program.h"

namespace genni {

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
      throw std::invalid_argument("genni: op rows must have " + std::to_string(kOpFields) +
                                  " fields");
    Op& op = p.ops[i];
    op.kind = static_cast<int>(r[kFieldKind]);
    op.in_c = static_cast<int>(r[kFieldInC]);
    op.in_h = static_cast<int>(r[kFieldInH]);
    op.in_w = static_cast<int>(r[kFieldInW]);
    op.out_c = static_cast<int>(r[kFieldOutC]);
    op.out_h = static_cast<int>(r[kFieldOutH]);
    op.out_w = static_cast<int>(r[kFieldOutW]);
    op.kernel_h = static_cast<int>(r[kFieldKernelH]);
    op.kernel_w = static_cast<int>(r[kFieldKernelW]);
    op.stride_h = static_cast<int>(r[kFieldStrideH]);
    op.stride_w = static_cast<int>(r[kFieldStrideW]);
    op.pad_h = static_cast<int>(r[kFieldPadH]);
    op.pad_w = static_cast<int>(r[kFieldPadW]);
    op.weight = r[kFieldWeight];
    op.bias = r[kFieldBias];
    op.flag = static_cast<int>(r[kFieldFlag]);
    op.slope = slopes[i];
    if (op.kind < 0 || op.kind >= kOpKinds)
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
