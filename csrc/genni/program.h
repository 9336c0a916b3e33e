// The op program that genni_ext/engine/lowering.py produces, as the kernels read it: POD
// structs and their device-safe accessors (built and checked by genni/program_build.h).
#pragma once

#include <cstddef>
#include <cstdint>

#if defined(__CUDACC__)
#define GENNI_HD __host__ __device__ __forceinline__
#else
#define GENNI_HD inline
#endif

namespace genni {

// Op kinds. genni_ext/engine/lowering.py takes them by name from _C.OP_KINDS (bindings.cpp).
enum OpKind : int {
  kLinear = 0,
  kConv2d = 1,
  kMaxPool2d = 2,
  kAvgPool2d = 3,
  kRelu = 4,
  kLeakyRelu = 5,
  kTanh = 6,
  kSigmoid = 7,
  kOpKinds,  // how many kinds there are
};

// The columns of one op row (a row of lowering.Program.ops). Python takes them by name from
// _C.OP_FIELD_INDEX.
enum OpField : int {
  kFieldKind = 0,
  kFieldInC,
  kFieldInH,
  kFieldInW,
  kFieldOutC,
  kFieldOutH,
  kFieldOutW,
  kFieldKernelH,
  kFieldKernelW,
  kFieldStrideH,
  kFieldStrideW,
  kFieldPadH,
  kFieldPadW,
  kFieldWeight,  // offset of the weight in the flat parameter vector, -1 for none
  kFieldBias,    // offset of the bias, -1 for none
  kFieldFlag,    // AvgPool2d: count_include_pad
  kOpFields,     // how many columns a row has
};

// The names Python uses for the kinds and the columns, in enum order (checked below).
template <typename E>
struct Named {
  E value;
  const char* name;
};
inline constexpr Named<OpKind> kOpKindNames[] = {
    {kLinear, "linear"},       {kConv2d, "conv2d"},   {kMaxPool2d, "maxpool2d"},
    {kAvgPool2d, "avgpool2d"}, {kRelu, "relu"},       {kLeakyRelu, "leaky_relu"},
    {kTanh, "tanh"},           {kSigmoid, "sigmoid"},
};
inline constexpr Named<OpField> kOpFieldNames[] = {
    {kFieldKind, "kind"},        {kFieldInC, "in_c"},         {kFieldInH, "in_h"},
    {kFieldInW, "in_w"},         {kFieldOutC, "out_c"},       {kFieldOutH, "out_h"},
    {kFieldOutW, "out_w"},       {kFieldKernelH, "kernel_h"}, {kFieldKernelW, "kernel_w"},
    {kFieldStrideH, "stride_h"}, {kFieldStrideW, "stride_w"}, {kFieldPadH, "pad_h"},
    {kFieldPadW, "pad_w"},       {kFieldWeight, "weight"},    {kFieldBias, "bias"},
    {kFieldFlag, "flag"},
};

// Whether `names` lists the values 0, 1, ..., count - 1 once each, in that order.
template <typename E, size_t N>
constexpr bool names_every_value_in_order(const Named<E> (&names)[N], int count) {
  if (N != static_cast<size_t>(count)) return false;
  for (size_t i = 0; i < N; ++i)
    if (static_cast<size_t>(names[i].value) != i) return false;
  return true;
}
static_assert(names_every_value_in_order(kOpKindNames, kOpKinds), "one name per op kind");
static_assert(names_every_value_in_order(kOpFieldNames, kOpFields), "one name per op field");

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

}  // namespace genni
