// Per-op arithmetic of the fused sweep, shared by the OpenMP CPU loop and the CUDA kernel.
//
// Activations are stored feature-major with samples innermost: feature f of lane l lives at
// buf[f * stride + l]. The CPU runs L = 16 lanes (a tile of samples, the SIMD dimension) per
// call with stride L; a CUDA thread runs L = 1 lane with the stride of its block, so every op
// is "scalar weight times a vector of samples" on both.
#pragma once

#include <cmath>

#include "params.h"
#include "program.h"

#if defined(__CUDA_ARCH__)
#define GENNI_SIMD
#define GENNI_SIMD_SUM(var)
#else
#define GENNI_SIMD _Pragma("omp simd")
#define GENNI_PRAGMA(text) _Pragma(#text)
#define GENNI_SIMD_SUM(var) GENNI_PRAGMA(omp simd reduction(+ : var))
#endif

namespace genni {

GENNI_HD float fast_tanh(float v) { return tanhf(v); }
GENNI_HD double fast_tanh(double v) { return tanh(v); }
GENNI_HD float fast_exp(float v) { return expf(v); }
GENNI_HD double fast_exp(double v) { return exp(v); }

// ReLU and LeakyReLU, written once for one value (T = S) and for a GCC vector of S (the CPU's
// small-net path, cpu/small_net.h).
template <typename S, typename T>
GENNI_HD T relu_value(T v) {
  return v > S(0) ? v : T{};
}
template <typename S, typename T>
GENNI_HD T leaky_relu_value(T v, S slope) {
  return v > S(0) ? v : v * slope;
}

template <typename S>
GENNI_HD S activate(int kind, S v, S slope) {
  switch (kind) {
    case kRelu:
      return relu_value<S>(v);
    case kLeakyRelu:
      return leaky_relu_value<S>(v, slope);
    case kTanh:
      return fast_tanh(v);
    default:  // kSigmoid
      return S(1) / (S(1) + fast_exp(-v));
  }
}

// Loads L consecutive lanes. On the GPU the tiled kernel keeps lanes 16-byte aligned (its
// tiles are multiples of 8 samples), so whole vectors are loaded in one instruction each.
template <typename S, int L>
GENNI_HD void load_lanes(const S* x, S (&v)[L]) {
#if defined(__CUDA_ARCH__)
  constexpr int bytes = L * int(sizeof(S));
  if constexpr (bytes % 16 == 0) {
#pragma unroll
    for (int i = 0; i < bytes / 16; ++i)
      reinterpret_cast<float4*>(v)[i] = reinterpret_cast<const float4*>(x)[i];
  } else if constexpr (bytes == 8) {
    reinterpret_cast<float2*>(v)[0] = reinterpret_cast<const float2*>(x)[0];
  } else {
#pragma unroll
    for (int l = 0; l < L; ++l) v[l] = x[l];
  }
#else
  for (int l = 0; l < L; ++l) v[l] = x[l];
#endif
}

// acc[k][l] += w[k * w_stride] * x[l] for OB outputs and L lanes: the multiply-add at the
// heart of Linear and Conv2d. Tr: the OB weights are contiguous (w_stride 1) and, on the
// GPU, aligned to 16 bytes when OB * sizeof(S) is a multiple of 16 (the tiled kernel's
// transposed weight layout), so they load as vectors.
template <typename S, int L, int OB, bool Tr = false>
GENNI_HD void fma_block(S (&acc)[OB][L], const S* w, long w_stride, const S* x) {
#if defined(__CUDA_ARCH__)
  S v[L];
  load_lanes<S, L>(x, v);
  S wv[OB];
  if constexpr (Tr && (OB * sizeof(S)) % 16 == 0) {
#pragma unroll
    for (int i = 0; i < int(OB * sizeof(S)) / 16; ++i)
      reinterpret_cast<float4*>(wv)[i] = reinterpret_cast<const float4*>(w)[i];
  } else {
#pragma unroll
    for (int k = 0; k < OB; ++k) wv[k] = w[Tr ? k : k * w_stride];
  }
#pragma unroll
  for (int k = 0; k < OB; ++k) {
#pragma unroll
    for (int l = 0; l < L; ++l) acc[k][l] += wv[k] * v[l];
  }
#else
  for (int k = 0; k < OB; ++k) {
    const S wk = w[Tr ? k : k * w_stride];
    GENNI_SIMD for (int l = 0; l < L; ++l) acc[k][l] += wk * x[l];
  }
#endif
}

// acc[k][l] = bias[k] (or 0).
template <typename S, int L, int OB>
GENNI_HD void init_block(S (&acc)[OB][L], const S* bias) {
  for (int k = 0; k < OB; ++k) {
    const S b = bias ? bias[k] : S(0);
    for (int l = 0; l < L; ++l) acc[k][l] = b;
  }
}

template <typename S, int L>
GENNI_HD void activation_op(const Op& op, const S* in, int in_stride, S* out, int out_stride) {
  const int n = op.in_size();
  const S slope = static_cast<S>(op.slope);
  for (int f = 0; f < n; ++f) {
    const S* x = in + static_cast<long>(f) * in_stride;
    S* y = out + static_cast<long>(f) * out_stride;
    // The switch is hoisted out of the lane loop so that it vectorises. ReLU and LeakyReLU
    // are written out here as relu_value and leaky_relu_value compute them: through those
    // templates GCC 12 vectorised the loops differently and LeNet-5's CPU sweep ran 2.6 %
    // slower (benchmarks/README.md, issue 20).
    switch (op.kind) {
      case kRelu:
        GENNI_SIMD for (int l = 0; l < L; ++l) y[l] = x[l] > S(0) ? x[l] : S(0);
        break;
      case kLeakyRelu:
        GENNI_SIMD for (int l = 0; l < L; ++l) y[l] = x[l] > S(0) ? x[l] : x[l] * slope;
        break;
      default:
        for (int l = 0; l < L; ++l) y[l] = activate(op.kind, x[l], slope);
    }
  }
}

// OB outputs of a Linear layer at once: each input row is loaded once for OB weights.
// Weights are torch's [out, in], or with Tr transposed to [in, wt] (wt >= out, padded).
template <typename S, int L, int OB, bool Tr = false>
GENNI_HD void linear_block(int o, int n_in, const S* weight, const S* bias, const S* in,
                           int in_stride, S* out, int out_stride, long wt = 0) {
  S acc[OB][L];
  init_block<S, L, OB>(acc, bias ? bias + o : nullptr);
  const S* w = Tr ? weight + o : weight + static_cast<long>(o) * n_in;
  for (int i = 0; i < n_in; ++i)
    fma_block<S, L, OB, Tr>(acc, Tr ? w + i * wt : w + i, n_in,
                            in + static_cast<long>(i) * in_stride);
  for (int k = 0; k < OB; ++k)
    for (int l = 0; l < L; ++l) out[static_cast<long>(o + k) * out_stride + l] = acc[k][l];
}

// Outputs are computed in blocks (as many as the accumulators that fit the vector register
// file, at most 8, then 4, 2, 1): independent accumulators hide the FMA latency, and each
// input vector is loaded once per block.
#if defined(__CUDA_ARCH__)
constexpr int kAccumulatorBytes = 1 << 30;  // one lane per thread: the cap of 8 applies
#elif defined(__AVX512F__)
constexpr int kAccumulatorBytes = 16 * 64;  // half of the 32 zmm registers
#else
constexpr int kAccumulatorBytes = 8 * 32;  // half of the 16 ymm registers
#endif

template <typename S, int L>
GENNI_HD constexpr int out_block() {
  return kAccumulatorBytes / int(L * sizeof(S)) >= 8   ? 8
         : kAccumulatorBytes / int(L * sizeof(S)) >= 4 ? 4
         : kAccumulatorBytes / int(L * sizeof(S)) >= 2 ? 2
                                                       : 1;
}

// One block of exactly `rest` (< Block + 1) outputs.
template <int Block, typename Blocks>
GENNI_HD void run_rest(int rest, int o, const Blocks& blocks) {
  if constexpr (Block >= 1) {
    if (rest == Block)
      blocks.template run<Block>(o);
    else
      run_rest<Block - 1>(rest, o, blocks);
  }
}

// Blocks of MaxBlock outputs, then one block of whatever remains: the more accumulators a
// block has, the better they hide the FMA latency (LeNet-5's 6 channels are one block of 6).
template <int MaxBlock, typename Blocks>
GENNI_HD void for_output_blocks(int n, const Blocks& blocks) {
  int o = 0;
  for (; o + MaxBlock <= n; o += MaxBlock) blocks.template run<MaxBlock>(o);
  run_rest<MaxBlock - 1>(n - o, o, blocks);
}

template <typename S, int L>
struct LinearBlocks {
  int n_in;
  const S *weight, *bias, *in;
  int in_stride;
  S* out;
  int out_stride;
  template <int OB>
  GENNI_HD void run(int o) const {
    linear_block<S, L, OB>(o, n_in, weight, bias, in, in_stride, out, out_stride);
  }
};

template <typename S, int L>
GENNI_HD void linear_op(const Op& op, const S* params, const S* in, int in_stride, S* out,
                        int out_stride) {
  const LinearBlocks<S, L> blocks{
      op.in_size(), params + op.weight, op.bias >= 0 ? params + op.bias : nullptr, in, in_stride,
      out,          out_stride};
  for_output_blocks<out_block<S, L>()>(op.out_c, blocks);
}

// Adds to acc the OB output channels oc.. of a Conv2d at output pixel (oy, ox); the window
// is clipped to the input, which is the same as zero padding.
// KW > 0 fixes the kernel width at compile time (unrolled taps); 0 reads it from op.
// Weights are torch's [out, in, kh, kw], or with Tr transposed to [in, kh, kw, wt].
template <typename S, int L, int OB, int KW, bool Tr = false>
GENNI_HD void conv_accumulate(const Op& op, int oc, int oy, int ox, const S* weight, const S* in,
                              int in_stride, S (&acc)[OB][L], long wt = 0) {
  const int iy0 = oy * op.stride_h - op.pad_h, ix0 = ox * op.stride_w - op.pad_w;
  const int ky_lo = iy0 < 0 ? -iy0 : 0;
  const int ky_hi = op.in_h - iy0 < op.kernel_h ? op.in_h - iy0 : op.kernel_h;
  const int kx_lo = ix0 < 0 ? -ix0 : 0;
  const int kernel_w = KW > 0 ? KW : op.kernel_w;
  const int kx_hi = op.in_w - ix0 < kernel_w ? op.in_w - ix0 : kernel_w;
  const bool full_row = kx_lo == 0 && kx_hi == kernel_w;
  const long taps = static_cast<long>(op.kernel_h) * kernel_w;
  const long filter = taps * op.in_c;
  for (int ic = 0; ic < op.in_c; ++ic) {
    for (int ky = ky_lo; ky < ky_hi; ++ky) {
      const long row = (static_cast<long>(ic) * op.in_h + iy0 + ky) * op.in_w + ix0;
      const long tap = ic * taps + ky * kernel_w;  // of kx = 0
      const S* w = Tr ? weight + tap * wt + oc : weight + static_cast<long>(oc) * filter + tap;
      const long step = Tr ? wt : 1;  // from one kx to the next
      if (KW > 0 && full_row) {
        for (int kx = 0; kx < KW; ++kx)
          fma_block<S, L, OB, Tr>(acc, w + kx * step, filter, in + (row + kx) * in_stride);
      } else {
        for (int kx = kx_lo; kx < kx_hi; ++kx)
          fma_block<S, L, OB, Tr>(acc, w + kx * step, filter, in + (row + kx) * in_stride);
      }
    }
  }
}

// OB output channels of a Conv2d at one output pixel.
template <typename S, int L, int OB, int KW, bool Tr = false>
GENNI_HD void conv_block(const Op& op, int oc, int oy, int ox, const S* weight, const S* bias,
                         const S* in, int in_stride, S* out, int out_stride, long wt = 0) {
  S acc[OB][L];
  init_block<S, L, OB>(acc, bias ? bias + oc : nullptr);
  conv_accumulate<S, L, OB, KW, Tr>(op, oc, oy, ox, weight, in, in_stride, acc, wt);
  const long plane = static_cast<long>(op.out_h) * op.out_w;
  const long pixel = static_cast<long>(oy) * op.out_w + ox;
  for (int k = 0; k < OB; ++k)
    for (int l = 0; l < L; ++l) out[((oc + k) * plane + pixel) * out_stride + l] = acc[k][l];
}

template <typename S, int L, int KW>
struct ConvBlocks {
  const Op* op;
  int oy, ox;
  const S *weight, *bias, *in;
  int in_stride;
  S* out;
  int out_stride;
  template <int OB>
  GENNI_HD void run(int oc) const {
    conv_block<S, L, OB, KW>(*op, oc, oy, ox, weight, bias, in, in_stride, out, out_stride);
  }
};

template <typename S, int L, int KW>
GENNI_HD void conv_pixels(const Op& op, const S* params, const S* in, int in_stride, S* out,
                          int out_stride) {
  ConvBlocks<S, L, KW> blocks{
      &op, 0,         0,   params + op.weight, op.bias >= 0 ? params + op.bias : nullptr,
      in,  in_stride, out, out_stride};
  for (blocks.oy = 0; blocks.oy < op.out_h; ++blocks.oy)
    for (blocks.ox = 0; blocks.ox < op.out_w; ++blocks.ox)
      for_output_blocks<out_block<S, L>()>(op.out_c, blocks);
}

// The common kernel widths get unrolled tap loops.
template <typename S, int L>
GENNI_HD void conv_op(const Op& op, const S* params, const S* in, int in_stride, S* out,
                      int out_stride) {
  switch (op.kernel_w) {
    case 3:
      conv_pixels<S, L, 3>(op, params, in, in_stride, out, out_stride);
      break;
    case 5:
      conv_pixels<S, L, 5>(op, params, in, in_stride, out, out_stride);
      break;
    default:
      conv_pixels<S, L, 0>(op, params, in, in_stride, out, out_stride);
  }
}

// One output pixel (c, oy, ox) of MaxPool2d or AvgPool2d (the window: params.h).
template <typename S, int L>
GENNI_HD void pool_item(const Op& op, int c, int oy, int ox, const S* in, int in_stride, S* out,
                        int out_stride) {
  const bool is_max = op.kind == kMaxPool2d;
  S acc[L] = {};
  WindowWalk at(pool_window(op, oy, ox, op.in_h, op.in_w));
  for (; at.valid(); at.next()) {
    const S* x = in + ((static_cast<long>(c) * op.in_h + at.y) * op.in_w + at.x) * in_stride;
    GENNI_SIMD for (int l = 0; l < L; ++l) acc[l] = pool_fold(is_max, at.first(), acc[l], x[l]);
  }
  const S scale = pool_scale<S>(op, at.count);
  S* y = out + ((static_cast<long>(c) * op.out_h + oy) * op.out_w + ox) * out_stride;
  for (int l = 0; l < L; ++l) y[l] = acc[l] * scale;
}

template <typename S, int L>
GENNI_HD void pool_op(const Op& op, const S* in, int in_stride, S* out, int out_stride) {
  for (int c = 0; c < op.out_c; ++c)
    for (int oy = 0; oy < op.out_h; ++oy)
      for (int ox = 0; ox < op.out_w; ++ox)
        pool_item<S, L>(op, c, oy, ox, in, in_stride, out, out_stride);
}

// OB output channels at one pixel of a Conv2d, an optional activation (act_kind < 0: none)
// and a pooling op, in one pass: what conv_block, activation_op and pool_item compute in
// turn, without storing the convolution's output.
template <typename S, int L, int OB, int KW, bool Tr = false>
GENNI_HD void conv_pool_block(const Op& conv, int act_kind, S slope, const Op& pool, int oc, int py,
                              int px, const S* weight, const S* bias, const S* in, int in_stride,
                              S* out, int out_stride, long wt = 0) {
  const bool is_max = pool.kind == kMaxPool2d;
  S res[OB][L] = {};  // every window holds at least one position (torch: padding <= kernel / 2)
  WindowWalk at(pool_window(pool, py, px, conv.out_h, conv.out_w));
  for (; at.valid(); at.next()) {
    S acc[OB][L];
    init_block<S, L, OB>(acc, bias ? bias + oc : nullptr);
    conv_accumulate<S, L, OB, KW, Tr>(conv, oc, at.y, at.x, weight, in, in_stride, acc, wt);
    for (int k = 0; k < OB; ++k) {
      for (int l = 0; l < L; ++l) {
        const S v = act_kind >= 0 ? activate(act_kind, acc[k][l], slope) : acc[k][l];
        res[k][l] = pool_fold(is_max, at.first(), res[k][l], v);
      }
    }
  }
  const S scale = pool_scale<S>(pool, at.count);
  const long plane = static_cast<long>(pool.out_h) * pool.out_w;
  const long pixel = static_cast<long>(py) * pool.out_w + px;
  for (int k = 0; k < OB; ++k)
    for (int l = 0; l < L; ++l)
      out[((oc + k) * plane + pixel) * out_stride + l] = res[k][l] * scale;
}

template <typename S, int L>
GENNI_HD void run_op(const Op& op, const S* params, const S* in, int in_stride, S* out,
                     int out_stride) {
  switch (op.kind) {
    case kLinear:
      linear_op<S, L>(op, params, in, in_stride, out, out_stride);
      break;
    case kConv2d:
      conv_op<S, L>(op, params, in, in_stride, out, out_stride);
      break;
    case kMaxPool2d:
    case kAvgPool2d:
      pool_op<S, L>(op, in, in_stride, out, out_stride);
      break;
    default:
      activation_op<S, L>(op, in, in_stride, out, out_stride);
  }
}

// Runs ops [first, n_ops) on `in` using two scratch buffers of max_activation * stride
// scalars each; returns the buffer that holds the output (stride `stride`).
template <typename S, int L>
GENNI_HD const S* run_program(const Program& program, int first, const S* params, const S* in,
                              int in_stride, S* buf_a, S* buf_b, int stride) {
  const S* cur = in;
  int cur_stride = in_stride;
  for (int i = first; i < program.n_ops; ++i) {
    const Op& op = program.ops[i];
    // Activations work in place once the data is in scratch; other ops change shape.
    const bool reshapes = op.parametric() || op.kind == kMaxPool2d || op.kind == kAvgPool2d;
    S* dst = (cur == buf_a)   ? (reshapes ? buf_b : buf_a)
             : (cur == buf_b) ? (reshapes ? buf_a : buf_b)
                              : buf_a;
    run_op<S, L>(op, params, cur, cur_stride, dst, stride);
    cur = dst;
    cur_stride = stride;
  }
  return cur;
}

// out = base[0] + sum_i c[i] * base[i + 1] for n features, with the m + 1 responses of the
// affine first layer `part` scalars apart.
template <typename S, int L>
GENNI_HD void combine_affine(const S* base, long part, int base_stride, const S* c, int m, int n,
                             S* out, int out_stride) {
  for (int f = 0; f < n; ++f) {
    const S* z = base + static_cast<long>(f) * base_stride;
    S acc[L];
    for (int l = 0; l < L; ++l) acc[l] = z[l];
    for (int i = 0; i < m; ++i) {
      const S ci = c[i];
      const S* zi = z + (i + 1) * part;
      GENNI_SIMD for (int l = 0; l < L; ++l) acc[l] += ci * zi[l];
    }
    for (int l = 0; l < L; ++l) out[static_cast<long>(f) * out_stride + l] = acc[l];
  }
}

// Sum over the first `valid` lanes of the squared error of n outputs, in double.
template <typename S, int L>
GENNI_HD double squared_error(const S* y, int y_stride, const S* target, int target_stride, int n,
                              int valid) {
  double sum = 0.0;
  for (int o = 0; o < n; ++o) {
    const S* yo = y + static_cast<long>(o) * y_stride;
    const S* to = target + static_cast<long>(o) * target_stride;
    if (valid == L) {
      GENNI_SIMD_SUM(sum) for (int l = 0; l < L; ++l) add_squared_error(sum, yo[l], to[l]);
    } else {
      for (int l = 0; l < valid; ++l) add_squared_error(sum, yo[l], to[l]);
    }
  }
  return sum;
}

}  // namespace genni
