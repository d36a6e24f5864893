/* Schema-driven YAML configuration (see config.h). YAML is parsed with
 * libyaml's document API and written with its emitter. */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <yaml.h>

#include "../nn/error.h"

/* ------------------------------------------------------------------ */
/* helpers                                                             */

#define FIELD(cfg, k, T) ((T *)((char *)(cfg) + (k)->offset))
#define CFIELD(cfg, k, T) ((const T *)((const char *)(cfg) + (k)->offset))

static char *xstrdup(const char *s)
{
    char *d = strdup(s ? s : "");
    NCMI_CHECK(d != NULL, "out of memory");
    return d;
}

static void *xcalloc(size_t n, size_t sz)
{
    void *p = calloc(n ? n : 1, sz);
    NCMI_CHECK(p != NULL, "out of memory");
    return p;
}

int ncmi_edit_distance(const char *a, const char *b)
{
    size_t n = strlen(a), m = strlen(b);
    if (n > 256 || m > 256) return 1000;
    /* three rows of the OSA dynamic program */
    int rows[3][257];
    int *pp = rows[0], *p = rows[1], *c = rows[2];
    for (size_t j = 0; j <= m; j++) p[j] = (int)j;
    for (size_t i = 1; i <= n; i++) {
        c[0] = (int)i;
        for (size_t j = 1; j <= m; j++) {
            int cost = a[i - 1] != b[j - 1];
            int v = p[j] + 1;
            if (c[j - 1] + 1 < v) v = c[j - 1] + 1;
            if (p[j - 1] + cost < v) v = p[j - 1] + cost;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] && pp[j - 2] + 1 < v)
                v = pp[j - 2] + 1;
            c[j] = v;
        }
        int *t = pp;
        pp = p;
        p = c;
        c = t;
    }
    return p[m];
}

const ncmi_cfg_key *ncmi_cfg_find(const ncmi_cfg_schema *s, const char *key)
{
    for (int i = 0; i < s->n_keys; i++)
        if (!strcmp(s->keys[i].key, key)) return &s->keys[i];
    return NULL;
}

/* True when some key starts with "prefix." */
static int is_section(const ncmi_cfg_schema *s, const char *prefix)
{
    size_t n = strlen(prefix);
    for (int i = 0; i < s->n_keys; i++)
        if (!strncmp(s->keys[i].key, prefix, n) && s->keys[i].key[n] == '.') return 1;
    return 0;
}

/* The closest key or section name to `key` (NULL when none is within 2 edits). */
static const char *suggest(const ncmi_cfg_schema *s, const char *key, char *buf, size_t bufsz)
{
    int best = 3;
    buf[0] = 0;
    for (int i = 0; i < s->n_keys; i++) {
        const char *k = s->keys[i].key;
        int d = ncmi_edit_distance(key, k);
        if (d < best) {
            best = d;
            snprintf(buf, bufsz, "%s", k);
        }
        /* section names: every proper prefix ending before a '.' */
        for (const char *dot = strchr(k, '.'); dot; dot = strchr(dot + 1, '.')) {
            char sec[256];
            size_t n = (size_t)(dot - k);
            if (n >= sizeof sec) break;
            memcpy(sec, k, n);
            sec[n] = 0;
            d = ncmi_edit_distance(key, sec);
            if (d < best) {
                best = d;
                snprintf(buf, bufsz, "%s", sec);
            }
        }
    }
    if (buf[0]) return buf;
    /* a leaf name given without its section ("lr" for "optim.lr") */
    if (!strchr(key, '.')) {
        const char *hit = NULL;
        for (int i = 0; i < s->n_keys; i++) {
            const char *dot = strrchr(s->keys[i].key, '.');
            if (dot && !strcmp(dot + 1, key)) {
                if (hit) return NULL; /* ambiguous */
                hit = s->keys[i].key;
            }
        }
        if (hit) {
            snprintf(buf, bufsz, "%s", hit);
            return buf;
        }
    }
    return NULL;
}

static int parse_ll(const char *t, long long *out)
{
    if (!*t) return -1;
    errno = 0;
    char *end;
    long long v = strtoll(t, &end, 10);
    if (*end || errno) return -1;
    *out = v;
    return 0;
}

static int parse_double(const char *t, double *out)
{
    if (!*t) return -1;
    const char *u = t;
    int neg = 0;
    if (*u == '+' || *u == '-') neg = *u++ == '-';
    if (!strcasecmp(u, ".inf")) {
        *out = neg ? -INFINITY : INFINITY;
        return 0;
    }
    if (!strcasecmp(t, ".nan")) {
        *out = NAN;
        return 0;
    }
    /* digits, sign, point and exponent only (no "inf"/"nan"/hex words) */
    for (const char *c = t; *c; c++)
        if (!strchr("0123456789+-.eE", *c)) return -1;
    errno = 0;
    char *end;
    double v = strtod(t, &end);
    if (*end || errno == ERANGE || end == t) return -1;
    *out = v;
    return 0;
}

static int parse_bool(const char *t, int *out)
{
    static const char *yes[] = {"true", "yes", "on"}, *no[] = {"false", "no", "off"};
    for (int i = 0; i < 3; i++) {
        if (!strcasecmp(t, yes[i])) { *out = 1; return 0; }
        if (!strcasecmp(t, no[i])) { *out = 0; return 0; }
    }
    return -1;
}

/* Shortest text that reads back as the same double, always looking like a
 * YAML float ("0.1", "1.0e-05", "60.0"). */
static void fmt_double(double v, char *buf, size_t n)
{
    if (isnan(v)) { snprintf(buf, n, ".nan"); return; }
    if (isinf(v)) { snprintf(buf, n, v < 0 ? "-.inf" : ".inf"); return; }
    char t[40];
    for (int p = 1; p <= 17; p++) {
        snprintf(t, sizeof t, "%.*g", p, v);
        if (strtod(t, NULL) == v) break;
    }
    char *e = strchr(t, 'e');
    if (strchr(t, '.'))
        snprintf(buf, n, "%s", t);
    else if (e)
        snprintf(buf, n, "%.*s.0%s", (int)(e - t), t, e);
    else
        snprintf(buf, n, "%s.0", t);
}

/* ------------------------------------------------------------------ */
/* defaults and free                                                   */

static void free_field(const ncmi_cfg_key *k, void *cfg)
{
    switch (k->type) {
    case NCMI_CFG_STRING: {
        char **p = FIELD(cfg, k, char *);
        free(*p);
        *p = NULL;
        break;
    }
    case NCMI_CFG_INT_LIST: {
        ncmi_cfg_ints *l = FIELD(cfg, k, ncmi_cfg_ints);
        free(l->v);
        l->v = NULL;
        l->n = 0;
        break;
    }
    case NCMI_CFG_FLOAT_LIST: {
        ncmi_cfg_floats *l = FIELD(cfg, k, ncmi_cfg_floats);
        free(l->v);
        l->v = NULL;
        l->n = 0;
        break;
    }
    case NCMI_CFG_STRING_LIST: {
        ncmi_cfg_strings *l = FIELD(cfg, k, ncmi_cfg_strings);
        for (int i = 0; i < l->n; i++) free(l->v[i]);
        free(l->v);
        l->v = NULL;
        l->n = 0;
        break;
    }
    default:
        break;
    }
}

void ncmi_cfg_free(const ncmi_cfg_schema *s, void *cfg)
{
    for (int i = 0; i < s->n_keys; i++) free_field(&s->keys[i], cfg);
}

void ncmi_cfg_defaults(const ncmi_cfg_schema *s, void *cfg)
{
    /* the struct may hold garbage: clear owned pointers first */
    for (int i = 0; i < s->n_keys; i++) {
        const ncmi_cfg_key *k = &s->keys[i];
        switch (k->type) {
        case NCMI_CFG_STRING: *FIELD(cfg, k, char *) = NULL; break;
        case NCMI_CFG_INT_LIST: *FIELD(cfg, k, ncmi_cfg_ints) = (ncmi_cfg_ints){0, NULL}; break;
        case NCMI_CFG_FLOAT_LIST: *FIELD(cfg, k, ncmi_cfg_floats) = (ncmi_cfg_floats){0, NULL}; break;
        case NCMI_CFG_STRING_LIST: *FIELD(cfg, k, ncmi_cfg_strings) = (ncmi_cfg_strings){0, NULL}; break;
        default: break;
        }
    }
    for (int i = 0; i < s->n_keys; i++) {
        const ncmi_cfg_key *k = &s->keys[i];
        char assign[1024];
        snprintf(assign, sizeof assign, "%s=%s", k->key, k->def ? k->def : "");
        if (k->type == NCMI_CFG_STRING && (!k->def || !k->def[0])) {
            *FIELD(cfg, k, char *) = xstrdup("");
            continue;
        }
        NCMI_CHECK(ncmi_cfg_set(s, cfg, assign) == 0, "%s: bad default for '%s': %s", s->name,
                   k->key, ncmi_error());
    }
}

const char *ncmi_cfg_enum_name(const ncmi_cfg_key *k, const void *cfg)
{
    NCMI_CHECK(k->type == NCMI_CFG_ENUM, "%s is not an enum", k->key);
    return k->choices[*CFIELD(cfg, k, int)];
}

/* ------------------------------------------------------------------ */
/* loading                                                             */

typedef struct load_ctx {
    const ncmi_cfg_schema *s;
    void *cfg;
    const char *source; /* file path, or "--set" */
    int has_lines;
    yaml_document_t *doc;
    int *seen_line;     /* per key: line where it was set in this source (0: not yet) */
} load_ctx;

static const char *where(const load_ctx *c, const yaml_node_t *n, char *buf, size_t sz)
{
    if (c->has_lines && n)
        snprintf(buf, sz, "%s:%d", c->source, (int)n->start_mark.line + 1);
    else
        snprintf(buf, sz, "%s", c->source);
    return buf;
}

static int node_is_null(const yaml_node_t *n)
{
    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) return 0;
    const char *t = (const char *)n->data.scalar.value;
    return !*t || !strcmp(t, "~") || !strcmp(t, "null") || !strcmp(t, "Null") || !strcmp(t, "NULL");
}

/* A short description of what a node holds, for "got ..." */
static void node_desc(const yaml_node_t *n, char *buf, size_t sz)
{
    if (n->type == YAML_MAPPING_NODE)
        snprintf(buf, sz, "a mapping");
    else if (n->type == YAML_SEQUENCE_NODE)
        snprintf(buf, sz, "a list");
    else if (node_is_null(n))
        snprintf(buf, sz, "nothing");
    else
        snprintf(buf, sz, "'%.200s'", (const char *)n->data.scalar.value);
}

static const char *type_noun(ncmi_cfg_type t)
{
    switch (t) {
    case NCMI_CFG_INT: case NCMI_CFG_INT_LIST: return "an integer";
    case NCMI_CFG_FLOAT: case NCMI_CFG_FLOAT_LIST: return "a number";
    case NCMI_CFG_BOOL: return "true or false";
    case NCMI_CFG_STRING: case NCMI_CFG_STRING_LIST: return "a string";
    case NCMI_CFG_ENUM: return "one of";
    }
    return "?";
}

static void range_text(const ncmi_cfg_key *k, char *buf, size_t sz)
{
    char lo[64], hi[64];
    fmt_double(k->lo, lo, sizeof lo);
    fmt_double(k->hi, hi, sizeof hi);
    /* print integral bounds without ".0" */
    if (k->lo == floor(k->lo) && fabs(k->lo) < 1e15) snprintf(lo, sizeof lo, "%.0f", k->lo);
    if (k->hi == floor(k->hi) && fabs(k->hi) < 1e15) snprintf(hi, sizeof hi, "%.0f", k->hi);
    unsigned b = k->bounds;
    int has_lo = (b & (NCMI_CFG_MIN | NCMI_CFG_MIN_EXCL)) != 0;
    int has_hi = (b & (NCMI_CFG_MAX | NCMI_CFG_MAX_EXCL)) != 0;
    if (has_lo && has_hi)
        snprintf(buf, sz, "%s%s, %s%s", b & NCMI_CFG_MIN_EXCL ? "(" : "[", lo, hi,
                 b & NCMI_CFG_MAX_EXCL ? ")" : "]");
    else if (has_lo)
        snprintf(buf, sz, "%s %s", b & NCMI_CFG_MIN_EXCL ? ">" : ">=", lo);
    else if (has_hi)
        snprintf(buf, sz, "%s %s", b & NCMI_CFG_MAX_EXCL ? "<" : "<=", hi);
    else
        buf[0] = 0;
}

static int check_bounds(const load_ctx *c, const ncmi_cfg_key *k, const yaml_node_t *n, double v,
                        const char *what)
{
    unsigned b = k->bounds;
    int ok = 1;
    if ((b & NCMI_CFG_MIN) && !(v >= k->lo)) ok = 0;
    if ((b & NCMI_CFG_MIN_EXCL) && !(v > k->lo)) ok = 0;
    if ((b & NCMI_CFG_MAX) && !(v <= k->hi)) ok = 0;
    if ((b & NCMI_CFG_MAX_EXCL) && !(v < k->hi)) ok = 0;
    if (b && isnan(v)) ok = 0;
    if (ok) return 0;
    char loc[1100], r[160];
    range_text(k, r, sizeof r);
    int in_interval = (b & (NCMI_CFG_MIN | NCMI_CFG_MIN_EXCL)) && (b & (NCMI_CFG_MAX | NCMI_CFG_MAX_EXCL));
    return ncmi_error_set("%s: key '%s': %s must be %s%s, got '%s'", where(c, n, loc, sizeof loc),
                          k->key, what, in_interval ? "in " : "", r,
                          (const char *)n->data.scalar.value);
}

/* Parse one scalar as element type t (INT, FLOAT or STRING) into *out. */
static int parse_elem(const load_ctx *c, const ncmi_cfg_key *k, const yaml_node_t *n,
                      ncmi_cfg_type t, const char *what, long long *oi, double *of)
{
    char loc[1100], got[256];
    if (n->type != YAML_SCALAR_NODE || node_is_null(n)) {
        node_desc(n, got, sizeof got);
        return ncmi_error_set("%s: key '%s': %sexpected %s, got %s", where(c, n, loc, sizeof loc),
                              k->key, what, type_noun(t), got);
    }
    const char *text = (const char *)n->data.scalar.value;
    if (t == NCMI_CFG_INT) {
        if (parse_ll(text, oi) || *oi < INT32_MIN || *oi > INT32_MAX) {
            node_desc(n, got, sizeof got);
            return ncmi_error_set("%s: key '%s': %sexpected an integer, got %s",
                                  where(c, n, loc, sizeof loc), k->key, what, got);
        }
        return check_bounds(c, k, n, (double)*oi, *what ? "element" : "value");
    }
    if (t == NCMI_CFG_FLOAT) {
        if (parse_double(text, of)) {
            node_desc(n, got, sizeof got);
            return ncmi_error_set("%s: key '%s': %sexpected a number, got %s",
                                  where(c, n, loc, sizeof loc), k->key, what, got);
        }
        return check_bounds(c, k, n, *of, *what ? "element" : "value");
    }
    return 0;
}

static int assign(load_ctx *c, const ncmi_cfg_key *k, yaml_node_t *n)
{
    char loc[1100], got[256];
    long long iv = 0; /* parse_elem sets them unless it fails (then we return) */
    double dv = 0;
    switch (k->type) {
    case NCMI_CFG_INT:
        if (parse_elem(c, k, n, NCMI_CFG_INT, "", &iv, &dv)) return -1;
        *FIELD(c->cfg, k, int) = (int)iv;
        return 0;
    case NCMI_CFG_FLOAT:
        if (parse_elem(c, k, n, NCMI_CFG_FLOAT, "", &iv, &dv)) return -1;
        *FIELD(c->cfg, k, double) = dv;
        return 0;
    case NCMI_CFG_BOOL: {
        int b;
        if (n->type != YAML_SCALAR_NODE || node_is_null(n) ||
            parse_bool((const char *)n->data.scalar.value, &b)) {
            node_desc(n, got, sizeof got);
            return ncmi_error_set("%s: key '%s': expected true or false, got %s",
                                  where(c, n, loc, sizeof loc), k->key, got);
        }
        *FIELD(c->cfg, k, int) = b;
        return 0;
    }
    case NCMI_CFG_STRING:
        if (n->type != YAML_SCALAR_NODE || node_is_null(n)) {
            node_desc(n, got, sizeof got);
            return ncmi_error_set("%s: key '%s': expected a string, got %s",
                                  where(c, n, loc, sizeof loc), k->key, got);
        }
        free_field(k, c->cfg);
        *FIELD(c->cfg, k, char *) = xstrdup((const char *)n->data.scalar.value);
        return 0;
    case NCMI_CFG_ENUM: {
        const char *text = n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : "";
        if (n->type == YAML_SCALAR_NODE && !node_is_null(n))
            for (int i = 0; k->choices[i]; i++)
                if (!strcmp(text, k->choices[i])) {
                    *FIELD(c->cfg, k, int) = i;
                    return 0;
                }
        char allowed[512] = "", hint[160] = "";
        int best = 3;
        for (int i = 0; k->choices[i]; i++) {
            size_t l = strlen(allowed);
            snprintf(allowed + l, sizeof allowed - l, "%s%s", i ? ", " : "", k->choices[i]);
            int d = ncmi_edit_distance(text, k->choices[i]);
            if (*text && d < best) {
                best = d;
                snprintf(hint, sizeof hint, " (did you mean '%s'?)", k->choices[i]);
            }
        }
        node_desc(n, got, sizeof got);
        return ncmi_error_set("%s: key '%s': expected one of %s; got %s%s",
                              where(c, n, loc, sizeof loc), k->key, allowed, got, hint);
    }
    case NCMI_CFG_INT_LIST:
    case NCMI_CFG_FLOAT_LIST:
    case NCMI_CFG_STRING_LIST: {
        ncmi_cfg_type et = k->type == NCMI_CFG_INT_LIST     ? NCMI_CFG_INT
                           : k->type == NCMI_CFG_FLOAT_LIST ? NCMI_CFG_FLOAT
                                                            : NCMI_CFG_STRING;
        /* a list, a single scalar (a one-element list) or nothing (empty) */
        yaml_node_t **items = NULL;
        int count = 0;
        if (n->type == YAML_MAPPING_NODE) {
            return ncmi_error_set("%s: key '%s': expected a list of %s, got a mapping",
                                  where(c, n, loc, sizeof loc), k->key,
                                  et == NCMI_CFG_INT ? "integers" : et == NCMI_CFG_FLOAT ? "numbers" : "strings");
        }
        if (n->type == YAML_SEQUENCE_NODE) {
            count = (int)(n->data.sequence.items.top - n->data.sequence.items.start);
            items = xcalloc((size_t)count, sizeof *items);
            for (int i = 0; i < count; i++)
                items[i] = yaml_document_get_node(c->doc, n->data.sequence.items.start[i]);
        } else if (!node_is_null(n)) {
            count = 1;
            items = xcalloc(1, sizeof *items);
            items[0] = n;
        }
        if (k->list_len && count != k->list_len) {
            free(items);
            return ncmi_error_set("%s: key '%s': expected a list of %d %s, got %d",
                                  where(c, n, loc, sizeof loc), k->key, k->list_len,
                                  et == NCMI_CFG_INT ? "integers" : et == NCMI_CFG_FLOAT ? "numbers" : "strings",
                                  count);
        }
        int *vi = et == NCMI_CFG_INT ? xcalloc((size_t)count, sizeof *vi) : NULL;
        double *vf = et == NCMI_CFG_FLOAT ? xcalloc((size_t)count, sizeof *vf) : NULL;
        char **vs = et == NCMI_CFG_STRING ? xcalloc((size_t)count, sizeof *vs) : NULL;
        for (int i = 0; i < count; i++) {
            char what[48];
            snprintf(what, sizeof what, "element %d: ", i + 1);
            int bad = 0;
            if (et == NCMI_CFG_STRING) {
                if (items[i]->type != YAML_SCALAR_NODE || node_is_null(items[i])) {
                    node_desc(items[i], got, sizeof got);
                    ncmi_error_set("%s: key '%s': %sexpected a string, got %s",
                                   where(c, items[i], loc, sizeof loc), k->key, what, got);
                    bad = 1;
                } else
                    vs[i] = xstrdup((const char *)items[i]->data.scalar.value);
            } else {
                bad = parse_elem(c, k, items[i], et, what, &iv, &dv) != 0;
                if (!bad && vi) vi[i] = (int)iv;
                if (!bad && vf) vf[i] = dv;
            }
            if (bad) {
                for (int j = 0; vs && j < count; j++) free(vs[j]);
                free(vs);
                free(vi);
                free(vf);
                free(items);
                return -1;
            }
        }
        free(items);
        free_field(k, c->cfg);
        if (et == NCMI_CFG_INT) *FIELD(c->cfg, k, ncmi_cfg_ints) = (ncmi_cfg_ints){count, vi};
        if (et == NCMI_CFG_FLOAT) *FIELD(c->cfg, k, ncmi_cfg_floats) = (ncmi_cfg_floats){count, vf};
        if (et == NCMI_CFG_STRING) *FIELD(c->cfg, k, ncmi_cfg_strings) = (ncmi_cfg_strings){count, vs};
        return 0;
    }
    }
    return ncmi_error_set("%s: key '%s': unsupported type", c->source, k->key);
}

static int apply(load_ctx *c, const char *dotted, yaml_node_t *keynode, yaml_node_t *v);

static int apply_mapping(load_ctx *c, const char *prefix, yaml_node_t *map)
{
    char loc[1100];
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
        yaml_node_t *kn = yaml_document_get_node(c->doc, p->key);
        yaml_node_t *vn = yaml_document_get_node(c->doc, p->value);
        if (kn->type != YAML_SCALAR_NODE)
            return ncmi_error_set("%s: keys must be plain names, got %s",
                                  where(c, kn, loc, sizeof loc),
                                  kn->type == YAML_MAPPING_NODE ? "a mapping" : "a list");
        const char *name = (const char *)kn->data.scalar.value;
        char dotted[512];
        if (*prefix)
            snprintf(dotted, sizeof dotted, "%s.%s", prefix, name);
        else
            snprintf(dotted, sizeof dotted, "%s", name);
        if (apply(c, dotted, kn, vn)) return -1;
    }
    return 0;
}

static int apply(load_ctx *c, const char *dotted, yaml_node_t *keynode, yaml_node_t *v)
{
    char loc[1100];
    const ncmi_cfg_key *k = ncmi_cfg_find(c->s, dotted);
    if (k) {
        int idx = (int)(k - c->s->keys);
        if (c->has_lines && c->seen_line[idx])
            return ncmi_error_set("%s: duplicate key '%s' (first set at line %d)",
                                  where(c, keynode, loc, sizeof loc), dotted, c->seen_line[idx]);
        if (c->has_lines) c->seen_line[idx] = (int)keynode->start_mark.line + 1;
        return assign(c, k, v);
    }
    if (is_section(c->s, dotted)) {
        if (v->type == YAML_MAPPING_NODE) return apply_mapping(c, dotted, v);
        if (node_is_null(v)) return 0; /* an empty section */
        char got[256];
        node_desc(v, got, sizeof got);
        return ncmi_error_set("%s: key '%s' is a section: expected a mapping of its keys, got %s",
                              where(c, v, loc, sizeof loc), dotted, got);
    }
    char sug[256];
    if (suggest(c->s, dotted, sug, sizeof sug))
        return ncmi_error_set("%s: unknown key '%s' (did you mean '%s'?)",
                              where(c, keynode, loc, sizeof loc), dotted, sug);
    return ncmi_error_set("%s: unknown key '%s'", where(c, keynode, loc, sizeof loc), dotted);
}

static int yaml_problem(const yaml_parser_t *p, const char *source, int has_lines)
{
    const char *problem = p->problem ? p->problem : "cannot parse";
    char ctx[256] = "";
    if (p->context) snprintf(ctx, sizeof ctx, " %s", p->context);
    if (has_lines)
        return ncmi_error_set("%s:%d: invalid YAML: %s%s (column %d)", source,
                              (int)p->problem_mark.line + 1, problem, ctx,
                              (int)p->problem_mark.column + 1);
    return ncmi_error_set("%s: invalid YAML value: %s%s", source, problem, ctx);
}

/* Parse `text` as one YAML document into *doc. 1: a document with a root
 * node, 0: empty, -1: error. */
static int parse_doc(yaml_document_t *doc, const char *text, size_t len, const char *source,
                     int has_lines)
{
    yaml_parser_t p;
    if (!yaml_parser_initialize(&p)) return ncmi_error_set("%s: out of memory", source);
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
    if (!yaml_parser_load(&p, doc)) {
        yaml_problem(&p, source, has_lines);
        yaml_parser_delete(&p);
        return -1;
    }
    if (!yaml_document_get_root_node(doc)) {
        yaml_document_delete(doc);
        yaml_parser_delete(&p);
        return 0;
    }
    yaml_document_t extra;
    if (!yaml_parser_load(&p, &extra)) {
        yaml_problem(&p, source, has_lines);
        yaml_document_delete(doc);
        yaml_parser_delete(&p);
        return -1;
    }
    yaml_node_t *r2 = yaml_document_get_root_node(&extra);
    if (r2) {
        int line = (int)r2->start_mark.line + 1;
        yaml_document_delete(&extra);
        yaml_document_delete(doc);
        yaml_parser_delete(&p);
        if (has_lines)
            return ncmi_error_set("%s:%d: a second YAML document: one config per file", source, line);
        return ncmi_error_set("%s: more than one YAML document", source);
    }
    yaml_document_delete(&extra);
    yaml_parser_delete(&p);
    return 1;
}

int ncmi_cfg_load_string(const ncmi_cfg_schema *s, void *cfg, const char *yaml, size_t len,
                         const char *source)
{
    yaml_document_t doc;
    int r = parse_doc(&doc, yaml, len, source, 1);
    if (r <= 0) return r;
    load_ctx c = {s, cfg, source, 1, &doc, xcalloc((size_t)s->n_keys, sizeof(int))};
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    int rc = 0;
    if (root->type == YAML_MAPPING_NODE)
        rc = apply_mapping(&c, "", root);
    else if (!node_is_null(root)) {
        char loc[1100], got[256];
        node_desc(root, got, sizeof got);
        rc = ncmi_error_set("%s: expected a mapping of keys at the top level, got %s",
                            where(&c, root, loc, sizeof loc), got);
    }
    free(c.seen_line);
    yaml_document_delete(&doc);
    return rc;
}

int ncmi_cfg_load_file(const ncmi_cfg_schema *s, void *cfg, const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return ncmi_error_set("cannot read config file '%s': %s", path, strerror(errno));
    size_t cap = 4096, len = 0, r;
    char *buf = malloc(cap);
    NCMI_CHECK(buf != NULL, "out of memory");
    while ((r = fread(buf + len, 1, cap - len, f)) > 0) {
        len += r;
        if (len == cap) {
            cap *= 2;
            char *nb = realloc(buf, cap);
            NCMI_CHECK(nb != NULL, "out of memory");
            buf = nb;
        }
    }
    int err = ferror(f);
    fclose(f);
    if (err) {
        free(buf);
        return ncmi_error_set("cannot read config file '%s': read error", path);
    }
    int rc = ncmi_cfg_load_string(s, cfg, buf, len, path);
    free(buf);
    return rc;
}

int ncmi_cfg_set(const ncmi_cfg_schema *s, void *cfg, const char *assignment)
{
    const char *eq = strchr(assignment, '=');
    if (!eq || eq == assignment)
        return ncmi_error_set("--set: expected key=value, got '%s'", assignment);
    char key[512];
    size_t kl = (size_t)(eq - assignment);
    if (kl >= sizeof key) return ncmi_error_set("--set: key too long");
    memcpy(key, assignment, kl);
    key[kl] = 0;
    /* trim spaces around the key */
    char *ks = key;
    while (*ks == ' ') ks++;
    for (char *e = ks + strlen(ks); e > ks && e[-1] == ' '; e--) e[-1] = 0;
    if (!ncmi_cfg_find(s, ks) && !is_section(s, ks)) {
        char sug[256];
        if (suggest(s, ks, sug, sizeof sug))
            return ncmi_error_set("--set: unknown key '%s' (did you mean '%s'?)", ks, sug);
        return ncmi_error_set("--set: unknown key '%s'", ks);
    }
    const char *val = eq + 1;
    yaml_document_t doc;
    int r = parse_doc(&doc, val, strlen(val), "--set", 0);
    if (r < 0) {
        /* parse_doc said "--set: invalid YAML value: <problem>" */
        const char *problem = strstr(ncmi_error(), "invalid YAML value: ");
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", problem ? problem + 20 : ncmi_error());
        return ncmi_error_set("--set: key '%s': invalid YAML value '%s': %s", ks, val, msg);
    }
    load_ctx c = {s, cfg, "--set", 0, &doc, NULL};
    int rc;
    if (r == 0) {
        /* empty value: apply a null scalar */
        yaml_document_t empty;
        int e = parse_doc(&empty, "~", 1, "--set", 0);
        NCMI_CHECK(e == 1, "libyaml cannot parse '~'");
        c.doc = &empty;
        rc = apply(&c, ks, NULL, yaml_document_get_root_node(&empty));
        yaml_document_delete(&empty);
        return rc;
    }
    rc = apply(&c, ks, NULL, yaml_document_get_root_node(&doc));
    yaml_document_delete(&doc);
    return rc;
}

static int field_equal(const ncmi_cfg_key *k, const void *a, const void *b)
{
    switch (k->type) {
    case NCMI_CFG_INT:
    case NCMI_CFG_BOOL:
    case NCMI_CFG_ENUM: return *CFIELD(a, k, int) == *CFIELD(b, k, int);
    case NCMI_CFG_FLOAT: {
        double x = *CFIELD(a, k, double), y = *CFIELD(b, k, double);
        return x == y || (isnan(x) && isnan(y));
    }
    case NCMI_CFG_STRING: {
        const char *x = *CFIELD(a, k, char *), *y = *CFIELD(b, k, char *);
        return !strcmp(x ? x : "", y ? y : "");
    }
    case NCMI_CFG_INT_LIST: {
        const ncmi_cfg_ints *x = CFIELD(a, k, ncmi_cfg_ints), *y = CFIELD(b, k, ncmi_cfg_ints);
        return x->n == y->n && (!x->n || !memcmp(x->v, y->v, (size_t)x->n * sizeof *x->v));
    }
    case NCMI_CFG_FLOAT_LIST: {
        const ncmi_cfg_floats *x = CFIELD(a, k, ncmi_cfg_floats), *y = CFIELD(b, k, ncmi_cfg_floats);
        if (x->n != y->n) return 0;
        for (int i = 0; i < x->n; i++)
            if (x->v[i] != y->v[i]) return 0;
        return 1;
    }
    case NCMI_CFG_STRING_LIST: {
        const ncmi_cfg_strings *x = CFIELD(a, k, ncmi_cfg_strings), *y = CFIELD(b, k, ncmi_cfg_strings);
        if (x->n != y->n) return 0;
        for (int i = 0; i < x->n; i++)
            if (strcmp(x->v[i], y->v[i])) return 0;
        return 1;
    }
    }
    return 0;
}

int ncmi_cfg_diff(const ncmi_cfg_schema *s, const void *a, const void *b,
                  const char *const *ignore, char *buf, size_t n)
{
    int count = 0;
    if (n) buf[0] = 0;
    for (int i = 0; i < s->n_keys; i++) {
        const ncmi_cfg_key *k = &s->keys[i];
        int skip = 0;
        for (int j = 0; ignore && ignore[j]; j++)
            if (!strcmp(ignore[j], k->key)) skip = 1;
        if (skip || field_equal(k, a, b)) continue;
        size_t l = strlen(buf);
        if (l < n) snprintf(buf + l, n - l, "%s%s", count ? ", " : "", k->key);
        count++;
    }
    return count;
}

/* ------------------------------------------------------------------ */
/* writing                                                             */

typedef struct strbuf { char *p; size_t len, cap; } strbuf;

static void sb_add(strbuf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        while (b->len + n + 1 > b->cap) b->cap = b->cap ? b->cap * 2 : 1024;
        b->p = realloc(b->p, b->cap);
        NCMI_CHECK(b->p != NULL, "out of memory");
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

static int sb_write(void *data, unsigned char *buffer, size_t size)
{
    sb_add(data, (const char *)buffer, size);
    return 1;
}

/* Would this string read back as something other than a string? */
static int needs_quotes(const char *t)
{
    long long i;
    double d;
    int b;
    if (!*t || !strcmp(t, "~") || !strcasecmp(t, "null")) return 1;
    if (!parse_ll(t, &i) || !parse_double(t, &d) || !parse_bool(t, &b)) return 1;
    if (!strcasecmp(t, "y") || !strcasecmp(t, "n")) return 1;
    return 0;
}

static int emit_scalar(yaml_emitter_t *em, const char *text, int quoted)
{
    yaml_event_t ev;
    yaml_scalar_event_initialize(&ev, NULL, NULL, (yaml_char_t *)text, (int)strlen(text), !quoted,
                                 1, quoted ? YAML_DOUBLE_QUOTED_SCALAR_STYLE : YAML_ANY_SCALAR_STYLE);
    return yaml_emitter_emit(em, &ev) ? 0 : -1;
}

static int emit_simple(yaml_emitter_t *em, yaml_event_type_t t)
{
    yaml_event_t ev;
    int ok = 0;
    switch (t) {
    case YAML_MAPPING_START_EVENT:
        ok = yaml_mapping_start_event_initialize(&ev, NULL, NULL, 1, YAML_BLOCK_MAPPING_STYLE);
        break;
    case YAML_MAPPING_END_EVENT: ok = yaml_mapping_end_event_initialize(&ev); break;
    case YAML_SEQUENCE_START_EVENT:
        ok = yaml_sequence_start_event_initialize(&ev, NULL, NULL, 1, YAML_FLOW_SEQUENCE_STYLE);
        break;
    case YAML_SEQUENCE_END_EVENT: ok = yaml_sequence_end_event_initialize(&ev); break;
    default: return -1;
    }
    if (!ok) return -1;
    return yaml_emitter_emit(em, &ev) ? 0 : -1;
}

static int emit_value(yaml_emitter_t *em, const ncmi_cfg_key *k, const void *cfg)
{
    char buf[64];
    switch (k->type) {
    case NCMI_CFG_INT:
        snprintf(buf, sizeof buf, "%d", *CFIELD(cfg, k, int));
        return emit_scalar(em, buf, 0);
    case NCMI_CFG_FLOAT:
        fmt_double(*CFIELD(cfg, k, double), buf, sizeof buf);
        return emit_scalar(em, buf, 0);
    case NCMI_CFG_BOOL: return emit_scalar(em, *CFIELD(cfg, k, int) ? "true" : "false", 0);
    case NCMI_CFG_STRING: {
        const char *t = *CFIELD(cfg, k, char *);
        if (!t) t = "";
        return emit_scalar(em, t, needs_quotes(t));
    }
    case NCMI_CFG_ENUM: return emit_scalar(em, ncmi_cfg_enum_name(k, cfg), 0);
    case NCMI_CFG_INT_LIST: {
        const ncmi_cfg_ints *l = CFIELD(cfg, k, ncmi_cfg_ints);
        if (emit_simple(em, YAML_SEQUENCE_START_EVENT)) return -1;
        for (int i = 0; i < l->n; i++) {
            snprintf(buf, sizeof buf, "%d", l->v[i]);
            if (emit_scalar(em, buf, 0)) return -1;
        }
        return emit_simple(em, YAML_SEQUENCE_END_EVENT);
    }
    case NCMI_CFG_FLOAT_LIST: {
        const ncmi_cfg_floats *l = CFIELD(cfg, k, ncmi_cfg_floats);
        if (emit_simple(em, YAML_SEQUENCE_START_EVENT)) return -1;
        for (int i = 0; i < l->n; i++) {
            fmt_double(l->v[i], buf, sizeof buf);
            if (emit_scalar(em, buf, 0)) return -1;
        }
        return emit_simple(em, YAML_SEQUENCE_END_EVENT);
    }
    case NCMI_CFG_STRING_LIST: {
        const ncmi_cfg_strings *l = CFIELD(cfg, k, ncmi_cfg_strings);
        if (emit_simple(em, YAML_SEQUENCE_START_EVENT)) return -1;
        for (int i = 0; i < l->n; i++)
            if (emit_scalar(em, l->v[i], needs_quotes(l->v[i]))) return -1;
        return emit_simple(em, YAML_SEQUENCE_END_EVENT);
    }
    }
    return -1;
}

/* Emit the keys under `prefix` ("" for the top level) as a block mapping,
 * in schema order, grouping sections where their first key appears. */
static int emit_level(yaml_emitter_t *em, const ncmi_cfg_schema *s, const void *cfg,
                      const char *prefix)
{
    size_t pl = strlen(prefix);
    if (emit_simple(em, YAML_MAPPING_START_EVENT)) return -1;
    for (int i = 0; i < s->n_keys; i++) {
        const char *key = s->keys[i].key;
        if (pl && (strncmp(key, prefix, pl) || key[pl] != '.')) continue;
        const char *rest = pl ? key + pl + 1 : key;
        const char *dot = strchr(rest, '.');
        size_t cl = dot ? (size_t)(dot - rest) : strlen(rest);
        /* emitted already (an earlier key of the same section)? */
        int dup = 0;
        for (int j = 0; j < i && !dup; j++) {
            const char *kj = s->keys[j].key;
            if (pl && (strncmp(kj, prefix, pl) || kj[pl] != '.')) continue;
            const char *rj = pl ? kj + pl + 1 : kj;
            if (!strncmp(rj, rest, cl) && (rj[cl] == '.' || rj[cl] == 0)) dup = 1;
        }
        if (dup) continue;
        char comp[256];
        if (cl >= sizeof comp) return -1;
        memcpy(comp, rest, cl);
        comp[cl] = 0;
        if (emit_scalar(em, comp, 0)) return -1;
        if (!dot) {
            if (emit_value(em, &s->keys[i], cfg)) return -1;
        } else {
            char sub[512];
            snprintf(sub, sizeof sub, "%.*s", (int)(pl ? pl + 1 + cl : cl), key);
            if (emit_level(em, s, cfg, sub)) return -1;
        }
    }
    return emit_simple(em, YAML_MAPPING_END_EVENT);
}

char *ncmi_cfg_to_yaml(const ncmi_cfg_schema *s, const void *cfg)
{
    strbuf b = {0};
    yaml_emitter_t em;
    yaml_event_t ev;
    if (!yaml_emitter_initialize(&em)) {
        ncmi_error_set("cannot initialise the YAML emitter");
        return NULL;
    }
    yaml_emitter_set_output(&em, sb_write, &b);
    yaml_emitter_set_unicode(&em, 1);
    yaml_emitter_set_width(&em, 100);
    int ok = yaml_stream_start_event_initialize(&ev, YAML_UTF8_ENCODING) && yaml_emitter_emit(&em, &ev) &&
             yaml_document_start_event_initialize(&ev, NULL, NULL, NULL, 1) &&
             yaml_emitter_emit(&em, &ev) && emit_level(&em, s, cfg, "") == 0 &&
             yaml_document_end_event_initialize(&ev, 1) && yaml_emitter_emit(&em, &ev) &&
             yaml_stream_end_event_initialize(&ev) && yaml_emitter_emit(&em, &ev) &&
             yaml_emitter_flush(&em);
    if (!ok) {
        ncmi_error_set("cannot write YAML: %s", em.problem ? em.problem : "emitter error");
        yaml_emitter_delete(&em);
        free(b.p);
        return NULL;
    }
    yaml_emitter_delete(&em);
    return b.p;
}

int ncmi_cfg_write_yaml(const ncmi_cfg_schema *s, const void *cfg, const char *path)
{
    char *y = ncmi_cfg_to_yaml(s, cfg);
    if (!y) return -1;
    char tmp[4200];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp) {
        free(y);
        return ncmi_error_set("%s: path too long", path);
    }
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        free(y);
        return ncmi_error_set("%s: cannot write: %s", path, strerror(errno));
    }
    int ok = fprintf(f, "# %s, resolved (defaults + config file + --set overrides)\n", s->name) > 0 &&
             fwrite(y, 1, strlen(y), f) == strlen(y);
    ok = (fclose(f) == 0) && ok;
    free(y);
    if (!ok || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return ncmi_error_set("%s: cannot write: %s", path, strerror(e));
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* schema table                                                        */

static void type_text(const ncmi_cfg_key *k, char *buf, size_t sz)
{
    char r[160];
    range_text(k, r, sizeof r);
    switch (k->type) {
    case NCMI_CFG_INT: snprintf(buf, sz, "int"); break;
    case NCMI_CFG_FLOAT: snprintf(buf, sz, "float"); break;
    case NCMI_CFG_BOOL: snprintf(buf, sz, "bool"); break;
    case NCMI_CFG_STRING: snprintf(buf, sz, "string"); break;
    case NCMI_CFG_ENUM: {
        buf[0] = 0;
        for (int i = 0; k->choices[i]; i++) {
            size_t l = strlen(buf);
            snprintf(buf + l, sz - l, "%s%s", i ? "|" : "", k->choices[i]);
        }
        return;
    }
    case NCMI_CFG_INT_LIST: snprintf(buf, sz, "list of int"); break;
    case NCMI_CFG_FLOAT_LIST: snprintf(buf, sz, "list of float"); break;
    case NCMI_CFG_STRING_LIST: snprintf(buf, sz, "list of string"); break;
    }
    size_t l = strlen(buf);
    if (k->list_len) {
        snprintf(buf + l, sz - l, " [%d]", k->list_len);
        l = strlen(buf);
    }
    if (r[0]) snprintf(buf + l, sz - l, ", %s", r);
}

/* '|' would end a markdown table cell */
static void md_escape(const char *in, char *out, size_t n)
{
    size_t o = 0;
    for (; *in && o + 3 < n; in++) {
        if (*in == '|') out[o++] = '\\';
        out[o++] = *in;
    }
    out[o] = 0;
}

void ncmi_cfg_print_schema(const ncmi_cfg_schema *s, FILE *f, int markdown)
{
    if (markdown) {
        fprintf(f, "| key | type | default | description |\n|---|---|---|---|\n");
        for (int i = 0; i < s->n_keys; i++) {
            const ncmi_cfg_key *k = &s->keys[i];
            char t[512];
            type_text(k, t, sizeof t);
            const char *d = k->def && k->def[0] ? k->def : "\"\"";
            char te[1024];
            md_escape(t, te, sizeof te);
            fprintf(f, "| `%s` | %s | `%s` | %s |\n", k->key, te, d, k->help);
        }
        return;
    }
    int wk = 3, wt = 4, wd = 7;
    for (int i = 0; i < s->n_keys; i++) {
        const ncmi_cfg_key *k = &s->keys[i];
        char t[512];
        type_text(k, t, sizeof t);
        const char *d = k->def && k->def[0] ? k->def : "\"\"";
        if ((int)strlen(k->key) > wk) wk = (int)strlen(k->key);
        if ((int)strlen(t) > wt) wt = (int)strlen(t);
        if ((int)strlen(d) > wd) wd = (int)strlen(d);
    }
    fprintf(f, "%-*s  %-*s  %-*s  %s\n", wk, "key", wt, "type", wd, "default", "description");
    for (int i = 0; i < s->n_keys; i++) {
        const ncmi_cfg_key *k = &s->keys[i];
        char t[512];
        type_text(k, t, sizeof t);
        const char *d = k->def && k->def[0] ? k->def : "\"\"";
        fprintf(f, "%-*s  %-*s  %-*s  %s\n", wk, k->key, wt, t, wd, d, k->help);
    }
}
