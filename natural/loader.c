/* Natural-image datasets with threaded read-ahead; see loader.h.
 *
 * The read-ahead ring: `cap` slots, slot k holding position p with
 * p % cap == k. Positions [lo, lo + cap) form the window; workers claim
 * positions from `next` upwards inside it, and the consumer (inputs())
 * moves lo past what it took. A slot's content is valid when its (gen, pos)
 * is the current pass's and the position is in the window; order() and a
 * change of mode start a new generation, which turns everything in the ring
 * stale at once (a stale slot still being computed is left to its worker,
 * which frees it when done). One mutex guards the ring; the pixels are
 * written and read outside it (a slot in the window belongs to the thread
 * that claimed it until it is DONE, and to the consumer after that). */
#include "loader.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../nn/error.h"
#include "natural_internal.h"

enum { SL_FREE = 0, SL_BUSY, SL_DONE, SL_ERR };

typedef struct slot {
    int state;
    int pos;
    unsigned gen;
    float *buf;
    char err[512];
} slot;

typedef struct task {
    int sample;     /* dataset index */
    int training;
    uint64_t key;
    float *dst;
} task;

enum { KIND_IMAGES = 0, KIND_FOLDER = 1 };

typedef struct natds {
    int kind;
    nat_images im;
    nat_folder f;
    int *map;             /* [n] dataset sample -> index in im / f */
    int n;
    nat_aug aug;
    nat_loader_opts o;
    int c;
    int tr_h, tr_w, ev_h, ev_w;
    size_t tr_numel, ev_numel;
    atomic_uchar *bad;    /* folders: [f.n] file known undecodable */
    char idbuf[128];

    pthread_mutex_t mu;
    pthread_cond_t cv_work, cv_done;
    pthread_t *th;
    int nth, quit;

    /* the announced order */
    int have_order, natural, ord_n, first_pending;
    int *ord;             /* [n] positions -> samples (natural: unused) */
    int *pos_of;          /* [n] sample -> position, -1 */
    unsigned gen;
    int mode_set, mode_training;
    uint64_t mode_seed;
    int lo, next;
    slot *ring;
    int cap;
    float *slotmem;

    /* a batch of samples made on demand */
    task *job;
    int job_n, job_next, job_done;
    char job_err[512];
    int job_failed;

    nat_loader_stats st;
} natds;

static uint64_t mix64(uint64_t z)
{
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t key_pos(uint64_t seed, int p) { return mix64(seed ^ mix64((uint64_t)p)); }
static uint64_t key_call(uint64_t seed, int j) { return mix64(seed ^ mix64((uint64_t)j | (1ull << 63))); }

void nat_loader_opts_default(nat_loader_opts *o)
{
    memset(o, 0, sizeof *o);
    o->workers = 4;
}

/* ------------------------------------------------------------------ */
/* one sample                                                          */

/* Decode folder image `fi`, or on failure the next readable image of its
 * class (strict: fail). *subst = 1 when another image was used. */
static int folder_image(natds *s, int fi, uint8_t **rgb, int *w, int *h, int *subst)
{
    const nat_folder *f = &s->f;
    char path[4096];
    *subst = 0;
    if (!atomic_load(&s->bad[fi])) {
        if (nat_image_decode(nat_folder_path(f, fi, path, sizeof path), rgb, w, h) == 0) return 0;
        if (s->o.strict) return -1;
        char why[1024];
        snprintf(why, sizeof why, "%s", ncmi_error());
        if (!atomic_exchange(&s->bad[fi], 1)) {
            pthread_mutex_lock(&s->mu);
            s->st.unreadable++;
            pthread_mutex_unlock(&s->mu);
            fprintf(s->o.warn ? s->o.warn : stderr,
                    "ncmi: warning: %s: %s; replaced by the next readable image of class '%s'\n",
                    s->f.rel[fi], why, f->classes[f->labels[fi]]);
        }
    } else if (s->o.strict) {
        return ncmi_error_set("%s: cannot decode", nat_folder_path(f, fi, path, sizeof path));
    }
    const int k = f->labels[fi], a = f->class_start[k], b = f->class_start[k + 1];
    for (int t = 1; t < b - a; t++) {
        int j = a + (fi - a + t) % (b - a);
        if (atomic_load(&s->bad[j])) continue;
        if (nat_image_decode(nat_folder_path(f, j, path, sizeof path), rgb, w, h) == 0) {
            *subst = 1;
            return 0;
        }
        if (!atomic_exchange(&s->bad[j], 1)) {
            pthread_mutex_lock(&s->mu);
            s->st.unreadable++;
            pthread_mutex_unlock(&s->mu);
            fprintf(s->o.warn ? s->o.warn : stderr, "ncmi: warning: %s\n", ncmi_error());
        }
    }
    return ncmi_error_set("%s/%s: no readable image left in the class folder (%d files)", f->dir,
                          f->classes[k], b - a);
}

/* Sample `sample` (dataset index) -> dst (c*H*W floats). */
static int make_sample(natds *s, int sample, int training, uint64_t key, float *dst, int *subst)
{
    const int src = s->map[sample];
    uint8_t *img = NULL, *own = NULL;
    int w, h, c = s->c;
    *subst = 0;
    if (s->kind == KIND_IMAGES) {
        img = nat_images_at(&s->im, src);
        w = s->im.w;
        h = s->im.h;
    } else {
        if (folder_image(s, src, &own, &w, &h, subst)) return -1;
        img = own;
    }
    nat_aug_params p;
    if (training) {
        nn_rng r;
        nn_rng_seed(&r, key);
        nat_aug_draw(&s->aug, &r, w, h, &p);
    }
    uint8_t *out = NULL;
    int ow, oh;
    int rc = nat_aug_run(&s->aug, training, training ? &p : NULL, img, w, h, c, &out, &ow, &oh);
    free(own);
    if (rc) {
        if (s->kind == KIND_FOLDER) {
            char path[4096];
            ncmi_error_prefix("%s", nat_folder_path(&s->f, src, path, sizeof path));
        }
        return -1;
    }
    int eh = training ? s->tr_h : s->ev_h, ew = training ? s->tr_w : s->ev_w;
    if (ow != ew || oh != eh) {
        free(out);
        char path[4096];
        return ncmi_error_set("%s: the transforms give %dx%d, %dx%d expected",
                              s->kind == KIND_FOLDER ? nat_folder_path(&s->f, src, path, sizeof path)
                                                     : s->im.tag,
                              ow, oh, ew, eh);
    }
    nat_normalize(out, ow, oh, c, s->aug.mean, s->aug.std, dst);
    free(out);
    return 0;
}

/* ------------------------------------------------------------------ */
/* workers                                                             */

static int sample_at(const natds *s, int p) { return s->natural ? p : s->ord[p]; }

/* With mu held: one unit of work if there is one (1), else 0. worker 0:
 * the consumer thread, which only helps with the on-demand tasks. */
static int work_one(natds *s, int worker)
{
    if (s->job && s->job_next < s->job_n) {
        task *t = &s->job[s->job_next++];
        pthread_mutex_unlock(&s->mu);
        int subst = 0;
        int rc = make_sample(s, t->sample, t->training, t->key, t->dst, &subst);
        char err[512] = "";
        if (rc) snprintf(err, sizeof err, "%s", ncmi_error());
        pthread_mutex_lock(&s->mu);
        if (rc && !s->job_failed) {
            s->job_failed = 1;
            snprintf(s->job_err, sizeof s->job_err, "%s", err);
        }
        s->st.computed++;
        s->st.by_workers += worker;
        s->st.substituted += subst;
        if (++s->job_done == s->job_n) pthread_cond_broadcast(&s->cv_done);
        return 1;
    }
    if (!worker || !s->mode_set || s->cap == 0) return 0;
    while (s->next < s->ord_n && s->next < s->lo + s->cap) {
        slot *sl = &s->ring[s->next % s->cap];
        if (sl->gen == s->gen && sl->pos == s->next && sl->state != SL_FREE) {
            s->next++; /* claimed by the consumer */
            continue;
        }
        if (sl->state == SL_BUSY) return 0; /* a stale computation is still writing it */
        const int p = s->next++;
        const unsigned gen = s->gen;
        sl->state = SL_BUSY;
        sl->pos = p;
        sl->gen = gen;
        const int training = s->mode_training;
        const uint64_t key = training ? key_pos(s->mode_seed, p) : 0;
        const int sample = sample_at(s, p);
        pthread_mutex_unlock(&s->mu);
        int subst = 0;
        int rc = make_sample(s, sample, training, key, sl->buf, &subst);
        char err[512] = "";
        if (rc) snprintf(err, sizeof err, "%s", ncmi_error());
        pthread_mutex_lock(&s->mu);
        if (sl->gen == s->gen && sl->pos == p && gen == s->gen) {
            sl->state = rc ? SL_ERR : SL_DONE;
            if (rc) memcpy(sl->err, err, sizeof err);
        } else {
            sl->state = SL_FREE;
            pthread_cond_broadcast(&s->cv_work);
        }
        s->st.computed++;
        s->st.by_workers++;
        s->st.substituted += subst;
        pthread_cond_broadcast(&s->cv_done);
        return 1;
    }
    return 0;
}

static void *worker_main(void *arg)
{
    natds *s = arg;
    pthread_mutex_lock(&s->mu);
    while (!s->quit) {
        if (!work_one(s, 1)) pthread_cond_wait(&s->cv_work, &s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    if (s->kind == KIND_FOLDER) nat_vips_thread_done();
    return NULL;
}

/* ------------------------------------------------------------------ */
/* the tr_dataset callbacks                                            */

static void ds_order(const tr_dataset *d, const int *idx, int n)
{
    natds *s = d->ctx;
    pthread_mutex_lock(&s->mu);
    s->gen++;
    s->have_order = 1;
    s->first_pending = 1;
    if (idx) {
        for (int i = 0; i < s->n; i++) s->pos_of[i] = -1;
        int m = 0;
        for (int p = 0; p < n && m < s->n; p++) {
            int v = idx[p];
            if (v < 0 || v >= s->n) continue; /* not a sample: left out */
            if (s->pos_of[v] < 0) s->pos_of[v] = m;
            s->ord[m++] = v;
        }
        s->natural = 0;
        s->ord_n = m;
        s->mode_set = 0; /* training or not: the first inputs() call says */
    } else {
        s->natural = 1;
        s->ord_n = d->n < s->n ? d->n : s->n;
        /* evaluation, most likely: start reading now */
        s->mode_set = 1;
        s->mode_training = 0;
        s->mode_seed = 0;
    }
    s->lo = s->next = 0;
    pthread_cond_broadcast(&s->cv_work);
    pthread_mutex_unlock(&s->mu);
}

static int pos_of(const natds *s, int sample)
{
    if (!s->have_order || sample < 0 || sample >= s->n) return -1;
    if (s->natural) return sample < s->ord_n ? sample : -1;
    return s->pos_of[sample];
}

typedef struct pj {
    int p, j;
} pj;

static int cmp_pj(const void *a, const void *b)
{
    const pj *x = a, *y = b;
    return x->p != y->p ? (x->p < y->p ? -1 : 1) : (x->j < y->j ? -1 : x->j > y->j);
}

/* With mu held: position p of the ring into dst. -1 on a sample error. */
static int take(natds *s, int p, float *dst, size_t numel)
{
    if (p >= s->lo + s->cap) s->lo = p; /* skip ahead */
    if (s->next < s->lo) s->next = s->lo;
    slot *sl = &s->ring[p % s->cap];
    int first = 1;
    for (;;) {
        if (sl->gen == s->gen && sl->pos == p) {
            if (sl->state == SL_DONE || sl->state == SL_ERR) break;
            if (sl->state == SL_BUSY) {
                first = 0;
                pthread_cond_wait(&s->cv_done, &s->mu);
                continue;
            }
        }
        if (sl->state == SL_BUSY) { /* stale work still writing the buffer */
            first = 0;
            pthread_cond_wait(&s->cv_done, &s->mu);
            continue;
        }
        /* nobody has it: make it here */
        first = 0;
        sl->state = SL_BUSY;
        sl->pos = p;
        sl->gen = s->gen;
        const int training = s->mode_training;
        const uint64_t key = training ? key_pos(s->mode_seed, p) : 0;
        const int sample = sample_at(s, p);
        pthread_mutex_unlock(&s->mu);
        int subst = 0;
        int rc = make_sample(s, sample, training, key, sl->buf, &subst);
        char err[512] = "";
        if (rc) snprintf(err, sizeof err, "%s", ncmi_error());
        pthread_mutex_lock(&s->mu);
        sl->state = rc ? SL_ERR : SL_DONE;
        if (rc) memcpy(sl->err, err, sizeof err);
        s->st.computed++;
        s->st.substituted += subst;
        pthread_cond_broadcast(&s->cv_done);
        break;
    }
    if (first) s->st.ready++;
    else s->st.waited++;
    int rc = 0;
    if (sl->state == SL_ERR) {
        rc = ncmi_error_set("%s", sl->err);
    } else {
        pthread_mutex_unlock(&s->mu); /* the slot is ours until lo moves past it */
        memcpy(dst, sl->buf, numel * sizeof(float));
        pthread_mutex_lock(&s->mu);
    }
    if (s->lo < p + 1) s->lo = p + 1;
    if (s->next < s->lo) s->next = s->lo;
    /* wake the workers when the ring is half empty, not for every slot
     * (small samples: a wake-up per sample would cost more than the work) */
    if (s->next - s->lo <= s->cap / 2) pthread_cond_broadcast(&s->cv_work);
    return rc;
}

static int ds_inputs(const tr_dataset *d, nn_graph *g, const int *idx, int n, int training,
                     nn_rng *rng, nn_tensor **out)
{
    natds *s = d->ctx;
    training = training != 0;
    const int H = training ? s->tr_h : s->ev_h, W = training ? s->tr_w : s->ev_w;
    const size_t numel = training ? s->tr_numel : s->ev_numel;
    int shape[4] = {n, s->c, H, W};
    nn_tensor *x = nn_tensor_new(g, 4, shape);
    const uint64_t call_seed = training && rng ? nn_rng_u64(rng) : 0;
    if (n <= 0) {
        out[0] = x;
        return 1;
    }
    for (int j = 0; j < n; j++)
        if (idx[j] < 0 || idx[j] >= s->n)
            return ncmi_error_set("dataset %s: sample %d is not one of its %d samples", d->name,
                                  idx[j], s->n);
    pj *ps = malloc((size_t)n * sizeof *ps);
    task *tasks = malloc((size_t)n * sizeof *tasks);
    if (!ps || !tasks) {
        free(ps);
        free(tasks);
        return ncmi_error_set("out of memory");
    }
    pthread_mutex_lock(&s->mu);
    if (s->have_order && s->first_pending) {
        s->first_pending = 0;
        if (!s->mode_set || s->mode_training != training || (training && s->mode_seed != call_seed)) {
            s->gen++;
            s->mode_set = 1;
            s->mode_training = training;
            s->mode_seed = training ? call_seed : 0;
            int p0 = pos_of(s, idx[0]);
            s->lo = s->next = p0 > 0 ? p0 : 0;
            pthread_cond_broadcast(&s->cv_work);
        }
    }
    const int use_ring = s->have_order && s->mode_set && s->mode_training == training && s->cap > 0;
    int nring = 0, ndirect = 0;
    for (int j = 0; j < n; j++) {
        int p = use_ring ? pos_of(s, idx[j]) : -1;
        if (p >= 0 && p >= s->lo) {
            ps[nring++] = (pj){p, j};
        } else {
            task *t = &tasks[ndirect++];
            t->sample = idx[j];
            t->training = training;
            t->key = !training ? 0 : p >= 0 ? key_pos(s->mode_seed, p) : key_call(call_seed, j);
            t->dst = x->data + (size_t)j * numel;
        }
    }
    /* samples outside the read-ahead: on the workers (and here) */
    if (ndirect) {
        s->job = tasks;
        s->job_n = ndirect;
        s->job_next = s->job_done = 0;
        s->job_failed = 0;
        s->st.direct += ndirect;
        pthread_cond_broadcast(&s->cv_work);
    }
    qsort(ps, (size_t)nring, sizeof *ps, cmp_pj);
    int rc = 0;
    for (int k = 0; k < nring; k++) {
        int r = take(s, ps[k].p, x->data + (size_t)ps[k].j * numel, numel);
        if (r && !rc) rc = -1;
        if (rc) break;
    }
    if (ndirect) {
        while (work_one(s, 0) && s->job_done < s->job_n) {
        }
        while (s->job_done < s->job_n) pthread_cond_wait(&s->cv_done, &s->mu);
        if (s->job_failed && !rc) rc = ncmi_error_set("%s", s->job_err);
        s->job = NULL;
        s->job_n = 0;
    }
    pthread_mutex_unlock(&s->mu);
    free(ps);
    free(tasks);
    if (rc) {
        ncmi_error_prefix("dataset %s", d->name);
        return -1;
    }
    out[0] = x;
    return 1;
}

static const char *ds_id(const tr_dataset *d, int i)
{
    natds *s = d->ctx;
    if (s->kind == KIND_FOLDER) return s->f.rel[s->map[i]];
    snprintf(s->idbuf, sizeof s->idbuf, "%s/%d", s->im.tag[0] ? s->im.tag : d->name, s->map[i]);
    return s->idbuf;
}

static void ds_free(tr_dataset *d)
{
    natds *s = d->ctx;
    if (!s) return;
    pthread_mutex_lock(&s->mu);
    s->quit = 1;
    pthread_cond_broadcast(&s->cv_work);
    pthread_mutex_unlock(&s->mu);
    for (int t = 0; t < s->nth; t++) pthread_join(s->th[t], NULL);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv_work);
    pthread_cond_destroy(&s->cv_done);
    free(s->th);
    free(s->ring);
    free(s->slotmem);
    free(s->ord);
    free(s->pos_of);
    free(s->map);
    free(s->bad);
    nat_images_free(&s->im);
    nat_folder_free(&s->f);
    free(d->labels);
    d->labels = NULL;
    free(s);
    d->ctx = NULL;
}

int nat_dataset_stats(const tr_dataset *d, nat_loader_stats *st)
{
    if (!d || d->inputs != ds_inputs || !d->ctx) return -1;
    natds *s = d->ctx;
    pthread_mutex_lock(&s->mu);
    *st = s->st;
    pthread_mutex_unlock(&s->mu);
    return 0;
}

/* ------------------------------------------------------------------ */
/* set-up                                                              */

static int ds_setup(tr_dataset *d, natds *s, const char *name, const char *source, const int *idx,
                    int n, int total, const int *labels_src)
{
    s->n = n;
    s->map = malloc((size_t)(n > 0 ? n : 1) * sizeof *s->map);
    d->labels = malloc((size_t)(n > 0 ? n : 1) * sizeof *d->labels);
    s->ord = malloc((size_t)(n > 0 ? n : 1) * sizeof *s->ord);
    s->pos_of = malloc((size_t)(n > 0 ? n : 1) * sizeof *s->pos_of);
    if (!s->map || !d->labels || !s->ord || !s->pos_of) return ncmi_error_set("out of memory");
    for (int i = 0; i < n; i++) {
        int v = idx ? idx[i] : i;
        if (v < 0 || v >= total)
            return ncmi_error_set("dataset %s: index %d (entry %d) is not one of the %d images", name,
                                  v, i + 1, total);
        s->map[i] = v;
        d->labels[i] = labels_src[v];
    }
    s->tr_numel = (size_t)s->c * s->tr_h * s->tr_w;
    s->ev_numel = (size_t)s->c * s->ev_h * s->ev_w;
    size_t numel = s->tr_numel > s->ev_numel ? s->tr_numel : s->ev_numel;
    /* the ring */
    if (s->o.workers < 0) s->o.workers = 0;
    if (s->o.workers > 256) s->o.workers = 256;
    int cap = s->o.prefetch > 0 ? s->o.prefetch : 256;
    if (cap < 2 * s->o.workers) cap = 2 * s->o.workers;
    const size_t max_bytes = (size_t)512 << 20;
    if ((size_t)cap * numel * sizeof(float) > max_bytes) {
        cap = (int)(max_bytes / (numel * sizeof(float)));
        if (cap < 1) cap = 1;
    }
    if (s->o.prefetch < 0) cap = 0;
    s->cap = cap;
    if (cap > 0) {
        s->ring = calloc((size_t)cap, sizeof *s->ring);
        s->slotmem = malloc((size_t)cap * numel * sizeof(float));
        if (!s->ring || !s->slotmem)
            return ncmi_error_set("dataset %s: out of memory for %d read-ahead buffers of %zu bytes",
                                  name, cap, numel * sizeof(float));
        for (int k = 0; k < cap; k++) {
            s->ring[k].buf = s->slotmem + (size_t)k * numel;
            s->ring[k].pos = -1;
        }
    }
    s->st.slots = cap;
    s->st.slot_bytes = (size_t)cap * numel * sizeof(float);
    s->st.train_shape[0] = s->st.eval_shape[0] = s->c;
    s->st.train_shape[1] = s->tr_h;
    s->st.train_shape[2] = s->tr_w;
    s->st.eval_shape[1] = s->ev_h;
    s->st.eval_shape[2] = s->ev_w;
    if (pthread_mutex_init(&s->mu, NULL) || pthread_cond_init(&s->cv_work, NULL) ||
        pthread_cond_init(&s->cv_done, NULL))
        return ncmi_error_set("dataset %s: cannot create a mutex", name);
    s->th = calloc((size_t)(s->o.workers > 0 ? s->o.workers : 1), sizeof *s->th);
    if (!s->th) return ncmi_error_set("out of memory");
    snprintf(d->name, sizeof d->name, "%s", name);
    snprintf(d->source, sizeof d->source, "%s", source ? source : "");
    d->n = n;
    d->bags = 0;
    d->sample_id = ds_id;
    d->inputs = ds_inputs;
    d->order = ds_order;
    d->free = ds_free;
    d->ctx = s;
    for (int t = 0; t < s->o.workers; t++) {
        if (pthread_create(&s->th[t], NULL, worker_main, s) != 0)
            return ncmi_error_set("dataset %s: cannot start worker thread %d", name, t + 1);
        s->nth = t + 1;
    }
    s->st.workers = s->nth;
    return 0;
}

static natds *ds_new(const nat_aug *aug, const nat_loader_opts *o)
{
    natds *s = calloc(1, sizeof *s);
    if (!s) {
        ncmi_error_set("out of memory");
        return NULL;
    }
    s->aug = *aug;
    if (o) s->o = *o;
    else nat_loader_opts_default(&s->o);
    return s;
}

/* undo a partial set-up: d->free when it got that far */
static int ds_fail(tr_dataset *d, natds *s)
{
    if (d->ctx) {
        tr_dataset_free(d);
        return -1;
    }
    /* mutexes were not made (or not all): free by hand */
    free(s->th);
    free(s->ring);
    free(s->slotmem);
    free(s->ord);
    free(s->pos_of);
    free(s->map);
    free(s->bad);
    free(d->labels);
    nat_images_free(&s->im);
    nat_folder_free(&s->f);
    free(s);
    memset(d, 0, sizeof *d);
    return -1;
}

int nat_image_dataset_init(tr_dataset *d, const char *name, const char *source,
                           const nat_images *im, const int *idx, int n, const nat_aug *aug,
                           const nat_loader_opts *o)
{
    memset(d, 0, sizeof *d);
    natds *s = ds_new(aug, o);
    if (!s) return -1;
    s->kind = KIND_IMAGES;
    nat_images_ref(&s->im, im);
    s->c = im->c;
    if (nat_aug_out_size(aug, 1, im->w, im->h, im->c, &s->tr_w, &s->tr_h) ||
        nat_aug_out_size(aug, 0, im->w, im->h, im->c, &s->ev_w, &s->ev_h)) {
        ncmi_error_prefix("dataset %s (%s)", name, im->source[0] ? im->source : im->tag);
        return ds_fail(d, s);
    }
    if (ds_setup(d, s, name, source, idx, idx ? n : im->n, im->n, im->labels)) return ds_fail(d, s);
    return 0;
}

int nat_folder_dataset_init(tr_dataset *d, const char *name, const char *source,
                            const nat_folder *f, const int *idx, int n, const nat_aug *aug,
                            const nat_loader_opts *o)
{
    memset(d, 0, sizeof *d);
    natds *s = ds_new(aug, o);
    if (!s) return -1;
    s->kind = KIND_FOLDER;
    nat_folder_ref(&s->f, f);
    s->c = 3;
    /* one size for any image */
    int w1, h1, w2, h2;
    for (int tr = 1; tr >= 0; tr--) {
        if (nat_aug_out_size(aug, tr, 500, 375, 3, &w1, &h1) ||
            nat_aug_out_size(aug, tr, 333, 517, 3, &w2, &h2)) {
            ncmi_error_prefix("dataset %s (%s)", name, f->dir);
            return ds_fail(d, s);
        }
        if (w1 != w2 || h1 != h2) {
            ncmi_error_set("dataset %s (%s): the %s transforms do not give one size for images of "
                           "different sizes (set %s)", name, f->dir, tr ? "training" : "evaluation",
                           tr ? "rrc_size or crop_size" : "eval_crop");
            return ds_fail(d, s);
        }
        if (tr) {
            s->tr_w = w1;
            s->tr_h = h1;
        } else {
            s->ev_w = w1;
            s->ev_h = h1;
        }
    }
    s->bad = calloc((size_t)(f->n > 0 ? f->n : 1), sizeof *s->bad);
    if (!s->bad) {
        ncmi_error_set("out of memory");
        return ds_fail(d, s);
    }
    if (ds_setup(d, s, name, source, idx, idx ? n : f->n, f->n, f->labels)) return ds_fail(d, s);
    return 0;
}
