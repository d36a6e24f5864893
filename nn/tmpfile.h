/* Temporary files of the write-then-rename outputs. */
#ifndef NCMI_TMPFILE_H
#define NCMI_TMPFILE_H

/* Remove the temporaries of `path` (path.tmp.<pid> and path.tmp.<pid>.<ext>)
 * that a process which no longer runs on this machine left behind: a run
 * killed (SIGKILL, power loss) while writing the file. Called after the file
 * was renamed into place, so that a rerun does not accumulate them. A
 * temporary of a live process is left alone. Best effort: no error. */
void ncmi_tmp_sweep(const char *path);

#endif
