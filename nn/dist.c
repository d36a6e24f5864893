/* Process groups, host collectives over a TCP ring, NCCL dispatch and the
 * bucketed gradient reducer (API and rationale in nn/dist.h). */
#include "dist.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "cuda.h"
#include "dist_nccl.h"
#include "error.h"

#define DIST_MAGIC 0x4e434d49u /* "NCMI" */
#define DIST_PROTO 1u
#define DEFAULT_PORT 29500
#define DEFAULT_TIMEOUT 300.0
#define DEFAULT_BUCKET_MB 25.0

const char *nn_dist_backend_name(nn_dist_backend b) { return b == NN_DIST_NCCL ? "nccl" : "tcp"; }

int nn_dist_nccl_built(void) { return NCMI_HAVE_NCCL ? 1 : 0; }

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* poll() milliseconds for `left` seconds (> 0), rounded up, capped */
static int poll_ms(double left)
{
    if (left > 1e6) return 1000000000;
    return (int)(left * 1000) + 1;
}

/* ------------------------------------------------------------------ */
/* the environment                                                     */

/* 1 set (value in *v), 0 unset, -1 malformed (message set) */
static int env_int(const char *name, long lo, long hi, int *v)
{
    const char *s = getenv(name);
    if (!s || !*s) return 0;
    char *end;
    errno = 0;
    long x = strtol(s, &end, 10);
    while (*end == ' ') end++;
    if (end == s || *end || errno || x < lo || x > hi)
        return ncmi_error_set("%s='%s' is not an integer in [%ld, %ld]", name, s, lo, hi);
    *v = (int)x;
    return 1;
}

int nn_dist_env_read(nn_dist_env *e)
{
    memset(e, 0, sizeof *e);
    e->rank = 0;
    e->world = 1;
    e->local_rank = -1;
    snprintf(e->addr, sizeof e->addr, "127.0.0.1");
    e->port = DEFAULT_PORT;
    snprintf(e->source, sizeof e->source, "none");
    e->timeout = DEFAULT_TIMEOUT;
    static const struct {
        const char *source, *rank, *world, *world2, *local;
    } L[] = {
        {"torchrun", "RANK", "WORLD_SIZE", NULL, "LOCAL_RANK"},
        {"openmpi", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", NULL, "OMPI_COMM_WORLD_LOCAL_RANK"},
        {"pmi", "PMI_RANK", "PMI_SIZE", NULL, "MPI_LOCALRANKID"},
        /* inside an srun step SLURM_STEP_NUM_TASKS is the step's size */
        {"slurm", "SLURM_PROCID", "SLURM_STEP_NUM_TASKS", "SLURM_NTASKS", "SLURM_LOCALID"},
    };
    for (size_t k = 0; k < sizeof L / sizeof L[0]; k++) {
        int rank = 0, world = 0, local = -1;
        int hr = env_int(L[k].rank, 0, 1 << 20, &rank);
        if (hr < 0) return -1;
        const char *wname = L[k].world;
        int hw = env_int(wname, 1, 1 << 20, &world);
        if (hw < 0) return -1;
        if (!hw && L[k].world2) {
            wname = L[k].world2;
            hw = env_int(wname, 1, 1 << 20, &world);
            if (hw < 0) return -1;
        }
        if (!hr && !hw) continue;
        if (hr != hw) {
            if (k == 0) /* torchrun's pair must be complete */
                return ncmi_error_set("%s is set but %s is not (torchrun-style launch needs both)",
                                      hr ? L[k].rank : wname, hr ? wname : L[k].rank);
            continue;
        }
        if (rank >= world)
            return ncmi_error_set("%s=%d is not below %s=%d", L[k].rank, rank, wname, world);
        if (env_int(L[k].local, 0, 1 << 20, &local) < 0) return -1;
        e->rank = rank;
        e->world = world;
        e->local_rank = local;
        snprintf(e->source, sizeof e->source, "%s", L[k].source);
        break;
    }
    const char *a = getenv("MASTER_ADDR");
    if (a && *a) {
        if (strlen(a) >= sizeof e->addr) return ncmi_error_set("MASTER_ADDR='%s' is too long", a);
        snprintf(e->addr, sizeof e->addr, "%s", a);
    }
    if (env_int("MASTER_PORT", 1, 65535, &e->port) < 0) return -1;
    /* torchrun's agent (PyTorch 2) already serves its store on MASTER_PORT
     * when it tells the workers to use it: take the next port */
    const char *as = getenv("TORCHELASTIC_USE_AGENT_STORE");
    if (as && !strcmp(as, "True") && !strcmp(e->source, "torchrun")) e->port = e->port < 65535 ? e->port + 1 : 1024;
    if (env_int("NCMI_DIST_PORT", 1, 65535, &e->port) < 0) return -1;
    const char *t = getenv("NCMI_DIST_TIMEOUT");
    if (t && *t) {
        char *end;
        double v = strtod(t, &end);
        if (end == t || *end || !(v > 0) || !isfinite(v))
            return ncmi_error_set("NCMI_DIST_TIMEOUT='%s' is not a number of seconds > 0", t);
        e->timeout = v;
    }
    return 0;
}

int nn_dist_env_device(int n_devices)
{
    nn_dist_env e;
    if (n_devices <= 0 || nn_dist_env_read(&e) != 0 || e.world <= 1) return 0;
    return (e.local_rank >= 0 ? e.local_rank : e.rank) % n_devices;
}

/* ------------------------------------------------------------------ */
/* the group                                                           */

struct nn_dist {
    nn_dist_env env;
    int rank, world;
    nn_dist_backend backend;
    double timeout;
    /* ring: send to next, receive from prev */
    int next_fd, prev_fd;
    int next_rank, prev_rank;
    char next_addr[96], prev_addr[96];
    /* terminal error state */
    int failed;
    char err[1024];
    pthread_mutex_t mu;     /* one collective at a time (caller and reducer thread) */
    int in_reducer;         /* between reducer_begin and _finish: caller collectives are refused */
    void *scratch;
    size_t scratch_cap;
    nn_nccl *nccl;
    char desc[512];
};

int nn_dist_rank(const nn_dist *d) { return d ? d->rank : 0; }
int nn_dist_world(const nn_dist *d) { return d ? d->world : 1; }
nn_dist_backend nn_dist_backend_of(const nn_dist *d) { return d ? d->backend : NN_DIST_TCP; }
double nn_dist_timeout(const nn_dist *d) { return d ? d->timeout : DEFAULT_TIMEOUT; }
const char *nn_dist_describe(const nn_dist *d) { return d ? d->desc : "tcp, world size 1"; }

/* Record the group's error (first one wins) and put it in ncmi_error(). */
static int fail(nn_dist *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(nn_dist *d, const char *fmt, ...)
{
    if (!d->failed) {
        char msg[900];
        va_list ap;
        va_start(ap, fmt);
        // NOLINTNEXTLINE(clang-analyzer-valist.Uninitialized): false positive, va_start is just above
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        snprintf(d->err, sizeof d->err, "dist rank %d of %d: %s", d->rank, d->world, msg);
        d->failed = 1;
    }
    return ncmi_error_set("%s", d->err);
}

static int failed(const nn_dist *d)
{
    if (!d->failed) return 0;
    return ncmi_error_set("%s", d->err);
}

/* ---- sockets ---- */

static void sock_tune(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
#ifdef TCP_KEEPIDLE
    int idle = 30, intvl = 10, cnt = 9; /* a vanished machine: ~2 minutes */
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
#endif
}

static void set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL, 0);
    if (fl >= 0) fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

static void addr_str(const struct sockaddr_in *a, char *buf, size_t n)
{
    char ip[INET_ADDRSTRLEN] = "?";
    inet_ntop(AF_INET, &a->sin_addr, ip, sizeof ip);
    // NOLINTNEXTLINE(clang-analyzer-core.CallAndMessage): false positive, the address was filled by accept/getsockname
    snprintf(buf, n, "%s:%d", ip, ntohs(a->sin_port));
}

static int resolve(const char *host, struct in_addr *out, char *why, size_t n)
{
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(host, NULL, &hints, &res);
    if (rc != 0 || !res) {
        snprintf(why, n, "%s", gai_strerror(rc));
        return -1;
    }
    *out = ((struct sockaddr_in *)res->ai_addr)->sin_addr;
    freeaddrinfo(res);
    return 0;
}

/* A listening socket on port (0: any free port) of every interface; *port
 * gets the port. -1 with errno. */
static int listen_on(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_ANY);
    a.sin_port = htons((uint16_t)*port);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 128) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    socklen_t len = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &len);
    *port = ntohs(a.sin_port);
    set_nonblock(fd);
    return fd;
}

/* Connect to a:port, retrying refused/unreachable until the deadline.
 * Returns the fd (blocking, tuned) or -1 with the last error in why. */
static int connect_retry(struct in_addr a, int port, double deadline, char *why, size_t n)
{
    snprintf(why, n, "timed out");
    for (;;) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            snprintf(why, n, "socket: %s", strerror(errno));
            return -1;
        }
        struct sockaddr_in sa;
        memset(&sa, 0, sizeof sa);
        sa.sin_family = AF_INET;
        sa.sin_addr = a;
        sa.sin_port = htons((uint16_t)port);
        set_nonblock(fd);
        int rc = connect(fd, (struct sockaddr *)&sa, sizeof sa);
        int e = rc == 0 ? 0 : errno;
        if (rc != 0 && e == EINPROGRESS) {
            double left = deadline - now_s();
            struct pollfd p = {fd, POLLOUT, 0};
            int pr = poll(&p, 1, left > 0 ? poll_ms(left) : 0);
            if (pr > 0) {
                socklen_t l = sizeof e;
                getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &l);
            } else {
                e = ETIMEDOUT;
            }
        }
        if (e == 0) {
            int fl = fcntl(fd, F_GETFL, 0);
            fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
            sock_tune(fd);
            return fd;
        }
        close(fd);
        snprintf(why, n, "%s", strerror(e));
        if (now_s() + 0.1 >= deadline) return -1;
        usleep(100 * 1000);
    }
}

/* Accept one connection within the deadline: fd, or -1 (timeout) / -2
 * (error, errno). The peer's address goes to peer. */
static int accept_until(int lfd, double deadline, struct sockaddr_in *peer)
{
    for (;;) {
        double left = deadline - now_s();
        if (left <= 0) return -1;
        struct pollfd p = {lfd, POLLIN, 0};
        int pr = poll(&p, 1, poll_ms(left));
        if (pr < 0 && errno == EINTR) continue;
        if (pr < 0) return -2;
        if (pr == 0) continue;
        socklen_t len = sizeof *peer;
        int fd = accept4(lfd, (struct sockaddr *)peer, &len, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED) continue;
            return -2;
        }
        int fl = fcntl(fd, F_GETFL, 0);
        fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
        sock_tune(fd);
        return fd;
    }
}

/* Blocking-style exact read/write on a socket with a deadline (absolute;
 * <= 0: none). 0 ok, 1 EOF, 2 timeout, 3 error (errno). */
static int io_exact(int fd, int sending, void *buf, size_t len, double deadline)
{
    char *p = buf;
    while (len > 0) {
        struct pollfd pf = {fd, (short)(sending ? POLLOUT : POLLIN), 0};
        int ms = -1;
        if (deadline > 0) {
            double left = deadline - now_s();
            if (left <= 0) return 2;
            ms = poll_ms(left);
        }
        int pr = poll(&pf, 1, ms);
        if (pr < 0 && errno == EINTR) continue;
        if (pr < 0) return 3;
        if (pr == 0) continue;
        ssize_t r = sending ? send(fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT) : recv(fd, p, len, MSG_DONTWAIT);
        if (r < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) continue;
            return 3;
        }
        if (r == 0 && !sending) return 1;
        p += r;
        len -= (size_t)r;
    }
    return 0;
}

/* Send slen bytes to next while receiving rlen bytes from prev. timeout:
 * seconds without progress (<= 0: none). 0, or -1 with the group failed. */
static int ring_xfer(nn_dist *d, const void *sbuf, size_t slen, void *rbuf, size_t rlen, double timeout,
                     const char *what)
{
    const char *s = sbuf;
    char *r = rbuf;
    double last = now_s();
    while (slen > 0 || rlen > 0) {
        struct pollfd pf[2];
        int np = 0, is = -1, ir = -1;
        if (slen > 0) {
            is = np;
            pf[np++] = (struct pollfd){d->next_fd, POLLOUT, 0};
        }
        if (rlen > 0) {
            ir = np;
            pf[np++] = (struct pollfd){d->prev_fd, POLLIN, 0};
        }
        int ms = -1;
        if (timeout > 0) {
            double left = last + timeout - now_s();
            if (left <= 0) {
                if (rlen > 0)
                    return fail(d, "rank %d (%s) sent nothing for %g s during %s (NCMI_DIST_TIMEOUT): it "
                                   "stalls, hangs or waits in another collective",
                                d->prev_rank, d->prev_addr, timeout, what);
                return fail(d, "rank %d (%s) took no data for %g s during %s (NCMI_DIST_TIMEOUT): it stalls "
                               "or hangs",
                            d->next_rank, d->next_addr, timeout, what);
            }
            ms = poll_ms(left);
        }
        int pr = poll(pf, (nfds_t)np, ms);
        if (pr < 0 && errno == EINTR) continue;
        if (pr < 0) return fail(d, "poll during %s: %s", what, strerror(errno));
        if (pr == 0) continue;
        if (ir >= 0 && (pf[ir].revents & (POLLIN | POLLHUP | POLLERR))) {
            ssize_t k = recv(d->prev_fd, r, rlen, MSG_DONTWAIT);
            if (k == 0)
                return fail(d, "rank %d (%s) closed the connection during %s: the process died or exited "
                               "(see its messages)",
                            d->prev_rank, d->prev_addr, what);
            if (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                return fail(d, "connection from rank %d (%s) lost during %s: %s (the process died?)",
                            d->prev_rank, d->prev_addr, what, strerror(errno));
            if (k > 0) {
                r += k;
                rlen -= (size_t)k;
                last = now_s();
            }
        }
        if (is >= 0 && (pf[is].revents & (POLLOUT | POLLHUP | POLLERR))) {
            ssize_t k = send(d->next_fd, s, slen, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                return fail(d, "connection to rank %d (%s) lost during %s: %s (the process died?)",
                            d->next_rank, d->next_addr, what, strerror(errno));
            if (k > 0) {
                s += k;
                slen -= (size_t)k;
                last = now_s();
            }
        }
    }
    return 0;
}

/* ---- rendezvous ---- */

typedef struct hello_msg {
    uint32_t magic, proto;
    int32_t rank, world;
    int32_t ring_port;
} hello_msg;

typedef struct reply_hdr {
    uint32_t magic;
    int32_t status; /* 0: table follows; else error text of len bytes */
    uint32_t len;
} reply_hdr;

typedef struct peer_entry {
    uint32_t ip;   /* network order; 0: MASTER_ADDR */
    int32_t port;
} peer_entry;

static void hello_hton(hello_msg *h)
{
    h->magic = htonl(h->magic);
    h->proto = htonl(h->proto);
    h->rank = (int32_t)htonl((uint32_t)h->rank);
    h->world = (int32_t)htonl((uint32_t)h->world);
    h->ring_port = (int32_t)htonl((uint32_t)h->ring_port);
}
#define hello_ntoh hello_hton

static void send_reject(int fd, const char *msg)
{
    reply_hdr h = {htonl(DIST_MAGIC), (int32_t)htonl(1), htonl((uint32_t)strlen(msg))};
    double dl = now_s() + 2;
    if (io_exact(fd, 1, &h, sizeof h, dl) == 0) io_exact(fd, 1, (void *)msg, strlen(msg), dl);
}

/* Rank 0: accept world-1 peers on the master port, send everyone the table
 * of ring addresses. */
static int rendezvous_master(nn_dist *d, int ring_port, peer_entry *tab)
{
    int port = d->env.port;
    int lfd = listen_on(&port);
    if (lfd < 0)
        return fail(d, "cannot listen on port %d (rendezvous port; MASTER_ADDR %s): %s%s", d->env.port, d->env.addr,
                    strerror(errno),
                    errno == EADDRINUSE ? ": another job or process uses it; choose a free MASTER_PORT (or NCMI_DIST_PORT)" : "");
    const int W = d->world;
    int *fds = malloc((size_t)W * sizeof *fds);
    NCMI_CHECK(fds, "out of memory");
    for (int i = 0; i < W; i++) fds[i] = -1;
    tab[0].ip = 0;
    tab[0].port = ring_port;
    const double deadline = now_s() + d->timeout;
    int have = 1, rc = 0;
    char msg[512] = "";
    while (have < W && !rc) {
        struct sockaddr_in pa;
        int fd = accept_until(lfd, deadline, &pa);
        if (fd == -1) {
            char miss[256] = "";
            size_t q = 0;
            int nm = 0;
            for (int i = 1; i < W && q < sizeof miss - 16; i++)
                if (fds[i] < 0) q += (size_t)snprintf(miss + q, sizeof miss - q, "%s%d", nm++ ? ", " : "", i);
            rc = fail(d, "waited %g s on port %d for %d of %d ranks (missing: %s) (NCMI_DIST_TIMEOUT): were they "
                         "started, with MASTER_ADDR=%s and MASTER_PORT=%d? (ranks from the %s environment)",
                      d->timeout, d->env.port, W - have, W, miss, d->env.addr, d->env.port, d->env.source);
            break;
        }
        if (fd == -2) {
            rc = fail(d, "accept on port %d: %s", d->env.port, strerror(errno));
            break;
        }
        char who[64];
        addr_str(&pa, who, sizeof who);
        hello_msg h;
        double hd = now_s() + (d->timeout < 10 ? d->timeout : 10);
        if (io_exact(fd, 0, &h, sizeof h, hd) != 0) { /* not one of ours (a port scan?) */
            close(fd);
            continue;
        }
        hello_ntoh(&h);
        if (h.magic != DIST_MAGIC) {
            close(fd);
            continue;
        }
        if (h.proto != DIST_PROTO)
            snprintf(msg, sizeof msg, "a process at %s speaks protocol %u, rank 0 %u (different ncmi versions)",
                     who, h.proto, DIST_PROTO);
        else if (h.world != W)
            snprintf(msg, sizeof msg, "rank %d (%s) has world size %d, rank 0 has %d: the ranks were launched "
                                      "with different WORLD_SIZE (or two jobs share MASTER_PORT %d)",
                     h.rank, who, h.world, W, d->env.port);
        else if (h.rank <= 0 || h.rank >= W || fds[h.rank] >= 0)
            snprintf(msg, sizeof msg, "rank %d (%s) %s: two processes with the same rank, or two jobs on "
                                      "MASTER_PORT %d",
                     h.rank, who, h.rank > 0 && h.rank < W ? "joined twice" : "is out of range", d->env.port);
        if (msg[0]) {
            send_reject(fd, msg);
            close(fd);
            rc = fail(d, "%s", msg);
            break;
        }
        fds[h.rank] = fd;
        tab[h.rank].ip = pa.sin_addr.s_addr;
        tab[h.rank].port = h.ring_port;
        have++;
    }
    if (!rc) {
        reply_hdr rh = {htonl(DIST_MAGIC), 0, htonl((uint32_t)(W * sizeof(peer_entry)))};
        peer_entry *net = malloc((size_t)W * sizeof *net);
        NCMI_CHECK(net, "out of memory");
        for (int i = 0; i < W; i++) net[i] = (peer_entry){tab[i].ip, (int32_t)htonl((uint32_t)tab[i].port)};
        for (int i = 1; i < W && !rc; i++)
            if (io_exact(fds[i], 1, &rh, sizeof rh, now_s() + d->timeout) ||
                io_exact(fds[i], 1, net, (size_t)W * sizeof *net, now_s() + d->timeout))
                rc = fail(d, "rank %d left during the rendezvous on port %d", i, d->env.port);
        free(net);
    } else {
        for (int i = 1; i < W; i++)
            if (fds[i] >= 0) send_reject(fds[i], d->err);
    }
    for (int i = 1; i < W; i++)
        if (fds[i] >= 0) close(fds[i]);
    free(fds);
    close(lfd);
    return rc;
}

/* Rank r > 0: connect to rank 0, announce the ring port, get the table. */
static int rendezvous_peer(nn_dist *d, struct in_addr master, int ring_port, peer_entry *tab)
{
    char why[256];
    const double deadline = now_s() + d->timeout;
    int fd = connect_retry(master, d->env.port, deadline, why, sizeof why);
    if (fd < 0)
        return fail(d, "cannot reach rank 0 at %s:%d within %g s (%s): is rank 0 running, with the same "
                       "MASTER_ADDR and MASTER_PORT on every rank? (NCMI_DIST_TIMEOUT; ranks from the %s "
                       "environment)",
                    d->env.addr, d->env.port, d->timeout, why, d->env.source);
    hello_msg h = {DIST_MAGIC, DIST_PROTO, d->rank, d->world, ring_port};
    hello_hton(&h);
    reply_hdr rh;
    int rc = io_exact(fd, 1, &h, sizeof h, deadline);
    /* rank 0 answers once every rank has joined: up to its own timeout (and
     * a little more, so that its own message, if it fails, arrives first) */
    if (!rc) rc = io_exact(fd, 0, &rh, sizeof rh, now_s() + d->timeout + (d->timeout < 5 ? d->timeout : 5));
    if (rc) {
        close(fd);
        if (rc == 2)
            return fail(d, "rank 0 at %s:%d did not complete the rendezvous within %g s: some rank did not join "
                           "(NCMI_DIST_TIMEOUT)",
                        d->env.addr, d->env.port, d->timeout);
        return fail(d, "rank 0 at %s:%d closed the rendezvous: it failed or exited (see its messages)",
                    d->env.addr, d->env.port);
    }
    rh.magic = ntohl(rh.magic);
    rh.status = (int32_t)ntohl((uint32_t)rh.status);
    rh.len = ntohl(rh.len);
    if (rh.magic != DIST_MAGIC || rh.len > 65536) {
        close(fd);
        return fail(d, "%s:%d is not an ncmi rank 0 (bad rendezvous answer): is MASTER_PORT used by another "
                       "program?",
                    d->env.addr, d->env.port);
    }
    if (rh.status != 0) {
        char *m = calloc(1, rh.len + 1);
        NCMI_CHECK(m, "out of memory");
        io_exact(fd, 0, m, rh.len, now_s() + 5);
        close(fd);
        rc = fail(d, "rank 0 at %s:%d rejected the rendezvous: %s", d->env.addr, d->env.port, m);
        free(m);
        return rc;
    }
    if (rh.len != (uint32_t)(d->world * sizeof(peer_entry)) ||
        io_exact(fd, 0, tab, rh.len, now_s() + d->timeout)) {
        close(fd);
        return fail(d, "rank 0 at %s:%d sent a broken rendezvous table", d->env.addr, d->env.port);
    }
    close(fd);
    for (int i = 0; i < d->world; i++) tab[i].port = (int32_t)ntohl((uint32_t)tab[i].port);
    return 0;
}

/* The ring: connect to next's ring port, accept prev on ours. */
static int ring_connect(nn_dist *d, int rl, struct in_addr master, const peer_entry *tab)
{
    const int W = d->world;
    d->next_rank = (d->rank + 1) % W;
    d->prev_rank = (d->rank + W - 1) % W;
    struct in_addr na;
    na.s_addr = tab[d->next_rank].ip ? tab[d->next_rank].ip : master.s_addr;
    struct sockaddr_in nsa;
    memset(&nsa, 0, sizeof nsa);
    nsa.sin_family = AF_INET;
    nsa.sin_addr = na;
    nsa.sin_port = htons((uint16_t)tab[d->next_rank].port);
    addr_str(&nsa, d->next_addr, sizeof d->next_addr);
    const double deadline = now_s() + d->timeout;
    char why[256];
    d->next_fd = connect_retry(na, tab[d->next_rank].port, deadline, why, sizeof why);
    if (d->next_fd < 0)
        return fail(d, "cannot connect to rank %d at %s (%s): a firewall between the nodes, or the wrong "
                       "interface?",
                    d->next_rank, d->next_addr, why);
    hello_msg h = {DIST_MAGIC, DIST_PROTO, d->rank, W, 0};
    hello_hton(&h);
    if (io_exact(d->next_fd, 1, &h, sizeof h, deadline))
        return fail(d, "rank %d at %s closed the ring connection", d->next_rank, d->next_addr);
    for (;;) {
        struct sockaddr_in pa;
        int fd = accept_until(rl, deadline, &pa);
        if (fd < 0)
            return fail(d, "rank %d did not connect to this rank's ring port %d within %g s "
                           "(NCMI_DIST_TIMEOUT)",
                        d->prev_rank, tab[d->rank].port, d->timeout);
        hello_msg ph;
        if (io_exact(fd, 0, &ph, sizeof ph, deadline) == 0) {
            hello_ntoh(&ph);
            if (ph.magic == DIST_MAGIC && ph.rank == d->prev_rank) {
                d->prev_fd = fd;
                /* the address prev connected from, with its ring port (for messages) */
                pa.sin_port = htons((uint16_t)tab[d->prev_rank].port);
                if (tab[d->prev_rank].ip) pa.sin_addr.s_addr = tab[d->prev_rank].ip;
                else pa.sin_addr = master;
                addr_str(&pa, d->prev_addr, sizeof d->prev_addr);
                break;
            }
        }
        close(fd); /* a stranger */
    }
    set_nonblock(d->next_fd);
    set_nonblock(d->prev_fd);
    return 0;
}

static int ring_broadcast(nn_dist *d, void *buf, size_t bytes, int root, double timeout, const char *what);

int nn_dist_init(nn_dist **out, const nn_dist_env *e, nn_dist_backend backend)
{
    *out = NULL;
    if (e->world < 1 || e->rank < 0 || e->rank >= e->world)
        return ncmi_error_set("dist: rank %d of world size %d is not a valid rank", e->rank, e->world);
    nn_dist *d = calloc(1, sizeof *d);
    if (!d) return ncmi_error_set("out of memory");
    d->env = *e;
    d->rank = e->rank;
    d->world = e->world;
    d->backend = backend;
    d->timeout = e->timeout > 0 ? e->timeout : DEFAULT_TIMEOUT;
    d->next_fd = d->prev_fd = -1;
    pthread_mutex_init(&d->mu, NULL);
    int rc = 0;
    if (backend == NN_DIST_NCCL && !NCMI_HAVE_NCCL)
        rc = fail(d, "the NCCL backend was asked for, but this ncmi was built without NCCL (nccl.h not found "
                     "at build time); use the tcp backend (NCMI_DIST_BACKEND=tcp)");
    else if (backend == NN_DIST_NCCL && nn_cuda_current() < 0)
        rc = fail(d, "the NCCL backend needs this process's GPU initialised first (--device cuda)");
    if (!rc && d->world > 1) {
        struct in_addr master = {0};
        char why[256];
        int rl = -1, ring_port = 0;
        peer_entry *tab = calloc((size_t)d->world, sizeof *tab);
        NCMI_CHECK(tab, "out of memory");
        if (resolve(d->env.addr, &master, why, sizeof why))
            rc = fail(d, "cannot resolve MASTER_ADDR '%s': %s", d->env.addr, why);
        if (!rc && (rl = listen_on(&ring_port)) < 0)
            rc = fail(d, "cannot open a listening socket for the ring: %s", strerror(errno));
        if (!rc) rc = d->rank == 0 ? rendezvous_master(d, ring_port, tab) : rendezvous_peer(d, master, ring_port, tab);
        if (!rc) rc = ring_connect(d, rl, master, tab);
        if (rl >= 0) close(rl);
        free(tab);
    }
#if NCMI_HAVE_NCCL
    if (!rc && backend == NN_DIST_NCCL) {
        unsigned char id[NN_NCCL_ID_BYTES];
        memset(id, 0, sizeof id);
        if (d->rank == 0 && nn_nccl_unique_id(id)) rc = fail(d, "%s", ncmi_error());
        /* rank 0's failure reaches the others as a closed connection */
        if (!rc) rc = ring_broadcast(d, id, sizeof id, 0, d->timeout, "the NCCL id broadcast");
        char who[400];
        snprintf(who, sizeof who, "rank %d of %d (rendezvous %s:%d)", d->rank, d->world, d->env.addr, d->env.port);
        if (!rc && nn_nccl_new(&d->nccl, id, d->world, d->rank, d->timeout, who))
            rc = fail(d, "%s", ncmi_error());
    }
#endif
    if (rc) {
        char keep[1024];
        snprintf(keep, sizeof keep, "%s", ncmi_error());
        nn_dist_free(d);
        return ncmi_error_set("%s", keep);
    }
    snprintf(d->desc, sizeof d->desc, "%s, world size %d, rank %d (%s environment, rendezvous %s:%d)",
             nn_dist_backend_name(backend), d->world, d->rank, d->env.source, d->env.addr, d->env.port);
    *out = d;
    return 0;
}

void nn_dist_free(nn_dist *d)
{
    if (!d) return;
#if NCMI_HAVE_NCCL
    nn_nccl_free(d->nccl);
#endif
    if (d->next_fd >= 0) close(d->next_fd);
    if (d->prev_fd >= 0) close(d->prev_fd);
    free(d->scratch);
    pthread_mutex_destroy(&d->mu);
    free(d);
}

/* ---- collectives on the ring ---- */

static void *scratch(nn_dist *d, size_t bytes)
{
    if (bytes > d->scratch_cap) {
        free(d->scratch);
        d->scratch = malloc(bytes);
        NCMI_CHECK(d->scratch, "out of memory (%zu bytes)", bytes);
        d->scratch_cap = bytes;
    }
    return d->scratch;
}

/* Reduce-scatter + all-gather. Chunk k = elements [n k / W, n (k+1) / W).
 * Chunk k is summed along the ring starting at rank k:
 * ((x_k + x_{k+1}) + x_{k+2}) + ..., ending at rank k-1, which holds the
 * total and passes it on unchanged: every rank ends with the same bits. */
static int ring_allreduce(nn_dist *d, void *x, size_t n, int f64, double timeout, const char *what)
{
    const int W = d->world, r = d->rank;
    const size_t esz = f64 ? sizeof(double) : sizeof(float);
    if (W == 1 || n == 0) return 0;
#define CH_OFF(k) (n * (size_t)(k) / (size_t)W)
#define CH_LEN(k) (CH_OFF((k) + 1) - CH_OFF(k))
    size_t maxc = 0;
    for (int k = 0; k < W; k++) maxc = CH_LEN(k) > maxc ? CH_LEN(k) : maxc;
    char *tmp = scratch(d, maxc * esz);
    char *b = x;
    for (int s = 0; s < W - 1; s++) {
        const int sc = ((r - s) % W + W) % W, rc = ((r - s - 1) % W + W) % W;
        if (ring_xfer(d, b + CH_OFF(sc) * esz, CH_LEN(sc) * esz, tmp, CH_LEN(rc) * esz, timeout, what)) return -1;
        const size_t len = CH_LEN(rc);
        if (f64) {
            double *dst = (double *)(b + CH_OFF(rc) * esz);
            const double *src = (const double *)tmp;
            for (size_t j = 0; j < len; j++) dst[j] = src[j] + dst[j];
        } else {
            float *dst = (float *)(b + CH_OFF(rc) * esz);
            const float *src = (const float *)tmp;
            // NOLINTNEXTLINE(clang-analyzer-core.UndefinedBinaryOperatorResult): false positive, tmp was filled by ring_xfer (recv)
            for (size_t j = 0; j < len; j++) dst[j] = src[j] + dst[j];
        }
    }
    for (int s = 0; s < W - 1; s++) {
        const int sc = ((r + 1 - s) % W + W) % W, rc = ((r - s) % W + W) % W;
        if (ring_xfer(d, b + CH_OFF(sc) * esz, CH_LEN(sc) * esz, b + CH_OFF(rc) * esz, CH_LEN(rc) * esz, timeout,
                      what))
            return -1;
    }
#undef CH_OFF
#undef CH_LEN
    return 0;
}

/* Root's bytes passed along the ring in 1 MiB pieces (pipelined). */
static int ring_broadcast(nn_dist *d, void *buf, size_t bytes, int root, double timeout, const char *what)
{
    const int W = d->world;
    if (W == 1 || bytes == 0) return 0;
    const int pos = ((d->rank - root) % W + W) % W;
    const size_t piece = (size_t)1 << 20;
    char *b = buf;
    for (size_t off = 0; off < bytes; off += piece) {
        size_t len = bytes - off < piece ? bytes - off : piece;
        if (pos != 0 && ring_xfer(d, NULL, 0, b + off, len, timeout, what)) return -1;
        if (pos != W - 1 && ring_xfer(d, b + off, len, NULL, 0, timeout, what)) return -1;
    }
    return 0;
}

static int caller_check(nn_dist *d, const char *what)
{
    if (failed(d)) return -1;
    if (d->in_reducer)
        return ncmi_error_set("dist: %s between nn_dist_reducer_begin and _finish (collectives would "
                              "interleave with the gradient buckets)", what);
    return 0;
}

static int locked_allreduce(nn_dist *d, void *x, size_t n, int f64, double timeout, const char *what)
{
    pthread_mutex_lock(&d->mu);
    int rc = d->failed ? -1 : ring_allreduce(d, x, n, f64, timeout, what);
    pthread_mutex_unlock(&d->mu);
    return rc;
}

int nn_dist_allreduce_f32(nn_dist *d, float *x, size_t n)
{
    if (!d || d->world == 1) return 0;
    if (caller_check(d, "all-reduce")) return -1;
    if (locked_allreduce(d, x, n, 0, d->timeout, "all-reduce")) return failed(d);
    return 0;
}

int nn_dist_allreduce_f64(nn_dist *d, double *x, size_t n)
{
    if (!d || d->world == 1) return 0;
    if (caller_check(d, "all-reduce")) return -1;
    if (locked_allreduce(d, x, n, 1, d->timeout, "all-reduce")) return failed(d);
    return 0;
}

int nn_dist_broadcast(nn_dist *d, void *buf, size_t bytes, int root)
{
    if (!d || d->world == 1) return 0;
    if (caller_check(d, "broadcast")) return -1;
    if (root < 0 || root >= d->world) return ncmi_error_set("dist: broadcast from rank %d of %d", root, d->world);
    pthread_mutex_lock(&d->mu);
    int rc = ring_broadcast(d, buf, bytes, root, d->timeout, "broadcast");
    pthread_mutex_unlock(&d->mu);
    return rc ? failed(d) : 0;
}

int nn_dist_barrier(nn_dist *d, double timeout_s)
{
    if (!d || d->world == 1) return 0;
    if (caller_check(d, "barrier")) return -1;
    double t = timeout_s > 0 ? timeout_s : timeout_s == 0 ? d->timeout : 0;
    float *x = calloc((size_t)d->world, sizeof *x);
    NCMI_CHECK(x, "out of memory");
    x[d->rank] = 1.f;
    int rc = locked_allreduce(d, x, (size_t)d->world, 0, t, "a barrier");
    free(x);
    return rc ? failed(d) : 0;
}

int nn_dist_broadcast_tensor(nn_dist *d, nn_tensor *t, int root)
{
    if (!d || d->world == 1 || t->numel == 0) return 0;
    if (caller_check(d, "broadcast")) return -1;
#if NCMI_HAVE_NCCL
    if (d->nccl && t->device == NN_DEVICE_CUDA) {
        nn_nccl_broadcast(d->nccl, t->data, t->numel, root);
        return 0;
    }
#endif
    float *h = nn_host_view(t);
    int rc = nn_dist_broadcast(d, h, t->numel * sizeof(float), root);
    if (!rc && t->device == NN_DEVICE_CUDA) nn_tensor_from_host(t, h);
    nn_host_release(t, h);
    return rc;
}

/* ------------------------------------------------------------------ */
/* the gradient reducer                                                */

typedef enum red_mode {
    RED_UNSET = -1,
    RED_HOST = 0,     /* CPU tensors: communication thread, ring all-reduce */
    RED_NCCL = 1,     /* GPU tensors, NCCL on the communication stream */
    RED_GPU_TCP = 2,  /* GPU tensors over the ring, staged through the host in finish */
} red_mode;

typedef struct bucket {
    int first, count;   /* items [first, first + count) */
    size_t total;       /* gradient floats; the count flags follow */
    float *buf;         /* host or device, total + count floats */
    int ready;          /* items final this step */
} bucket;

struct nn_dist_reducer {
    nn_dist *d;
    int n;                   /* items, in reverse order of P */
    nn_tensor **t;
    int *bucket_of;
    size_t *off;             /* offset of the item in its bucket */
    int nb;
    bucket *b;
    size_t bucket_bytes;
    /* leaf pointer -> item */
    const nn_tensor **hkey;
    int *hval;
    size_t hmask;
    /* per step */
    unsigned char *is_ready, *local_absent;
    float *flags;            /* reduced flags per item (has a buffer somewhere: > 0) */
    int any_absent;
    int next_launch;
    double weight;
    int active;
    nn_graph *g;
    red_mode mode;
    /* communication thread (RED_HOST) */
    pthread_t th;
    int th_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int *queue;
    int q_head, q_tail, done, stop, err;
    nn_dist_reducer_stats st;
};

static size_t red_hash(const void *p, size_t mask)
{
    uint64_t x = (uint64_t)(uintptr_t)p;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return (size_t)x & mask;
}

static int red_lookup(const nn_dist_reducer *r, const nn_tensor *t)
{
    size_t h = red_hash(t, r->hmask);
    while (r->hkey[h]) {
        if (r->hkey[h] == t) return r->hval[h];
        h = (h + 1) & r->hmask;
    }
    return -1;
}

/* RED_HOST: pack (scaled by the weight) + flags, ring all-reduce, unpack. */
static int reduce_host_bucket(nn_dist_reducer *r, int bi)
{
    bucket *b = &r->b[bi];
    const float w = (float)r->weight;
    for (int k = 0; k < b->count; k++) {
        const int i = b->first + k;
        const nn_tensor *t = r->t[i];
        float *dst = b->buf + r->off[i];
        const float *g = t->grad;
        for (size_t j = 0; j < t->numel; j++) dst[j] = w * g[j];
        b->buf[b->total + k] = r->local_absent[i] ? 0.f : 1.f;
    }
    pthread_mutex_lock(&r->d->mu);
    int rc = r->d->failed ? -1 : ring_allreduce(r->d, b->buf, b->total + (size_t)b->count, 0, r->d->timeout,
                                                "the gradient all-reduce");
    pthread_mutex_unlock(&r->d->mu);
    if (rc) return -1;
    for (int k = 0; k < b->count; k++) {
        const int i = b->first + k;
        memcpy(r->t[i]->grad, b->buf + r->off[i], r->t[i]->numel * sizeof(float));
        r->flags[i] = b->buf[b->total + k];
    }
    return 0;
}

static void *red_thread(void *arg)
{
    nn_dist_reducer *r = arg;
    for (;;) {
        pthread_mutex_lock(&r->mu);
        while (r->q_head == r->q_tail && !r->stop) pthread_cond_wait(&r->cv, &r->mu);
        if (r->q_head == r->q_tail && r->stop) {
            pthread_mutex_unlock(&r->mu);
            break;
        }
        int bi = r->queue[r->q_head++];
        int skip = r->err;
        pthread_mutex_unlock(&r->mu);
        int rc = skip ? -1 : reduce_host_bucket(r, bi);
        pthread_mutex_lock(&r->mu);
        if (rc) r->err = 1;
        r->done++;
        pthread_cond_broadcast(&r->cv);
        pthread_mutex_unlock(&r->mu);
    }
    return NULL;
}

static void launch(nn_dist_reducer *r, int bi)
{
    bucket *b = &r->b[bi];
    for (int k = 0; k < b->count; k++) {
        const int i = b->first + k;
        if (!r->t[i]->grad) {
            nn_tensor_grad(r->t[i]); /* zeros: this rank adds nothing */
            r->local_absent[i] = 1;
            r->any_absent = 1;
        }
    }
    if (r->mode == RED_HOST && r->th_started) {
        pthread_mutex_lock(&r->mu);
        r->queue[r->q_tail++] = bi;
        pthread_cond_broadcast(&r->cv);
        pthread_mutex_unlock(&r->mu);
    } else if (r->mode == RED_HOST) { /* one rank: scale and flags in place */
        if (reduce_host_bucket(r, bi)) r->err = 1;
    }
#if NCMI_HAVE_NCCL
    else if (r->mode == RED_NCCL) {
        nn_nccl_item *it = malloc((size_t)b->count * sizeof *it);
        NCMI_CHECK(it, "out of memory");
        for (int k = 0; k < b->count; k++) {
            const int i = b->first + k;
            it[k] = (nn_nccl_item){r->t[i]->grad, r->t[i]->numel, r->off[i], b->total + (size_t)k,
                                   r->local_absent[i] ? 0.f : 1.f};
        }
        nn_nccl_bucket(r->d->nccl, b->buf, b->total + (size_t)b->count, it, b->count, (float)r->weight);
        free(it);
    }
#endif
    /* RED_GPU_TCP: everything happens in finish */
}

static void on_grad_ready(nn_tensor *leaf, void *ctx)
{
    nn_dist_reducer *r = ctx;
    int i = red_lookup(r, leaf);
    if (i < 0 || r->is_ready[i]) return;
    r->is_ready[i] = 1;
    r->b[r->bucket_of[i]].ready++;
    while (r->next_launch < r->nb && r->b[r->next_launch].ready == r->b[r->next_launch].count) {
        launch(r, r->next_launch++);
        r->st.buckets_in_backward++;
    }
}

int nn_dist_reducer_new(nn_dist_reducer **out, nn_dist *d, const nn_params *P, size_t bucket_bytes)
{
    *out = NULL;
    if (!d) return ncmi_error_set("dist: reducer without a process group");
    if (bucket_bytes == 0) {
        double mb = DEFAULT_BUCKET_MB;
        const char *s = getenv("NCMI_DIST_BUCKET_MB");
        if (s && *s) {
            char *end;
            mb = strtod(s, &end);
            if (end == s || *end || !(mb > 0) || !isfinite(mb))
                return ncmi_error_set("NCMI_DIST_BUCKET_MB='%s' is not a size in MB > 0", s);
        }
        bucket_bytes = (size_t)(mb * 1048576.0);
        if (bucket_bytes < 64) bucket_bytes = 64;
    }
    nn_dist_reducer *r = calloc(1, sizeof *r);
    if (!r) return ncmi_error_set("out of memory");
    r->d = d;
    r->mode = RED_UNSET;
    r->bucket_bytes = bucket_bytes;
    int n = 0;
    for (int i = 0; i < P->n; i++)
        if (P->kind[i] == NN_PARAM_WEIGHT && P->t[i]->requires_grad) n++;
    r->n = n;
    r->t = calloc((size_t)(n ? n : 1), sizeof *r->t);
    r->bucket_of = calloc((size_t)(n ? n : 1), sizeof *r->bucket_of);
    r->off = calloc((size_t)(n ? n : 1), sizeof *r->off);
    r->is_ready = calloc((size_t)(n ? n : 1), 1);
    r->local_absent = calloc((size_t)(n ? n : 1), 1);
    r->flags = calloc((size_t)(n ? n : 1), sizeof *r->flags);
    r->b = calloc((size_t)(n ? n : 1), sizeof *r->b);
    r->queue = calloc((size_t)(n ? n : 1), sizeof *r->queue);
    size_t cap = 16;
    while (cap < 2 * (size_t)n + 2) cap <<= 1;
    r->hkey = calloc(cap, sizeof *r->hkey);
    r->hval = calloc(cap, sizeof *r->hval);
    r->hmask = cap - 1;
    NCMI_CHECK(r->t && r->bucket_of && r->off && r->is_ready && r->local_absent && r->flags && r->b && r->queue &&
                   r->hkey && r->hval,
               "out of memory");
    /* items in reverse order of P, cut into buckets of about bucket_bytes */
    int k = 0;
    for (int i = P->n - 1; i >= 0; i--)
        if (P->kind[i] == NN_PARAM_WEIGHT && P->t[i]->requires_grad) r->t[k++] = P->t[i];
    r->nb = 0;
    for (int i = 0; i < n; i++) {
        bucket *b = r->nb ? &r->b[r->nb - 1] : NULL;
        size_t sz = r->t[i]->numel * sizeof(float);
        if (!b || (b->total * sizeof(float) + sz > bucket_bytes && b->count > 0)) {
            b = &r->b[r->nb++];
            b->first = i;
        }
        r->bucket_of[i] = r->nb - 1;
        r->off[i] = b->total;
        b->total += r->t[i]->numel;
        b->count++;
        size_t h = red_hash(r->t[i], r->hmask);
        while (r->hkey[h]) h = (h + 1) & r->hmask;
        r->hkey[h] = r->t[i];
        r->hval[h] = i;
    }
    r->st.n_buckets = r->nb;
    r->st.n_tensors = n;
    for (int bi = 0; bi < r->nb; bi++) r->st.bytes += (r->b[bi].total + (size_t)r->b[bi].count) * sizeof(float);
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    *out = r;
    return 0;
}

void nn_dist_reducer_free(nn_dist_reducer *r)
{
    if (!r) return;
    if (r->th_started) {
        pthread_mutex_lock(&r->mu);
        r->stop = 1;
        pthread_cond_broadcast(&r->cv);
        pthread_mutex_unlock(&r->mu);
        pthread_join(r->th, NULL);
    }
    if (r->g) nn_graph_set_grad_hook(r->g, NULL, NULL);
    for (int bi = 0; bi < r->nb; bi++) {
        if (r->mode == RED_NCCL) nn_cuda_free(r->b[bi].buf);
        else free(r->b[bi].buf);
    }
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    free(r->t);
    free(r->bucket_of);
    free(r->off);
    free(r->is_ready);
    free(r->local_absent);
    free(r->flags);
    free(r->b);
    free(r->queue);
    free(r->hkey);
    free(r->hval);
    free(r);
}

/* The mode from the tensors' device, buffers and thread on first use. */
static int red_setup(nn_dist_reducer *r)
{
    if (r->mode != RED_UNSET) return 0;
    nn_device dev = r->n ? r->t[0]->device : NN_DEVICE_CPU;
    for (int i = 1; i < r->n; i++)
        if (r->t[i]->device != dev)
            return ncmi_error_set("dist: the reduced tensors are on the CPU and on the GPU (%s)", r->t[i]->name);
    r->mode = dev == NN_DEVICE_CPU ? RED_HOST : r->d->nccl ? RED_NCCL : RED_GPU_TCP;
    for (int bi = 0; bi < r->nb; bi++) {
        size_t bytes = (r->b[bi].total + (size_t)r->b[bi].count) * sizeof(float);
        r->b[bi].buf = r->mode == RED_NCCL ? nn_cuda_alloc(bytes) : malloc(bytes);
        NCMI_CHECK(r->b[bi].buf, "out of memory (%zu bytes)", bytes);
    }
    if (r->mode == RED_HOST && r->d->world > 1) {
        if (pthread_create(&r->th, NULL, red_thread, r) != 0)
            return ncmi_error_set("dist: cannot start the communication thread: %s", strerror(errno));
        r->th_started = 1;
    }
    return 0;
}

int nn_dist_reducer_begin(nn_dist_reducer *r, nn_graph *g, double weight)
{
    if (r->active) return ncmi_error_set("dist: nn_dist_reducer_begin twice without _finish");
    if (failed(r->d)) return -1;
    if (r->d->in_reducer) return ncmi_error_set("dist: two reducers active on one group");
    if (red_setup(r)) return -1;
    for (int bi = 0; bi < r->nb; bi++) r->b[bi].ready = 0;
    memset(r->is_ready, 0, (size_t)(r->n ? r->n : 1));
    memset(r->local_absent, 0, (size_t)(r->n ? r->n : 1));
    r->any_absent = 0;
    r->next_launch = 0;
    r->q_head = r->q_tail = r->done = r->err = 0;
    r->weight = weight;
    r->active = 1;
    r->d->in_reducer = 1;
    r->g = NULL;
    if (g && r->mode != RED_GPU_TCP) {
        r->g = g;
        nn_graph_set_grad_hook(g, on_grad_ready, r);
    }
    return 0;
}

/* RED_GPU_TCP: every bucket through the host, in order. */
static int finish_gpu_tcp(nn_dist_reducer *r)
{
    const float w = (float)r->weight;
    for (int bi = 0; bi < r->nb; bi++) {
        bucket *b = &r->b[bi];
        for (int k = 0; k < b->count; k++) {
            const int i = b->first + k;
            float *dst = b->buf + r->off[i];
            nn_tensor_grad_to_host(r->t[i], dst);
            for (size_t j = 0; j < r->t[i]->numel; j++) dst[j] = w * dst[j];
            b->buf[b->total + k] = r->local_absent[i] ? 0.f : 1.f;
        }
        pthread_mutex_lock(&r->d->mu);
        int rc = r->d->failed ? -1 : ring_allreduce(r->d, b->buf, b->total + (size_t)b->count, 0, r->d->timeout,
                                                    "the gradient all-reduce");
        pthread_mutex_unlock(&r->d->mu);
        if (rc) return -1;
        for (int k = 0; k < b->count; k++) {
            const int i = b->first + k;
            nn_cuda_h2d(r->t[i]->grad, b->buf + r->off[i], r->t[i]->numel * sizeof(float));
            r->flags[i] = b->buf[b->total + k];
        }
    }
    return 0;
}

int nn_dist_reducer_finish(nn_dist_reducer *r)
{
    if (!r->active) return ncmi_error_set("dist: nn_dist_reducer_finish without _begin");
    if (r->g) nn_graph_set_grad_hook(r->g, NULL, NULL);
    r->g = NULL;
    while (r->next_launch < r->nb) {
        launch(r, r->next_launch++);
        r->st.buckets_at_finish++;
    }
    int rc = 0;
    if (r->mode == RED_HOST) {
        pthread_mutex_lock(&r->mu);
        while (r->th_started && r->done < r->nb) pthread_cond_wait(&r->cv, &r->mu);
        rc = r->err ? -1 : 0;
        pthread_mutex_unlock(&r->mu);
    } else if (r->mode == RED_GPU_TCP) {
        rc = finish_gpu_tcp(r);
    }
#if NCMI_HAVE_NCCL
    else if (r->mode == RED_NCCL) {
        nn_nccl_join(r->d->nccl);
        if (r->any_absent)
            for (int bi = 0; bi < r->nb; bi++) {
                bucket *b = &r->b[bi];
                nn_nccl_read(r->d->nccl, r->flags + b->first, b->buf + b->total, (size_t)b->count);
            }
    }
#endif
    r->active = 0;
    r->d->in_reducer = 0;
    if (rc) return failed(r->d);
    if (r->any_absent)
        for (int i = 0; i < r->n; i++)
            if (r->local_absent[i] && !(r->flags[i] > 0.f)) nn_tensor_drop_grad(r->t[i]);
    r->st.steps++;
    return 0;
}

void nn_dist_reducer_stats_get(const nn_dist_reducer *r, nn_dist_reducer_stats *s) { *s = r->st; }
