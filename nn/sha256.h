/* SHA-256 (FIPS 180-4), streaming: init, update any number of times, final.
 *
 *   nn_sha256 s; nn_sha256_init(&s);
 *   nn_sha256_update(&s, buf, n); ...
 *   uint8_t d[32]; nn_sha256_final(&s, d);
 *   char hex[NN_SHA256_HEX]; nn_sha256_hex(d, hex);
 *
 * Used for the provenance of weights (the features file's weights_sha256). */
#ifndef NCMI_SHA256_H
#define NCMI_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define NN_SHA256_BYTES 32
#define NN_SHA256_HEX 65 /* 64 lowercase hex digits + NUL */

typedef struct nn_sha256 {
    uint32_t h[8];
    uint64_t nbytes;   /* message length so far */
    uint8_t buf[64];   /* partial block */
    size_t nbuf;
} nn_sha256;

void nn_sha256_init(nn_sha256 *s);
void nn_sha256_update(nn_sha256 *s, const void *data, size_t n);
/* Pads, writes the digest; s must be re-initialised before reuse. */
void nn_sha256_final(nn_sha256 *s, uint8_t digest[NN_SHA256_BYTES]);
/* Lowercase hex of a digest into hex (NN_SHA256_HEX bytes, NUL-terminated). */
void nn_sha256_hex(const uint8_t digest[NN_SHA256_BYTES], char hex[NN_SHA256_HEX]);
/* One-shot: hex digest of n bytes. */
void nn_sha256_hex_of(const void *data, size_t n, char hex[NN_SHA256_HEX]);

#endif
