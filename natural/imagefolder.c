/* ImageNet-style folders and libvips decoding; see imagefolder.h. */
#include "imagefolder.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "../nn/error.h"
#include "natural_internal.h"

#if NCMI_HAVE_VIPS
#include <vips/vips.h>
#endif

/* ------------------------------------------------------------------ */
/* libvips                                                             */

#if NCMI_HAVE_VIPS
static pthread_once_t vips_once = PTHREAD_ONCE_INIT;
static int vips_ok;

static void vips_start(void)
{
    vips_ok = vips_init("ncmi") == 0;
    /* every file is opened once per use: caching load operations would only
     * keep images (and, with sequential access, spent pipelines) alive */
    if (vips_ok) vips_cache_set_max(0);
}

static int vips_ready(const char *path)
{
    pthread_once(&vips_once, vips_start);
    if (!vips_ok) return ncmi_error_set("%s: libvips failed to start", path);
    return 0;
}

/* "<path>: <what>: <libvips' message>" (the message's first line) */
static int vips_fail(const char *path, const char *what)
{
    char *m = vips_error_buffer_copy();
    char msg[512] = "";
    if (m) {
        snprintf(msg, sizeof msg, "%s", m);
        g_free(m);
    }
    size_t l = strlen(msg);
    while (l > 0 && (msg[l - 1] == '\n' || msg[l - 1] == ' ')) msg[--l] = 0;
    char *nl = strchr(msg, '\n');
    if (nl) *nl = 0;
    return ncmi_error_set("%s: %s%s%s", path, what, msg[0] ? ": " : "", msg);
}

void nat_vips_thread_done(void)
{
    if (vips_ok) vips_thread_shutdown();
}

int nat_image_size(const char *path, int *w, int *h)
{
    if (vips_ready(path)) return -1;
    VipsImage *im = vips_image_new_from_file(path, NULL);
    if (!im) return vips_fail(path, "cannot open");
    *w = vips_image_get_width(im);
    *h = vips_image_get_height(im);
    g_object_unref(im);
    return 0;
}

/* Pillow's MULDIV255 */
static inline int muldiv255(int a, int b)
{
    int t = a * b + 128;
    return ((t >> 8) + t) >> 8;
}

int nat_image_decode(const char *path, uint8_t **rgb, int *w, int *h)
{
    *rgb = NULL;
    if (vips_ready(path)) return -1;
    VipsImage *im = vips_image_new_from_file(path, "access", VIPS_ACCESS_SEQUENTIAL, "fail_on",
                                             VIPS_FAIL_ON_TRUNCATED, NULL);
    if (!im) return vips_fail(path, "cannot decode");
    const int W = vips_image_get_width(im), H = vips_image_get_height(im);
    const int bands = vips_image_get_bands(im);
    const int cmyk = vips_image_get_interpretation(im) == VIPS_INTERPRETATION_CMYK && bands >= 4;
    if (W < 1 || H < 1 || W > 65536 || H > 65536 || (size_t)W * H > ((size_t)1 << 31)) {
        g_object_unref(im);
        return ncmi_error_set("%s: image of %dx%d pixels: too large (at most 65536 a side, 2^31 pixels)",
                              path, W, H);
    }
    /* uchar: 16-bit keeps the high byte, other formats are clipped */
    VipsImage *x = im;
    if (vips_image_get_format(im) != VIPS_FORMAT_UCHAR) {
        VipsImage *t = NULL, *u = NULL;
        int rc;
        if (vips_image_get_format(im) == VIPS_FORMAT_USHORT) {
            rc = vips_rshift_const1(im, &t, 8, NULL) || vips_cast_uchar(t, &u, NULL);
        } else {
            rc = vips_cast_uchar(im, &u, NULL);
        }
        if (t) g_object_unref(t);
        g_object_unref(im);
        if (rc) {
            if (u) g_object_unref(u);
            return vips_fail(path, "cannot decode");
        }
        x = u;
    }
    /* the bands PIL's convert("RGB") uses */
    int keep = cmyk ? 4 : bands >= 3 ? 3 : 1;
    if (bands != keep) {
        VipsImage *t = NULL;
        int rc = vips_extract_band(x, &t, 0, "n", keep, NULL);
        g_object_unref(x);
        if (rc) return vips_fail(path, "cannot decode");
        x = t;
    }
    /* the pixels, computed on this thread: vips_image_write_to_memory would
     * run a thread pool per image, whose hand-offs cost about as much CPU
     * time as decoding a 500x375 JPEG */
    uint8_t *out = malloc((size_t)W * H * 3);
    VipsRegion *reg = out ? vips_region_new(x) : NULL;
    VipsRect all = {0, 0, W, H};
    if (!out || !reg || vips_region_prepare(reg, &all)) {
        free(out);
        if (reg) g_object_unref(reg);
        g_object_unref(x);
        return out ? vips_fail(path, "cannot decode") : ncmi_error_set("%s: out of memory for %dx%d", path, W, H);
    }
    for (int y = 0; y < H; y++) {
        const uint8_t *row = (const uint8_t *)VIPS_REGION_ADDR(reg, 0, y);
        uint8_t *o = out + (size_t)y * W * 3;
        if (keep == 3) {
            memcpy(o, row, (size_t)W * 3);
        } else if (keep == 1) {
            for (int i = 0; i < W; i++) o[3 * i] = o[3 * i + 1] = o[3 * i + 2] = row[i];
        } else { /* Pillow's cmyk2rgb */
            for (int i = 0; i < W; i++) {
                const uint8_t *p = row + 4 * i;
                int nk = 255 - p[3];
                for (int k = 0; k < 3; k++) {
                    int v = nk - muldiv255(p[k], nk);
                    o[3 * i + k] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
                }
            }
        }
    }
    g_object_unref(reg);
    g_object_unref(x);
    *rgb = out;
    *w = W;
    *h = H;
    return 0;
}

int nat_image_write(const char *path, const uint8_t *px, int w, int h, int c, int q)
{
    if (vips_ready(path)) return -1;
    if (c != 1 && c != 3 && c != 4) return ncmi_error_set("%s: %d bands (1, 3 or 4 for CMYK)", path, c);
    VipsImage *im = vips_image_new_from_memory(px, (size_t)w * h * c, w, h, c, VIPS_FORMAT_UCHAR);
    if (!im) return vips_fail(path, "cannot write");
    VipsImage *t = NULL;
    VipsInterpretation it = c == 1 ? VIPS_INTERPRETATION_B_W : c == 3 ? VIPS_INTERPRETATION_sRGB
                                                                       : VIPS_INTERPRETATION_CMYK;
    int rc = vips_copy(im, &t, "interpretation", it, NULL);
    g_object_unref(im);
    if (rc) return vips_fail(path, "cannot write");
    size_t l = strlen(path);
    if (l > 4 && strcasecmp(path + l - 4, ".png") == 0) rc = vips_pngsave(t, path, NULL);
    else /* 4:2:0 chroma, as PIL and most cameras write (libvips' default drops it from Q 90) */
        rc = vips_jpegsave(t, path, "Q", q, "subsample_mode", VIPS_FOREIGN_SUBSAMPLE_ON, NULL);
    g_object_unref(t);
    if (rc) return vips_fail(path, "cannot write");
    return 0;
}

#else /* no libvips */

void nat_vips_thread_done(void) {}

int nat_image_size(const char *path, int *w, int *h)
{
    (void)w;
    (void)h;
    return ncmi_error_set("%s: ncmi was built without libvips: cannot read images (install libvips-dev)", path);
}

int nat_image_decode(const char *path, uint8_t **rgb, int *w, int *h)
{
    (void)w;
    (void)h;
    *rgb = NULL;
    return ncmi_error_set("%s: ncmi was built without libvips: cannot read images (install libvips-dev)", path);
}

int nat_image_write(const char *path, const uint8_t *px, int w, int h, int c, int q)
{
    (void)px, (void)w, (void)h, (void)c, (void)q;
    return ncmi_error_set("%s: ncmi was built without libvips: cannot write images", path);
}
#endif

/* ------------------------------------------------------------------ */
/* scanning                                                            */

struct nat_folder_data {
    atomic_int refs;
    char *dir;
    int *labels;
    char **classes;
    int n_classes;
    int *class_start;
    char **rel;
    char *pool; /* the rel strings */
};

static void fdata_free(nat_folder_data *d)
{
    if (!d) return;
    free(d->dir);
    free(d->labels);
    if (d->classes)
        for (int k = 0; k < d->n_classes; k++) free(d->classes[k]);
    free(d->classes);
    free(d->class_start);
    free(d->rel);
    free(d->pool);
    free(d);
}

void nat_folder_ref(nat_folder *dst, const nat_folder *src)
{
    *dst = *src;
    if (src->data_) atomic_fetch_add(&src->data_->refs, 1);
}

void nat_folder_free(nat_folder *f)
{
    if (!f) return;
    if (f->data_ && atomic_fetch_sub(&f->data_->refs, 1) == 1) fdata_free(f->data_);
    memset(f, 0, sizeof *f);
}

char *nat_folder_path(const nat_folder *f, int i, char *buf, size_t n)
{
    snprintf(buf, n, "%s/%s", f->dir, f->rel[i]);
    return buf;
}

/* torchvision's IMG_EXTENSIONS, compared without case */
static int has_image_ext(const char *name)
{
    static const char *const ext[] = {".jpg", ".jpeg", ".png", ".ppm", ".bmp",
                                      ".pgm", ".tif",  ".tiff", ".webp"};
    size_t l = strlen(name);
    for (size_t k = 0; k < sizeof ext / sizeof *ext; k++) {
        size_t e = strlen(ext[k]);
        if (l >= e && strcasecmp(name + l - e, ext[k]) == 0) return 1;
    }
    return 0;
}

typedef struct strvec {
    char **v;
    int n, cap;
} strvec;

static int sv_push(strvec *s, const char *str)
{
    if (s->n == s->cap) {
        int nc = s->cap ? s->cap * 2 : 64;
        char **nv = realloc(s->v, (size_t)nc * sizeof *nv);
        if (!nv) return ncmi_error_set("out of memory");
        s->v = nv;
        s->cap = nc;
    }
    if (!(s->v[s->n] = strdup(str))) return ncmi_error_set("out of memory");
    s->n++;
    return 0;
}

static void sv_free(strvec *s)
{
    for (int i = 0; i < s->n; i++) free(s->v[i]);
    free(s->v);
    memset(s, 0, sizeof *s);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Entries of dir (no . and ..): dirs_out gets sub-folders, files_out
 * regular files (either may be NULL); symbolic links are followed. */
static int list_dir(const char *dir, strvec *dirs_out, strvec *files_out)
{
    DIR *d = opendir(dir);
    if (!d) return ncmi_error_set("%s: cannot open the folder: %s", dir, strerror(errno));
    struct dirent *e;
    char path[4096];
    int rc = 0;
    while ((e = readdir(d)) != NULL && !rc) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        int isdir = 0, isreg = 0;
        if (e->d_type == DT_DIR) isdir = 1;
        else if (e->d_type == DT_REG) isreg = 1;
        else {
            struct stat st;
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            if (stat(path, &st) == 0) {
                isdir = S_ISDIR(st.st_mode);
                isreg = S_ISREG(st.st_mode);
            }
        }
        if (isdir && dirs_out) rc = sv_push(dirs_out, e->d_name);
        if (isreg && files_out) rc = sv_push(files_out, e->d_name);
    }
    closedir(d);
    if (dirs_out && dirs_out->n > 1) qsort(dirs_out->v, (size_t)dirs_out->n, sizeof(char *), cmp_str);
    if (files_out && files_out->n > 1) qsort(files_out->v, (size_t)files_out->n, sizeof(char *), cmp_str);
    return rc;
}

/* every folder under rel (relative to root), rel included, depth-limited */
static int walk_dirs(const char *root, const char *rel, int depth, strvec *out)
{
    if (depth > 32) return ncmi_error_set("%s/%s: folders nested more than 32 deep (a link loop?)", root, rel);
    if (sv_push(out, rel)) return -1;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", root, rel);
    strvec sub = {0};
    if (list_dir(path, &sub, NULL)) {
        sv_free(&sub);
        return -1;
    }
    int rc = 0;
    for (int i = 0; i < sub.n && !rc; i++) {
        char r2[4096];
        snprintf(r2, sizeof r2, "%s/%s", rel, sub.v[i]);
        rc = walk_dirs(root, r2, depth + 1, out);
    }
    sv_free(&sub);
    return rc;
}

typedef struct pool {
    char *buf;
    size_t len, cap;
    size_t *off;
    int n, ncap;
} pool;

static int pool_add(pool *p, const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b), need = la + 1 + lb + 1;
    if (p->len + need > p->cap) {
        size_t nc = p->cap ? p->cap * 2 : 1 << 16;
        while (nc < p->len + need) nc *= 2;
        char *nb = realloc(p->buf, nc);
        if (!nb) return ncmi_error_set("out of memory");
        p->buf = nb;
        p->cap = nc;
    }
    if (p->n == p->ncap) {
        int nc = p->ncap ? p->ncap * 2 : 1024;
        size_t *no = realloc(p->off, (size_t)nc * sizeof *no);
        if (!no) return ncmi_error_set("out of memory");
        p->off = no;
        p->ncap = nc;
    }
    p->off[p->n++] = p->len;
    // NOLINTNEXTLINE(clang-analyzer-core.NonNullParamChecker): false positive, p->buf was grown above for len + la + 2 bytes
    memcpy(p->buf + p->len, a, la);
    p->buf[p->len + la] = '/';
    memcpy(p->buf + p->len + la + 1, b, lb + 1);
    p->len += need;
    return 0;
}

int nat_folder_scan(nat_folder *f, const char *dir, char *const *classes, int n_classes)
{
    memset(f, 0, sizeof *f);
    struct stat st;
    if (stat(dir, &st) != 0) return ncmi_error_set("%s: %s", dir, strerror(errno));
    if (!S_ISDIR(st.st_mode)) return ncmi_error_set("%s: not a folder", dir);
    strvec sub = {0}, cls = {0};
    pool P = {0};
    int *labels = NULL, *start = NULL, cap = 0;
    int rc = -1;
    if (list_dir(dir, &sub, NULL)) goto out;
    if (classes) {
        for (int k = 0; k < n_classes; k++) {
            char *const *hit =
                sub.n ? bsearch(&classes[k], sub.v, (size_t)sub.n, sizeof(char *), cmp_str) : NULL;
            if (!hit) {
                ncmi_error_set("%s: no folder for class '%s' (class %d of the %d classes)", dir,
                               classes[k], k + 1, n_classes);
                goto out;
            }
            if (sv_push(&cls, classes[k])) goto out;
        }
        /* every sub-folder must be a class */
        for (int i = 0; i < sub.n; i++) {
            int found = 0;
            for (int k = 0; k < n_classes && !found; k++) found = strcmp(sub.v[i], classes[k]) == 0;
            if (!found) {
                ncmi_error_set("%s/%s: folder is not one of the %d classes (%s, ...)", dir, sub.v[i],
                               n_classes, n_classes > 0 ? classes[0] : "");
                goto out;
            }
        }
    } else {
        cls = sub;
        memset(&sub, 0, sizeof sub);
    }
    if (cls.n == 0) {
        ncmi_error_set("%s: no class folders (expected <class>/<image> files)", dir);
        goto out;
    }
    start = malloc((size_t)(cls.n + 1) * sizeof *start);
    if (!start) {
        ncmi_error_set("out of memory");
        goto out;
    }
    for (int k = 0; k < cls.n; k++) {
        start[k] = P.n;
        strvec dirs = {0};
        if (walk_dirs(dir, cls.v[k], 0, &dirs)) {
            sv_free(&dirs);
            goto out;
        }
        if (dirs.n > 1) qsort(dirs.v, (size_t)dirs.n, sizeof(char *), cmp_str);
        int bad = 0;
        for (int j = 0; j < dirs.n && !bad; j++) {
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", dir, dirs.v[j]);
            strvec files = {0};
            bad = list_dir(path, NULL, &files);
            for (int i = 0; i < files.n && !bad; i++) {
                if (!has_image_ext(files.v[i])) continue;
                if ((bad = pool_add(&P, dirs.v[j], files.v[i]))) break;
                if (P.n > cap) {
                    int nc = cap ? cap * 2 : 1024;
                    int *nl = realloc(labels, (size_t)nc * sizeof *nl);
                    if (!nl) {
                        bad = ncmi_error_set("out of memory");
                        break;
                    }
                    labels = nl;
                    cap = nc;
                }
                // NOLINTNEXTLINE(clang-analyzer-core.NullDereference): false positive, labels is grown when P.n > cap, which holds on the first image
                labels[P.n - 1] = k;
            }
            sv_free(&files);
        }
        sv_free(&dirs);
        if (bad) goto out;
        if (P.n == start[k]) {
            ncmi_error_set("%s/%s: no images in the class folder (.jpg .jpeg .png .ppm .bmp .pgm .tif "
                           ".tiff .webp)", dir, cls.v[k]);
            goto out;
        }
    }
    start[cls.n] = P.n;
    nat_folder_data *d = calloc(1, sizeof *d);
    if (!d) {
        ncmi_error_set("out of memory");
        goto out;
    }
    atomic_init(&d->refs, 1);
    d->dir = strdup(dir);
    d->rel = malloc((size_t)(P.n > 0 ? P.n : 1) * sizeof *d->rel);
    if (!d->dir || !d->rel) {
        fdata_free(d);
        ncmi_error_set("out of memory");
        goto out;
    }
    for (int i = 0; i < P.n; i++) d->rel[i] = P.buf + P.off[i];
    d->pool = P.buf;
    P.buf = NULL;
    d->labels = labels;
    labels = NULL;
    d->class_start = start;
    start = NULL;
    d->classes = cls.v;
    d->n_classes = cls.n;
    memset(&cls, 0, sizeof cls);
    f->dir = d->dir;
    f->n = P.n;
    f->labels = d->labels;
    f->n_classes = d->n_classes;
    f->classes = d->classes;
    f->class_start = d->class_start;
    f->rel = d->rel;
    f->data_ = d;
    rc = 0;
out:
    sv_free(&sub);
    sv_free(&cls);
    free(P.buf);
    free(P.off);
    free(labels);
    free(start);
    return rc;
}

/* ------------------------------------------------------------------ */
/* checking                                                            */

typedef struct check_job {
    const nat_folder *f;
    int decode;
    atomic_int next;
    char **why; /* [n] NULL: fine */
} check_job;

static void *check_worker(void *arg)
{
    check_job *j = arg;
    char path[4096];
    for (;;) {
        int i = atomic_fetch_add(&j->next, 1);
        if (i >= j->f->n) break;
        nat_folder_path(j->f, i, path, sizeof path);
        int rc, w, h;
        if (j->decode) {
            uint8_t *px = NULL;
            rc = nat_image_decode(path, &px, &w, &h);
            free(px);
        } else {
            rc = nat_image_size(path, &w, &h);
        }
        if (rc) j->why[i] = strdup(ncmi_error());
    }
    nat_vips_thread_done();
    return NULL;
}

int nat_folder_check(nat_folder *f, int decode, int workers, FILE *report, int *n_bad)
{
    if (n_bad) *n_bad = 0;
    NCMI_CHECK(f->data_ && atomic_load(&f->data_->refs) == 1, "nat_folder_check: the folder is shared");
    const int n0 = f->n;
    check_job j = {.f = f, .decode = decode};
    atomic_init(&j.next, 0);
    j.why = calloc((size_t)(f->n ? f->n : 1), sizeof *j.why);
    if (!j.why) return ncmi_error_set("out of memory");
    if (workers < 1) workers = 1;
    if (workers > 256) workers = 256;
    pthread_t th[256];
    int started = 0;
    for (int t = 1; t < workers; t++) {
        if (pthread_create(&th[t], NULL, check_worker, &j) != 0) break;
        started = t;
    }
    check_worker(&j);
    for (int t = 1; t <= started; t++) pthread_join(th[t], NULL);
    /* compact */
    nat_folder_data *d = f->data_;
    int m = 0, bad = 0, k = 0, rc = 0;
    int *newstart = malloc((size_t)(f->n_classes + 1) * sizeof *newstart);
    if (!newstart) rc = ncmi_error_set("out of memory");
    for (int i = 0; i < f->n && !rc; i++) {
        while (k < f->n_classes && i >= d->class_start[k]) newstart[k++] = m;
        if (j.why[i]) {
            bad++;
            if (report) fprintf(report, "%s\n", j.why[i]);
            continue;
        }
        d->rel[m] = d->rel[i];
        d->labels[m] = d->labels[i];
        m++;
    }
    if (!rc) {
        while (k <= f->n_classes) newstart[k++] = m;
        memcpy(d->class_start, newstart, (size_t)(f->n_classes + 1) * sizeof *newstart);
        f->n = m;
        for (int c = 0; c < f->n_classes && !rc; c++)
            if (d->class_start[c] == d->class_start[c + 1])
                rc = ncmi_error_set("%s/%s: no readable images left in the class folder", f->dir,
                                    f->classes[c]);
    }
    free(newstart);
    for (int i = 0; i < n0; i++) free(j.why[i]);
    free(j.why);
    if (n_bad) *n_bad = bad;
    return rc;
}
