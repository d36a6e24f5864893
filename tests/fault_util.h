/* Helpers of the fault-injection tests (tests/test_cohort.c, tests/test_faults.c):
 * run a command and SIGKILL it at a given moment, compare two output trees
 * byte for byte, count leftover temporary files, a seeded uniform generator,
 * peak memory of a child process. */
#ifndef NCMI_TESTS_FAULT_UTIL_H
#define NCMI_TESTS_FAULT_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* whole file, NUL-terminated (malloc'd; length in *n); NULL when unreadable */
char *fu_slurp(const char *path, size_t *n);
/* text into path; 0 or -1 */
int fu_write_text(const char *path, const char *text);
int fu_exists(const char *path);
/* build/tools/make_slides beside the ncmi under test, NULL when not built */
const char *fu_make_slides_bin(void);
double fu_now_s(void);
/* splitmix64 step as a uniform double in [0, 1) */
double fu_splitmix01(uint64_t *s);

/* Run `cmd` (through sh, in its own process group, output discarded) and
 * SIGKILL the group after `delay` seconds unless it exits first. Returns 1
 * when it was killed, 0 when it finished first (exit status in *status), -1
 * on error. */
int fu_run_and_kill(const char *cmd, double delay, int *status);

/* Every regular file under ref compared with the same path under dir (status
 * files, missing_slides.csv and names containing one of the NULL-terminated
 * `skip` substrings aside; the last column (seconds) of log.csv lines
 * ignored). Returns the number that differ or are missing; *n_compared gets
 * the number compared and `first` (n bytes) the first difference. */
int fu_tree_compare(const char *ref, const char *dir, const char *const *skip, int *n_compared, char *first,
                    size_t n);
/* regular files under dir whose name contains ".tmp." (written to a
 * temporary name and never renamed); the first one's path into first */
int fu_tree_count_tmp(const char *dir, char *first, size_t n);
/* bytes of the regular files under dir, each rounded up to 4 KiB pages */
long long fu_tree_bytes(const char *dir);

/* Run `cmd` through sh and return its exit status (-1 when killed by a
 * signal: the signal number in *sig), its output (malloc'd) in *out and the
 * peak resident memory of the process tree's largest process, in MB (from
 * wait4's rusage of the sh child, which RUSAGE_CHILDREN-style counts the
 * largest waited-for descendant). */
int fu_run_peak(const char *cmd, char **out, double *peak_mb, int *sig);

#endif
