/* Dispatch to the four MIL heads. */
#include "../nn/error.h"
#include "mil.h"

int mil_head_init(tr_model *m, const mil_opts *o, nn_rng *rng)
{
    switch (o->kind) {
    case MIL_ABMIL:
    case MIL_AEM: return mil_abmil_init(m, o, rng);
    case MIL_TRANSMIL: return mil_transmil_init(m, o, rng);
    case MIL_ASMIL: return mil_asmil_init(m, o, rng);
    }
    return ncmi_error_set("unknown MIL head %d", (int)o->kind);
}
