/* Schema-driven YAML configuration.
 *
 * A schema is a table of dotted keys ("optim.lr"), each with a type, a
 * default (as YAML text), a help line, optional bounds and the offset of its
 * field in a C struct. Nested YAML mappings map to dotted keys:
 *
 *     optim:              is the same as     optim.lr: 0.1
 *       lr: 0.1
 *
 * Loading parses with libyaml (document API) and reports every problem with
 * the file and line: unknown keys (with the closest known key when it is at
 * most 2 edits away), wrong types, values outside an enum or a range,
 * invalid YAML. `--set key=value` overrides parse the value as YAML (a
 * scalar or a flow sequence like [60,120]) and report "--set" instead of a
 * file. All functions that can fail return 0 / -1 with ncmi_error() set.
 *
 *     train_config c;
 *     ncmi_cfg_defaults(&schema, &c);
 *     if (ncmi_cfg_load_file(&schema, &c, path) || ncmi_cfg_set(&schema, &c, "optim.lr=0.5")) ...
 *     ncmi_cfg_write_yaml(&schema, &c, "runs/x/config.yaml");
 *     ncmi_cfg_free(&schema, &c);
 */
#ifndef NCMI_CLI_CONFIG_H
#define NCMI_CLI_CONFIG_H

#include <stddef.h>
#include <stdio.h>

typedef enum ncmi_cfg_type {
    NCMI_CFG_INT = 0,     /* int */
    NCMI_CFG_FLOAT,       /* double (YAML ints accepted) */
    NCMI_CFG_BOOL,        /* int 0/1: true/false (also yes/no/on/off) */
    NCMI_CFG_STRING,      /* char * (malloc'd, owned by the struct) */
    NCMI_CFG_ENUM,        /* int: index into choices */
    NCMI_CFG_INT_LIST,    /* ncmi_cfg_ints */
    NCMI_CFG_FLOAT_LIST,  /* ncmi_cfg_floats */
    NCMI_CFG_STRING_LIST, /* ncmi_cfg_strings */
} ncmi_cfg_type;

typedef struct ncmi_cfg_ints { int n; int *v; } ncmi_cfg_ints;
typedef struct ncmi_cfg_floats { int n; double *v; } ncmi_cfg_floats;
typedef struct ncmi_cfg_strings { int n; char **v; } ncmi_cfg_strings;

/* bounds flags (numbers, and every element of numeric lists) */
enum {
    NCMI_CFG_MIN = 1,      /* value >= lo */
    NCMI_CFG_MIN_EXCL = 2, /* value > lo */
    NCMI_CFG_MAX = 4,      /* value <= hi */
    NCMI_CFG_MAX_EXCL = 8, /* value < hi */
};

typedef struct ncmi_cfg_key {
    const char *key;             /* dotted name */
    ncmi_cfg_type type;
    const char *def;             /* default as YAML text ("0.1", "[60,120]", "sgd", "true", "") */
    const char *help;            /* one line */
    size_t offset;               /* offsetof(struct, field) */
    const char *const *choices;  /* ENUM: NULL-terminated allowed values */
    unsigned bounds;             /* NCMI_CFG_MIN | ... */
    double lo, hi;
    int list_len;                /* lists: required length (0: any) */
} ncmi_cfg_key;

typedef struct ncmi_cfg_schema {
    const char *name;            /* "training config" (for messages and docs) */
    const ncmi_cfg_key *keys;
    int n_keys;
} ncmi_cfg_schema;

/* Fill every field with its default (the struct is overwritten, not freed). */
void ncmi_cfg_defaults(const ncmi_cfg_schema *s, void *cfg);
/* Free strings and lists; the struct can then be reused with ncmi_cfg_defaults. */
void ncmi_cfg_free(const ncmi_cfg_schema *s, void *cfg);

/* Apply a YAML file on top of the current values. On error the values of
 * keys that were already applied stay changed; callers treat an error as
 * fatal. */
int ncmi_cfg_load_file(const ncmi_cfg_schema *s, void *cfg, const char *path);
/* Same, from YAML text; `source` names it in messages (a path or "--set"). */
int ncmi_cfg_load_string(const ncmi_cfg_schema *s, void *cfg, const char *yaml, size_t len,
                         const char *source);
/* Apply one "key=value" override (value parsed as YAML). */
int ncmi_cfg_set(const ncmi_cfg_schema *s, void *cfg, const char *assignment);

/* The schema entry of a dotted key (NULL if unknown). */
const ncmi_cfg_key *ncmi_cfg_find(const ncmi_cfg_schema *s, const char *key);
/* The choice name of an ENUM field's current value. */
const char *ncmi_cfg_enum_name(const ncmi_cfg_key *k, const void *cfg);

/* Keys whose values differ between a and b, as "k1, k2" into buf (empty
 * when none); keys listed in `ignore` (NULL-terminated, may be NULL) are
 * skipped. Returns the number of differing keys. */
int ncmi_cfg_diff(const ncmi_cfg_schema *s, const void *a, const void *b,
                  const char *const *ignore, char *buf, size_t n);

/* The resolved config as nested YAML (malloc'd; NULL with ncmi_error() set
 * on failure). Round-trips through ncmi_cfg_load_string. */
char *ncmi_cfg_to_yaml(const ncmi_cfg_schema *s, const void *cfg);
/* Write it atomically (path.tmp.<pid> then rename). */
int ncmi_cfg_write_yaml(const ncmi_cfg_schema *s, const void *cfg, const char *path);

/* Print the schema: a plain-text table (markdown = 0) or a markdown table
 * (markdown = 1, what docs/config.md holds). */
void ncmi_cfg_print_schema(const ncmi_cfg_schema *s, FILE *f, int markdown);

/* Edit distance (optimal string alignment: insertions, deletions,
 * substitutions and adjacent transpositions cost 1). */
int ncmi_edit_distance(const char *a, const char *b);

#endif
