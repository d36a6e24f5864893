/* Temporary files of the write-then-rename outputs: see tmpfile.h. */
#include "tmpfile.h"

#include "error.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void ncmi_tmp_sweep(const char *path)
{
    const char *slash = strrchr(path, '/');
    char dir[4096];
    const char *base = slash ? slash + 1 : path;
    if (slash) {
        size_t n = (size_t)(slash - path);
        if (n >= sizeof dir) return;
        memcpy(dir, path, n);
        dir[n] = 0;
        if (n == 0) snprintf(dir, sizeof dir, "/");
    } else {
        snprintf(dir, sizeof dir, ".");
    }
    size_t bl = strlen(base);
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    long self = (long)getpid();
    while ((e = readdir(d)) != NULL) {
        const char *nm = e->d_name;
        if (strncmp(nm, base, bl) != 0 || strncmp(nm + bl, ".tmp.", 5) != 0) continue;
        char *end;
        errno = 0;
        long pid = strtol(nm + bl + 5, &end, 10);
        if (errno || end == nm + bl + 5 || pid <= 0 || pid == self) continue;
        if (*end && *end != '.') continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue; /* alive (or not ours to ask) */
        char full[8192];
        snprintf(full, sizeof full, "%s/%s", dir, nm);
        unlink(full);
    }
    closedir(d);
}

int ncmi_write_text_atomic(const char *path, const char *text, size_t n, int host_tag)
{
    char host[64] = "h", tmp[4400];
    if (host_tag) {
        gethostname(host, sizeof host - 1);
        host[sizeof host - 1] = 0;
        snprintf(tmp, sizeof tmp, "%s.tmp.%s.%ld", path, host, (long)getpid());
    } else {
        snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    }
    FILE *f = fopen(tmp, "w");
    if (!f) return ncmi_error_set("%s: cannot create: %s", tmp, strerror(errno));
    int bad = fwrite(text, 1, n, f) != n, e = bad ? errno : 0;
    if (fclose(f) && !bad) {
        bad = 1;
        e = errno;
    }
    if (!bad && rename(tmp, path)) {
        bad = 1;
        e = errno;
    }
    if (bad) {
        unlink(tmp);
        return ncmi_error_set("%s: cannot write: %s", path, e ? strerror(e) : "write error");
    }
    return 0;
}
