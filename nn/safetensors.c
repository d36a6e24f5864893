/* safetensors reader/writer. Layout: u64 LE header length N, N bytes of
 * JSON (space padded), then the data section. The reader loads the whole
 * file and validates the header completely before handing anything out, so
 * later reads never go out of bounds. */
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "tmpfile.h"

/* A header larger than this is not a real safetensors header (the Rust
 * implementation's limit is 100 MB). */
#define ST_MAX_HEADER ((uint64_t)100 * 1000 * 1000)

/* ---- dtype helpers ---- */

static const char *const dtype_names[] = {"F32", "F16", "BF16", "I64", "I32", "F64"};
static const size_t dtype_sizes[] = {4, 2, 2, 8, 4, 8};

const char *nn_st_dtype_name(nn_st_dtype d)
{
    return (unsigned)d < sizeof dtype_names / sizeof *dtype_names ? dtype_names[d] : "?";
}

size_t nn_st_dtype_size(nn_st_dtype d)
{
    return (unsigned)d < sizeof dtype_sizes / sizeof *dtype_sizes ? dtype_sizes[d] : 0;
}

static int dtype_parse(const char *s, nn_st_dtype *d)
{
    for (int i = 0; i < (int)(sizeof dtype_names / sizeof *dtype_names); i++)
        if (strcmp(s, dtype_names[i]) == 0) {
            *d = (nn_st_dtype)i;
            return 0;
        }
    return -1;
}

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint64_t f64_bits(double f)
{
    uint64_t u;
    memcpy(&u, &f, 8);
    return u;
}

static double bits_f64(uint64_t u)
{
    double f;
    memcpy(&f, &u, 8);
    return f;
}

/* float32 -> IEEE half, round to nearest even; NaN stays a (quiet) NaN,
 * overflow goes to inf, tiny values to half subnormals or zero. */
uint16_t nn_f32_to_f16(float f)
{
    uint32_t x = f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) /* NaN: keep the top payload bits, force quiet */
        return (uint16_t)(sign | 0x7e00u | ((ax >> 13) & 0x3ffu));
    if (ax >= 0x47800000u) return (uint16_t)(sign | 0x7c00u); /* >= 65536 or inf */
    if (ax < 0x38800000u) {                                   /* below 2^-14: subnormal */
        if (ax <= 0x33000000u) return sign;                   /* <= 2^-25 rounds to 0 */
        uint32_t e = ax >> 23;
        uint32_t m = (ax & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126 - e; /* 14..24 */
        uint32_t h = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1);
        uint32_t half = 1u << (shift - 1);
        if (rem > half || (rem == half && (h & 1))) h++;
        return (uint16_t)(sign | h);
    }
    uint32_t h = ((((ax >> 23) - 112) << 10) | ((ax >> 13) & 0x3ffu));
    uint32_t rem = ax & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1))) h++; /* carry may reach inf: correct */
    return (uint16_t)(sign | h);
}

float nn_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1fu;
    uint32_t m = h & 0x3ffu;
    if (e == 0x1f) return bits_f32(sign | 0x7f800000u | (m << 13)); /* inf / NaN */
    if (e == 0) {
        if (m == 0) return bits_f32(sign);
        /* subnormal: m * 2^-24, exact in float */
        float v = (float)m * 5.9604644775390625e-08f;
        return sign ? -v : v;
    }
    return bits_f32(sign | ((e + 112) << 23) | (m << 13));
}

uint16_t nn_f32_to_bf16(float f)
{
    uint32_t x = f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x0040u); /* quiet NaN */
    x += 0x7fffu + ((x >> 16) & 1u);
    return (uint16_t)(x >> 16);
}

float nn_bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

/* little-endian loads/stores (independent of the host's byte order) */
static uint16_t ld16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t ld32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static uint64_t ld64(const uint8_t *p) { return (uint64_t)ld32(p) | ((uint64_t)ld32(p + 4) << 32); }
static void st16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}
static void st32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void st64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* ---- reader ---- */

static void st_clear(nn_safetensors *st)
{
    if (!st) return;
    for (int i = 0; i < st->n; i++) free(st->entries[i].name);
    free(st->entries);
    for (int i = 0; i < st->n_meta; i++) {
        free(st->meta_keys[i]);
        free(st->meta_vals[i]);
    }
    free(st->meta_keys);
    free(st->meta_vals);
    free(st->path);
    free(st->buf_);
    memset(st, 0, sizeof *st);
}

void nn_st_close(nn_safetensors *st) { st_clear(st); }

static int cmp_offset(const void *a, const void *b)
{
    const nn_st_entry *x = *(const nn_st_entry *const *)a, *y = *(const nn_st_entry *const *)b;
    if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
    if (x->nbytes != y->nbytes) return x->nbytes < y->nbytes ? -1 : 1;
    return 0;
}

/* Read a whole regular file into a malloc'd buffer. */
static int read_file(const char *path, uint8_t **buf, size_t *len)
{
    *buf = NULL;
    *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ncmi_error_set("%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return ncmi_error_set("%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return ncmi_error_set("%s: not a regular file", path);
    }
    size_t n = (size_t)sb.st_size;
    uint8_t *b = malloc(n ? n : 1);
    if (!b) {
        close(fd);
        return ncmi_error_set("%s: out of memory reading %zu bytes", path, n);
    }
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, b + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            int e = errno;
            free(b);
            close(fd);
            return ncmi_error_set("%s: read error: %s", path, strerror(e));
        }
        if (r == 0) break; /* file shrank: validate what we have */
        got += (size_t)r;
    }
    close(fd);
    *buf = b;
    *len = got;
    return 0;
}

/* Parse one tensor entry. name is the JSON key. */
static int parse_entry(const char *path, const char *name, json_t *v, size_t data_len,
                       nn_st_entry *e)
{
    if (!json_is_object(v))
        return ncmi_error_set("%s: tensor '%s': header entry is not an object", path, name);
    json_t *jd = json_object_get(v, "dtype"), *js = json_object_get(v, "shape"),
           *jo = json_object_get(v, "data_offsets");
    if (!jd) return ncmi_error_set("%s: tensor '%s': no dtype", path, name);
    if (!js) return ncmi_error_set("%s: tensor '%s': no shape", path, name);
    if (!jo) return ncmi_error_set("%s: tensor '%s': no data_offsets", path, name);
    if (!json_is_string(jd)) return ncmi_error_set("%s: tensor '%s': dtype is not a string", path, name);
    if (dtype_parse(json_string_value(jd), &e->dtype) != 0)
        return ncmi_error_set("%s: tensor '%s': unsupported dtype '%s' (F32, F16, BF16, F64, I64, I32)",
                              path, name, json_string_value(jd));
    if (!json_is_array(js)) return ncmi_error_set("%s: tensor '%s': shape is not an array", path, name);
    size_t nd = json_array_size(js);
    if (nd > NN_ST_MAX_DIMS)
        return ncmi_error_set("%s: tensor '%s': %zu dimensions (at most %d)", path, name, nd,
                              NN_ST_MAX_DIMS);
    e->ndim = (int)nd;
    uint64_t numel = 1;
    int overflow = 0;
    for (size_t i = 0; i < nd; i++) {
        json_t *d = json_array_get(js, i);
        if (!json_is_integer(d))
            return ncmi_error_set("%s: tensor '%s': shape[%zu] is not an integer", path, name, i);
        json_int_t x = json_integer_value(d);
        if (x < 0)
            return ncmi_error_set("%s: tensor '%s': negative dimension %lld", path, name, (long long)x);
        if (x > INT_MAX)
            return ncmi_error_set("%s: tensor '%s': dimension %lld too large", path, name, (long long)x);
        e->shape[i] = (int64_t)x;
        if (__builtin_mul_overflow(numel, (uint64_t)x, &numel)) overflow = 1;
    }
    uint64_t nbytes = 0;
    if (overflow || numel > SIZE_MAX ||
        __builtin_mul_overflow(numel, (uint64_t)nn_st_dtype_size(e->dtype), &nbytes))
        return ncmi_error_set("%s: tensor '%s': shape too large", path, name);
    e->numel = (size_t)numel;
    if (!json_is_array(jo) || json_array_size(jo) != 2 || !json_is_integer(json_array_get(jo, 0)) ||
        !json_is_integer(json_array_get(jo, 1)))
        return ncmi_error_set("%s: tensor '%s': data_offsets is not [begin, end]", path, name);
    json_int_t b = json_integer_value(json_array_get(jo, 0)), en = json_integer_value(json_array_get(jo, 1));
    if (b < 0 || en < b)
        return ncmi_error_set("%s: tensor '%s': invalid data_offsets [%lld, %lld]", path, name,
                              (long long)b, (long long)en);
    if ((uint64_t)en > data_len)
        return ncmi_error_set("%s: tensor '%s': data_offsets [%lld, %lld] outside the data section "
                              "(%zu bytes)", path, name, (long long)b, (long long)en, data_len);
    if ((uint64_t)(en - b) != nbytes) {
        char sb[160];
        size_t o = 0;
        o += (size_t)snprintf(sb + o, sizeof sb - o, "[");
        for (int i = 0; i < e->ndim; i++)
            o += (size_t)snprintf(sb + o, sizeof sb - o, i ? ",%lld" : "%lld", (long long)e->shape[i]);
        snprintf(sb + o, sizeof sb - o, "]");
        return ncmi_error_set("%s: tensor '%s': shape %s %s needs %llu bytes, data_offsets give %lld",
                              path, name, sb, nn_st_dtype_name(e->dtype), (unsigned long long)nbytes,
                              (long long)(en - b));
    }
    e->offset = (size_t)b;
    e->nbytes = (size_t)nbytes;
    return 0;
}

static int parse_header(nn_safetensors *st, const char *path, const uint8_t *hdr, size_t hlen)
{
    json_error_t jerr;
    json_t *root = json_loadb((const char *)hdr, hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return ncmi_error_set("%s: header is not valid JSON (%s at byte %d)", path, jerr.text,
                              jerr.position);
    int rc = -1;
    if (!json_is_object(root)) {
        ncmi_error_set("%s: header is not a JSON object", path);
        goto out;
    }
    size_t nkeys = json_object_size(root);
    st->entries = calloc(nkeys ? nkeys : 1, sizeof *st->entries);
    if (!st->entries) {
        ncmi_error_set("%s: out of memory", path);
        goto out;
    }
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val)
    {
        if (strcmp(key, "__metadata__") == 0) {
            if (!json_is_object(val)) {
                ncmi_error_set("%s: __metadata__ is not an object", path);
                goto out;
            }
            size_t nm = json_object_size(val);
            st->meta_keys = calloc(nm ? nm : 1, sizeof(char *));
            st->meta_vals = calloc(nm ? nm : 1, sizeof(char *));
            if (!st->meta_keys || !st->meta_vals) {
                ncmi_error_set("%s: out of memory", path);
                goto out;
            }
            const char *mk;
            json_t *mv;
            json_object_foreach(val, mk, mv)
            {
                if (!json_is_string(mv)) {
                    ncmi_error_set("%s: __metadata__ value of '%s' is not a string", path, mk);
                    goto out;
                }
                st->meta_keys[st->n_meta] = strdup(mk);
                st->meta_vals[st->n_meta] = strdup(json_string_value(mv));
                st->n_meta++;
                if (!st->meta_keys[st->n_meta - 1] || !st->meta_vals[st->n_meta - 1]) {
                    ncmi_error_set("%s: out of memory", path);
                    goto out;
                }
            }
            continue;
        }
        nn_st_entry *e = &st->entries[st->n];
        memset(e, 0, sizeof *e);
        if (parse_entry(path, key, val, st->data_len, e) != 0) goto out;
        e->name = strdup(key);
        if (!e->name) {
            ncmi_error_set("%s: out of memory", path);
            goto out;
        }
        st->n++;
    }
    /* overlapping ranges (empty tensors overlap nothing) */
    if (st->n > 1) {
        nn_st_entry **ord = malloc((size_t)st->n * sizeof *ord);
        if (!ord) {
            ncmi_error_set("%s: out of memory", path);
            goto out;
        }
        for (int i = 0; i < st->n; i++) ord[i] = &st->entries[i];
        qsort(ord, (size_t)st->n, sizeof *ord, cmp_offset);
        const nn_st_entry *prev = NULL;
        for (int i = 0; i < st->n; i++) {
            if (ord[i]->nbytes == 0) continue;
            if (prev && ord[i]->offset < prev->offset + prev->nbytes) {
                ncmi_error_set("%s: tensors '%s' and '%s' have overlapping data_offsets", path,
                               prev->name, ord[i]->name);
                free(ord);
                goto out;
            }
            prev = ord[i];
        }
        free(ord);
    }
    rc = 0;
out:
    json_decref(root);
    return rc;
}

int nn_st_open(nn_safetensors *st, const char *path)
{
    memset(st, 0, sizeof *st);
    uint8_t *buf;
    size_t len;
    if (read_file(path, &buf, &len) != 0) return -1;
    if (len < 8) {
        free(buf);
        return ncmi_error_set("%s: file too short for a safetensors header (%zu bytes)", path, len);
    }
    uint64_t hlen = ld64(buf);
    if (hlen > ST_MAX_HEADER) {
        free(buf);
        return ncmi_error_set("%s: header length %llu is absurd (not a safetensors file?)", path,
                              (unsigned long long)hlen);
    }
    if (hlen > len - 8) {
        free(buf);
        return ncmi_error_set("%s: header length %llu exceeds the file size (%zu bytes): truncated?",
                              path, (unsigned long long)hlen, len);
    }
    st->path = strdup(path);
    st->buf_ = buf;
    st->data = buf + 8 + hlen;
    st->data_len = len - 8 - (size_t)hlen;
    if (!st->path) {
        st_clear(st);
        return ncmi_error_set("%s: out of memory", path);
    }
    if (parse_header(st, path, buf + 8, (size_t)hlen) != 0) {
        st_clear(st);
        return -1;
    }
    return 0;
}

const nn_st_entry *nn_st_find(const nn_safetensors *st, const char *name)
{
    for (int i = 0; i < st->n; i++)
        if (strcmp(st->entries[i].name, name) == 0) return &st->entries[i];
    return NULL;
}

const char *nn_st_meta(const nn_safetensors *st, const char *key)
{
    for (int i = 0; i < st->n_meta; i++)
        if (strcmp(st->meta_keys[i], key) == 0) return st->meta_vals[i];
    return NULL;
}

static void shape_str64(int ndim, const int64_t *shape, char *buf, size_t n)
{
    size_t o = 0;
    o += (size_t)snprintf(buf + o, n - o, "[");
    for (int i = 0; i < ndim && o < n; i++)
        o += (size_t)snprintf(buf + o, n - o, i ? ",%lld" : "%lld", (long long)shape[i]);
    if (o < n) snprintf(buf + o, n - o, "]");
}

int nn_st_check_shape(const nn_safetensors *st, const nn_st_entry *e, int ndim, const int *shape)
{
    int same = e->ndim == ndim;
    for (int i = 0; same && i < ndim; i++) same = e->shape[i] == (int64_t)shape[i];
    if (same) return 0;
    char a[160], b[160];
    int64_t s64[NN_ST_MAX_DIMS];
    int nd = ndim < NN_ST_MAX_DIMS ? ndim : NN_ST_MAX_DIMS;
    for (int i = 0; i < nd; i++) s64[i] = shape[i];
    shape_str64(e->ndim, e->shape, a, sizeof a);
    shape_str64(nd, s64, b, sizeof b);
    return ncmi_error_set("%s: tensor '%s': shape %s in file, %s expected", st->path, e->name, a, b);
}

int nn_st_read_f32(const nn_safetensors *st, const char *name, float *out, size_t numel, int ndim,
                   const int *shape)
{
    const nn_st_entry *e = nn_st_find(st, name);
    if (!e) return ncmi_error_set("%s: tensor '%s' not found", st->path, name);
    if (ndim >= 0 && nn_st_check_shape(st, e, ndim, shape) != 0) return -1;
    if (e->numel != numel)
        return ncmi_error_set("%s: tensor '%s': %zu elements in file, %zu expected", st->path, name,
                              e->numel, numel);
    const uint8_t *p = st->data + e->offset;
    switch (e->dtype) {
    case NN_ST_F32:
        for (size_t i = 0; i < numel; i++) out[i] = bits_f32(ld32(p + 4 * i));
        break;
    case NN_ST_F16:
        for (size_t i = 0; i < numel; i++) out[i] = nn_f16_to_f32(ld16(p + 2 * i));
        break;
    case NN_ST_BF16:
        for (size_t i = 0; i < numel; i++) out[i] = nn_bf16_to_f32(ld16(p + 2 * i));
        break;
    case NN_ST_I64:
        for (size_t i = 0; i < numel; i++) out[i] = (float)(int64_t)ld64(p + 8 * i);
        break;
    case NN_ST_I32:
        for (size_t i = 0; i < numel; i++) out[i] = (float)(int32_t)ld32(p + 4 * i);
        break;
    case NN_ST_F64:
        for (size_t i = 0; i < numel; i++) out[i] = (float)bits_f64(ld64(p + 8 * i));
        break;
    }
    return 0;
}

int nn_st_read_f64(const nn_safetensors *st, const char *name, double *out, size_t numel, int ndim,
                   const int *shape)
{
    const nn_st_entry *e = nn_st_find(st, name);
    if (!e) return ncmi_error_set("%s: tensor '%s' not found", st->path, name);
    if (ndim >= 0 && nn_st_check_shape(st, e, ndim, shape) != 0) return -1;
    if (e->numel != numel)
        return ncmi_error_set("%s: tensor '%s': %zu elements in file, %zu expected", st->path, name,
                              e->numel, numel);
    if (e->dtype != NN_ST_F64 && e->dtype != NN_ST_F32)
        return ncmi_error_set("%s: tensor '%s': dtype %s, F64 or F32 expected", st->path, name,
                              nn_st_dtype_name(e->dtype));
    const uint8_t *p = st->data + e->offset;
    if (e->dtype == NN_ST_F64)
        for (size_t i = 0; i < numel; i++) out[i] = bits_f64(ld64(p + 8 * i));
    else
        for (size_t i = 0; i < numel; i++) out[i] = bits_f32(ld32(p + 4 * i));
    return 0;
}

int nn_st_read_i64(const nn_safetensors *st, const char *name, int64_t *out, size_t numel)
{
    const nn_st_entry *e = nn_st_find(st, name);
    if (!e) return ncmi_error_set("%s: tensor '%s' not found", st->path, name);
    if (e->dtype != NN_ST_I64 && e->dtype != NN_ST_I32)
        return ncmi_error_set("%s: tensor '%s': dtype %s, an integer tensor (I64/I32) expected",
                              st->path, name, nn_st_dtype_name(e->dtype));
    if (e->numel != numel)
        return ncmi_error_set("%s: tensor '%s': %zu elements in file, %zu expected", st->path, name,
                              e->numel, numel);
    const uint8_t *p = st->data + e->offset;
    if (e->dtype == NN_ST_I64)
        for (size_t i = 0; i < numel; i++) out[i] = (int64_t)ld64(p + 8 * i);
    else
        for (size_t i = 0; i < numel; i++) out[i] = (int32_t)ld32(p + 4 * i);
    return 0;
}

/* ---- writer ---- */

static int write_all(FILE *f, const void *p, size_t n) { return fwrite(p, 1, n, f) == n ? 0 : -1; }

/* Convert and write one tensor's data in chunks. */
static int write_tensor_data(FILE *f, const nn_st_tensor *t, size_t numel)
{
    uint8_t chunk[8192];
    size_t es = nn_st_dtype_size(t->dtype);
    size_t per = sizeof chunk / es;
    for (size_t i0 = 0; i0 < numel; i0 += per) {
        size_t n = numel - i0 < per ? numel - i0 : per;
        for (size_t i = 0; i < n; i++) {
            uint8_t *q = chunk + i * es;
            switch (t->dtype) {
            case NN_ST_F32: st32(q, f32_bits(((const float *)t->data)[i0 + i])); break;
            case NN_ST_F16: st16(q, nn_f32_to_f16(((const float *)t->data)[i0 + i])); break;
            case NN_ST_BF16: st16(q, nn_f32_to_bf16(((const float *)t->data)[i0 + i])); break;
            case NN_ST_I64: st64(q, (uint64_t)((const int64_t *)t->data)[i0 + i]); break;
            case NN_ST_I32: st32(q, (uint32_t)((const int32_t *)t->data)[i0 + i]); break;
            case NN_ST_F64: st64(q, f64_bits(((const double *)t->data)[i0 + i])); break;
            }
        }
        if (write_all(f, chunk, n * es) != 0) return -1;
    }
    return 0;
}

int nn_st_write(const char *path, const nn_st_tensor *ts, int n, const char *const *meta_keys,
                const char *const *meta_vals, int n_meta)
{
    if (n < 0 || n_meta < 0) return ncmi_error_set("%s: negative tensor or metadata count", path);
    size_t *numel = calloc((size_t)n + 1, sizeof *numel);
    json_t *root = json_object();
    char *hdr = NULL;
    char *tmp = NULL;
    FILE *f = NULL;
    int rc = -1;
    if (!numel || !root) {
        ncmi_error_set("%s: out of memory", path);
        goto out;
    }
    if (n_meta > 0) {
        json_t *m = json_object();
        json_object_set_new(root, "__metadata__", m);
        for (int i = 0; i < n_meta; i++) {
            if (!meta_keys[i] || !meta_vals[i]) {
                ncmi_error_set("%s: metadata entry %d is NULL", path, i);
                goto out;
            }
            json_t *s = json_string(meta_vals[i]);
            if (!s) {
                ncmi_error_set("%s: metadata value of '%s' is not valid UTF-8", path, meta_keys[i]);
                goto out;
            }
            if (json_object_get(m, meta_keys[i])) {
                json_decref(s);
                ncmi_error_set("%s: duplicate metadata key '%s'", path, meta_keys[i]);
                goto out;
            }
            if (json_object_set_new(m, meta_keys[i], s) != 0) {
                ncmi_error_set("%s: invalid metadata key '%s'", path, meta_keys[i]);
                goto out;
            }
        }
    }
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        const nn_st_tensor *t = &ts[i];
        if (!t->name || !t->name[0] || strcmp(t->name, "__metadata__") == 0) {
            ncmi_error_set("%s: tensor %d has an invalid name '%s'", path, i, t->name ? t->name : "");
            goto out;
        }
        if (json_object_get(root, t->name)) {
            ncmi_error_set("%s: tensor '%s' given twice", path, t->name);
            goto out;
        }
        if (nn_st_dtype_size(t->dtype) == 0) {
            ncmi_error_set("%s: tensor '%s': invalid dtype %d", path, t->name, (int)t->dtype);
            goto out;
        }
        if (t->ndim < 0 || t->ndim > NN_ST_MAX_DIMS) {
            ncmi_error_set("%s: tensor '%s': %d dimensions", path, t->name, t->ndim);
            goto out;
        }
        json_t *shape = json_array();
        size_t ne = 1;
        for (int d = 0; d < t->ndim; d++) {
            if (t->shape[d] < 0) {
                json_decref(shape);
                ncmi_error_set("%s: tensor '%s': negative dimension", path, t->name);
                goto out;
            }
            ne *= (size_t)t->shape[d];
            json_array_append_new(shape, json_integer((json_int_t)t->shape[d]));
        }
        if (ne && !t->data) {
            json_decref(shape);
            ncmi_error_set("%s: tensor '%s': no data", path, t->name);
            goto out;
        }
        numel[i] = ne;
        size_t nb = ne * nn_st_dtype_size(t->dtype);
        json_t *ent = json_object();
        json_object_set_new(ent, "dtype", json_string(nn_st_dtype_name(t->dtype)));
        json_object_set_new(ent, "shape", shape);
        json_t *offs = json_array();
        json_array_append_new(offs, json_integer((json_int_t)off));
        json_array_append_new(offs, json_integer((json_int_t)(off + nb)));
        json_object_set_new(ent, "data_offsets", offs);
        if (json_object_set_new(root, t->name, ent) != 0) {
            ncmi_error_set("%s: tensor name '%s' is not valid UTF-8", path, t->name);
            goto out;
        }
        off += nb;
    }
    hdr = json_dumps(root, JSON_COMPACT);
    if (!hdr) {
        ncmi_error_set("%s: cannot serialise the header", path);
        goto out;
    }
    size_t hlen = strlen(hdr), padded = (hlen + 7) & ~(size_t)7;
    if (asprintf(&tmp, "%s.tmp.%ld", path, (long)getpid()) < 0) {
        tmp = NULL;
        ncmi_error_set("%s: out of memory", path);
        goto out;
    }
    f = fopen(tmp, "wb");
    if (!f) {
        ncmi_error_set("%s: cannot create %s: %s", path, tmp, strerror(errno));
        goto out;
    }
    uint8_t lenb[8];
    st64(lenb, (uint64_t)padded);
    static const char spaces[8] = "        ";
    int werr = write_all(f, lenb, 8) || write_all(f, hdr, hlen) || write_all(f, spaces, padded - hlen);
    for (int i = 0; i < n && !werr; i++) werr = write_tensor_data(f, &ts[i], numel[i]);
    if (!werr) werr = fflush(f) != 0 || fsync(fileno(f)) != 0;
    int e = errno;
    if (fclose(f) != 0 && !werr) {
        werr = 1;
        e = errno;
    }
    f = NULL;
    if (werr) {
        ncmi_error_set("%s: write error on %s: %s", path, tmp, strerror(e));
        unlink(tmp);
        goto out;
    }
    if (rename(tmp, path) != 0) {
        ncmi_error_set("%s: cannot rename %s into place: %s", path, tmp, strerror(errno));
        unlink(tmp);
        goto out;
    }
    ncmi_tmp_sweep(path);
    /* make the rename durable (best effort) */
    {
        char *dir = strdup(path);
        if (dir) {
            char *slash = strrchr(dir, '/');
            const char *d = slash ? (slash == dir ? "/" : (*slash = 0, dir)) : ".";
            int dfd = open(d, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            if (dfd >= 0) {
                (void)fsync(dfd);
                close(dfd);
            }
            free(dir);
        }
    }
    rc = 0;
out:
    if (f) {
        fclose(f);
        unlink(tmp);
    }
    free(tmp);
    free(hdr);
    json_decref(root);
    free(numel);
    return rc;
}
