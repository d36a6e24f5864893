/* nn/sha256: FIPS 180-4 test vectors, one-shot and streamed in uneven pieces. */
#include <stdint.h>
#include <string.h>

#include "../nn/sha256.h"
#include "test.h"

TEST(sha256_vectors)
{
    char hex[NN_SHA256_HEX];
    nn_sha256_hex_of("abc", 3, hex);
    EXPECT(strcmp(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad") == 0,
           "sha256(abc) = %s", hex);
    nn_sha256_hex_of("", 0, hex);
    EXPECT(strcmp(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855") == 0,
           "sha256('') = %s", hex);
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"; /* 56 bytes: 2 blocks */
    nn_sha256_hex_of(two, strlen(two), hex);
    EXPECT(strcmp(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1") == 0,
           "sha256(448-bit message) = %s", hex);
    /* one million 'a', streamed in uneven pieces */
    static char buf[1000];
    memset(buf, 'a', sizeof buf);
    nn_sha256 s;
    nn_sha256_init(&s);
    size_t left = 1000000, k = 0;
    while (left) {
        size_t piece = 1 + (k++ * 37) % 999;
        if (piece > left) piece = left;
        nn_sha256_update(&s, buf, piece);
        left -= piece;
    }
    uint8_t d[NN_SHA256_BYTES];
    nn_sha256_final(&s, d);
    nn_sha256_hex(d, hex);
    EXPECT(strcmp(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0") == 0,
           "sha256(1M x 'a') = %s", hex);
}
