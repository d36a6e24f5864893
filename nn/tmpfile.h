/* Temporary files of the write-then-rename outputs. */
#ifndef NCMI_TMPFILE_H
#define NCMI_TMPFILE_H

#include <stddef.h>

/* Remove the temporaries of `path` (path.tmp.<pid> and path.tmp.<pid>.<ext>)
 * that a process which no longer runs on this machine left behind: a run
 * killed (SIGKILL, power loss) while writing the file. Called after the file
 * was renamed into place, so that a rerun does not accumulate them. A
 * temporary of a live process is left alone. Best effort: no error. */
void ncmi_tmp_sweep(const char *path);

/* Write the n bytes of text to path through a temporary name and a rename:
 * "<path>.tmp.<pid>", or "<path>.tmp.<host>.<pid>" with host_tag (files that
 * shards on several machines may write at once). On failure the temporary is
 * removed, path is left as it was, and the error (ncmi_error) names path and
 * the cause (ENOSPC, EROFS, ...). Returns 0 or -1. */
int ncmi_write_text_atomic(const char *path, const char *text, size_t n, int host_tag);

#endif
