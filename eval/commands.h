/* Library entry points of `ncmi eval` and `ncmi measure`: the CLI only has
 * to dispatch to them. argv[0] is the command name ("eval" / "measure");
 * results go to stdout, errors to stderr as "ncmi: <command>: <message>"
 * (also left in ncmi_error()). Exit codes (design.md): 0 success, 1 usage
 * error, 2 input error, 3 partial success (measure: some slides had no
 * features file; they are listed). */
#ifndef NCMI_EVAL_COMMANDS_H
#define NCMI_EVAL_COMMANDS_H

#include <jansson.h>

/* ncmi eval --predictions CSV [--json OUT] [--bootstrap B] [--seed S] */
int eval_cmd_eval(int argc, char **argv);
/* ncmi measure --features DIR_OR_H5 --manifest CSV [--simplex softmax|nsf] [--pool none|mean]
 *              [--split train|val|test] [--classes a,b,...] [--json OUT] */
int eval_cmd_measure(int argc, char **argv);

/* Writes j to path through a temporary file and rename (2-space indent,
 * keys in insertion order, reals with 16 significant digits). 0 or -1. */
int eval_json_write_atomic(const char *path, json_t *j);

#endif
