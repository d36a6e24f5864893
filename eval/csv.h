/* A small RFC 4180 CSV reader shared by the manifest and predictions readers
 * (and later by any other table ncmi reads).
 *
 *   - fields are separated by ',' and rows by "\n" or "\r\n";
 *   - a field may be quoted: "a, b" and "say ""hi""" (a doubled quote is a
 *     quote); quoted fields may contain commas and newlines;
 *   - a UTF-8 byte-order mark at the start of the file is skipped;
 *   - empty lines (no characters at all) are skipped, also at the end;
 *   - a quote inside an unquoted field is kept as a character; text after
 *     the closing quote of a quoted field is an error;
 *   - unquoted fields are returned as they are (no trimming) except that a
 *     trailing '\r' before the newline is dropped.
 *
 * Usage:
 *   eval_csv r;
 *   if (eval_csv_open(&r, path) != 0) return -1;       // error names the file
 *   while ((rc = eval_csv_next(&r)) == 1) {
 *       r.nfields, r.fields[i], r.line                 // valid until the next call
 *   }
 *   eval_csv_close(&r);                                // rc == -1: malformed (message set)
 */
#ifndef NCMI_EVAL_CSV_H
#define NCMI_EVAL_CSV_H

#include <stdio.h>

typedef struct eval_csv {
    FILE *f;
    char *path;      /* copy of the path, for messages */
    char **fields;   /* [nfields] NUL-terminated, owned by the reader */
    int nfields;
    int row;         /* 1-based index of the row just read (header = row 1) */
    int line;        /* 1-based line of the file where that row starts */
    /* internal */
    char *buf;
    size_t buf_cap;
    size_t *offs;
    int offs_cap;
    int next_line;
    int started;
} eval_csv;

/* 0, or -1 with "<path>: cannot open: <strerror>". */
int eval_csv_open(eval_csv *r, const char *path);
/* 1 = a row was read, 0 = end of file, -1 = error ("<path>: line N: unterminated quoted field"
 * or text after a closing quote). */
int eval_csv_next(eval_csv *r);
void eval_csv_close(eval_csv *r);

/* Index of the column named `name` in a header row (exact match), or -1. */
int eval_csv_column(char *const *fields, int nfields, const char *name);

/* Writes a field to f, quoting it when it contains ',', '"', '\r' or '\n'. */
void eval_csv_write_field(FILE *f, const char *s);

#endif
