/* tiler/heatmap: rank normalisation, per-pixel averaging of overlapping
 * patches at thumbnail scale, colour only under patches, the colour bar, and
 * the PNG written and read back. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../nn/error.h"
#include "../tiler/heatmap.h"
#include "test.h"

#if NCMI_HAVE_VIPS
#include <vips/vips.h>
#endif

TEST(heatmap_rank)
{
    const float s[6] = {0.3f, -2.f, 7.f, 0.3f, 100.f, 1e-9f};
    float r[6], r2[6], t[6];
    tl_heatmap_rank(s, 6, r);
    /* order: -2 (0), 1e-9 (1), 0.3 0.3 (2,3 -> 2.5), 7 (4), 100 (5); / 5 */
    const float want[6] = {0.5f, 0.f, 0.8f, 0.5f, 1.f, 0.2f};
    for (int i = 0; i < 6; i++) EXPECT_NEAR(r[i], want[i], 1e-6);
    for (int i = 0; i < 6; i++) t[i] = expf(s[i] / 50.f) * 3.f - 1.f; /* monotone transform */
    tl_heatmap_rank(t, 6, r2);
    for (int i = 0; i < 6; i++) EXPECT_NEAR(r2[i], r[i], 1e-6);
    float one = 42.f, ro;
    tl_heatmap_rank(&one, 1, &ro);
    EXPECT_NEAR(ro, 0.5, 0);
}

TEST(heatmap_draw_averages_overlaps_and_leaves_background)
{
    enum { W = 100, H = 80 };
    uint8_t *img = malloc(W * H * 3);
    memset(img, 255, W * H * 3);
    /* level-0 patches of 100 px, thumbnail at 1/10: 10-px squares */
    const int64_t coords[6] = {0, 0, 50, 0, 300, 400};
    const float v[3] = {1.f, 0.f, 0.5f};
    REQUIRE(tl_heatmap_draw(img, W, H, 0.1, 0.1, coords, 3, 100, v, 1.0f) == 0, "%s", ncmi_error());
    uint8_t red[3], blue[3], mid[3];
    tl_heatmap_color(1.f, red);
    tl_heatmap_color(0.f, blue);
    tl_heatmap_color(0.5f, mid);
#define PX(x, y) (img + 3 * ((size_t)(y) * W + (x)))
    EXPECT(!memcmp(PX(2, 2), red, 3), "patch 0 alone: value 1 -> red, got %d %d %d", PX(2, 2)[0], PX(2, 2)[1], PX(2, 2)[2]);
    EXPECT(!memcmp(PX(7, 5), mid, 3), "overlap of 1 and 0 -> mean 0.5");
    EXPECT(!memcmp(PX(12, 5), blue, 3), "patch 1 alone: value 0 -> blue");
    EXPECT(!memcmp(PX(33, 43), mid, 3), "patch 2: value 0.5");
    EXPECT(PX(20, 20)[0] == 255 && PX(20, 20)[1] == 255 && PX(20, 20)[2] == 255, "no patch: untouched");
    EXPECT(PX(5, 10)[0] == 255, "row 10 is outside the 10-px patch");
    /* alpha blending */
    memset(img, 200, W * H * 3);
    REQUIRE(tl_heatmap_draw(img, W, H, 0.1, 0.1, coords, 1, 100, v, 0.4f) == 0, "%s", ncmi_error());
    for (int c = 0; c < 3; c++) EXPECT_NEAR(PX(1, 1)[c], lrintf(0.6f * 200 + 0.4f * red[c]), 0);
    /* a patch smaller than a thumbnail pixel still shows */
    memset(img, 255, W * H * 3);
    const int64_t tiny[2] = {503, 207};
    REQUIRE(tl_heatmap_draw(img, W, H, 0.01, 0.01, tiny, 1, 50, v, 1.0f) == 0, "%s", ncmi_error());
    EXPECT(!memcmp(PX(5, 2), red, 3), "a sub-pixel patch is drawn on its pixel");
#undef PX
    free(img);
}

TEST(heatmap_colorbar_and_png)
{
    enum { W = 40, H = 120 };
    uint8_t *img = malloc(W * H * 3);
    memset(img, 255, W * H * 3);
    tl_heatmap_colorbar(img, W, H, 10, 10, 12, 100);
    uint8_t lo[3], hi[3];
    tl_heatmap_color(0.f, lo);
    tl_heatmap_color(1.f, hi);
    EXPECT(!memcmp(img + 3 * (11 * W + 15), hi, 3), "top of the bar is the high colour");
    EXPECT(!memcmp(img + 3 * (108 * W + 15), lo, 3), "bottom of the bar is the low colour");
    EXPECT(img[3 * (10 * W + 15)] == 40, "frame");
    EXPECT(img[3 * (5 * W + 5)] == 255, "outside the bar untouched");
#if NCMI_HAVE_VIPS
    const char *p = test_tmp_path("heatmap.png");
    REQUIRE(tl_png_write(p, img, W, H) == 0, "%s", ncmi_error());
    VipsImage *back = vips_image_new_from_file(p, NULL);
    REQUIRE(back != NULL, "cannot read back %s", p);
    size_t sz = 0;
    uint8_t *b = vips_image_write_to_memory(back, &sz);
    EXPECT(sz == (size_t)W * H * 3 && b && !memcmp(b, img, sz), "PNG round trip differs (%zu bytes)", sz);
    g_free(b);
    g_object_unref(back);
    EXPECT(tl_png_write("/nonexistent-dir/x.png", img, W, H) != 0 && strstr(ncmi_error(), "/nonexistent-dir/x.png"),
           "unwritable path: %s", ncmi_error());
#endif
    free(img);
}
