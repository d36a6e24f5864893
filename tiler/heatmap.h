/* Attention heatmaps on a slide thumbnail (ncmi score): patch scores
 * rank-normalised to [0, 1], drawn at thumbnail scale (never a
 * full-resolution canvas), overlapping patches averaged per pixel, colour
 * only where patches lie (they lie on tissue), alpha-blended over the
 * thumbnail, with a colour bar. Prefix tl_heatmap_ / tl_png_. */
#ifndef NCMI_TILER_HEATMAP_H
#define NCMI_TILER_HEATMAP_H

#include <stddef.h>
#include <stdint.h>

/* Rank normalisation: out[i] = (rank of scores[i] among the n, ties at
 * their mean rank) / (n - 1); 0.5 for every element when n == 1. Monotone
 * transforms of the scores give the same result (attention of any scale). */
void tl_heatmap_rank(const float *scores, size_t n, float *out);

/* The colour of v in [0, 1] (clamped): a blue-cyan-green-yellow-red ramp
 * (low attention blue, high red). */
void tl_heatmap_color(float v, uint8_t rgb[3]);

/* Blend the heatmap into rgb (w x h, modified in place). Patch i covers
 * level-0 pixels [x, x + patch0) x [y, y + patch0) from coords[2i],
 * coords[2i+1]; sx, sy = image pixels per level-0 pixel. Each image pixel
 * covered by patches gets the mean of their values (value01, in [0, 1]),
 * coloured and blended as out = (1 - alpha) * rgb + alpha * colour; pixels
 * covered by no patch are left as they are. Memory: two w*h float planes. */
int tl_heatmap_draw(uint8_t *rgb, int w, int h, double sx, double sy, const int64_t *coords, size_t n,
                    int64_t patch0, const float *value01, float alpha);

/* A vertical colour bar (low at the bottom, high at the top) with a
 * one-pixel dark frame, drawn into rgb at (x0, y0), bw x bh pixels. */
void tl_heatmap_colorbar(uint8_t *rgb, int w, int h, int x0, int y0, int bw, int bh);

/* Write an RGB image as PNG through libvips, to a temporary name and then
 * renamed into place. 0, or -1 with "<path>: ..." (built without libvips:
 * an error saying so). */
int tl_png_write(const char *path, const uint8_t *rgb, int w, int h);

/* Encode an RGB image as JPEG (quality q, 1-100) in memory through libvips:
 * *buf malloc'd (caller frees), *len bytes. For pages that embed images.
 * 0, or -1 with an error (built without libvips: an error saying so). */
int tl_jpeg_encode(const uint8_t *rgb, int w, int h, int q, uint8_t **buf, size_t *len);

#endif
