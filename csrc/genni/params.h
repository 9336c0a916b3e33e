// What every engine shares outside the ops: a sweep's tensors, a grid point's parameters,
// the pooling window and the squared-error loss, each written once for the CPU, both CUDA
// kernels and the tiled kernel's CPU emulation.
#pragma once

#include <cmath>
#include <cstdint>

#include "program.h"

namespace genni {

// The tensors of a sweep: J(center + coeffs[g] . directions) for every grid point g. Pointers
// are raw host (CPU) or device (CUDA) memory, all tensors C-contiguous.
template <typename S>
struct SweepArgs {
  const S* center;      // [P]
  const S* directions;  // [m, P]
  const S* coeffs;      // [G, m]
  const S* inputs;      // [N, input size]
  const S* targets;     // [N, output size]
  int64_t num_params;   // P
  int m;
  int64_t num_points;   // G
  int64_t num_samples;  // N
  bool affine_first;    // combine precomputed first-layer responses instead of running it
};

GENNI_HD float fused_multiply_add(float a, float b, float c) { return fmaf(a, b, c); }
GENNI_HD double fused_multiply_add(double a, double b, double c) { return fma(a, b, c); }

// Parameter k of grid point g: center[k] + sum_i coeffs[g, i] * directions[i, k], summed in
// that order (the centre, then each direction in turn), each step one fused multiply-add (one
// rounding), so that every engine builds bitwise the same parameters. Written out rather than
// left to the compiler, which contracts v += c * d into one on the GPU but not reliably on the
// host.
template <typename S>
GENNI_HD S grid_param(const SweepArgs<S>& a, int64_t g, int64_t k) {
  const S* c = a.coeffs + g * a.m;
  S v = a.center[k];
  for (int i = 0; i < a.m; ++i) v = fused_multiply_add(c[i], a.directions[i * a.num_params + k], v);
  return v;
}

// The positions a pooling window covers: rows y0 .. y0 + kernel_h - 1 and columns
// x0 .. x0 + kernel_w - 1, of which those inside an h x w input count.
struct Window {
  int y0, x0, kernel_h, kernel_w, h, w;
};

// The window of output (py, px) of the pooling op `pool` over an h x w input.
GENNI_HD Window pool_window(const Op& pool, int py, int px, int h, int w) {
  return Window{py * pool.stride_h - pool.pad_h, px * pool.stride_w - pool.pad_w,
                pool.kernel_h, pool.kernel_w, h, w};
}

// The positions of `win` inside the input, row by row:
//   for (WindowWalk at(win); at.valid(); at.next()) use(at.y, at.x, at.first());
// after which at.count is how many there were. Positions in the padding are skipped:
// padding never wins a max, and it enters an average only through pool_scale. A walk, not a
// function that takes a callback: nvcc 13's front end fails (an internal error) on a lambda
// in the TF32 step (tile_mma.h).
struct WindowWalk {
  Window win;
  int ky, kx;  // the position in the window
  int y, x;    // the position in the input
  int count;   // positions inside the input before this one

  GENNI_HD explicit WindowWalk(const Window& w) : win(w), ky(0), kx(-1), y(0), x(0), count(-1) {
    next();
  }
  GENNI_HD bool valid() const { return ky < win.kernel_h; }
  GENNI_HD bool first() const { return count == 0; }
  GENNI_HD void next() {
    ++count;
    for (;;) {
      if (++kx == win.kernel_w) {
        kx = 0;
        if (++ky == win.kernel_h) return;
      }
      y = win.y0 + ky;
      x = win.x0 + kx;
      if (y >= 0 && y < win.h && x >= 0 && x < win.w) return;
    }
  }
};

// What a window holds after `v` joins the values folded into `kept` so far (`first`: none).
template <typename S>
GENNI_HD S pool_fold(bool is_max, bool first, S kept, S v) {
  if (first) return v;
  return is_max ? (v > kept ? v : kept) : kept + v;
}

// The factor a folded window of `count` positions inside the input is multiplied by: 1 for
// MaxPool2d; for AvgPool2d one over the window's size with count_include_pad (the padding
// counts as zeros, as in torch), else over `count`.
template <typename S>
GENNI_HD S pool_scale(const Op& pool, int count) {
  if (pool.kind == kMaxPool2d) return S(1);
  return S(1) / S(pool.flag ? pool.kernel_h * pool.kernel_w : count);
}

// sum += (y - target)^2, in double.
template <typename S>
GENNI_HD void add_squared_error(double& sum, S y, S target) {
  const double d = double(y) - double(target);
  sum += d * d;
}

}  // namespace genni
