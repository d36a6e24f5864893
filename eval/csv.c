/* RFC 4180 CSV reader (see csv.h). */
#include "csv.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "../nn/error.h"

int eval_csv_open(eval_csv *r, const char *path)
{
    memset(r, 0, sizeof *r);
    r->f = fopen(path, "rb");
    if (!r->f) return ncmi_error_set("%s: cannot open: %s", path, strerror(errno));
    r->path = strdup(path);
    r->next_line = 1;
    if (!r->path) {
        fclose(r->f);
        r->f = NULL;
        return ncmi_error_set("%s: out of memory", path);
    }
    return 0;
}

void eval_csv_close(eval_csv *r)
{
    if (r->f) fclose(r->f);
    free(r->path);
    free(r->fields);
    free(r->buf);
    free(r->offs);
    memset(r, 0, sizeof *r);
}

static int put_char(eval_csv *r, size_t *len, char c)
{
    if (*len + 1 >= r->buf_cap) {
        size_t cap = r->buf_cap ? r->buf_cap * 2 : 256;
        char *b = realloc(r->buf, cap);
        if (!b) return ncmi_error_set("%s: out of memory", r->path);
        r->buf = b;
        r->buf_cap = cap;
    }
    r->buf[(*len)++] = c;
    return 0;
}

static int end_field(eval_csv *r, size_t *len, int *nf)
{
    if (put_char(r, len, '\0') != 0) return -1;
    if (*nf + 1 >= r->offs_cap) {
        int cap = r->offs_cap ? r->offs_cap * 2 : 16;
        size_t *o = realloc(r->offs, (size_t)cap * sizeof *o);
        if (!o) return ncmi_error_set("%s: out of memory", r->path);
        r->offs = o;
        r->offs_cap = cap;
    }
    (*nf)++;
    r->offs[*nf] = *len; /* start of the next field */
    return 0;
}

int eval_csv_next(eval_csv *r)
{
    if (!r->f) return 0;
    if (!r->started) {
        r->started = 1;
        int a = getc(r->f), b = a == 0xEF ? getc(r->f) : EOF, c = b == 0xBB ? getc(r->f) : EOF;
        if (!(a == 0xEF && b == 0xBB && c == 0xBF)) {
            /* not a BOM: push what we read back (at most 3 chars; ungetc guarantees only 1,
             * so re-open instead) */
            rewind(r->f);
        }
    }
    for (;;) {
        size_t len = 0;
        int nf = 0;
        if (!r->offs) {
            r->offs = malloc(16 * sizeof *r->offs);
            if (!r->offs) return ncmi_error_set("%s: out of memory", r->path);
            r->offs_cap = 16;
        }
        r->offs[0] = 0;
        int c = getc(r->f);
        if (c == EOF) return 0;
        int start_line = r->next_line;
        if (c == '\n') { /* empty line */
            r->next_line++;
            continue;
        }
        if (c == '\r') {
            int d = getc(r->f);
            if (d == '\n' || d == EOF) {
                r->next_line++;
                continue;
            }
            ungetc(d, r->f);
        }
        /* parse one record; c is its first character */
        int in_quotes = 0, field_quoted = 0, field_len = 0, after_quote = 0;
        for (;;) {
            if (c == EOF) {
                if (in_quotes)
                    return ncmi_error_set("%s: line %d: unterminated quoted field (opened on line %d)",
                                          r->path, r->next_line, start_line);
                if (end_field(r, &len, &nf) != 0) return -1;
                break;
            }
            if (in_quotes) {
                if (c == '"') {
                    int d = getc(r->f);
                    if (d == '"') {
                        if (put_char(r, &len, '"') != 0) return -1;
                    } else {
                        in_quotes = 0;
                        after_quote = 1;
                        ungetc(d, r->f);
                    }
                } else {
                    if (c == '\n') r->next_line++;
                    if (put_char(r, &len, (char)c) != 0) return -1;
                }
            } else if (c == ',') {
                if (end_field(r, &len, &nf) != 0) return -1;
                field_quoted = field_len = after_quote = 0;
                c = getc(r->f);
                continue;
            } else if (c == '\n' || c == '\r') {
                if (c == '\r') {
                    int d = getc(r->f);
                    if (d != '\n') {
                        if (d != EOF) ungetc(d, r->f);
                        /* a lone CR inside an unquoted field: keep it */
                        if (put_char(r, &len, '\r') != 0) return -1;
                        field_len++;
                        c = getc(r->f);
                        continue;
                    }
                }
                r->next_line++;
                if (end_field(r, &len, &nf) != 0) return -1;
                break;
            } else if (c == '"' && field_len == 0 && !field_quoted) {
                in_quotes = field_quoted = 1;
            } else {
                if (after_quote) /* "ab"c */
                    return ncmi_error_set("%s: line %d: text after the closing quote of field %d",
                                          r->path, r->next_line, nf + 1);
                /* a quote inside an unquoted field is kept literally (as pandas does) */
                if (put_char(r, &len, (char)c) != 0) return -1;
                field_len++;
            }
            c = getc(r->f);
        }
        /* fields array */
        free(r->fields);
        r->fields = malloc((size_t)nf * sizeof *r->fields);
        if (!r->fields) return ncmi_error_set("%s: out of memory", r->path);
        for (int i = 0; i < nf; i++) r->fields[i] = r->buf + r->offs[i];
        r->nfields = nf;
        r->row++;
        r->line = start_line;
        return 1;
    }
}

int eval_csv_column(char *const *fields, int nfields, const char *name)
{
    for (int i = 0; i < nfields; i++)
        if (strcmp(fields[i], name) == 0) return i;
    return -1;
}

void eval_csv_write_field(FILE *f, const char *s)
{
    if (!strpbrk(s, ",\"\r\n")) {
        fputs(s, f);
        return;
    }
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"') fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}
