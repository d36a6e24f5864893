/* Synthetic slides with a "tumour": a disk of its own texture inside a
 * tissue piece (for scoring and cohort tests). Outside the disk the slide is
 * the tumour-free slide of the same seed, pixel for pixel; inside it is
 * darker and purpler (denser, larger nuclei). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../nn/error.h"
#include "../tiler/synth_slide.h"
#include "test.h"

static void block_mean(const tl_synth_params *p, int64_t x0, int64_t y0, int n, double mean[3], int *tissue)
{
    mean[0] = mean[1] = mean[2] = 0;
    *tissue = 0;
    for (int y = 0; y < n; y++)
        for (int x = 0; x < n; x++) {
            uint8_t c[3];
            int t = 0;
            tl_synth_pixel(p, x0 + x, y0 + y, c, &t);
            *tissue += t;
            for (int k = 0; k < 3; k++) mean[k] += c[k];
        }
    for (int k = 0; k < 3; k++) mean[k] /= (double)n * n;
}

TEST(synth_tumour_texture_and_truth)
{
    tl_synth_params p, q;
    tl_synth_params_default(&p);
    p.width = 3000;
    p.height = 2000;
    p.seed = 9;
    q = p;
    q.tumour_um = 150; /* 300 px at 0.5 um/px */
    q.tumour_piece = 1;
    tl_synth_truth t;
    REQUIRE(tl_synth_truth_compute(&q, &t) == 0, "%s", ncmi_error());
    EXPECT(t.has_tumour && fabs(t.tumour_r - 300) < 1e-9, "tumour radius %g px", t.tumour_r);
    EXPECT(tl_synth_in_tumour(&t, t.tumour_cx, t.tumour_cy), "centre in the disk");
    EXPECT(!tl_synth_in_tumour(&t, t.tumour_cx + 301, t.tumour_cy), "outside the disk");
    /* inside: darker and purpler than the same place without a tumour */
    double mt[3], mn[3];
    int tt, tn;
    int64_t cx = (int64_t)t.tumour_cx - 30, cy = (int64_t)t.tumour_cy - 30;
    block_mean(&q, cx, cy, 60, mt, &tt);
    block_mean(&p, cx, cy, 60, mn, &tn);
    printf("    tumour block mean RGB %.0f %.0f %.0f (tissue px %d), same block without %.0f %.0f %.0f\n", mt[0], mt[1],
           mt[2], tt, mn[0], mn[1], mn[2]);
    EXPECT(tt > 3000, "the tumour centre should lie on tissue (%d of 3600 px)", tt);
    EXPECT(mt[0] < mn[0] - 25 && mt[1] < mn[1] - 20, "tumour texture not darker: %.0f/%.0f vs %.0f/%.0f", mt[0], mt[1],
           mn[0], mn[1]);
    /* outside the disk: identical to the tumour-free slide */
    int same = 1;
    for (int k = 0; k < 200 && same; k++) {
        int64_t x = (k * 7919) % p.width, y = (k * 104729) % p.height;
        if (tl_synth_in_tumour(&t, x + 0.5, y + 0.5)) continue;
        uint8_t a[3], b[3];
        tl_synth_pixel(&p, x, y, a, NULL);
        tl_synth_pixel(&q, x, y, b, NULL);
        same = !memcmp(a, b, 3);
    }
    EXPECT(same, "pixels outside the tumour changed");
    tl_synth_truth_free(&t);
    q.tumour_piece = 3;
    EXPECT(tl_synth_truth_compute(&q, &t) != 0 && strstr(ncmi_error(), "tumour_piece"), "bad piece: %s", ncmi_error());
}
