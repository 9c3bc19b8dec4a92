/*
 * echo_client.c -- closed-loop TCP echo load generator (single thread, epoll).
 *
 * N active connections each send a message of S bytes, wait until S bytes have
 * come back, record the round-trip time and send the next one (closed loop).
 * K extra "idle" connections connect, do one 1-byte round trip (so we know the
 * server has accepted them) and then stay silent for the whole run.
 *
 * Phases: setup (connect everything, bounded by -T), warm-up (-w seconds,
 * not counted), measurement (-d seconds). Prints one JSON line on stdout:
 * messages/s, MB/s, round-trip latency percentiles over every message completed
 * in the measurement window, and the client's own CPU time over that window
 * (client_cpu close to 1.0 means the client, not the server, is the limit).
 * A line "SETUP_DONE <seconds>" goes to stderr when setup finishes.
 *
 * Build: cc -O2 -o echo_client echo_client.c
 * Usage: echo_client -p PORT [-h 127.0.0.1] [-c N] [-s SIZE] [-i IDLE]
 *                    [-w WARMUP] [-d DURATION] [-W WINDOW] [-T SETUP_TIMEOUT] [-V] [-t TICK]
 *                    [-L] [-x] [-m echo|churn|storm]
 * -V checks the first 4 bytes of every echoed message; -t prints "TICK <s> <msgs>"
 * lines to stderr every TICK seconds (to see stalls).
 * -L: line mode (the last byte of every message, and the setup ping, is '\n': for
 * line-echo servers). -x: every connection first sends a PROXY v1 header (for
 * servers with the PROXY protocol on).
 * -m churn: a connection per request: each of the -c slots connects, sends one
 * message, reads it back, shuts its side down, waits for the server's close (the
 * server's lingering close is part of the cycle), closes, and starts over;
 * msgs_per_s is then connections per second, the latencies those of whole cycles.
 * -m storm: -c connections are started at once (no connect window), each sends one
 * message as soon as it is connected and stays open; prints the time from the first
 * connect() to each connection's first full echo: first, p50, p99, last, and
 * last - first (storm_span_ms). Bounded by -T.
 * Only loopback (127.0.0.0/8) targets are accepted.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

enum { ST_NEW, ST_CONNECTING, ST_PING, ST_READY, ST_RUN, ST_DEAD };

typedef struct {
    int fd;
    int state;
    int idle;        /* 1: idle connection, never loaded */
    int want_out;    /* EPOLLOUT currently registered */
    size_t sent;     /* bytes of the current message written */
    size_t rcvd;     /* bytes of the current message read back */
    uint64_t t0;     /* ns: first byte of the current message sent */
    uint32_t seq;    /* message counter (for -V verification) */
    uint32_t nmeas;  /* messages completed in the measurement window */
} conn_t;

static conn_t *conns;
static int nconns, nactive, nidle;
static size_t msg_size = 1024;
static unsigned char *msgbuf;
static unsigned char rbuf[1 << 18];
static int epfd;
static int verify;
static double tick_s;    /* -t: print messages per tick to stderr (debugging stalls) */
static int line_mode;    /* -L: messages and the ping end with '\n' */
static const char proxy_hdr[] = "PROXY TCP4 192.0.2.1 127.0.0.1 40000 80\r\n";
static int use_proxy;    /* -x: send proxy_hdr first on every connection */

static uint64_t *lat;    /* latencies (ns) of messages completed while measuring */
static size_t nlat, caplat;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static double cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
           ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static void die_json(const char *why, int code) {
    printf("{\"error\": \"%s\", \"errno\": %d}\n", why, errno);
    fflush(stdout);
    exit(code);
}

static void ep_set(conn_t *c, uint32_t ev, int op) {
    struct epoll_event e;
    e.events = ev;
    e.data.u32 = (uint32_t)(c - conns);
    if (epoll_ctl(epfd, op, c->fd, &e) < 0) die_json("epoll_ctl", 3);
}

static int errors, idle_events, setup_failures;

static void kill_conn(conn_t *c) {
    if (c->state == ST_DEAD) return;
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->state = ST_DEAD;
    errors++;
}

static struct sockaddr_in addr;
static int connecting;  /* connects + pings in flight */

static void start_connect(conn_t *c) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) die_json("socket", 3);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->fd = fd;
    int r = connect(fd, (struct sockaddr *)&addr, sizeof addr);
    if (r < 0 && errno != EINPROGRESS) die_json("connect", 3);
    c->state = ST_CONNECTING;
    connecting++;
    ep_set(c, EPOLLOUT, EPOLL_CTL_ADD);
}

/* The PROXY v1 header, written first on a fresh connection (its send buffer is
 * empty: 43 bytes always fit). 0 on success. */
static int send_proxy(conn_t *c) {
    if (!use_proxy) return 0;
    ssize_t n = send(c->fd, proxy_hdr, sizeof proxy_hdr - 1, MSG_NOSIGNAL);
    return n == (ssize_t)(sizeof proxy_hdr - 1) ? 0 : -1;
}

static void fill_msg(conn_t *c) {
    /* Cheap per-message pattern for -V: first 4 bytes carry the sequence. */
    if (verify && msg_size >= 4) memcpy(msgbuf, &c->seq, 4);
}

/* Write as much of the current message as the socket takes. */
static void pump_write(conn_t *c) {
    while (c->sent < msg_size) {
        ssize_t n = send(c->fd, msgbuf + c->sent, msg_size - c->sent, MSG_NOSIGNAL);
        if (n > 0) { c->sent += (size_t)n; continue; }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        if (n < 0 && errno == EINTR) continue;
        kill_conn(c);
        return;
    }
    int need_out = c->sent < msg_size;
    if (need_out != c->want_out) {
        c->want_out = need_out;
        ep_set(c, EPOLLIN | (need_out ? EPOLLOUT : 0), EPOLL_CTL_MOD);
    }
}

static void send_msg(conn_t *c, uint64_t t) {
    c->sent = 0;
    c->rcvd = 0;
    c->t0 = t;
    c->seq++;
    fill_msg(c);
    pump_write(c);
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double pct(double p) {
    if (!nlat) return -1;
    size_t i = (size_t)(p / 100.0 * (double)(nlat - 1) + 0.5);
    if (i >= nlat) i = nlat - 1;
    return lat[i] / 1000.0;
}

static void record_lat(uint64_t ns) {
    if (nlat == caplat) {
        caplat *= 2;
        uint64_t *nl = realloc(lat, caplat * sizeof *lat);
        if (!nl) die_json("oom", 3);
        lat = nl;
    }
    lat[nlat++] = ns;
}

/* Read what the socket has of the current echo; 1 when the whole message is back,
 * 0 when more is to come, -1 on EOF/error/excess bytes. */
static int pump_read(conn_t *c) {
    for (;;) {
        ssize_t r = recv(c->fd, rbuf, sizeof rbuf, 0);
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        c->rcvd += (size_t)r;
        if (c->rcvd > msg_size) return -1;
        if (c->rcvd == msg_size) return 1;
    }
}

enum { ST_CLOSING = ST_DEAD + 1, ST_DONE };

/* A connection for churn/storm: counted as a retry (not an error) when connect()
 * itself fails, as a refused connection is retried by the caller. */
static void churn_start(conn_t *c, uint64_t t) {
    c->sent = c->rcvd = 0;
    c->want_out = 0;
    c->t0 = t;
    start_connect(c);
}

/* The connect finished (EPOLLOUT): 0 and the message on its way, or -1. */
static int on_connected(conn_t *c) {
    int err = 0;
    socklen_t l = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
    connecting--;
    if (err || send_proxy(c)) return -1;
    c->state = ST_RUN;
    c->want_out = 2;        /* registered for EPOLLOUT alone: pump_write re-registers */
    pump_write(c);
    return c->state == ST_DEAD ? -1 : 0;
}

static void drop(conn_t *c) {
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
}

static void print_lat_json(const char *extra, uint64_t msgs, double meas_s, double cpu) {
    qsort(lat, nlat, sizeof *lat, cmp_u64);
    double mean = 0;
    for (size_t i = 0; i < nlat; i++) mean += (double)lat[i];
    mean = nlat ? mean / (double)nlat / 1000.0 : -1;
    printf("{%s\"conns\": %d, \"size\": %zu, \"msgs\": %llu, \"msgs_per_s\": %.1f, "
           "\"lat_mean_us\": %.1f, \"lat_p50_us\": %.1f, \"lat_p90_us\": %.1f, "
           "\"lat_p99_us\": %.1f, \"lat_max_us\": %.1f, \"client_cpu\": %.3f, "
           "\"errors\": %d, \"setup_retries\": %d}\n",
           extra, nactive, msg_size, (unsigned long long)msgs, msgs / meas_s, mean, pct(50),
           pct(90), pct(99), nlat ? lat[nlat - 1] / 1000.0 : -1, cpu, errors, setup_failures);
    fflush(stdout);
}

/* -m churn: see the top of the file. */
static int run_churn(double warm, double dur) {
    struct epoll_event evs[1024];
    uint64_t t_begin = now_ns();
    uint64_t t_meas = t_begin + (uint64_t)(warm * 1e9);
    uint64_t t_end = t_meas + (uint64_t)(dur * 1e9);
    uint64_t done = 0, done_warm = 0;
    double cpu0 = warm <= 0 ? cpu_s() : -1;
    for (int i = 0; i < nconns; i++) churn_start(&conns[i], t_begin);
    uint64_t t = now_ns();
    while (t < t_end) {
        if (cpu0 < 0 && t >= t_meas) cpu0 = cpu_s();
        uint64_t deadline = t < t_meas ? t_meas : t_end;
        int n = epoll_wait(epfd, evs, 1024, (int)((deadline - t + 999999) / 1000000));
        if (n < 0 && errno != EINTR) die_json("epoll_wait", 3);
        for (int k = 0; k < n; k++) {
            conn_t *c = &conns[evs[k].data.u32];
            int r = 0;
            if (c->state == ST_CONNECTING) {
                if (on_connected(c) < 0) {
                    if (c->state != ST_DEAD) drop(c);
                    setup_failures++;
                    churn_start(c, now_ns());
                }
                continue;
            }
            if (c->state == ST_RUN) {
                if (evs[k].events & EPOLLOUT) pump_write(c);
                if (c->state == ST_DEAD) { errors--; r = -1; }
                else if (evs[k].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) r = pump_read(c);
                if (r == 1) {
                    /* our side's close first; then wait for the server's */
                    shutdown(c->fd, SHUT_WR);
                    c->state = ST_CLOSING;
                    ep_set(c, EPOLLIN, EPOLL_CTL_MOD);
                }
            } else if (c->state == ST_CLOSING) {
                ssize_t got = recv(c->fd, rbuf, sizeof rbuf, 0);
                if (got < 0 && (errno == EAGAIN || errno == EINTR)) continue;
                if (got != 0) r = -1;
                else {
                    uint64_t tn = now_ns();
                    drop(c);
                    if (tn >= t_meas && tn < t_end) { done++; record_lat(tn - c->t0); }
                    else if (tn < t_meas) done_warm++;
                    churn_start(c, tn);
                    continue;
                }
            }
            if (r < 0) {
                if (c->state != ST_DEAD) drop(c);
                errors++;
                if (errors > 100 + nconns) die_json("too many failed connections", 4);
                churn_start(c, now_ns());
            }
        }
        t = now_ns();
    }
    if (cpu0 < 0) cpu0 = cpu_s();
    char extra[96];
    snprintf(extra, sizeof extra, "\"mode\": \"churn\", \"msgs_warmup\": %llu, ",
             (unsigned long long)done_warm);
    print_lat_json(extra, done, dur > 0 ? dur : 1e-9, (cpu_s() - cpu0) / (dur > 0 ? dur : 1e-9));
    return 0;
}

/* -m storm: see the top of the file. */
static int run_storm(double setup_timeout) {
    struct epoll_event evs[1024];
    double cpu0 = cpu_s();
    uint64_t t_begin = now_ns();
    uint64_t deadline = t_begin + (uint64_t)(setup_timeout * 1e9);
    for (int i = 0; i < nconns; i++) churn_start(&conns[i], t_begin);
    int served = 0;
    uint64_t t = now_ns();
    while (served < nconns && t < deadline) {
        int n = epoll_wait(epfd, evs, 1024, (int)((deadline - t + 999999) / 1000000));
        if (n < 0 && errno != EINTR) die_json("epoll_wait", 3);
        for (int k = 0; k < n; k++) {
            conn_t *c = &conns[evs[k].data.u32];
            int r = 0;
            if (c->state == ST_CONNECTING) {
                if (on_connected(c) < 0) {
                    if (c->state != ST_DEAD) drop(c);
                    setup_failures++;
                    churn_start(c, c->t0);   /* the clock keeps running from the storm's start */
                }
                continue;
            }
            if (c->state != ST_RUN) {
                /* served: stays open and quiet (an EOF here is the server giving up) */
                ssize_t got = recv(c->fd, rbuf, sizeof rbuf, 0);
                if (got == 0 || (got < 0 && errno != EAGAIN && errno != EINTR)) {
                    drop(c);
                    c->state = ST_DEAD;
                    idle_events++;      /* closed by the server after its echo */
                } else {
                    ep_set(c, 0, EPOLL_CTL_MOD);
                }
                continue;
            }
            if (evs[k].events & EPOLLOUT) pump_write(c);
            if (c->state == ST_DEAD) { r = -1; }
            else if (evs[k].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) r = pump_read(c);
            if (r == 1) {
                record_lat(now_ns() - t_begin);
                c->state = ST_DONE;
                ep_set(c, 0, EPOLL_CTL_MOD);
                served++;
            } else if (r < 0) {
                if (c->state != ST_DEAD) { drop(c); c->state = ST_DEAD; errors++; }
                served++;   /* lost: counted in errors, not waited for */
            }
        }
        t = now_ns();
    }
    double elapsed = (now_ns() - t_begin) / 1e9;
    qsort(lat, nlat, sizeof *lat, cmp_u64);
    double first = nlat ? lat[0] / 1e6 : -1, last = nlat ? lat[nlat - 1] / 1e6 : -1;
    char extra[320];
    snprintf(extra, sizeof extra,
             "\"mode\": \"storm\", \"served\": %zu, \"unserved\": %d, \"storm_first_ms\": %.2f, "
             "\"storm_p50_ms\": %.2f, \"storm_p99_ms\": %.2f, \"storm_last_ms\": %.2f, "
             "\"storm_span_ms\": %.2f, \"elapsed_s\": %.3f, \"closed_after_echo\": %d, ",
             nlat, nconns - (int)nlat - errors, first, pct(50) / 1000, pct(99) / 1000, last,
             nlat ? last - first : -1, elapsed, idle_events);
    print_lat_json(extra, nlat, elapsed, (cpu_s() - cpu0) / elapsed);
    for (int i = 0; i < nconns; i++)
        if (conns[i].state != ST_DEAD) close(conns[i].fd);
    return 0;
}

int main(int argc, char **argv) {
    const char *host = "127.0.0.1";
    int port = 0, window = 64;
    double warm = 1.0, dur = 5.0, setup_timeout = 60.0;
    int opt;
    const char *mode = "echo";
    nactive = 1;
    while ((opt = getopt(argc, argv, "h:p:c:s:i:w:d:W:T:Vt:Lxm:")) != -1) {
        switch (opt) {
        case 'h': host = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 'c': nactive = atoi(optarg); break;
        case 's': msg_size = (size_t)atol(optarg); break;
        case 'i': nidle = atoi(optarg); break;
        case 'w': warm = atof(optarg); break;
        case 'd': dur = atof(optarg); break;
        case 'W': window = atoi(optarg); break;
        case 'T': setup_timeout = atof(optarg); break;
        case 'V': verify = 1; break;
        case 't': tick_s = atof(optarg); break;
        case 'L': line_mode = 1; break;
        case 'x': use_proxy = 1; break;
        case 'm': mode = optarg; break;
        default:
            fprintf(stderr, "usage: %s -p PORT [-h HOST] [-c CONNS] [-s SIZE] [-i IDLE] "
                            "[-w WARMUP] [-d DURATION] [-W WINDOW] [-T SETUP_TIMEOUT] [-V] [-t TICK] [-L] [-x] "
                            "[-m echo|churn|storm]\n", argv[0]);
            return 2;
        }
    }
    if (port <= 0 || nactive < 0 || nidle < 0 || msg_size < 1 || window < 1 ||
        (nactive + nidle) < 1 || dur < 0 || warm < 0 ||
        (strcmp(mode, "echo") && strcmp(mode, "churn") && strcmp(mode, "storm")) ||
        (line_mode && verify)) {
        fprintf(stderr, "bad arguments\n");
        return 2;
    }
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) { fprintf(stderr, "bad host\n"); return 2; }
    if ((ntohl(addr.sin_addr.s_addr) >> 24) != 127) {
        fprintf(stderr, "refusing non-loopback target %s\n", host);
        return 2;
    }

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    nconns = nidle + nactive;
    conns = calloc((size_t)nconns, sizeof *conns);
    msgbuf = malloc(msg_size);
    for (size_t i = 0; i < msg_size; i++) msgbuf[i] = (unsigned char)('a' + i % 26);
    if (line_mode) msgbuf[msg_size - 1] = '\n';
    caplat = 1 << 20;
    lat = malloc(caplat * sizeof *lat);
    /* idle connections first, so the active ones run with them all open */
    for (int i = 0; i < nconns; i++) { conns[i].idle = i < nidle; conns[i].fd = -1; }

    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) die_json("epoll_create1", 3);

    struct epoll_event evs[1024];
    uint64_t t_start = now_ns();
    uint64_t setup_deadline = t_start + (uint64_t)(setup_timeout * 1e9);
    int next = 0, ready = 0;
    unsigned char ping = line_mode ? '\n' : '!';
    if (strcmp(mode, "churn") == 0) return run_churn(warm, dur);
    if (strcmp(mode, "storm") == 0) return run_storm(setup_timeout);

    /* ---- setup: windowed connects, each followed by a 1-byte ping ---- */
    while (ready < nconns) {
        while (next < nconns && connecting < window) start_connect(&conns[next++]);
        uint64_t t = now_ns();
        if (t >= setup_deadline) {
            printf("{\"error\": \"setup timeout\", \"ready\": %d, \"wanted\": %d, \"setup_s\": %.3f}\n",
                   ready, nconns, (t - t_start) / 1e9);
            fflush(stdout);
            return 4;
        }
        int n = epoll_wait(epfd, evs, 1024, 100);
        if (n < 0 && errno != EINTR) die_json("epoll_wait", 3);
        for (int k = 0; k < n; k++) {
            conn_t *c = &conns[evs[k].data.u32];
            if (c->state == ST_CONNECTING) {
                int err = 0;
                socklen_t l = sizeof err;
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
                if (err) {  /* refused/reset while connecting: retry later */
                    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
                    close(c->fd);
                    connecting--;
                    setup_failures++;
                    if (setup_failures > 100 + nconns / 10) {
                        errno = err;
                        die_json("too many connect failures", 4);
                    }
                    start_connect(c);
                    continue;
                }
                if (send_proxy(c) || send(c->fd, &ping, 1, MSG_NOSIGNAL) != 1) die_json("ping send", 4);
                c->state = ST_PING;
                ep_set(c, EPOLLIN, EPOLL_CTL_MOD);
            } else if (c->state == ST_PING) {
                ssize_t r = recv(c->fd, rbuf, sizeof rbuf, 0);
                if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
                if (r != 1) die_json("ping reply", 4);
                c->state = ST_READY;
                connecting--;
                ready++;
            } else if (c->state == ST_READY) {
                /* unexpected data/EOF on a ready connection */
                ssize_t r = recv(c->fd, rbuf, sizeof rbuf, 0);
                if (r <= 0 && !(r < 0 && errno == EAGAIN)) {
                    kill_conn(c);
                    die_json("connection lost during setup", 4);
                }
                idle_events++;
            }
        }
    }
    double setup_s = (now_ns() - t_start) / 1e9;
    fprintf(stderr, "SETUP_DONE %.3f\n", setup_s);
    fflush(stderr);

    /* ---- load: warm-up then measurement ---- */
    uint64_t t_warm = now_ns();
    uint64_t t_meas = t_warm + (uint64_t)(warm * 1e9);
    uint64_t t_end = t_meas + (uint64_t)(dur * 1e9);
    uint64_t msgs_warm = 0, msgs = 0, bytes = 0;
    double cpu_meas0 = 0, cpu_meas1 = 0;
    int measuring = 0, vfail = 0;
    uint64_t tick_msgs = 0, t_tick = t_warm + (uint64_t)(tick_s * 1e9);
    for (int i = nidle; i < nconns; i++) {
        conns[i].state = ST_RUN;
        send_msg(&conns[i], t_warm);
    }
    if (warm <= 0) { measuring = 1; cpu_meas0 = cpu_s(); }
    uint64_t t = now_ns();
    int alive = nactive;
    while (t < t_end) {
        if (!measuring && t >= t_meas) { measuring = 1; cpu_meas0 = cpu_s(); }
        uint64_t deadline = measuring ? t_end : t_meas;
        if (tick_s > 0 && t_tick < deadline) deadline = t_tick;
        int to = (int)((deadline - t + 999999) / 1000000);
        if (to < 0) to = 0;
        int n = epoll_wait(epfd, evs, 1024, to);
        if (n < 0 && errno != EINTR) die_json("epoll_wait", 3);
        for (int k = 0; k < n; k++) {
            conn_t *c = &conns[evs[k].data.u32];
            uint32_t e = evs[k].events;
            if (c->state == ST_DEAD) continue;
            if (c->idle) {
                ssize_t r = recv(c->fd, rbuf, sizeof rbuf, 0);
                idle_events++;
                if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) kill_conn(c);
                continue;
            }
            if (e & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
                ssize_t r = recv(c->fd, rbuf, sizeof rbuf, 0);
                if (r < 0 && (errno == EAGAIN || errno == EINTR)) goto out;
                if (r <= 0) { kill_conn(c); alive--; continue; }
                if (verify && c->rcvd < 4 && msg_size >= 4) {
                    size_t m = 4 - c->rcvd;
                    if ((size_t)r < m) m = (size_t)r;
                    if (memcmp(rbuf, (unsigned char *)&c->seq + c->rcvd, m) != 0) vfail++;
                }
                c->rcvd += (size_t)r;
                if (c->rcvd > c->sent) { kill_conn(c); alive--; vfail++; continue; }
                if (c->rcvd == msg_size) {
                    uint64_t tn = now_ns();
                    if (tn >= t_meas && tn < t_end) {
                        msgs++;
                        c->nmeas++;
                        bytes += msg_size;
                        if (nlat == caplat) {
                            caplat *= 2;
                            uint64_t *nl = realloc(lat, caplat * sizeof *lat);
                            if (!nl) die_json("oom", 3);
                            lat = nl;
                        }
                        lat[nlat++] = tn - c->t0;
                    } else if (tn < t_meas) {
                        msgs_warm++;
                    }
                    tick_msgs++;
                    send_msg(c, tn);
                    continue;
                }
            }
        out:
            if ((e & EPOLLOUT) && c->state == ST_RUN) pump_write(c);
        }
        if (alive <= 0 && nactive > 0) break;
        t = now_ns();
        if (tick_s > 0 && t >= t_tick) {
            fprintf(stderr, "TICK %.3f %llu\n", (t - t_warm) / 1e9, (unsigned long long)tick_msgs);
            tick_msgs = 0;
            t_tick = t + (uint64_t)(tick_s * 1e9);
        }
    }
    if (!measuring) cpu_meas0 = cpu_s();
    cpu_meas1 = cpu_s();
    uint64_t t_stop = now_ns();
    double meas_s = (double)((t_stop < t_end ? t_stop : t_end) - t_meas) / 1e9;
    if (meas_s <= 0) meas_s = 1e-9;

    qsort(lat, nlat, sizeof *lat, cmp_u64);
    /* fairness: messages per active connection (min / median / max) */
    uint64_t *per = calloc((size_t)nactive + 1, sizeof *per);
    for (int i = 0; i < nactive; i++) per[i] = conns[nidle + i].nmeas;
    qsort(per, (size_t)nactive, sizeof *per, cmp_u64);
    unsigned long long per_min = nactive ? per[0] : 0, per_med = nactive ? per[nactive / 2] : 0,
                       per_max = nactive ? per[nactive - 1] : 0;
    double mean = 0;
    for (size_t i = 0; i < nlat; i++) mean += (double)lat[i];
    mean = nlat ? mean / (double)nlat / 1000.0 : -1;
    printf("{\"conns\": %d, \"size\": %zu, \"idle\": %d, \"warmup_s\": %.3f, \"duration_s\": %.3f, "
           "\"setup_s\": %.3f, \"msgs\": %llu, \"msgs_warmup\": %llu, \"msgs_per_s\": %.1f, "
           "\"mbytes_per_s\": %.3f, \"lat_mean_us\": %.1f, \"lat_p50_us\": %.1f, \"lat_p90_us\": %.1f, "
           "\"lat_p99_us\": %.1f, \"lat_p999_us\": %.1f, \"lat_max_us\": %.1f, "
           "\"client_cpu\": %.3f, \"errors\": %d, \"idle_events\": %d, \"setup_retries\": %d, "
           "\"verify_failures\": %d, \"per_conn_min\": %llu, \"per_conn_median\": %llu, "
           "\"per_conn_max\": %llu}\n",
           nactive, msg_size, nidle, warm, meas_s, setup_s, (unsigned long long)msgs,
           (unsigned long long)msgs_warm, msgs / meas_s, bytes / meas_s / 1e6, mean, pct(50),
           pct(90), pct(99), pct(99.9), nlat ? lat[nlat - 1] / 1000.0 : -1,
           (cpu_meas1 - cpu_meas0) / meas_s, errors, idle_events, setup_failures, vfail,
           per_min, per_med, per_max);
    fflush(stdout);
    return 0;
}
