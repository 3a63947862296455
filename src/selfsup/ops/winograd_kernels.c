/* Tile transforms of the Winograd convolution F(4x4, 3x3) (Lavin & Gray 2016, "Fast Algorithms for
 * Convolutional Neural Networks"), for selfsup.ops.winograd. Built at first use with the
 * system C compiler and called through ctypes; the GEMMs between the transforms are torch.mm.
 *
 * Layouts (float32, C-contiguous):
 *   images  x, Y, dY: (N, H, W, C)   -- a channels_last tensor's memory
 *   tiles   V, M, dM: 36 planes (T, C) with T = N * ceil(H/4) * ceil(W/4), plane i starting at
 *                     i * P floats (P > T*C: the caller pads the planes apart so that the 36 write
 *                     streams of a tile do not all fall into the same cache set)
 * Output tile (a, b) covers rows 4a..4a+3 and columns 4b..4b+3; its input tile is the 6x6 window
 * starting one pixel up and left (padding 1). Pixels outside the image read as zero (`zeros`, C
 * floats) and outputs outside it go to `scratch` (C floats), so any H, W >= 1 works.
 * Every function handles tiles [t_begin, t_end): the caller splits them across threads.
 *
 * Each tile is gathered into local arrays, transformed there and scattered back, so the compiler
 * sees no aliasing and vectorises the loops over 16 channels.
 */
#include <stddef.h>
#define INLINE static inline __attribute__((always_inline))

/* 1-D input transform B^T d (6 -> 6), on cb channels at a time. */
INLINE void bt6(const float *d0, const float *d1, const float *d2, const float *d3, const float *d4, const float *d5,
                float *o0, float *o1, float *o2, float *o3, float *o4, float *o5, int cb) {
  for (int v = 0; v < cb; v++) {
    o0[v] = 4.f * d0[v] - 5.f * d2[v] + d4[v];
    o1[v] = -4.f * (d1[v] + d2[v]) + d3[v] + d4[v];
    o2[v] = 4.f * (d1[v] - d2[v]) - d3[v] + d4[v];
    o3[v] = 2.f * (d3[v] - d1[v]) - d2[v] + d4[v];
    o4[v] = 2.f * (d1[v] - d3[v]) - d2[v] + d4[v];
    o5[v] = 4.f * d1[v] - 5.f * d3[v] + d5[v];
  }
}

INLINE void input_tile(const float *const *src, float *const *dst, int cb) {
  float d[36][16], t[6][6][16], o[36][16];
  for (int k = 0; k < 36; k++) for (int v = 0; v < cb; v++) d[k][v] = src[k][v];
  for (int j = 0; j < 6; j++)
    bt6(d[0 * 6 + j], d[1 * 6 + j], d[2 * 6 + j], d[3 * 6 + j], d[4 * 6 + j], d[5 * 6 + j],
        t[0][j], t[1][j], t[2][j], t[3][j], t[4][j], t[5][j], cb);
  for (int i = 0; i < 6; i++)
    bt6(t[i][0], t[i][1], t[i][2], t[i][3], t[i][4], t[i][5],
        o[i * 6 + 0], o[i * 6 + 1], o[i * 6 + 2], o[i * 6 + 3], o[i * 6 + 4], o[i * 6 + 5], cb);
  for (int k = 0; k < 36; k++) for (int v = 0; v < cb; v++) dst[k][v] = o[k][v];
}

void wino_input(const float *x, float *V, const float *zeros, int H, int W, int C, long P,
                long t_begin, long t_end) {
  int th = (H + 3) / 4, tw = (W + 3) / 4;
  for (long t = t_begin; t < t_end; t++) {
    long n = t / (th * tw); int a = (t / tw) % th, b = t % tw;
    const float *src[36]; float *dst[36];
    for (int i = 0; i < 6; i++) for (int j = 0; j < 6; j++) {
      int h = 4 * a - 1 + i, w = 4 * b - 1 + j;
      src[i * 6 + j] = (h >= 0 && h < H && w >= 0 && w < W) ? x + ((n * H + h) * W + w) * (long)C : zeros;
      dst[i * 6 + j] = V + (long)(i * 6 + j) * P + t * C;
    }
    int c = 0;
    for (; c + 16 <= C; c += 16) {
      const float *s[36]; float *o[36];
      for (int k = 0; k < 36; k++) { s[k] = src[k] + c; o[k] = dst[k] + c; }
      input_tile(s, o, 16);
    }
    for (; c < C; c++) {
      const float *s[36]; float *o[36];
      for (int k = 0; k < 36; k++) { s[k] = src[k] + c; o[k] = dst[k] + c; }
      input_tile(s, o, 1);
    }
  }
}

/* 1-D output transform A^T m (6 -> 4). */
INLINE void at6(const float *m0, const float *m1, const float *m2, const float *m3, const float *m4, const float *m5,
                float *y0, float *y1, float *y2, float *y3, int cb) {
  for (int v = 0; v < cb; v++) {
    float p12 = m1[v] + m2[v], d12 = m1[v] - m2[v], p34 = m3[v] + m4[v], d34 = m3[v] - m4[v];
    y0[v] = m0[v] + p12 + p34;
    y1[v] = d12 + 2.f * d34;
    y2[v] = p12 + 4.f * p34;
    y3[v] = d12 + 8.f * d34 + m5[v];
  }
}

/* Its adjoint A y (4 -> 6), for the weight gradient. */
INLINE void a6(const float *y0, const float *y1, const float *y2, const float *y3,
               float *m0, float *m1, float *m2, float *m3, float *m4, float *m5, int cb) {
  for (int v = 0; v < cb; v++) {
    float e = y0[v] + y2[v], o = y1[v] + y3[v], e4 = y0[v] + 4.f * y2[v], o8 = 2.f * y1[v] + 8.f * y3[v];
    m0[v] = y0[v]; m1[v] = e + o; m2[v] = e - o; m3[v] = e4 + o8; m4[v] = e4 - o8; m5[v] = y3[v];
  }
}

INLINE void output_tile(const float *const *src, float *const *dst, int cb) {
  float d[36][16], t[4][6][16], o[16][16];
  for (int k = 0; k < 36; k++) for (int v = 0; v < cb; v++) d[k][v] = src[k][v];
  for (int j = 0; j < 6; j++)
    at6(d[0 * 6 + j], d[1 * 6 + j], d[2 * 6 + j], d[3 * 6 + j], d[4 * 6 + j], d[5 * 6 + j],
        t[0][j], t[1][j], t[2][j], t[3][j], cb);
  for (int i = 0; i < 4; i++)
    at6(t[i][0], t[i][1], t[i][2], t[i][3], t[i][4], t[i][5],
        o[i * 4 + 0], o[i * 4 + 1], o[i * 4 + 2], o[i * 4 + 3], cb);
  for (int k = 0; k < 16; k++) for (int v = 0; v < cb; v++) dst[k][v] = o[k][v];
}

INLINE void adjoint_tile(const float *const *src, float *const *dst, int cb) {
  float d[16][16], t[6][4][16], o[36][16];
  for (int k = 0; k < 16; k++) for (int v = 0; v < cb; v++) d[k][v] = src[k][v];
  for (int j = 0; j < 4; j++)
    a6(d[0 * 4 + j], d[1 * 4 + j], d[2 * 4 + j], d[3 * 4 + j],
       t[0][j], t[1][j], t[2][j], t[3][j], t[4][j], t[5][j], cb);
  for (int i = 0; i < 6; i++)
    a6(t[i][0], t[i][1], t[i][2], t[i][3],
       o[i * 6 + 0], o[i * 6 + 1], o[i * 6 + 2], o[i * 6 + 3], o[i * 6 + 4], o[i * 6 + 5], cb);
  for (int k = 0; k < 36; k++) for (int v = 0; v < cb; v++) dst[k][v] = o[k][v];
}

void wino_output(const float *M, float *Y, float *scratch, int H, int W, int K, long P, long t_begin, long t_end) {
  int th = (H + 3) / 4, tw = (W + 3) / 4;
  for (long t = t_begin; t < t_end; t++) {
    long n = t / (th * tw); int a = (t / tw) % th, b = t % tw;
    const float *src[36]; float *dst[16];
    for (int k = 0; k < 36; k++) src[k] = M + (long)k * P + t * K;
    for (int i = 0; i < 4; i++) for (int j = 0; j < 4; j++) {
      int h = 4 * a + i, w = 4 * b + j;
      dst[i * 4 + j] = (h < H && w < W) ? Y + ((n * H + h) * W + w) * (long)K : scratch;
    }
    int c = 0;
    for (; c + 16 <= K; c += 16) {
      const float *s[36]; float *o[16];
      for (int k = 0; k < 36; k++) s[k] = src[k] + c;
      for (int k = 0; k < 16; k++) o[k] = dst[k] + c;
      output_tile(s, o, 16);
    }
    for (; c < K; c++) {
      const float *s[36]; float *o[16];
      for (int k = 0; k < 36; k++) s[k] = src[k] + c;
      for (int k = 0; k < 16; k++) o[k] = dst[k] + c;
      output_tile(s, o, 1);
    }
  }
}

void wino_output_adjoint(const float *dY, float *dM, const float *zeros, int H, int W, int K, long P,
                         long t_begin, long t_end) {
  int th = (H + 3) / 4, tw = (W + 3) / 4;
  for (long t = t_begin; t < t_end; t++) {
    long n = t / (th * tw); int a = (t / tw) % th, b = t % tw;
    const float *src[16]; float *dst[36];
    for (int i = 0; i < 4; i++) for (int j = 0; j < 4; j++) {
      int h = 4 * a + i, w = 4 * b + j;
      src[i * 4 + j] = (h < H && w < W) ? dY + ((n * H + h) * W + w) * (long)K : zeros;
    }
    for (int k = 0; k < 36; k++) dst[k] = dM + (long)k * P + t * K;
    int c = 0;
    for (; c + 16 <= K; c += 16) {
      const float *s[16]; float *o[36];
      for (int k = 0; k < 16; k++) s[k] = src[k] + c;
      for (int k = 0; k < 36; k++) o[k] = dst[k] + c;
      adjoint_tile(s, o, 16);
    }
    for (; c < K; c++) {
      const float *s[16]; float *o[36];
      for (int k = 0; k < 16; k++) s[k] = src[k] + c;
      for (int k = 0; k < 36; k++) o[k] = dst[k] + c;
      adjoint_tile(s, o, 1);
    }
  }
}
