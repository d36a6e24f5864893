/* Feature extraction of one slide (see extract.h). */
#include "extract.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../nn/error.h"
#include "../tiler/coords_h5.h"
#include "../tiler/slide.h"
#include "features_h5.h"
#include "preprocess.h"

/* batch buffers in the ring: the encoder's (CPU) or the two in flight (GPU),
 * plus two for the readers */
#define FX_NBUF_MAX 4

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct ring {
    pthread_mutex_t mu;
    pthread_cond_t cv_full, cv_free;
    int nbuf;
    float *buf[FX_NBUF_MAX];
    int pinned[FX_NBUF_MAX];
    int64_t batch_of[FX_NBUF_MAX]; /* batch a slot is open for */
    int filled[FX_NBUF_MAX];       /* images written into the slot */
    int64_t next;              /* next patch (sorted position) to take */
    int64_t n;
    int B;
    int S;                     /* encoder input side */
    int rs;                    /* read side */
    int level;
    const int64_t *coords;     /* [n,2] level-0 x, y (file order) */
    const int64_t *order;      /* sorted position -> file row */
    const char *slide_path;
    double mpp_override;
    /* totals, under mu */
    double t_read, t_prep;
    int n_errors;
    char first_error[256];
    int open_failed;
    char open_error[512];
} ring;

static int batch_size(const ring *R, int64_t b)
{
    int64_t left = R->n - b * R->B;
    return (int)(left < R->B ? left : R->B);
}

typedef struct reader_arg {
    ring *R;
    tl_slide *s; /* its own handle */
} reader_arg;

static void *reader(void *arg)
{
    reader_arg *a = arg;
    ring *R = a->R;
    const int rs = R->rs, S = R->S;
    fx_resize_plan *plan = fx_resize_plan_new(rs, rs, S, S);
    uint8_t *rgb = malloc((size_t)rs * rs * 3);
    uint8_t *small = malloc((size_t)S * S * 3);
    void *tmp = plan ? malloc(fx_resize_tmp_bytes(plan) + 1) : NULL;
    double t_read = 0, t_prep = 0;
    int n_err = 0;
    char err[256] = "";
    if (!plan || !rgb || !small || !tmp) {
        pthread_mutex_lock(&R->mu);
        if (!R->open_failed) {
            R->open_failed = 1;
            snprintf(R->open_error, sizeof R->open_error, "reader: out of memory (%s)", ncmi_error());
        }
        pthread_mutex_unlock(&R->mu);
    }
    for (;;) {
        pthread_mutex_lock(&R->mu);
        int64_t k = R->next < R->n ? R->next++ : -1;
        pthread_mutex_unlock(&R->mu);
        if (k < 0) break;
        const int64_t b = k / R->B;
        const int slot = (int)(b % R->nbuf);
        pthread_mutex_lock(&R->mu);
        while (R->batch_of[slot] != b) pthread_cond_wait(&R->cv_free, &R->mu);
        pthread_mutex_unlock(&R->mu);
        float *dst = R->buf[slot] + (size_t)(k % R->B) * 3 * (size_t)S * S;
        if (plan && rgb && small && tmp) {
            const int64_t row = R->order[k];
            double t0 = now_s();
            if (tl_slide_read_rgb(a->s, R->coords[2 * row], R->coords[2 * row + 1], R->level, rs, rs, rgb) != 0) {
                if (!n_err++) snprintf(err, sizeof err, "%s", ncmi_error());
                memset(rgb, 255, (size_t)rs * rs * 3); /* white: background to the model */
            }
            double t1 = now_s();
            fx_resize_rgb(plan, rgb, small, tmp);
            fx_normalize_chw(small, S, S, FX_IMAGENET_MEAN, FX_IMAGENET_STD, dst);
            t_read += t1 - t0;
            t_prep += now_s() - t1;
        } else {
            memset(dst, 0, 3 * (size_t)S * S * sizeof *dst);
        }
        pthread_mutex_lock(&R->mu);
        if (++R->filled[slot] == batch_size(R, b)) pthread_cond_broadcast(&R->cv_full);
        pthread_mutex_unlock(&R->mu);
    }
    pthread_mutex_lock(&R->mu);
    R->t_read += t_read;
    R->t_prep += t_prep;
    if (n_err && !R->n_errors) snprintf(R->first_error, sizeof R->first_error, "%s", err);
    R->n_errors += n_err;
    pthread_mutex_unlock(&R->mu);
    fx_resize_plan_free(plan);
    free(rgb);
    free(small);
    free(tmp);
    return NULL;
}

static const int64_t *sort_coords;
static int cmp_yx(const void *pa, const void *pb)
{
    int64_t a = *(const int64_t *)pa, b = *(const int64_t *)pb;
    int64_t ya = sort_coords[2 * a + 1], yb = sort_coords[2 * b + 1];
    if (ya != yb) return ya < yb ? -1 : 1;
    int64_t xa = sort_coords[2 * a], xb = sort_coords[2 * b];
    if (xa != xb) return xa < xb ? -1 : 1;
    return a < b ? -1 : a > b;
}
static pthread_mutex_t sort_mu = PTHREAD_MUTEX_INITIALIZER;

/* Sorted positions -> file rows: tile order (y, then x). */
static int64_t *tile_order(const int64_t *coords, int64_t n)
{
    int64_t *o = malloc((size_t)(n ? n : 1) * sizeof *o);
    if (!o) return NULL;
    for (int64_t i = 0; i < n; i++) o[i] = i;
    pthread_mutex_lock(&sort_mu);
    sort_coords = coords;
    qsort(o, (size_t)n, sizeof *o, cmp_yx);
    pthread_mutex_unlock(&sort_mu);
    return o;
}

int fx_features_complete(const char *out_path, const fx_encoder *e, int64_t n_patches)
{
    int64_t n;
    int d;
    char enc[128], sha[128];
    int ok = features_h5_shape(out_path, &n, &d) == 0 && n == n_patches && d == e->dim &&
             features_h5_attr_string(out_path, "encoder", enc, sizeof enc) == 0 && !strcmp(enc, e->name) &&
             features_h5_attr_string(out_path, "weights_sha256", sha, sizeof sha) == 0 &&
             !strcmp(sha, rn_weights_sha256(&e->m)) &&
             features_h5_attr_string(out_path, "precision", enc, sizeof enc) == 0 &&
             !strcmp(enc, fx_precision_name(e->prec));
    ncmi_error_clear();
    return ok;
}

/* The slide must be the one the coords were made from. */
static int check_same_slide(const tl_slide *s, const tl_coords_attrs *a, const char *coords_path)
{
    if (a->level0_width > 0 && (s->w[0] != a->level0_width || s->h[0] != a->level0_height))
        return ncmi_error_set("%s: level-0 size %lldx%lld differs from %lldx%lld recorded in %s when it was tiled: "
                              "the slide changed since tiling (run ncmi tile --force for it)",
                              s->path, (long long)s->w[0], (long long)s->h[0], (long long)a->level0_width,
                              (long long)a->level0_height, coords_path);
    if (a->level0_mpp > 0 && fabs(s->mpp_x - a->level0_mpp) > 1e-3 * a->level0_mpp)
        return ncmi_error_set("%s: resolution %.6g um/px (%s) differs from %.6g um/px recorded in %s when it was "
                              "tiled: the slide (or its manifest mpp) changed since tiling",
                              s->path, s->mpp_x, s->mpp_source, a->level0_mpp, coords_path);
    if (a->patch_level < 0 || a->patch_level >= s->n_levels)
        return ncmi_error_set("%s: patch_level %d recorded in %s, but the slide has %d level(s): the slide changed "
                              "since tiling",
                              s->path, a->patch_level, coords_path, s->n_levels);
    return 0;
}

int fx_extract_slide(fx_encoder *e, const fx_slide_job *j, const fx_extract_params *p, fx_progress_fn cb,
                     void *cb_ctx, fx_extract_result *r)
{
    memset(r, 0, sizeof *r);
    const double t_start = now_s();
    int64_t *coords = NULL;
    size_t n = 0;
    tl_coords_attrs a;
    memset(&a, 0, sizeof a);
    char name[256];
    if (tl_coords_h5_read(j->coords_path, &coords, &n, &a, name, sizeof name) != 0) return -1;
    if (!j->slide_path) {
        free(coords);
        return ncmi_error_set("%s: no slide for this coords file (slide '%s' has no path in the manifest)",
                              j->coords_path, j->slide_id);
    }
    const int R_n = p->readers < 1 ? 1 : p->readers;
    tl_slide *slides = calloc((size_t)R_n, sizeof *slides);
    float *feats = NULL;
    int64_t *order = NULL;
    int rc = -1, opened = 0;
    ring R;
    memset(&R, 0, sizeof R);
    if (!slides) {
        ncmi_error_set("out of memory");
        goto out;
    }
    if (tl_slide_open(&slides[0], j->slide_path, j->mpp_override) != 0) goto out;
    opened = 1;
    if (check_same_slide(&slides[0], &a, j->coords_path) != 0) goto out;
    const int level = a.patch_level;
    int64_t rs = a.patch_size_level0 > 0 ? llround((double)a.patch_size_level0 / slides[0].ds[level]) : a.patch_size;
    if (rs < 1 || rs > 16384) {
        ncmi_error_set("%s: patch size %lld at level %d is out of range (patch_size %d, patch_size_level0 %lld)",
                       j->coords_path, (long long)rs, level, a.patch_size, (long long)a.patch_size_level0);
        goto out;
    }
    r->read_size = (int)rs;
    r->level = level;
    r->target_mpp = a.target_mpp;
    r->n_patches = (int64_t)n;
    const int D = e->dim, S = e->input_size, B = p->batch < 1 ? 1 : p->batch;
    feats = malloc((n ? n : 1) * (size_t)D * sizeof *feats);
    order = tile_order(coords, (int64_t)n);
    if (!feats || !order) {
        ncmi_error_set("%s: out of memory for %zu x %d features", j->slide_id, n, D);
        goto out;
    }
    if (n > 0) {
        for (int i = 1; i < R_n; i++) {
            if (tl_slide_open(&slides[i], j->slide_path, j->mpp_override) != 0) goto out;
            opened = i + 1;
        }
        pthread_mutex_init(&R.mu, NULL);
        pthread_cond_init(&R.cv_full, NULL);
        pthread_cond_init(&R.cv_free, NULL);
        R.n = (int64_t)n;
        R.B = B;
        R.S = S;
        R.rs = (int)rs;
        R.level = level;
        R.coords = coords;
        R.order = order;
        const int gpu = e->dev == NN_DEVICE_CUDA;
        R.nbuf = gpu ? 4 : 3;
        int ok = 1;
        for (int s = 0; s < R.nbuf; s++) {
            R.buf[s] = fx_encoder_host_alloc(e, (size_t)B * 3 * (size_t)S * S, &R.pinned[s]);
            R.batch_of[s] = s;
            ok = ok && R.buf[s];
        }
        if (!ok) {
            ncmi_error_set("%s: out of memory for the batch buffers (%d x 3 x %d x %d)", j->slide_id, B, S, S);
            goto ring_out;
        }
        pthread_t th[64];
        reader_arg ra[64];
        int n_th = R_n > 64 ? 64 : R_n, started = 0;
        for (int i = 0; i < n_th; i++) {
            ra[i].R = &R;
            ra[i].s = &slides[i];
            if (pthread_create(&th[i], NULL, reader, &ra[i]) != 0) break;
            started++;
        }
        if (!started) {
            ncmi_error_set("cannot start reader threads");
            goto ring_out;
        }
        const int64_t nb = ((int64_t)n + B - 1) / B;
        float *zb = malloc((size_t)B * D * sizeof *zb);
        NCMI_CHECK(zb != NULL, "out of memory");
        /* On the GPU batch b is queued before batch b-1 is collected, so the
         * GPU always has work while the host scatters results and waits for
         * the readers; on the CPU each batch is collected at once. */
        int64_t pending = -1;
        for (int64_t b = 0; b <= nb; b++) {
            if (b < nb) {
                const int slot = (int)(b % R.nbuf), bs = batch_size(&R, b);
                double t0 = now_s();
                pthread_mutex_lock(&R.mu);
                while (R.filled[slot] < bs) pthread_cond_wait(&R.cv_full, &R.mu);
                pthread_mutex_unlock(&R.mu);
                double t1 = now_s();
                fx_encoder_submit(e, (int)(b & 1), R.buf[slot], bs);
                r->t_wait += t1 - t0;
                r->t_encode += now_s() - t1;
            }
            const int64_t done = gpu ? b - 1 : (b < nb ? b : -1);
            if (done < 0 || done == pending) continue;
            const int dslot = (int)(done % R.nbuf), dbs = batch_size(&R, done);
            double t2 = now_s();
            fx_encoder_collect(e, (int)(done & 1), zb);
            r->t_encode += now_s() - t2;
            for (int i = 0; i < dbs; i++)
                memcpy(feats + (size_t)order[done * B + i] * D, zb + (size_t)i * D, (size_t)D * sizeof *zb);
            pthread_mutex_lock(&R.mu);
            R.filled[dslot] = 0;
            R.batch_of[dslot] = done + R.nbuf;
            pthread_cond_broadcast(&R.cv_free);
            pthread_mutex_unlock(&R.mu);
            pending = done;
            if (cb) cb(cb_ctx, done * B + dbs, (int64_t)n);
        }
        for (int i = 0; i < started; i++) pthread_join(th[i], NULL);
        free(zb);
        r->t_read = R.t_read;
        r->t_prep = R.t_prep;
        r->n_read_errors = R.n_errors;
        if (R.open_failed) {
            ncmi_error_set("%s: %s", j->slide_id, R.open_error);
            goto ring_out;
        }
        if (R.n_errors)
            snprintf(r->note, sizeof r->note, "%d patch(es) could not be read and were encoded as white (first: %s)",
                     R.n_errors, R.first_error);
        rc = 0;
    ring_out:
        for (int s = 0; s < R.nbuf; s++)
            if (R.buf[s]) fx_encoder_host_free(R.buf[s], R.pinned[s]);
        pthread_mutex_destroy(&R.mu);
        pthread_cond_destroy(&R.cv_full);
        pthread_cond_destroy(&R.cv_free);
        if (rc) goto out;
    } else {
        snprintf(r->note, sizeof r->note, "no patches in the coords file (no tissue found): empty feature bag");
    }
    {
        double t0 = now_s();
        features_h5_attrs at;
        memset(&at, 0, sizeof at);
        at.encoder = e->name;
        at.weights_sha256 = rn_weights_sha256(&e->m);
        at.precision = fx_precision_name(e->prec);
        at.slide_id = j->slide_id;
        at.patch_size = a.patch_size;
        at.input_size = S;
        at.target_mpp = a.target_mpp;
        at.patch_level = level;
        at.patch_size_level0 = a.patch_size_level0;
        at.weights_source = e->weights_source[0] ? e->weights_source : NULL;
        at.tiling = a.tiling;
        at.level0_mpp = a.level0_mpp;
        rc = features_h5_write_attrs(j->out_path, feats, (int64_t)n, D, coords, &at);
        r->t_write = now_s() - t0;
    }
out:
    for (int i = 0; i < opened; i++) tl_slide_close(&slides[i]);
    free(slides);
    free(feats);
    free(order);
    free(coords);
    r->seconds = now_s() - t_start;
    return rc;
}
