/* ncmi train --device cuda end to end: the demo MLP config (generated data)
 * trained on the CPU and on the GPU from the same seed; both runs finish,
 * write their run folders, and reach the same validation accuracy within
 * 0.5 points (fp32 on both; summation order differs, so not bit-equal). */
#include <stdlib.h>
#include <string.h>

#include "gpu_check.h"

static double final_val_acc(const char *out)
{
    const char *p = out ? strstr(out, "final:") : NULL;
    p = p ? strstr(p, "val_acc ") : NULL;
    return p ? atof(p + 8) : -1;
}

TEST(gpu_cli_train_demo_mlp)
{
    GPU_REQUIRE();
    char *oc = NULL, *og = NULL;
    const char *dir = test_tmp_path("gpu_cli");
    int rc_c = test_ncmi(&oc, "train --device cpu --config configs/demo_mlp.yaml --out %s --set name=cpu --force", dir);
    int rc_g = test_ncmi(&og, "train --device cuda --config configs/demo_mlp.yaml --out %s --set name=gpu --force", dir);
    EXPECT(rc_c == 0, "cpu run failed (%d): %s", rc_c, oc ? oc : "");
    EXPECT(rc_g == 0, "gpu run failed (%d): %s", rc_g, og ? og : "");
    EXPECT(og && strstr(og, "device cuda:0"), "the GPU run does not say it ran on cuda:0: %.300s", og ? og : "");
    double ac = final_val_acc(oc), ag = final_val_acc(og);
    printf("    val_acc cpu %.4f gpu %.4f\n", ac, ag);
    EXPECT(ac > 0.9 && ag > 0.9, "accuracies %g / %g", ac, ag);
    EXPECT(ac - ag < 0.005 && ag - ac < 0.005, "cpu %.4f vs gpu %.4f differ by more than 0.005", ac, ag);
    EXPECT(test_file_nonempty(test_tmp_path("gpu_cli/gpu/best.safetensors")), "no best.safetensors from the GPU run");
    free(oc);
    free(og);
}
