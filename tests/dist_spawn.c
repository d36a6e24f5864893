/* Spawning ranks for the data-parallel tests (dist_spawn.h). */
#include "dist_spawn.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../nn/error.h"
#include "../nn/safetensors.h"
#include "test.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int dist_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return 29500;
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    socklen_t len = sizeof a;
    int port = 29500;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return strdup("");
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)(n > 0 ? n : 0) + 1);
    size_t r = b && n > 0 ? fread(b, 1, (size_t)n, f) : 0;
    if (b) b[r] = 0;
    fclose(f);
    // cppcheck-suppress memleak ; false positive: b is returned
    return b ? b : strdup("");
}

static void put_env(const char *kv)
{
    const char *eq = strchr(kv, '=');
    if (!eq) return;
    char key[256];
    snprintf(key, sizeof key, "%.*s", (int)(eq - kv), kv);
    setenv(key, eq + 1, 1);
}

static void spawn(int W, int port, const char *worker, const char *cmd, const char *const *env, double limit_s,
                  dist_proc *res)
{
    static int serial;
    int id = serial++;
    pid_t *pid = calloc((size_t)W, sizeof *pid);
    char **paths = calloc((size_t)W, sizeof *paths);
    double t0 = now_s();
    fflush(stdout);
    fflush(stderr);
    for (int r = 0; r < W; r++) {
        paths[r] = strdup(test_tmp_path("dist_%d_rank%d.out", id, r));
        res[r] = (dist_proc){-2, NULL, 0};
        pid[r] = fork();
        if (pid[r] == 0) {
            int fd = open(paths[r], O_WRONLY | O_CREAT | O_TRUNC, 0644);
            if (fd >= 0) {
                dup2(fd, 1);
                dup2(fd, 2);
                close(fd);
            }
            /* only the torchrun variables: a test run inside srun or mpirun
             * must not leak its own ranks into the children */
            static const char *const other[] = {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "PMI_RANK",
                                                "PMI_SIZE", "SLURM_PROCID", "NCMI_TEST_WORKER",
                                                "NCMI_DIST_PORT", "TORCHELASTIC_USE_AGENT_STORE"};
            for (size_t k = 0; k < sizeof other / sizeof other[0]; k++) unsetenv(other[k]);
            char v[32];
            snprintf(v, sizeof v, "%d", r);
            setenv("RANK", v, 1);
            setenv("LOCAL_RANK", v, 1);
            snprintf(v, sizeof v, "%d", W);
            setenv("WORLD_SIZE", v, 1);
            snprintf(v, sizeof v, "%d", port);
            setenv("MASTER_PORT", v, 1);
            setenv("MASTER_ADDR", "127.0.0.1", 1);
            if (!getenv("OMP_NUM_THREADS")) setenv("OMP_NUM_THREADS", "1", 1);
            for (int k = 0; env && env[k]; k++) {
                int rk;
                const char *kv = env[k];
                if (kv[0] == 'R' && sscanf(kv + 1, "%d:", &rk) == 1) {
                    if (rk != r) continue;
                    kv = strchr(kv, ':') + 1;
                }
                put_env(kv);
            }
            if (worker) {
                setenv("NCMI_TEST_WORKER", worker, 1);
                execl("/proc/self/exe", "test_ncmi", (char *)NULL);
            } else {
                execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
            }
            _exit(127);
        }
    }
    int left = W;
    while (left > 0) {
        for (int r = 0; r < W; r++) {
            if (pid[r] <= 0) continue;
            int st;
            pid_t w = waitpid(pid[r], &st, WNOHANG);
            if (w == pid[r]) {
                res[r].status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
                res[r].seconds = now_s() - t0;
                pid[r] = 0;
                left--;
            }
        }
        if (left > 0 && now_s() - t0 > limit_s) {
            for (int r = 0; r < W; r++)
                if (pid[r] > 0) {
                    kill(pid[r], SIGKILL);
                    waitpid(pid[r], NULL, 0);
                    res[r].status = -2;
                    res[r].seconds = now_s() - t0;
                    pid[r] = 0;
                    left--;
                }
        }
        if (left > 0) usleep(5000);
    }
    for (int r = 0; r < W; r++) {
        res[r].out = slurp(paths[r]);
        free(paths[r]);
    }
    free(paths);
    free(pid);
}

void dist_spawn_sh(int W, int port, const char *cmd, const char *const *env, double limit_s, dist_proc *res)
{
    spawn(W, port, NULL, cmd, env, limit_s, res);
}

void dist_spawn_worker(int W, int port, const char *worker, const char *const *env, double limit_s,
                       dist_proc *res)
{
    spawn(W, port, worker, NULL, env, limit_s, res);
}

void dist_procs_free(dist_proc *res, int W)
{
    for (int r = 0; r < W; r++) {
        free(res[r].out);
        res[r].out = NULL;
    }
}

double dist_ckpt_rel_diff(const char *path_a, const char *path_b, int weights_only, char *worst, size_t n)
{
    nn_safetensors a, b;
    snprintf(worst, n, "-");
    if (nn_st_open(&a, path_a)) {
        snprintf(worst, n, "%s", ncmi_error());
        return -1;
    }
    if (nn_st_open(&b, path_b)) {
        snprintf(worst, n, "%s", ncmi_error());
        nn_st_close(&a);
        return -1;
    }
    double w = 0;
    for (int i = 0; i < b.n && w >= 0; i++) {
        const nn_st_entry *eb = &b.entries[i], *ea = nn_st_find(&a, eb->name);
        if (eb->dtype != NN_ST_F32 || (weights_only && !strncmp(eb->name, "optim", 5))) continue;
        if (!ea || ea->numel != eb->numel) {
            snprintf(worst, n, "tensor %s missing or of another size in %s", eb->name, path_a);
            w = -1;
            break;
        }
        float *x = malloc((eb->numel ? eb->numel : 1) * sizeof *x), *y = malloc((eb->numel ? eb->numel : 1) * sizeof *y);
        if (!x || !y || nn_st_read_f32(&a, eb->name, x, eb->numel, -1, NULL) ||
            nn_st_read_f32(&b, eb->name, y, eb->numel, -1, NULL)) {
            snprintf(worst, n, "cannot read %s", eb->name);
            w = -1;
        } else {
            double num = 0, den = 0;
            for (size_t k = 0; k < eb->numel; k++) {
                double d = (double)x[k] - (double)y[k];
                num += d * d;
                den += (double)y[k] * (double)y[k];
            }
            double r = den > 0 ? sqrt(num / den) : sqrt(num);
            if (r > w || (r == w && !strcmp(worst, "-"))) {
                w = r;
                snprintf(worst, n, "%s", eb->name);
            }
        }
        free(x);
        free(y);
    }
    nn_st_close(&a);
    nn_st_close(&b);
    return w;
}
