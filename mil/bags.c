/* Bag datasets: manifest + features folder, LRU cache, read-ahead thread
 * (bags.h). */
#include "bags.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../eval/manifest.h"
#include "../features/features_h5.h"
#include "../nn/error.h"

/* HDF5 calls are serialised (the library may be built without thread safety). */
static pthread_mutex_t h5_lock = PTHREAD_MUTEX_INITIALIZER;

enum { E_NONE = 0, E_LOADING, E_READY };

typedef struct entry {
    int state;
    float *x;         /* [rows * d] when READY */
    int64_t rows;     /* from the shape check (updated on read) */
    size_t bytes;     /* reserved / held in the cache */
    int refs;         /* in use by the trainer */
    uint64_t used;    /* LRU tick */
    char *err;        /* last read error (read again on the next request) */
} entry;

typedef struct store {
    int n;            /* slots (rows kept from the manifest) */
    char **ids, **paths;
    entry *e;
    int d;
    size_t cap, bytes, peak;
    uint64_t tick;
    long loads, prefetched, hits, waits;
    int prefetch;
    /* read-ahead queue (replaced on every request) */
    int *queue, qn, qpos;
    int stop, thread_on;
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;      /* a load finished */
    pthread_cond_t work;    /* the queue changed / stop */
    int refcount;           /* datasets sharing the store */
    float *mean, *inv_sd;   /* [d] standardize: training mean and 1/std (NULL: off) */
} store;

typedef struct bagset {
    store *s;
    int *slot;        /* [n] store slot of sample i */
    int *order, *pos; /* announced order and its inverse ([n]); have_order */
    int have_order;
} bagset;

/* ------------------------------------------------------------------ */
/* the store                                                           */

static size_t bag_bytes(const store *s, int64_t rows) { return (size_t)rows * (size_t)s->d * sizeof(float); }

/* Evict unreferenced READY bags, least recently used first, until `need`
 * more bytes fit under the bound. 1 when they fit. Under mu. */
static int make_room(store *s, size_t need)
{
    while (s->bytes + need > s->cap) {
        int v = -1;
        for (int i = 0; i < s->n; i++) {
            entry *e = &s->e[i];
            if (e->state == E_READY && e->refs == 0 && (v < 0 || e->used < s->e[v].used)) v = i;
        }
        if (v < 0) return 0;
        entry *e = &s->e[v];
        free(e->x);
        e->x = NULL;
        s->bytes -= e->bytes;
        e->bytes = 0;
        e->state = E_NONE;
    }
    return 1;
}

static void reserve(store *s, entry *e, size_t b)
{
    e->bytes = b;
    s->bytes += b;
    if (s->bytes > s->peak) s->peak = s->bytes;
}

/* Read slot i (not under mu). *x malloc'd; -1 with ncmi_error(). */
static int read_bag(store *s, int i, float **x, int64_t *rows)
{
    features_h5 f;
    pthread_mutex_lock(&h5_lock);
    int rc = features_h5_read(&f, s->paths[i], 0);
    pthread_mutex_unlock(&h5_lock);
    if (rc) return ncmi_error_prefix("slide %s", s->ids[i]);
    if (f.n == 0) {
        features_h5_free(&f);
        return ncmi_error_set("slide %s: %s: empty bag (N = 0 instances)", s->ids[i], s->paths[i]);
    }
    if (f.d != s->d) {
        int d = f.d;
        features_h5_free(&f);
        return ncmi_error_set("slide %s: %s: features of dimension %d, the other bags have %d", s->ids[i],
                              s->paths[i], d, s->d);
    }
    *x = f.features;
    *rows = f.n;
    f.features = NULL;
    features_h5_free(&f);
    return 0;
}

/* Finish a load of slot i under mu: keep it (READY) or release the reservation. */
static void finish_load(store *s, int i, int rc, float *x, int64_t rows, int keep)
{
    entry *e = &s->e[i];
    free(e->err);
    e->err = NULL;
    s->loads++;
    if (rc) {
        e->err = strdup(ncmi_error());
        s->bytes -= e->bytes;
        e->bytes = 0;
        e->state = E_NONE;
    } else if (keep) {
        e->rows = rows;
        size_t b = bag_bytes(s, rows);
        s->bytes = s->bytes - e->bytes + b; /* the file may have changed since the check */
        if (s->bytes > s->peak) s->peak = s->bytes;
        e->bytes = b;
        e->x = x;
        e->state = E_READY;
        e->used = ++s->tick;
    }
    pthread_cond_broadcast(&s->cv);
}

static void *worker(void *arg)
{
    store *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->stop && s->qpos >= s->qn) pthread_cond_wait(&s->work, &s->mu);
        if (s->stop) break;
        int i = s->queue[s->qpos++];
        entry *e = &s->e[i];
        if (e->state != E_NONE || e->err) continue; /* cached, being read, or failed before */
        size_t b = bag_bytes(s, e->rows);
        if (!make_room(s, b)) continue; /* no room: the trainer reads it when it needs it */
        e->state = E_LOADING;
        reserve(s, e, b);
        pthread_mutex_unlock(&s->mu);
        float *x = NULL;
        int64_t rows = 0;
        int rc = read_bag(s, i, &x, &rows);
        pthread_mutex_lock(&s->mu);
        s->prefetched++;
        finish_load(s, i, rc, x, rows, 1);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

static void store_free(store *s)
{
    if (!s) return;
    if (s->thread_on) {
        pthread_mutex_lock(&s->mu);
        s->stop = 1;
        pthread_cond_broadcast(&s->work);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->th, NULL);
    }
    for (int i = 0; i < s->n; i++) {
        free(s->ids[i]);
        free(s->paths[i]);
        free(s->e[i].x);
        free(s->e[i].err);
    }
    free(s->ids);
    free(s->paths);
    free(s->e);
    free(s->queue);
    free(s->mean);
    free(s->inv_sd);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    pthread_cond_destroy(&s->work);
    free(s);
}

/* ------------------------------------------------------------------ */
/* the dataset interface                                               */

static const char *bag_id(const tr_dataset *d, int i)
{
    const bagset *b = d->ctx;
    return b->s->ids[b->slot[i]];
}

static void bag_order(const tr_dataset *d, const int *idx, int n)
{
    bagset *b = d->ctx;
    store *s = b->s;
    pthread_mutex_lock(&s->mu);
    b->have_order = idx != NULL && n == d->n;
    if (b->have_order) {
        memcpy(b->order, idx, (size_t)n * sizeof *idx);
        for (int p = 0; p < n; p++) b->pos[idx[p]] = p;
    }
    pthread_mutex_unlock(&s->mu);
}

/* Queue the bags after sample i of the announced order. Under mu. */
static void schedule(const tr_dataset *d, int i)
{
    bagset *b = d->ctx;
    store *s = b->s;
    if (s->prefetch <= 0 || s->cap == 0) return;
    if (!s->thread_on) {
        if (pthread_create(&s->th, NULL, worker, s) != 0) {
            s->prefetch = 0; /* no thread: read on demand */
            return;
        }
        s->thread_on = 1;
    }
    int p = b->have_order ? b->pos[i] : i;
    s->qn = s->qpos = 0;
    for (int k = 1; k <= s->prefetch && p + k < d->n; k++) {
        int j = b->have_order ? b->order[p + k] : p + k;
        s->queue[s->qn++] = b->slot[j];
    }
    pthread_cond_signal(&s->work);
}

static int bag_inputs(const tr_dataset *d, nn_graph *g, const int *idx, int n, int training, nn_rng *rng,
                      nn_tensor **out)
{
    (void)training;
    (void)rng;
    if (n != 1) return ncmi_error_set("bag dataset %s: bags come one at a time (asked for %d)", d->name, n);
    bagset *b = d->ctx;
    store *s = b->s;
    const int i = b->slot[idx[0]];
    entry *e = &s->e[i];
    float *x = NULL;
    int64_t rows = 0;
    int transient = 0;
    pthread_mutex_lock(&s->mu);
    free(e->err); /* a failed read-ahead is retried here, with the error reported on this thread */
    e->err = NULL;
    schedule(d, idx[0]);
    if (e->state == E_LOADING) {
        s->waits++;
        while (e->state == E_LOADING) pthread_cond_wait(&s->cv, &s->mu);
    } else if (e->state == E_READY) {
        s->hits++;
    }
    if (e->state == E_NONE && e->err) {
        /* the read-ahead failed while we waited: read again here for the message */
        free(e->err);
        e->err = NULL;
    }
    if (e->state == E_NONE) {
        size_t need = bag_bytes(s, e->rows);
        int keep = s->cap > 0 && make_room(s, need);
        if (keep) {
            e->state = E_LOADING;
            reserve(s, e, need);
        }
        pthread_mutex_unlock(&s->mu);
        int rc = read_bag(s, i, &x, &rows);
        char msg[2048];
        if (rc) snprintf(msg, sizeof msg, "%s", ncmi_error());
        pthread_mutex_lock(&s->mu);
        if (keep) {
            finish_load(s, i, rc, x, rows, 1);
        } else {
            s->loads++;
            transient = 1;
        }
        if (rc) {
            free(e->err);
            e->err = NULL; /* not sticky: a later request reads again */
            pthread_mutex_unlock(&s->mu);
            return ncmi_error_set("%s", msg);
        }
    }
    if (!transient) {
        x = e->x;
        rows = e->rows;
        e->refs++;
        e->used = ++s->tick;
    }
    pthread_mutex_unlock(&s->mu);

    int shape[2] = {(int)rows, s->d};
    out[0] = nn_tensor_from(g, 2, shape, x);
    if (s->mean) {
        float *o = out[0]->data;
        for (int64_t r = 0; r < rows; r++)
            for (int j = 0; j < s->d; j++) o[r * s->d + j] = (o[r * s->d + j] - s->mean[j]) * s->inv_sd[j];
    }

    if (transient) {
        free(x);
    } else {
        pthread_mutex_lock(&s->mu);
        e->refs--;
        pthread_mutex_unlock(&s->mu);
    }
    return 1;
}

static void bag_free(tr_dataset *d)
{
    bagset *b = d->ctx;
    if (!b) return;
    store *s = b->s;
    pthread_mutex_lock(&s->mu);
    int last = --s->refcount == 0;
    pthread_mutex_unlock(&s->mu);
    if (last) store_free(s);
    free(b->slot);
    free(b->order);
    free(b->pos);
    free(b);
    free(d->labels);
    d->labels = NULL;
    d->ctx = NULL;
}

int mil_bags_standardization(const tr_dataset *d, const float **mean, const float **inv_sd, int *dim)
{
    *mean = *inv_sd = NULL;
    *dim = 0;
    if (!d || d->free != bag_free || !d->ctx) return -1;
    const store *s = ((bagset *)d->ctx)->s;
    if (!s->mean) return 0;
    *mean = s->mean;
    *inv_sd = s->inv_sd;
    *dim = s->d;
    return 1;
}

int mil_bags_get_stats(const tr_dataset *d, mil_bags_stats *st)
{
    memset(st, 0, sizeof *st);
    if (!d || d->free != bag_free || !d->ctx) return -1;
    store *s = ((bagset *)d->ctx)->s;
    pthread_mutex_lock(&s->mu);
    st->loads = s->loads;
    st->prefetched = s->prefetched;
    st->hits = s->hits;
    st->waits = s->waits;
    st->bytes = s->bytes;
    st->peak_bytes = s->peak;
    st->cap_bytes = s->cap;
    pthread_mutex_unlock(&s->mu);
    return 0;
}

/* ------------------------------------------------------------------ */
/* opening                                                             */

void mil_bags_opts_default(mil_bags_opts *o)
{
    memset(o, 0, sizeof *o);
    o->split_column = "split";
    o->cache_mb = 2048;
    o->prefetch = 2;
}

void mil_bags_info_free(mil_bags_info *info)
{
    if (info->classes) {
        for (int i = 0; i < info->C; i++) free(info->classes[i]);
        free(info->classes);
    }
    memset(info, 0, sizeof *info);
}

static int split_index(const char *v)
{
    if (!v || !v[0]) return -1;
    if (!strcmp(v, "train")) return 0;
    if (!strcmp(v, "val")) return 1;
    if (!strcmp(v, "test")) return 2;
    return -2;
}

static void class_list_str(char *const *cls, int C, char *buf, size_t n)
{
    size_t q = 0;
    buf[0] = 0;
    for (int k = 0; k < C && q < n; k++) q += (size_t)snprintf(buf + q, n - q, k ? ", %s" : "%s", cls[k]);
}

typedef struct openbuf {
    store *s;
    int *split, *label, *slot_of_row;
    char *problems;   /* missing/unreadable listing */
    size_t plen, pcap;
    int nproblems;
} openbuf;

static void add_problem(openbuf *ob, const char *fmt, const char *a, const char *b)
{
    char line[1400];
    int k = snprintf(line, sizeof line, fmt, a, b);
    if (k < 0) return;
    if (ob->plen + (size_t)k + 3 > ob->pcap) {
        size_t cap = (ob->pcap + (size_t)k + 3) * 2;
        char *p = realloc(ob->problems, cap);
        if (!p) return;
        ob->problems = p;
        ob->pcap = cap;
    }
    ob->plen += (size_t)sprintf(ob->problems + ob->plen, "%s%s", ob->nproblems ? "; " : "", line);
    ob->nproblems++;
}

static int make_set(tr_dataset *d, const char *name, const char *source, store *s, const int *rows_slot,
                    const int *labels, int n)
{
    memset(d, 0, sizeof *d);
    bagset *b = calloc(1, sizeof *b);
    int m = n > 0 ? n : 1;
    if (b) {
        b->slot = malloc((size_t)m * sizeof *b->slot);
        b->order = malloc((size_t)m * sizeof *b->order);
        b->pos = malloc((size_t)m * sizeof *b->pos);
    }
    d->labels = malloc((size_t)m * sizeof *d->labels);
    if (!b || !b->slot || !b->order || !b->pos || !d->labels) {
        if (b) {
            free(b->slot);
            free(b->order);
            free(b->pos);
        }
        free(b);
        free(d->labels);
        d->labels = NULL;
        return ncmi_error_set("out of memory");
    }
    memcpy(b->slot, rows_slot, (size_t)n * sizeof *b->slot);
    memcpy(d->labels, labels, (size_t)n * sizeof *labels);
    b->s = s;
    s->refcount++;
    snprintf(d->name, sizeof d->name, "%s", name);
    snprintf(d->source, sizeof d->source, "%s", source);
    d->n = n;
    d->bags = 1;
    d->sample_id = bag_id;
    d->inputs = bag_inputs;
    d->order = bag_order;
    d->free = bag_free;
    d->ctx = b;
    return 0;
}

/* Mean and 1/std of every feature over the instances of the training slots. */
static int standardize(store *s, const int *slots, int n)
{
    double *sum = calloc((size_t)s->d, sizeof *sum), *sq = calloc((size_t)s->d, sizeof *sq);
    s->mean = malloc((size_t)s->d * sizeof *s->mean);
    s->inv_sd = malloc((size_t)s->d * sizeof *s->inv_sd);
    if (!sum || !sq || !s->mean || !s->inv_sd) {
        free(sum);
        free(sq);
        return ncmi_error_set("out of memory");
    }
    long count = 0;
    for (int i = 0; i < n; i++) {
        float *x;
        int64_t rows;
        if (read_bag(s, slots[i], &x, &rows)) {
            free(sum);
            free(sq);
            return -1;
        }
        s->loads++;
        for (int64_t r = 0; r < rows; r++)
            for (int j = 0; j < s->d; j++) {
                double v = x[r * s->d + j];
                sum[j] += v;
                sq[j] += v * v;
            }
        count += (long)rows;
        free(x);
    }
    for (int j = 0; j < s->d; j++) {
        double m = sum[j] / (double)count, var = sq[j] / (double)count - m * m;
        double sd = var > 0 ? sqrt(var) : 0;
        s->mean[j] = (float)m;
        s->inv_sd[j] = sd < 1e-6 ? 1.f : (float)(1.0 / sd);
    }
    free(sum);
    free(sq);
    return 0;
}

int mil_bags_open(const mil_bags_opts *o, tr_dataset *train, tr_dataset *val, tr_dataset *test,
                  mil_bags_info *info)
{
    memset(info, 0, sizeof *info);
    memset(train, 0, sizeof *train);
    memset(val, 0, sizeof *val);
    memset(test, 0, sizeof *test);
    if (!o->features_dir || !o->features_dir[0]) return ncmi_error_set("data.features: no features folder given");
    if (!o->manifest || !o->manifest[0]) return ncmi_error_set("data.manifest: no manifest given");
    struct stat sb;
    if (stat(o->features_dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return ncmi_error_set("%s: features folder %s", o->features_dir,
                              errno == ENOENT ? "does not exist" : "is not a folder");
    FILE *warn = o->warn ? o->warn : stderr;
    const char *col = o->split_column && o->split_column[0] ? o->split_column : "split";

    eval_manifest m;
    if (eval_manifest_read(&m, o->manifest)) return -1;
    int rc = -1;
    openbuf ob = {0};
    int *sets[3] = {NULL, NULL, NULL}, *labs[3] = {NULL, NULL, NULL}, ns[3] = {0, 0, 0};
    char **cls = NULL;
    int C = 0;
    const int nr = m.n > 0 ? m.n : 1;
    ob.split = malloc((size_t)nr * sizeof *ob.split);
    ob.label = malloc((size_t)nr * sizeof *ob.label);
    ob.slot_of_row = malloc((size_t)nr * sizeof *ob.slot_of_row);
    unsigned char *keep = calloc((size_t)nr, 1);
    if (!ob.split || !ob.label || !ob.slot_of_row || !keep) {
        ncmi_error_set("out of memory");
        goto out;
    }
    int have_col = 0;
    for (int c = 0; c < m.ncols; c++) have_col |= !strcmp(m.columns[c], col);
    if (!have_col) {
        char cols[1024];
        class_list_str(m.columns, m.ncols, cols, sizeof cols);
        ncmi_error_set("%s: no column '%s' (data.split_column) to take train/val/test from; columns: %s",
                       m.file, col, cols);
        goto out;
    }
    /* splits */
    for (int r = 0; r < m.n; r++) {
        const char *v = eval_manifest_get(&m, r, col);
        ob.split[r] = split_index(v);
        if (ob.split[r] == -2) {
            ncmi_error_set("%s: row %d (line %d): slide %s: %s '%s' is not train, val or test", m.file, r + 1,
                           m.rows[r].line, m.rows[r].slide_id, col, v);
            goto out;
        }
        keep[r] = ob.split[r] >= 0;
        if (!keep[r]) info->n_unsplit++;
    }
    /* classes and labels */
    if (o->classes && o->n_classes > 0) {
        C = o->n_classes;
        cls = calloc((size_t)C, sizeof *cls);
        if (!cls) {
            ncmi_error_set("out of memory");
            goto out;
        }
        for (int k = 0; k < C; k++)
            if (!(cls[k] = strdup(o->classes[k]))) {
                ncmi_error_set("out of memory");
                goto out;
            }
    } else if (eval_manifest_classes(&m, keep, &cls, &C)) {
        goto out;
    }
    if (C < 2) {
        ncmi_error_set("%s: %d class%s (%s) among the rows with a split: a classifier needs 2 or more "
                       "(set data.classes)", m.file, C, C == 1 ? "" : "es", C == 1 ? cls[0] : "");
        goto out;
    }
    for (int r = 0; r < m.n; r++) {
        if (!keep[r]) continue;
        ob.label[r] = -1;
        for (int k = 0; k < C; k++)
            if (!strcmp(m.rows[r].label, cls[k])) ob.label[r] = k;
        if (ob.label[r] < 0) {
            char list[1024];
            class_list_str(cls, C, list, sizeof list);
            ncmi_error_set("%s: row %d (line %d): slide %s: label '%s' is not in the class list (%s)%s", m.file,
                           r + 1, m.rows[r].line, m.rows[r].slide_id, m.rows[r].label, list,
                           o->classes && o->n_classes ? " of data.classes" : "");
            goto out;
        }
    }
    /* files: existence and shape */
    ob.s = calloc(1, sizeof *ob.s);
    if (!ob.s) {
        ncmi_error_set("out of memory");
        goto out;
    }
    store *s = ob.s;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    pthread_cond_init(&s->work, NULL);
    s->refcount = 1; /* the opener's, until the datasets hold it */
    s->ids = calloc((size_t)nr, sizeof *s->ids);
    s->paths = calloc((size_t)nr, sizeof *s->paths);
    s->e = calloc((size_t)nr, sizeof *s->e);
    s->prefetch = o->prefetch > 0 ? o->prefetch : 0;
    s->queue = malloc((size_t)(s->prefetch + 1) * sizeof *s->queue);
    s->cap = o->cache_mb > 0 ? (size_t)(o->cache_mb * 1024.0 * 1024.0) : 0;
    if (!s->ids || !s->paths || !s->e || !s->queue) {
        ncmi_error_set("out of memory");
        goto out;
    }
    const char *first_id = NULL;
    for (int r = 0; r < m.n; r++) {
        ob.slot_of_row[r] = -1;
        if (!keep[r]) continue;
        const char *id = m.rows[r].slide_id;
        char *path = NULL;
        if (asprintf(&path, "%s/%s.h5", o->features_dir, id) < 0) {
            ncmi_error_set("out of memory");
            goto out;
        }
        if (stat(path, &sb) != 0) {
            add_problem(&ob, "%s (%s: missing)", id, path);
            free(path);
            continue;
        }
        int64_t rows;
        int d;
        pthread_mutex_lock(&h5_lock);
        int bad = features_h5_shape(path, &rows, &d);
        pthread_mutex_unlock(&h5_lock);
        if (bad) {
            add_problem(&ob, "%s (unreadable: %s)", id, ncmi_error());
            free(path);
            continue;
        }
        if (rows == 0) {
            ncmi_error_set("%s: row %d (line %d): slide %s: %s: empty bag (N = 0 instances)", m.file, r + 1,
                           m.rows[r].line, id, path);
            free(path);
            goto out;
        }
        if (!first_id) {
            first_id = id;
            s->d = d;
        } else if (d != s->d) {
            ncmi_error_set("%s: row %d (line %d): slide %s: %s: features of dimension %d, but slide %s has %d",
                           m.file, r + 1, m.rows[r].line, id, path, d, first_id, s->d);
            free(path);
            goto out;
        }
        int k = s->n++;
        s->paths[k] = path;
        s->ids[k] = strdup(id);
        s->e[k].rows = rows;
        if (!s->ids[k]) {
            ncmi_error_set("out of memory");
            goto out;
        }
        if (rows > info->max_rows) info->max_rows = rows;
        ob.slot_of_row[r] = k;
    }
    if (ob.nproblems) {
        if (!o->skip_missing) {
            if (ob.plen > 1500) fprintf(warn, "ncmi: feature files missing or unreadable in %s: %s\n",
                                        o->features_dir, ob.problems);
            ncmi_error_set("%d feature file%s missing or unreadable in %s (--skip-missing or "
                           "data.skip_missing: true leaves %s out): %s",
                           ob.nproblems, ob.nproblems == 1 ? "" : "s", o->features_dir,
                           ob.nproblems == 1 ? "it" : "them",
                           ob.plen > 1500 ? "listed above" : ob.problems);
            goto out;
        }
        fprintf(warn, "ncmi: warning: leaving out %d slide%s whose feature file is missing or unreadable in %s "
                      "(skip_missing): %s\n",
                ob.nproblems, ob.nproblems == 1 ? "" : "s", o->features_dir, ob.problems);
        info->n_skipped = ob.nproblems;
    }
    /* the three splits */
    for (int q = 0; q < 3; q++) {
        sets[q] = malloc((size_t)nr * sizeof *sets[q]);
        labs[q] = malloc((size_t)nr * sizeof *labs[q]);
        if (!sets[q] || !labs[q]) {
            ncmi_error_set("out of memory");
            goto out;
        }
    }
    for (int r = 0; r < m.n; r++) {
        if (ob.slot_of_row[r] < 0) continue;
        int q = ob.split[r];
        sets[q][ns[q]] = ob.slot_of_row[r];
        labs[q][ns[q]++] = ob.label[r];
    }
    if (ns[0] == 0) {
        ncmi_error_set("%s: no training bags (no row with %s = train%s)", m.file, col,
                       info->n_skipped ? " and a feature file" : "");
        goto out;
    }
    static const char *const names[3] = {"train", "val", "test"};
    tr_dataset *ds[3] = {train, val, test};
    for (int q = 0; q < 3; q++)
        if (make_set(ds[q], names[q], m.file, s, sets[q], labs[q], ns[q])) {
            for (int k = 0; k < q; k++) tr_dataset_free(ds[k]);
            goto out;
        }
    if (o->standardize && standardize(s, sets[0], ns[0])) {
        for (int q = 0; q < 3; q++) tr_dataset_free(ds[q]);
        goto out;
    }
    s->refcount--;
    ob.s = NULL; /* owned by the datasets now */
    info->d_feat = s->d;
    info->C = C;
    info->classes = cls;
    cls = NULL;
    rc = 0;
out:
    if (cls) {
        for (int k = 0; k < C; k++) free(cls[k]);
        free(cls);
    }
    if (ob.s) store_free(ob.s);
    for (int q = 0; q < 3; q++) {
        free(sets[q]);
        free(labs[q]);
    }
    free(ob.split);
    free(ob.label);
    free(ob.slot_of_row);
    free(ob.problems);
    free(keep);
    eval_manifest_free(&m);
    if (rc) {
        memset(train, 0, sizeof *train);
        memset(val, 0, sizeof *val);
        memset(test, 0, sizeof *test);
    }
    return rc;
}
