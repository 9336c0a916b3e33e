// The TF32 tensor-core steps of the tiled CUDA sweep: TF32 rounding, the mma.sync fragments,
// their multiply (on the GPU, or emulated on the host) and the items of a TF32 step.
#pragma once

#include <cstdint>
#include <cstring>

#include "ops.h"
#include "tile_steps.h"

namespace genni {

// TF32 steps (precision "tf32", float only): a warp computes items of 16 * MT samples x
// 8 * NB output channels at one output pixel with mma.sync m16n8k8 (TF32 inputs, fp32
// accumulation), MT = 2 row tiles per item where the tile allows (so that each weight
// fragment serves two multiplies) and NB = 2 column tiles where there are more than 8
// outputs (so that each input fragment serves two). The fan-in runs in torch's order in steps of 8;
// conv taps are decoded per step. Bias, activation and pooling are applied to the fp32
// accumulators as the fp32 step does. On the host (the harness) lane 0 of each warp runs
// all 32 lanes and the multiply is emulated on the same fragments, so that the fragment
// indexing is what CI tests.
constexpr int kMmaRows = 16;  // samples of one row tile; TF32 tiles are multiples of it

// v rounded to TF32 (10 mantissa bits; nearest, ties away from zero, as cvt.rna does), as
// the bits of a float.
GENNI_HD uint32_t to_tf32(float v) {
  uint32_t bits;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(bits) : "f"(v));
#else
  std::memcpy(&bits, &v, sizeof bits);
  if ((bits & 0x7f800000u) != 0x7f800000u) bits += 0x1000u;  // not inf or NaN
  bits &= 0xffffe000u;
#endif
  return bits;
}

GENNI_HD float tf32_value(uint32_t bits) {
  float v;
  std::memcpy(&v, &bits, sizeof v);
  return v;
}

// The fragments of one lane for one step of 8 in the fan-in: a[mt] of row tile mt
// (samples g and g + 8 at fan-in t and t + 4), b[nb] of column tile nb (output channel g at
// fan-in t and t + 4), where g = lane / 4 and t = lane % 4 (PTX ISA, mma.m16n8k8 .tf32).
template <int MT, int NB>
struct MmaFragments {
  uint32_t a[MT][4];
  uint32_t b[NB][2];
};

#if defined(__CUDA_ARCH__)
__device__ inline void mma_tf32(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
#if __CUDA_ARCH__ >= 800
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
  __trap();  // tile_plan refuses TF32 below compute capability 8.0
#endif
}
#endif

// d[lane] += A B for row tile mt and column tile nb of a whole warp's fragments.
template <int MT, int NB>
inline void mma_tf32_emulated(float (&d)[32][MT][NB][4], const MmaFragments<MT, NB> (&f)[32],
                              int mt, int nb) {
  float a[16][8], b[8][8];
  for (int lane = 0; lane < 32; ++lane) {
    const int g = lane >> 2, t = lane & 3;
    a[g][t] = tf32_value(f[lane].a[mt][0]);
    a[g + 8][t] = tf32_value(f[lane].a[mt][1]);
    a[g][t + 4] = tf32_value(f[lane].a[mt][2]);
    a[g + 8][t + 4] = tf32_value(f[lane].a[mt][3]);
    b[t][g] = tf32_value(f[lane].b[nb][0]);
    b[t + 4][g] = tf32_value(f[lane].b[nb][1]);
  }
  for (int lane = 0; lane < 32; ++lane) {
    const int g = lane >> 2, t = lane & 3;
    for (int r = 0; r < 4; ++r) {
      const int row = g + (r >= 2 ? 8 : 0), col = 2 * t + (r & 1);
      float sum = d[lane][mt][nb][r];
      for (int k = 0; k < 8; ++k) sum += a[row][k] * b[k][col];
      d[lane][mt][nb][r] = sum;
    }
  }
}

// Feature (row of the activation arena) that fan-in index k of a Linear/Conv2d reads at an
// output pixel whose window starts at input (iy0, ix0); -1 for padding and k past the fan-in.
template <int Kind, int KW>
GENNI_HD int mma_feature(const Op& op, int fan_in, int k, int iy0, int ix0) {
  if (k >= fan_in) return -1;
  if constexpr (Kind == kTileLinear) {
    return k;
  } else {
    const int kw = KW > 0 ? KW : op.kernel_w, taps = KW > 0 ? KW * KW : op.kernel_h * kw;
    const int ic = k / taps, r = k - ic * taps, ky = r / kw, kx = r - ky * kw;
    const int iy = iy0 + ky, ix = ix0 + kx;
    if (iy < 0 || iy >= op.in_h || ix < 0 || ix >= op.in_w) return -1;
    return (ic * op.in_h + iy) * op.in_w + ix;
  }
}

// One lane's fragments for fan-in indices k0 ... k0 + 7 (weights in the transposed layout).
template <int MT, int NB, int Kind, int KW>
GENNI_HD void mma_load(const Op& op, int fan_in, int k0, int iy0, int ix0, const float* weight,
                       int wt, int oc, const float* in, int T, int lane, MmaFragments<MT, NB>& f) {
  const int g = lane >> 2, t = lane & 3;
  const int f0 = mma_feature<Kind, KW>(op, fan_in, k0 + t, iy0, ix0);
  const int f1 = mma_feature<Kind, KW>(op, fan_in, k0 + t + 4, iy0, ix0);
  for (int mt = 0; mt < MT; ++mt) {
    const float* x = in + 16 * mt + g;
    f.a[mt][0] = to_tf32(f0 < 0 ? 0.0f : x[int64_t(f0) * T]);
    f.a[mt][1] = to_tf32(f0 < 0 ? 0.0f : x[int64_t(f0) * T + 8]);
    f.a[mt][2] = to_tf32(f1 < 0 ? 0.0f : x[int64_t(f1) * T]);
    f.a[mt][3] = to_tf32(f1 < 0 ? 0.0f : x[int64_t(f1) * T + 8]);
  }
  for (int nb = 0; nb < NB; ++nb) {
    const int o = oc + 8 * nb + g;
    const bool live = o < op.out_c;
    f.b[nb][0] = to_tf32(live && k0 + t < fan_in ? weight[int64_t(k0 + t) * wt + o] : 0.0f);
    f.b[nb][1] = to_tf32(live && k0 + t + 4 < fan_in ? weight[int64_t(k0 + t + 4) * wt + o] : 0.0f);
  }
}

// This thread's warp's items of a Linear/Conv2d step on tensor cores: blocks of 8 * NB
// output channels x pixels (pooled pixels for a fused pooling) x groups of 16 * MT
// samples, groups fastest.
template <int MT, int NB, int Kind, int KW>
GENNI_HD_CALLED void mma_items(const Program& p, const TileStep s, const float* weight,
                               const float* bias, const float* in, float* out, int T, int thread,
                               int threads) {
#if defined(__CUDA_ARCH__)
  __builtin_assume(__isShared(in));
  __builtin_assume(__isShared(out));
  constexpr int kLanes = 1;  // this thread's lane
  const int first_lane = thread & 31;
#else
  constexpr int kLanes = 32;  // lane 0 runs its warp
  const int first_lane = 0;
  if (thread & 31) return;
#endif
  const Op& op = p.ops[s.op];
  const bool pooled = Kind == kTileConvPool;
  const Op& shape = pooled ? p.ops[s.pool] : op;
  const int pixels = shape.out_h * shape.out_w, groups = T / (kMmaRows * MT);
  const int positions = (op.out_c + 8 * NB - 1) / (8 * NB) * pixels;
  const int fan_in = static_cast<int>(op_fan_in(op)), wt = static_cast<int>(tile_wt(op));
  const int act = s.act >= 0 ? p.ops[s.act].kind : -1;
  const float slope = s.act >= 0 ? static_cast<float>(p.ops[s.act].slope) : 0.0f;
  const bool is_max = pooled && shape.kind == kMaxPool2d;
  const int64_t plane = int64_t(shape.out_h) * shape.out_w;
  for (Digits item(thread >> 5, threads >> 5, groups); item.high < positions; item.next()) {
    const int l0 = item.low * (kMmaRows * MT);
    const int pixel = item.high % pixels, oc = item.high / pixels * (8 * NB);
    // The window of convolution outputs that make this output: one position but for pooling.
    Window win{0, 0, 1, 1, 1, 1};
    if constexpr (Kind != kTileLinear) {
      const int py = pixel / shape.out_w, px = pixel - py * shape.out_w;
      win = pooled ? pool_window(shape, py, px, op.out_h, op.out_w)
                   : Window{py, px, 1, 1, op.out_h, op.out_w};
    }
    float res[kLanes][MT][NB][4] = {};
    WindowWalk at(win);
    for (; at.valid(); at.next()) {
      const int iy0 = at.y * op.stride_h - op.pad_h, ix0 = at.x * op.stride_w - op.pad_w;
      float acc[kLanes][MT][NB][4] = {};
      for (int k0 = 0; k0 < fan_in; k0 += 8) {
        MmaFragments<MT, NB> f[kLanes];
        for (int i = 0; i < kLanes; ++i)
          mma_load<MT, NB, Kind, KW>(op, fan_in, k0, iy0, ix0, weight, wt, oc, in + l0, T,
                                     first_lane + i, f[i]);
        for (int mt = 0; mt < MT; ++mt)
          for (int nb = 0; nb < NB; ++nb) {
#if defined(__CUDA_ARCH__)
            mma_tf32(acc[0][mt][nb], f[0].a[mt], f[0].b[nb]);
#else
            mma_tf32_emulated<MT, NB>(acc, f, mt, nb);
#endif
          }
      }
      for (int i = 0; i < kLanes; ++i) {
        const int t = (first_lane + i) & 3;
        for (int mt = 0; mt < MT; ++mt)
          for (int nb = 0; nb < NB; ++nb)
            for (int r = 0; r < 4; ++r) {
              const int ch = oc + 8 * nb + 2 * t + (r & 1);
              float v = acc[i][mt][nb][r] + (bias != nullptr && ch < op.out_c ? bias[ch] : 0.0f);
              if (act >= 0) v = activate(act, v, slope);
              res[i][mt][nb][r] = pool_fold(is_max, at.first(), res[i][mt][nb][r], v);
            }
      }
    }
    const float scale = pooled ? pool_scale<float>(shape, at.count) : 1.0f;
    for (int i = 0; i < kLanes; ++i) {
      const int g = (first_lane + i) >> 2, t = (first_lane + i) & 3;
      for (int mt = 0; mt < MT; ++mt)
        for (int nb = 0; nb < NB; ++nb)
          for (int r = 0; r < 4; ++r) {
            const int ch = oc + 8 * nb + 2 * t + (r & 1);
            if (ch >= op.out_c) continue;
            const int l = l0 + 16 * mt + g + (r >= 2 ? 8 : 0);
            out[(ch * plane + pixel) * T + l] = res[i][mt][nb][r] * scale;
          }
    }
  }
}

// The TF32 variants of a step: two row tiles an item where T allows, two column tiles
// where there are more than 8 outputs.
template <int MT, int Kind>
GENNI_HD void mma_rows(const Program& p, const TileStep& s, const float* weight, const float* bias,
                       const float* in, float* out, int T, int thread, int threads) {
  const Op& op = p.ops[s.op];
  const bool wide = op.out_c > 8;
  if (Kind != kTileLinear && op.kernel_w == 5 && op.kernel_h == 5) {
    if (wide)
      mma_items<MT, 2, Kind, 5>(p, s, weight, bias, in, out, T, thread, threads);
    else
      mma_items<MT, 1, Kind, 5>(p, s, weight, bias, in, out, T, thread, threads);
  } else {
    if (wide)
      mma_items<MT, 2, Kind, 0>(p, s, weight, bias, in, out, T, thread, threads);
    else
      mma_items<MT, 1, Kind, 0>(p, s, weight, bias, in, out, T, thread, threads);
  }
}

template <int Kind>
GENNI_HD void mma_kind(const Program& p, const TileStep& s, const float* weight, const float* bias,
                       const float* in, float* out, int T, int thread, int threads) {
  if (T % (2 * kMmaRows) == 0)
    mma_rows<2, Kind>(p, s, weight, bias, in, out, T, thread, threads);
  else
    mma_rows<1, Kind>(p, s, weight, bias, in, out, T, thread, threads);
}

}  // namespace genni
