/* JSON output shared by ncmi eval, measure and the trainer's metrics files. */
#ifndef NCMI_EVAL_JSON_IO_H
#define NCMI_EVAL_JSON_IO_H

#include <jansson.h>

/* Writes j to path through a temporary file and rename (2-space indent,
 * keys in insertion order, reals with 16 significant digits). 0, or -1 with
 * ncmi_error() naming the path. */
int eval_json_write_atomic(const char *path, json_t *j);

#endif
