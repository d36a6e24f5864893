#include "error.h"
#undef ncmi_error_set /* the analyzer-only macros of error.h */
#undef ncmi_error_prefix

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static _Thread_local char err_buf[2048];

int ncmi_error_set(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err_buf, sizeof err_buf, fmt, ap);
    va_end(ap);
    return -1;
}

int ncmi_error_prefix(const char *fmt, ...)
{
    char old[sizeof err_buf];
    memcpy(old, err_buf, sizeof old);
    char pre[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pre, sizeof pre, fmt, ap);
    va_end(ap);
    if (old[0])
        snprintf(err_buf, sizeof err_buf, "%s: %s", pre, old);
    else
        snprintf(err_buf, sizeof err_buf, "%s", pre);
    return -1;
}

const char *ncmi_error(void) { return err_buf; }

void ncmi_error_clear(void) { err_buf[0] = 0; }

void ncmi_fatal_at(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "ncmi: internal error at %s:%d: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
    abort();
}
