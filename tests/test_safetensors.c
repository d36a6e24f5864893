/* safetensors reader/writer: round trips, a file written by Python
 * (tests/reference/safetensors_reference.py), conversions against torch,
 * a corpus of malformed files, atomic writes. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../nn/error.h"
#include "../nn/safetensors.h"
#include "test.h"

#define GOLDEN_DIR "tests/golden"

static uint32_t fbits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float bitsf(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static int write_bytes(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = n ? fwrite(data, 1, n, f) : 0;
    fclose(f);
    return w == n ? 0 : -1;
}

static uint8_t *read_bytes(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)len + 1);
    *n = fread(b, 1, (size_t)len, f);
    fclose(f);
    return b;
}

/* Count directory entries whose name contains ".tmp." */
static int count_tmp_files(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strstr(e->d_name, ".tmp.")) n++;
    closedir(d);
    return n;
}

TEST(st_f16_bf16_special_values)
{
    /* exact and rounding cases of float32 -> float16 */
    EXPECT(nn_f32_to_f16(0.f) == 0x0000, "0");
    EXPECT(nn_f32_to_f16(-0.f) == 0x8000, "-0 keeps its sign");
    EXPECT(nn_f32_to_f16(1.f) == 0x3c00, "1");
    EXPECT(nn_f32_to_f16(-2.f) == 0xc000, "-2");
    EXPECT(nn_f32_to_f16(65504.f) == 0x7bff, "max half");
    EXPECT(nn_f32_to_f16(65519.f) == 0x7bff, "65519 rounds down to 65504");
    EXPECT(nn_f32_to_f16(65520.f) == 0x7c00, "65520 ties to even: inf");
    EXPECT(nn_f32_to_f16(1e10f) == 0x7c00, "overflow to inf");
    EXPECT(nn_f32_to_f16(-INFINITY) == 0xfc00, "-inf");
    uint16_t hn = nn_f32_to_f16(NAN);
    EXPECT((hn & 0x7c00) == 0x7c00 && (hn & 0x3ff) != 0, "nan -> 0x%04x", hn);
    EXPECT(isnan(nn_f16_to_f32(hn)), "nan back");
    EXPECT(nn_f32_to_f16(ldexpf(1.f, -24)) == 0x0001, "min subnormal");
    EXPECT(nn_f32_to_f16(ldexpf(1.f, -25)) == 0x0000, "2^-25 ties to even: 0");
    EXPECT(nn_f32_to_f16(nextafterf(ldexpf(1.f, -25), 1.f)) == 0x0001, "just above 2^-25");
    EXPECT(nn_f32_to_f16(ldexpf(3.f, -25)) == 0x0002, "1.5 x min subnormal ties to 2");
    EXPECT(nn_f32_to_f16(ldexpf(1.f, -14)) == 0x0400, "min normal");
    EXPECT(nn_f32_to_f16(ldexpf(1023.5f, -24)) == 0x0400, "largest subnormal + half rounds to normal");
    EXPECT(nn_f32_to_f16(1.f + ldexpf(1.f, -11)) == 0x3c00, "1 + half ulp ties to even (down)");
    EXPECT(nn_f32_to_f16(1.f + 3 * ldexpf(1.f, -11)) == 0x3c02, "1 + 1.5 ulp ties to even (up)");
    EXPECT(nn_f16_to_f32(0x0001) == ldexpf(1.f, -24), "decode min subnormal");
    EXPECT(nn_f16_to_f32(0x83ff) == -ldexpf(1023.f, -24), "decode negative subnormal");
    EXPECT(isinf(nn_f16_to_f32(0x7c00)) && nn_f16_to_f32(0xfc00) < 0, "decode inf");
    /* every non-NaN half survives float32 and back; decoding is monotonic */
    float prev = nn_f16_to_f32(0xfc00);
    EXPECT(prev == -INFINITY, "0xfc00 is -inf");
    for (uint32_t k = 1; k <= 0x7c00 + 0x7c00; k++) { /* -inf .. -min, 0 .. +inf */
        uint32_t h = k < 0x7c00 ? 0xfc00 - k : k - 0x7c00;
        float f = nn_f16_to_f32((uint16_t)h);
        if (!(f > prev)) test_fail_at(__FILE__, __LINE__, "half 0x%04x not increasing", h);
        prev = f;
    }
    EXPECT(prev == INFINITY, "ends at +inf");
    int bad = 0;
    for (uint32_t h = 0; h < 0x10000; h++) {
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) continue;
        if (nn_f32_to_f16(nn_f16_to_f32((uint16_t)h)) != h) bad++;
    }
    EXPECT(bad == 0, "%d halves do not round trip", bad);
    /* bfloat16 */
    EXPECT(nn_f32_to_bf16(1.f) == 0x3f80, "bf16 1");
    EXPECT(nn_f32_to_bf16(bitsf(0x3f808000)) == 0x3f80, "bf16 tie to even (down)");
    EXPECT(nn_f32_to_bf16(bitsf(0x3f818000)) == 0x3f82, "bf16 tie to even (up)");
    EXPECT(nn_f32_to_bf16(bitsf(0x3f808001)) == 0x3f81, "bf16 above tie");
    EXPECT(nn_f32_to_bf16(bitsf(0x7f7fffff)) == 0x7f80, "bf16 overflow to inf");
    EXPECT(nn_f32_to_bf16(-INFINITY) == 0xff80, "bf16 -inf");
    EXPECT(isnan(nn_bf16_to_f32(nn_f32_to_bf16(NAN))), "bf16 nan");
    EXPECT(isnan(nn_bf16_to_f32(nn_f32_to_bf16(bitsf(0x7f800001)))), "bf16 signalling nan stays nan");
    EXPECT(nn_f32_to_bf16(bitsf(0x00010000)) == 0x0001, "bf16 subnormal");
    EXPECT(nn_bf16_to_f32(0xc040) == -3.f, "bf16 decode");
}

/* F64 (the trainer's stored class-mean centroids): written and read back
 * bit for bit; read as float32 it is rounded; F32 widens exactly */
TEST(st_f64_roundtrip)
{
    const char *path = test_tmp_path("f64.safetensors");
    const double d[4] = {0.1, -1.0 / 3.0, 1e-300, 12345678.987654321};
    const float f = 0.1f;
    nn_st_tensor ts[] = {{"q", NN_ST_F64, 2, {2, 2}, d}, {"f", NN_ST_F32, 1, {1}, &f}};
    REQUIRE(nn_st_write(path, ts, 2, NULL, NULL, 0) == 0, "write: %s", ncmi_error());
    nn_safetensors st;
    REQUIRE(nn_st_open(&st, path) == 0, "open: %s", ncmi_error());
    const nn_st_entry *e = nn_st_find(&st, "q");
    EXPECT(e && e->dtype == NN_ST_F64 && e->nbytes == 32, "F64 entry");
    double o[4];
    float of[4];
    REQUIRE(nn_st_read_f64(&st, "q", o, 4, 2, (int[]){2, 2}) == 0, "%s", ncmi_error());
    EXPECT(!memcmp(o, d, sizeof d), "F64 values differ after the round trip");
    REQUIRE(nn_st_read_f32(&st, "q", of, 4, -1, NULL) == 0, "%s", ncmi_error());
    for (int i = 0; i < 4; i++) EXPECT(of[i] == (float)d[i], "F64 %d as float: %g", i, (double)of[i]);
    REQUIRE(nn_st_read_f64(&st, "f", o, 1, -1, NULL) == 0, "%s", ncmi_error());
    EXPECT(o[0] == (double)f, "F32 widened: %.17g", o[0]);
    EXPECT(nn_st_read_f64(&st, "q", o, 3, -1, NULL) != 0 && strstr(ncmi_error(), "elements"), "count: %s",
           ncmi_error());
    nn_st_close(&st);
}

TEST(st_roundtrip_all_dtypes)
{
    const char *path = test_tmp_path("rt.safetensors");
    float f[6] = {1.5f, -2.25f, 3.0e-3f, 65504.f, -1e-7f, 1e30f};
    float h[6] = {1.f, -0.333333343f, 70000.f, 1e-6f, -0.f, 2049.f};
    float b[4] = {3.14159274f, -1e-20f, 1e38f, 0.1f};
    int64_t l[3] = {-9000000000000000000LL, 0, (1LL << 53) + 1};
    int32_t i32[2] = {-7, 2147483647};
    float sc = 42.f;
    nn_st_tensor ts[] = {
        {"a.f32", NN_ST_F32, 2, {2, 3}, f},
        {"b.f16", NN_ST_F16, 3, {1, 2, 3}, h},
        {"c.bf16", NN_ST_BF16, 1, {4}, b},
        {"d.i64", NN_ST_I64, 1, {3}, l},
        {"e.i32", NN_ST_I32, 2, {2, 1}, i32},
        {"scalar", NN_ST_F32, 0, {0}, &sc},
        {"empty", NN_ST_F32, 2, {0, 5}, NULL},
    };
    const char *mk[] = {"format", "config", "unicode"};
    const char *mv[] = {"pt", "{\"classes\": [\"tumor\", \"normal\"]}", "µm ✓ \"quoted\"\n"};
    REQUIRE(nn_st_write(path, ts, 7, mk, mv, 3) == 0, "write: %s", ncmi_error());
    EXPECT(count_tmp_files(test_tmpdir()) == 0, "temporary file left behind");

    size_t n;
    uint8_t *raw = read_bytes(path, &n);
    REQUIRE(raw != NULL, "cannot read back");
    uint64_t hl = 0;
    for (int i = 0; i < 8; i++) hl |= (uint64_t)raw[i] << (8 * i);
    EXPECT(hl % 8 == 0, "header length %llu not a multiple of 8", (unsigned long long)hl);
    free(raw);

    nn_safetensors st;
    REQUIRE(nn_st_open(&st, path) == 0, "open: %s", ncmi_error());
    EXPECT(st.n == 7, "%d entries", st.n);
    EXPECT(st.n_meta == 3, "%d metadata", st.n_meta);
    for (int i = 0; i < 3; i++) {
        const char *v = nn_st_meta(&st, mk[i]);
        EXPECT(v && strcmp(v, mv[i]) == 0, "metadata %s = %s", mk[i], v ? v : "(null)");
    }
    EXPECT(nn_st_meta(&st, "absent") == NULL, "absent metadata found");
    /* order and offsets as given */
    for (int i = 0; i < 7 && i < st.n; i++)
        EXPECT(strcmp(st.entries[i].name, ts[i].name) == 0, "entry %d is %s", i, st.entries[i].name);
    const nn_st_entry *e = nn_st_find(&st, "b.f16");
    REQUIRE(e != NULL, "b.f16 missing");
    EXPECT(e->dtype == NN_ST_F16 && e->ndim == 3 && e->shape[2] == 3 && e->numel == 6 &&
               e->nbytes == 12 && e->offset == 24,
           "b.f16 entry: dtype %d ndim %d numel %zu nbytes %zu offset %zu", e->dtype, e->ndim,
           e->numel, e->nbytes, e->offset);

    float out[8];
    REQUIRE(nn_st_read_f32(&st, "a.f32", out, 6, 2, (int[]){2, 3}) == 0, "%s", ncmi_error());
    for (int i = 0; i < 6; i++) EXPECT(fbits(out[i]) == fbits(f[i]), "f32 %d: %g vs %g", i, out[i], f[i]);
    REQUIRE(nn_st_read_f32(&st, "b.f16", out, 6, -1, NULL) == 0, "%s", ncmi_error());
    for (int i = 0; i < 6; i++) {
        float want = nn_f16_to_f32(nn_f32_to_f16(h[i]));
        EXPECT(fbits(out[i]) == fbits(want), "f16 %d: %g vs %g", i, out[i], want);
    }
    EXPECT(isinf(out[2]), "70000 in half is inf, got %g", out[2]);
    EXPECT(out[5] == 2048.f, "2049 in half ties to 2048, got %g", out[5]);
    REQUIRE(nn_st_read_f32(&st, "c.bf16", out, 4, 1, (int[]){4}) == 0, "%s", ncmi_error());
    for (int i = 0; i < 4; i++) {
        float want = nn_bf16_to_f32(nn_f32_to_bf16(b[i]));
        EXPECT(fbits(out[i]) == fbits(want), "bf16 %d: %g vs %g", i, out[i], want);
        EXPECT(fabsf(out[i] - b[i]) <= fabsf(b[i]) * (1.f / 256), "bf16 %d too far", i);
    }
    int64_t lo[3];
    REQUIRE(nn_st_read_i64(&st, "d.i64", lo, 3) == 0, "%s", ncmi_error());
    for (int i = 0; i < 3; i++) EXPECT(lo[i] == l[i], "i64 %d: %lld", i, (long long)lo[i]);
    REQUIRE(nn_st_read_f32(&st, "d.i64", out, 3, -1, NULL) == 0, "%s", ncmi_error());
    EXPECT(out[0] == (float)l[0] && out[1] == 0.f, "i64 as float");
    REQUIRE(nn_st_read_i64(&st, "e.i32", lo, 2) == 0, "%s", ncmi_error());
    EXPECT(lo[0] == -7 && lo[1] == 2147483647, "i32 as i64: %lld %lld", (long long)lo[0], (long long)lo[1]);
    REQUIRE(nn_st_read_f32(&st, "scalar", out, 1, 0, NULL) == 0, "%s", ncmi_error());
    EXPECT(out[0] == 42.f, "scalar %g", out[0]);
    e = nn_st_find(&st, "empty");
    EXPECT(e && e->numel == 0 && e->nbytes == 0 && e->ndim == 2, "empty entry");
    EXPECT(nn_st_read_f32(&st, "empty", out, 0, 2, (int[]){0, 5}) == 0, "%s", ncmi_error());
    nn_st_close(&st);
    EXPECT(st.n == 0 && st.entries == NULL && st.buf_ == NULL, "close leaves the struct empty");
}

TEST(st_read_errors_name_file_and_tensor)
{
    const char *path = test_tmp_path("re.safetensors");
    float f[6] = {0};
    nn_st_tensor ts[] = {{"w", NN_ST_F32, 2, {3, 4}, NULL}, {"x", NN_ST_F32, 2, {2, 3}, f}};
    float w[12] = {0};
    ts[0].data = w;
    REQUIRE(nn_st_write(path, ts, 2, NULL, NULL, 0) == 0, "%s", ncmi_error());
    nn_safetensors st;
    REQUIRE(nn_st_open(&st, path) == 0, "%s", ncmi_error());
    float out[12];
    char want[700];
    EXPECT(nn_st_read_f32(&st, "w", out, 12, 2, (int[]){4, 3}) == -1, "shape mismatch accepted");
    snprintf(want, sizeof want, "%s: tensor 'w': shape [3,4] in file, [4,3] expected", path);
    EXPECT(strcmp(ncmi_error(), want) == 0, "message: %s", ncmi_error());
    EXPECT(nn_st_read_f32(&st, "w", out, 12, 1, (int[]){12}) == -1, "rank mismatch accepted");
    EXPECT(strstr(ncmi_error(), "[3,4] in file, [12] expected"), "message: %s", ncmi_error());
    EXPECT(nn_st_read_f32(&st, "w", out, 11, -1, NULL) == -1, "numel mismatch accepted");
    EXPECT(strstr(ncmi_error(), path) && strstr(ncmi_error(), "'w'") &&
               strstr(ncmi_error(), "12 elements in file, 11 expected"),
           "message: %s", ncmi_error());
    EXPECT(nn_st_read_f32(&st, "nope", out, 1, -1, NULL) == -1, "missing tensor read");
    snprintf(want, sizeof want, "%s: tensor 'nope' not found", path);
    EXPECT(strcmp(ncmi_error(), want) == 0, "message: %s", ncmi_error());
    int64_t l[6];
    EXPECT(nn_st_read_i64(&st, "x", l, 6) == -1, "F32 read as I64");
    EXPECT(strstr(ncmi_error(), "'x'") && strstr(ncmi_error(), "F32"), "message: %s", ncmi_error());
    EXPECT(nn_st_find(&st, "nope") == NULL, "find absent");
    nn_st_close(&st);
}

TEST(st_reads_python_file)
{
    const char *path = GOLDEN_DIR "/safetensors_reference.safetensors";
    nn_safetensors st;
    REQUIRE(nn_st_open(&st, path) == 0, "%s (regenerate with tests/reference/safetensors_reference.py)",
            ncmi_error());
    EXPECT(st.n == 10, "%d tensors", st.n);
    EXPECT(nn_st_meta(&st, "format") && strcmp(nn_st_meta(&st, "format"), "pt") == 0, "format");
    EXPECT(nn_st_meta(&st, "unicode") && strcmp(nn_st_meta(&st, "unicode"), "µm ✓") == 0, "unicode");
    float out[8];
    REQUIRE(nn_st_read_f32(&st, "f32", out, 6, 2, (int[]){2, 3}) == 0, "%s", ncmi_error());
    for (int i = 0; i < 6; i++) EXPECT(out[i] == i / 4.f, "f32[%d] = %g", i, out[i]);
    REQUIRE(nn_st_read_f32(&st, "f16", out, 4, 1, (int[]){4}) == 0, "%s", ncmi_error());
    EXPECT(out[0] == 1.f && out[1] == -2.5f && out[2] == 65504.f && out[3] == ldexpf(1.f, -24),
           "f16: %g %g %g %g", out[0], out[1], out[2], out[3]);
    REQUIRE(nn_st_read_f32(&st, "bf16", out, 4, 2, (int[]){2, 2}) == 0, "%s", ncmi_error());
    EXPECT(out[0] == 1.f && out[1] == -3.f && out[2] == 0.15625f, "bf16: %g %g %g", out[0], out[1], out[2]);
    EXPECT(fabsf(out[3] - 1e30f) < 1e30f / 128, "bf16 1e30 -> %g", out[3]);
    int64_t l[3];
    REQUIRE(nn_st_read_i64(&st, "i64", l, 3) == 0, "%s", ncmi_error());
    EXPECT(l[0] == -1 && l[1] == (1LL << 40) + 3 && l[2] == 7, "i64");
    REQUIRE(nn_st_read_i64(&st, "i32", l, 2) == 0, "%s", ncmi_error());
    EXPECT(l[0] == -5 && l[1] == 123456, "i32");
    REQUIRE(nn_st_read_f32(&st, "i32", out, 2, 1, (int[]){2}) == 0, "%s", ncmi_error());
    EXPECT(out[0] == -5.f && out[1] == 123456.f, "i32 as float");
    const nn_st_entry *e = nn_st_find(&st, "scalar");
    EXPECT(e && e->ndim == 0 && e->numel == 1, "scalar entry");
    REQUIRE(nn_st_read_f32(&st, "scalar", out, 1, 0, NULL) == 0, "%s", ncmi_error());
    EXPECT(out[0] == 3.5f, "scalar %g", out[0]);
    e = nn_st_find(&st, "empty");
    EXPECT(e && e->ndim == 2 && e->shape[0] == 0 && e->shape[1] == 4 && e->numel == 0, "empty entry");
    nn_st_close(&st);
}

/* Our float32 -> float16/bfloat16 conversions give torch's bits. */
TEST(st_f16_bf16_match_torch)
{
    const char *path = GOLDEN_DIR "/safetensors_reference.safetensors";
    nn_safetensors st;
    REQUIRE(nn_st_open(&st, path) == 0, "%s", ncmi_error());
    const nn_st_entry *ei = nn_st_find(&st, "conv.in"), *eh = nn_st_find(&st, "conv.f16"),
                      *eb = nn_st_find(&st, "conv.bf16");
    REQUIRE(ei && eh && eb, "conversion tensors missing");
    REQUIRE(ei->numel == eh->numel && ei->numel == eb->numel && ei->numel > 2000, "sizes");
    size_t n = ei->numel;
    float *in = malloc(n * sizeof *in);
    REQUIRE(nn_st_read_f32(&st, "conv.in", in, n, -1, NULL) == 0, "%s", ncmi_error());
    int bad16 = 0, bad_bf = 0, nan_seen = 0;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *ph = st.data + eh->offset + 2 * i, *pb = st.data + eb->offset + 2 * i;
        uint16_t th = (uint16_t)(ph[0] | ph[1] << 8), tb = (uint16_t)(pb[0] | pb[1] << 8);
        uint16_t mh = nn_f32_to_f16(in[i]), mb = nn_f32_to_bf16(in[i]);
        if (isnan(in[i])) {
            nan_seen++;
            if (!isnan(nn_f16_to_f32(mh))) bad16++;
            if (!isnan(nn_bf16_to_f32(mb))) bad_bf++;
            continue;
        }
        if (mh != th && bad16++ < 5)
            test_fail_at(__FILE__, __LINE__, "f16(%a): ours 0x%04x, torch 0x%04x", (double)in[i], mh, th);
        if (mb != tb && bad_bf++ < 5)
            test_fail_at(__FILE__, __LINE__, "bf16(%a): ours 0x%04x, torch 0x%04x", (double)in[i], mb, tb);
        /* decoding torch's bits agrees with the reader */
        EXPECT(fbits(nn_f16_to_f32(th)) == fbits(nn_f16_to_f32(mh)), "decode");
    }
    EXPECT(bad16 == 0, "%d float16 conversions differ from torch", bad16);
    EXPECT(bad_bf == 0, "%d bfloat16 conversions differ from torch", bad_bf);
    EXPECT(nan_seen >= 1, "no NaN in the corpus");
    free(in);
    nn_st_close(&st);
}

/* ---- malformed corpus ---- */

/* Write a file: the 8-byte header length hlen (given explicitly, it may
 * lie), hl bytes of header text, then ndata zero bytes. */
static const char *make_file_n(const char *name, uint64_t hlen, const char *hdr, size_t hl,
                               size_t ndata)
{
    const char *p = test_tmp_path(name);
    uint8_t *b = calloc(8 + hl + ndata + 1, 1);
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(hlen >> (8 * i));
    memcpy(b + 8, hdr, hl);
    write_bytes(p, b, 8 + hl + ndata);
    free(b);
    return p;
}

static const char *make_file(const char *name, uint64_t hlen, const char *hdr, size_t ndata)
{
    return make_file_n(name, hlen, hdr, strlen(hdr), ndata);
}

static void expect_open_fails(const char *path, const char *want1, const char *want2,
                              const char *what, int line)
{
    nn_safetensors st;
    memset(&st, 0x5a, sizeof st);
    int rc = nn_st_open(&st, path);
    if (rc != -1) {
        test_fail_at(__FILE__, line, "%s: open returned %d", what, rc);
        if (rc == 0) nn_st_close(&st);
        return;
    }
    const char *m = ncmi_error();
    if (strncmp(m, path, strlen(path)) != 0 || m[strlen(path)] != ':')
        test_fail_at(__FILE__, line, "%s: message does not start with the path: %s", what, m);
    if (want1 && !strstr(m, want1)) test_fail_at(__FILE__, line, "%s: '%s' not in: %s", what, want1, m);
    if (want2 && !strstr(m, want2)) test_fail_at(__FILE__, line, "%s: '%s' not in: %s", what, want2, m);
    if (st.n != 0 || st.entries != NULL || st.buf_ != NULL || st.path != NULL || st.n_meta != 0)
        test_fail_at(__FILE__, line, "%s: st not left empty", what);
}

#define BAD_HDR(name, hdr, ndata, w1, w2) \
    expect_open_fails(make_file(name, strlen(hdr), hdr, ndata), w1, w2, name, __LINE__)

TEST(st_malformed_corpus)
{
    /* a valid file, truncated at every byte position */
    const char *good = test_tmp_path("good.safetensors");
    float a[6] = {1, 2, 3, 4, 5, 6};
    int64_t l[2] = {1, 2};
    nn_st_tensor ts[] = {{"a", NN_ST_F32, 2, {2, 3}, a}, {"l", NN_ST_I64, 1, {2}, l}};
    const char *mk[] = {"k"}, *mv[] = {"v"};
    REQUIRE(nn_st_write(good, ts, 2, mk, mv, 1) == 0, "%s", ncmi_error());
    size_t n = 0; /* printed by the REQUIRE when read_bytes fails */
    uint8_t *bytes = read_bytes(good, &n);
    REQUIRE(bytes && n > 8 + 40, "read back %zu bytes", n);
    const char *trunc = test_tmp_path("trunc.safetensors");
    int accepted = 0;
    for (size_t cut = 0; cut < n; cut++) {
        write_bytes(trunc, bytes, cut);
        nn_safetensors st;
        if (nn_st_open(&st, trunc) == 0) {
            accepted++;
            nn_st_close(&st);
        } else if (strncmp(ncmi_error(), trunc, strlen(trunc)) != 0) {
            test_fail_at(__FILE__, __LINE__, "cut %zu: message without path: %s", cut, ncmi_error());
        }
    }
    EXPECT(accepted == 0, "%d truncated files accepted", accepted);
    /* header garbage: flip bytes inside the JSON, never crash */
    uint64_t hl = 0;
    for (int i = 0; i < 8; i++) hl |= (uint64_t)bytes[i] << (8 * i);
    const char *flip = test_tmp_path("flip.safetensors");
    for (size_t pos = 8; pos < 8 + hl; pos++) {
        uint8_t save = bytes[pos];
        bytes[pos] = (uint8_t)(save ^ 0xff);
        write_bytes(flip, bytes, n);
        nn_safetensors st;
        if (nn_st_open(&st, flip) == 0) nn_st_close(&st); /* a harmless flip may still parse */
        else EXPECT(strncmp(ncmi_error(), flip, strlen(flip)) == 0, "message: %s", ncmi_error());
        bytes[pos] = save;
    }
    free(bytes);

    expect_open_fails(test_tmp_path("does-not-exist.safetensors"), "cannot open", NULL, "missing", __LINE__);
    expect_open_fails(test_tmpdir(), "not a regular file", NULL, "directory", __LINE__);
    expect_open_fails(make_file("empty.st", 0, "", 0), NULL, NULL, "empty", __LINE__);
    {
        const char *p = test_tmp_path("short.st");
        write_bytes(p, "\x08\0\0", 3);
        expect_open_fails(p, "too short", NULL, "3 bytes", __LINE__);
    }
    expect_open_fails(make_file("hlen_huge.st", UINT64_MAX, "{}", 0), "header length", NULL,
                      "u64 max header length", __LINE__);
    expect_open_fails(make_file("hlen_big.st", 1ull << 40, "{}", 0), "header length", NULL,
                      "2^40 header length", __LINE__);
    expect_open_fails(make_file("hlen_past.st", 3, "{}", 0), "exceeds the file size", NULL,
                      "header past the end", __LINE__);
    BAD_HDR("badjson.st", "{\"a\": {\"dtype\": ", 0, "not valid JSON", NULL);
    BAD_HDR("garbage.st", "\x01\x02garbage", 0, "not valid JSON", NULL);
    expect_open_fails(make_file_n("nul.st", 16, "{\"a\0\":1}        ", 16, 0), "not valid JSON", NULL,
                      "NUL in the header", __LINE__);
    BAD_HDR("array.st", "[1, 2, 3]", 0, "not a JSON object", NULL);
    BAD_HDR("dup.st",
            "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
            "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
            8, "not valid JSON", "duplicate");
    BAD_HDR("notobj.st", "{\"w\": 3}", 0, "'w'", "not an object");
    BAD_HDR("nodtype.st", "{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "'w'", "no dtype");
    BAD_HDR("noshape.st", "{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, "'w'", "no shape");
    BAD_HDR("nooffs.st", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "'w'", "no data_offsets");
    BAD_HDR("dtype_u8.st", "{\"w\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]}}", 8,
            "'w'", "unsupported dtype 'U8'");
    BAD_HDR("dtype_num.st", "{\"w\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "'w'",
            "dtype");
    BAD_HDR("shape_str.st", "{\"w\":{\"dtype\":\"F32\",\"shape\":\"1\",\"data_offsets\":[0,4]}}", 4,
            "'w'", "shape");
    BAD_HDR("shape_float.st", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4,
            "'w'", "not an integer");
    BAD_HDR("neg_dim.st", "{\"w\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4,
            "'w'", "negative dimension");
    BAD_HDR("huge_dim.st",
            "{\"w\":{\"dtype\":\"F32\",\"shape\":[1000000000000],\"data_offsets\":[0,4]}}", 4, "'w'",
            "too large");
    BAD_HDR("overflow_dims.st",
            "{\"w\":{\"dtype\":\"F32\",\"shape\":[2147483647,2147483647,2147483647,2147483647,"
            "2147483647],\"data_offsets\":[0,4]}}",
            4, "'w'", "too large");
    BAD_HDR("zero_times_huge.st",
            "{\"w\":{\"dtype\":\"F32\",\"shape\":[0,2147483647,2147483647,2147483647,2147483647,"
            "2147483647],\"data_offsets\":[0,4]}}",
            4, "'w'", NULL);
    BAD_HDR("ninedims.st",
            "{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4,
            "'w'", "dimensions");
    BAD_HDR("mismatch.st", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}", 24,
            "'w'", "needs 24 bytes");
    BAD_HDR("mismatch_f16.st", "{\"w\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[0,16]}}", 16,
            "'w'", "needs 8 bytes");
    BAD_HDR("outside.st", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 8, "'w'",
            "outside the data section");
    BAD_HDR("outside_huge.st",
            "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[9223372036854775803,"
            "9223372036854775807]}}",
            8, "'w'", "outside the data section");
    BAD_HDR("offs_too_big.st",
            "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,18446744073709551616]}}", 8,
            "not valid JSON", NULL);
    BAD_HDR("neg_offs.st", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 8, "'w'",
            "data_offsets");
    BAD_HDR("reversed.st", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", 8, "'w'",
            "data_offsets");
    BAD_HDR("offs3.st", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 8, "'w'",
            "data_offsets");
    BAD_HDR("overlap.st",
            "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
            "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
            12, "overlapping", "'a'");
    BAD_HDR("same_range.st",
            "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
            "\"b\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]}}",
            8, "overlapping", "'b'");
    BAD_HDR("meta_num.st", "{\"__metadata__\":{\"epoch\":3}}", 0, "__metadata__", "'epoch'");
    BAD_HDR("meta_arr.st", "{\"__metadata__\":[\"x\"]}", 0, "__metadata__", "not an object");
    /* valid corner cases are accepted: empty header object, padded header,
     * empty tensors sharing an offset */
    {
        nn_safetensors st;
        const char *p = make_file("ok_empty.st", 2, "{}", 0);
        EXPECT(nn_st_open(&st, p) == 0, "{} rejected: %s", ncmi_error());
        nn_st_close(&st);
        p = make_file("ok_pad.st", 16, "{}              ", 0);
        EXPECT(nn_st_open(&st, p) == 0, "padded header rejected: %s", ncmi_error());
        nn_st_close(&st);
        const char *h = "{\"e\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]},"
                        "\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}";
        p = make_file("ok_emptyt.st", strlen(h), h, 4);
        EXPECT(nn_st_open(&st, p) == 0, "empty tensor rejected: %s", ncmi_error());
        nn_st_close(&st);
    }
}

TEST(st_write_atomic_and_errors)
{
    const char *dir = test_tmp_path("atomic");
    mkdir(dir, 0755);
    char path[600];
    snprintf(path, sizeof path, "%s/m.safetensors", dir);
    float a[2] = {1, 2}, b[3] = {3, 4, 5};
    nn_st_tensor t1[] = {{"a", NN_ST_F32, 1, {2}, a}};
    nn_st_tensor t2[] = {{"b", NN_ST_F32, 1, {3}, b}};
    REQUIRE(nn_st_write(path, t1, 1, NULL, NULL, 0) == 0, "%s", ncmi_error());
    REQUIRE(nn_st_write(path, t2, 1, NULL, NULL, 0) == 0, "overwrite: %s", ncmi_error());
    EXPECT(count_tmp_files(dir) == 0, "temporary file left behind");
    nn_safetensors st;
    REQUIRE(nn_st_open(&st, path) == 0, "%s", ncmi_error());
    EXPECT(st.n == 1 && nn_st_find(&st, "b") && !nn_st_find(&st, "a"), "overwritten file content");
    nn_st_close(&st);

    /* a failed write leaves the previous file intact and no temporary */
    nn_st_tensor dup[] = {{"x", NN_ST_F32, 1, {2}, a}, {"x", NN_ST_F32, 1, {2}, a}};
    EXPECT(nn_st_write(path, dup, 2, NULL, NULL, 0) == -1, "duplicate names accepted");
    EXPECT(strstr(ncmi_error(), path) && strstr(ncmi_error(), "'x'"), "message: %s", ncmi_error());
    nn_st_tensor meta_name[] = {{"__metadata__", NN_ST_F32, 1, {2}, a}};
    EXPECT(nn_st_write(path, meta_name, 1, NULL, NULL, 0) == -1, "__metadata__ tensor accepted");
    const char *mk[] = {"k", "k"}, *mv[] = {"1", "2"};
    EXPECT(nn_st_write(path, t1, 1, mk, mv, 2) == -1, "duplicate metadata accepted");
    EXPECT(strstr(ncmi_error(), "'k'"), "message: %s", ncmi_error());
    REQUIRE(nn_st_open(&st, path) == 0, "%s", ncmi_error());
    EXPECT(st.n == 1 && nn_st_find(&st, "b"), "file changed by failed writes");
    nn_st_close(&st);
    EXPECT(count_tmp_files(dir) == 0, "temporary file left behind");

    /* unwritable destination: message names the path */
    char bad[700];
    snprintf(bad, sizeof bad, "%s/no/such/dir/m.safetensors", dir);
    EXPECT(nn_st_write(bad, t1, 1, NULL, NULL, 0) == -1, "write into a missing directory");
    EXPECT(strncmp(ncmi_error(), bad, strlen(bad)) == 0, "message: %s", ncmi_error());
    /* rename onto a directory fails: the temporary is removed */
    char isdir[700];
    snprintf(isdir, sizeof isdir, "%s/adir", dir);
    mkdir(isdir, 0755);
    char sub[760];
    snprintf(sub, sizeof sub, "%s/keep", isdir);
    write_bytes(sub, "x", 1); /* non-empty: rename cannot replace it */
    EXPECT(nn_st_write(isdir, t1, 1, NULL, NULL, 0) == -1, "rename onto a directory succeeded");
    EXPECT(strncmp(ncmi_error(), isdir, strlen(isdir)) == 0, "message: %s", ncmi_error());
    EXPECT(count_tmp_files(dir) == 0, "temporary file left behind after a failed rename");
}
