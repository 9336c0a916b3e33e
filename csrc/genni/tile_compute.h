// The per-thread work of one step of the tiled CUDA sweep: the items of a Linear/Conv2d step
// (with its fused activation and pooling), of a pooling step and of an activation step.
#pragma once

#include "ops.h"
#include "tile_steps.h"

namespace genni {

// OB outputs x L lanes at output channel oc and pixel `pixel` of a Linear/Conv2d step,
// with its fused activation (and pooling).
template <typename S, int L, int OB, int Kind, int KW, bool Tr>
GENNI_HD void parametric_item(const Program& p, const TileStep& s, const S* weight, const S* bias,
                              const S* in, S* out, int T, int oc, int pixel) {
  const Op& op = p.ops[s.op];
  const long wt = Tr ? tile_wt(op) : 0;
  const int act = s.act >= 0 ? p.ops[s.act].kind : -1;
  const S slope = s.act >= 0 ? static_cast<S>(p.ops[s.act].slope) : S(0);
  if constexpr (Kind == kTileConvPool) {
    const Op& pool = p.ops[s.pool];
    conv_pool_block<S, L, OB, KW, Tr>(op, act, slope, pool, oc, pixel / pool.out_w,
                                      pixel % pool.out_w, weight, bias, in, T, out, T, wt);
    return;
  } else {
    long plane = 1;
    if constexpr (Kind == kTileLinear) {
      linear_block<S, L, OB, Tr>(oc, op.in_size(), weight, bias, in, T, out, T, wt);
    } else {
      plane = static_cast<long>(op.out_h) * op.out_w;
      conv_block<S, L, OB, KW, Tr>(op, oc, pixel / op.out_w, pixel % op.out_w, weight, bias, in, T,
                                   out, T, wt);
    }
    if (act < 0) return;
    // The activation of the outputs this thread just wrote: no other thread touches them.
    for (int k = 0; k < OB; ++k) {
      S* y = out + ((oc + k) * plane + pixel) * T;
      for (int l = 0; l < L; ++l) y[l] = activate(act, y[l], slope);
    }
  }
}

// This thread's items of a Linear/Conv2d step: blocks of 8 output channels (a last partial
// block as 4 + 2 + 1) x pixels x groups of L samples, groups fastest, so that the threads
// of a warp share weights and read neighbouring samples.
template <typename S, int L, int Kind, int KW, bool Tr>
GENNI_HD_CALLED void parametric_items(const Program& p, const TileStep s, const S* weight,
                                      const S* bias, const S* in, S* out, int T, int thread,
                                      int threads) {
#if defined(__CUDA_ARCH__)
  // The activations are in shared memory: say so, so that they are read with shared loads.
  __builtin_assume(__isShared(in));
  __builtin_assume(__isShared(out));
#endif
  const Op& op = p.ops[s.op];
  const Op& shape = s.pool >= 0 ? p.ops[s.pool] : op;
  const int pixels = shape.out_h * shape.out_w, groups = T / L;
  const int positions = (op.out_c + kTileOutBlock - 1) / kTileOutBlock * pixels;
  for (Digits item(thread, threads, groups); item.high < positions; item.next()) {
    const int lane0 = item.low * L;
    const int pixel = item.high % pixels;
    int oc = item.high / pixels * kTileOutBlock;
    const int width = tile_min(kTileOutBlock, op.out_c - oc);
    const S* x = in + lane0;
    S* y = out + lane0;
    if (width == kTileOutBlock) {
      parametric_item<S, L, kTileOutBlock, Kind, KW, Tr>(p, s, weight, bias, x, y, T, oc, pixel);
      continue;
    }
    if (width & 4) {
      parametric_item<S, L, 4, Kind, KW, Tr>(p, s, weight, bias, x, y, T, oc, pixel);
      oc += 4;
    }
    if (width & 2) {
      parametric_item<S, L, 2, Kind, KW, Tr>(p, s, weight, bias, x, y, T, oc, pixel);
      oc += 2;
    }
    if (width & 1) parametric_item<S, L, 1, Kind, KW, Tr>(p, s, weight, bias, x, y, T, oc, pixel);
  }
}

// The kernel-width variants of a step kind: 3 and 5 get unrolled taps.
template <typename S, int L, int Kind, bool Tr>
GENNI_HD void parametric_kind(const Program& p, const TileStep& s, const S* weight, const S* bias,
                              const S* in, S* out, int T, int thread, int threads) {
  if constexpr (Kind == kTileLinear) {
    parametric_items<S, L, Kind, 0, Tr>(p, s, weight, bias, in, out, T, thread, threads);
  } else {
    switch (p.ops[s.op].kernel_w) {
      case 3:
        parametric_items<S, L, Kind, 3, Tr>(p, s, weight, bias, in, out, T, thread, threads);
        break;
      case 5:
        parametric_items<S, L, Kind, 5, Tr>(p, s, weight, bias, in, out, T, thread, threads);
        break;
      default:
        parametric_items<S, L, Kind, 0, Tr>(p, s, weight, bias, in, out, T, thread, threads);
    }
  }
}

// This thread's items of a pooling step: (channel, pixel) x groups of L samples.
template <typename S, int L>
GENNI_HD void pool_items(const Op& op, const S* in, S* out, int T, int thread, int threads) {
  const int pixels = op.out_h * op.out_w;
  for (Digits item(thread, threads, T / L); item.high < op.out_size(); item.next()) {
    const int pixel = item.high % pixels, c = item.high / pixels;
    pool_item<S, L>(op, c, pixel / op.out_w, pixel % op.out_w, in + item.low * L, T,
                    out + item.low * L, T);
  }
}

// This thread's items of an activation step: features x groups of L samples.
template <typename S, int L>
GENNI_HD void activation_items(const Op& op, const S* in, S* out, int T, int thread, int threads) {
  const S slope = static_cast<S>(op.slope);
  for (Digits item(thread, threads, T / L); item.high < op.out_size(); item.next()) {
    const int64_t at = int64_t(item.high) * T + item.low * L;
    for (int l = 0; l < L; ++l) out[at + l] = activate(op.kind, in[at + l], slope);
  }
}

}  // namespace genni
