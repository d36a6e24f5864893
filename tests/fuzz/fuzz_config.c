/* libFuzzer harness: fuzz_config in tests/fuzz/fuzz_targets.c (make fuzz). */
#include <stdlib.h>

#include "fuzz_targets.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* each reader's result is checked inside (an error carries a message) */
    int rc = fuzz_config(data, size);
    if (rc != 0 && rc != -1) abort();
    return 0;
}
