/* MNIST IDX loader: the real test set from the fixtures, and corrupted files. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "../natural/mnist.h"
#include "../nn/error.h"
#include "test.h"

TEST(mnist_fixture_loads)
{
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/mnist", test_fixtures_dir());
    if (access(dir, R_OK) != 0) SKIP("no fixtures at %s (set NCMI_FIXTURES)", dir);
    nat_mnist m;
    REQUIRE(nat_mnist_load_dir(&m, dir, "t10k") == 0, "%s", ncmi_error());
    EXPECT(m.n == 10000 && m.rows == 28 && m.cols == 28, "%d images of %dx%d", m.n, m.rows, m.cols);
    /* class counts of the MNIST test set (LeCun et al.) */
    const int expect[10] = {980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009};
    int cnt[10] = {0};
    for (int i = 0; i < m.n; i++) cnt[m.labels[i]]++;
    for (int k = 0; k < 10; k++) EXPECT(cnt[k] == expect[k], "digit %d: %d images, expected %d", k, cnt[k], expect[k]);
    EXPECT(m.labels[0] == 7 && m.labels[1] == 2 && m.labels[2] == 1, "first labels %d %d %d",
           m.labels[0], m.labels[1], m.labels[2]);
    /* pixel statistics of the test set: mean 0.1325 (torchvision's train mean is 0.1307) */
    double s = 0;
    for (size_t i = 0; i < (size_t)m.n * 784; i++) s += m.pixels[i];
    EXPECT_NEAR(s / ((double)m.n * 784 * 255), 0.1325, 0.001);
    float x[784];
    int idx = 0;
    nat_mnist_to_float(&m, &idx, 1, 0.f, 1.f, x);
    float mx = 0;
    for (int j = 0; j < 784; j++) mx = x[j] > mx ? x[j] : mx;
    EXPECT_NEAR(mx, 1.0, 1e-6);
    nat_mnist_free(&m);
}

static void put_be32(unsigned char *p, unsigned v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static void write_file(const char *path, const unsigned char *b, size_t n, int gz)
{
    if (gz) {
        gzFile f = gzopen(path, "wb");
        gzwrite(f, b, (unsigned)n);
        gzclose(f);
    } else {
        FILE *f = fopen(path, "wb");
        fwrite(b, 1, n, f);
        fclose(f);
    }
}

TEST(mnist_rejects_bad_files)
{
    char ip[512], lp[512];
    snprintf(ip, sizeof ip, "%s/img.idx.gz", test_tmpdir());
    snprintf(lp, sizeof lp, "%s/lab.idx", test_tmpdir());
    unsigned char img[16 + 3 * 4], lab[8 + 3];
    memset(img, 0, sizeof img);
    put_be32(img, 0x803);
    put_be32(img + 4, 3);
    put_be32(img + 8, 2);
    put_be32(img + 12, 2);
    put_be32(lab, 0x801);
    put_be32(lab + 4, 3);
    lab[8] = 1, lab[9] = 2, lab[10] = 3;
    write_file(ip, img, sizeof img, 1);
    write_file(lp, lab, sizeof lab, 0);
    nat_mnist m;
    REQUIRE(nat_mnist_load(&m, ip, lp) == 0, "valid tiny pair rejected: %s", ncmi_error());
    EXPECT(m.n == 3 && m.labels[2] == 3, "n %d", m.n);
    nat_mnist_free(&m);

    /* truncated pixels */
    write_file(ip, img, sizeof img - 1, 1);
    EXPECT(nat_mnist_load(&m, ip, lp) != 0 && strstr(ncmi_error(), "img.idx.gz") &&
               strstr(ncmi_error(), "truncated"),
           "truncated images: %s", ncmi_error());
    write_file(ip, img, sizeof img, 1);
    /* label out of range */
    lab[9] = 12;
    write_file(lp, lab, sizeof lab, 0);
    EXPECT(nat_mnist_load(&m, ip, lp) != 0 && strstr(ncmi_error(), "lab.idx") &&
               strstr(ncmi_error(), "label 12"),
           "bad label: %s", ncmi_error());
    lab[9] = 2;
    /* count mismatch */
    put_be32(lab + 4, 2);
    write_file(lp, lab, sizeof lab - 1, 0);
    EXPECT(nat_mnist_load(&m, ip, lp) != 0 && strstr(ncmi_error(), "2 labels for 3 images"),
           "count mismatch: %s", ncmi_error());
    /* swapped files: wrong magic */
    EXPECT(nat_mnist_load(&m, lp, ip) != 0 && strstr(ncmi_error(), "magic"), "swapped: %s",
           ncmi_error());
    /* a corrupt gzip stream */
    FILE *f = fopen(ip, "r+b");
    fseek(f, 12, SEEK_SET);
    fputc(0xff, f);
    fputc(0x00, f);
    fclose(f);
    EXPECT(nat_mnist_load(&m, ip, lp) != 0 && strstr(ncmi_error(), "img.idx.gz"), "corrupt gz: %s",
           ncmi_error());
    /* missing */
    EXPECT(nat_mnist_load_dir(&m, test_tmpdir(), "train") != 0 && strstr(ncmi_error(), "train-images"),
           "missing: %s", ncmi_error());
}
