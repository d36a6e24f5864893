/* ncmi error reporting, in the manner of libvips: fallible functions return
 * 0 on success and a negative value on failure, and leave a message in a
 * thread-local buffer that ncmi_error() returns. */
#ifndef NCMI_ERROR_H
#define NCMI_ERROR_H

#include <stdarg.h>

/* Set the thread-local error message (printf-style). Always returns -1 so
 * callers can write `return ncmi_error_set(...)`. */
int ncmi_error_set(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Prefix the current message with more context: "<ctx>: <old message>". */
int ncmi_error_prefix(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The last message set on this thread ("" if none). */
const char *ncmi_error(void);
void ncmi_error_clear(void);

/* Invariant violation inside the library (a programming error, e.g. an op
 * called with shapes that cannot be combined): print the message with
 * file:line and abort. */
#ifdef __clang_analyzer__
/* clang-tidy's analyzer sees one file at a time: tell it that these always
 * return -1, so that `rc = ncmi_error_set(...)` paths are known to fail
 * (otherwise it reports garbage values on paths that cannot happen) */
#define ncmi_error_set(...) (ncmi_error_set(__VA_ARGS__), -1)
#define ncmi_error_prefix(...) (ncmi_error_prefix(__VA_ARGS__), -1)
#endif

void ncmi_fatal_at(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4), noreturn));
#define NCMI_CHECK(cond, ...) \
    do { if (!(cond)) ncmi_fatal_at(__FILE__, __LINE__, __VA_ARGS__); } while (0)

#endif
