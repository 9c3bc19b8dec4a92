/* tls_echo_client: a closed-loop TLS (or plain TCP) echo load generator, for bench/tls.py.
 *
 *   tls_echo_client -p PORT [-c CONNS] [-s SIZE] [-w WARMUP] [-d SECONDS] [-m echo|handshake|idle] [-P]
 *
 * One thread, epoll, non-blocking sockets with TCP_NODELAY, OpenSSL with certificate
 * checks off (the benchmark measures the server, not the PKI).
 *   echo:      each connection sends SIZE bytes, waits for all of them back, sends again;
 *              prints {"messages_per_s": ..., "mb_per_s": ...} over the measured window.
 *   handshake: each connection connects, completes the TLS handshake, closes (no session
 *              resumption: full handshakes), and starts over; prints {"handshakes_per_s": ...}.
 *   idle:      opens CONNS connections, each completing its handshake and one echo of
 *              SIZE bytes (so the server has surely accepted and finished it), prints
 *              "HELD" on stdout, then holds them for SECONDS and exits.
 * -P: plain TCP, no TLS (the baseline rows). Every loop is bounded by -w and -d.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum state { CONNECTING, HANDSHAKE, SENDING, RECEIVING, HELD };

struct conn {
    int fd;
    SSL *ssl;
    enum state state;
    size_t sent, received;
};

static SSL_CTX *ctx;
static int port, plain, epfd;
static size_t size = 1024;
static char *message, *buffer;
static long completed;
static int measuring;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what) {
    fprintf(stderr, "tls_echo_client: %s: %s\n", what, strerror(errno));
    ERR_print_errors_fp(stderr);
    exit(1);
}

static void watch(struct conn *c, unsigned events, int op) {
    struct epoll_event event = {.events = events, .data.ptr = c};
    if (epoll_ctl(epfd, op, c->fd, &event) < 0) die("epoll_ctl");
}

static void start(struct conn *c) {
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(port)};
    int one = 1;
    inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (c->fd < 0) die("socket");
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(c->fd, (struct sockaddr *)&address, sizeof address) < 0 && errno != EINPROGRESS)
        die("connect");
    c->state = CONNECTING;
    c->ssl = NULL;
    c->sent = c->received = 0;
    watch(c, EPOLLOUT, EPOLL_CTL_ADD);
}

static void finish(struct conn *c) {
    if (c->ssl) {
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    close(c->fd);       /* epoll forgets it */
}

/* What OpenSSL (or the socket) waits for: 1 = readable, 2 = writable, 0 = go on, -1 = fatal. */
static int io_wait(struct conn *c, int result) {
    if (plain) {
        if (result > 0) return 0;
        if (result < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return c->state == SENDING ? 2 : 1;
        return -1;
    }
    switch (SSL_get_error(c->ssl, result)) {
    case SSL_ERROR_NONE: return 0;
    case SSL_ERROR_WANT_READ: return 1;
    case SSL_ERROR_WANT_WRITE: return 2;
    default: return -1;
    }
}

/* Advance one connection as far as it goes; return what it waits for (1 or 2). */
static int advance(struct conn *c, const char *mode) {
    for (;;) {
        int result, wait;
        switch (c->state) {
        case CONNECTING: {
            int error = 0;
            socklen_t length = sizeof error;
            getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &error, &length);
            if (error) { errno = error; die("connect"); }
            if (plain) {
                c->state = strcmp(mode, "handshake") == 0 ? HELD : SENDING;
            } else {
                c->ssl = SSL_new(ctx);
                SSL_set_fd(c->ssl, c->fd);
                SSL_set_tlsext_host_name(c->ssl, "localhost");
                SSL_set_connect_state(c->ssl);
                c->state = HANDSHAKE;
            }
            if (c->state == HELD) return 0;
            continue;
        }
        case HANDSHAKE:
            result = SSL_do_handshake(c->ssl);
            if (result == 1) {
                c->state = strcmp(mode, "handshake") == 0 ? HELD : SENDING;
                if (c->state == HELD) return 0;
                continue;
            }
            wait = io_wait(c, result);
            if (wait < 0) die("handshake");
            return wait;
        case SENDING:
            result = plain ? (int)send(c->fd, message + c->sent, size - c->sent, 0)
                           : SSL_write(c->ssl, message + c->sent, (int)(size - c->sent));
            if (result > 0) {
                c->sent += result;
                if (c->sent == size) { c->state = RECEIVING; c->received = 0; }
                continue;
            }
            wait = io_wait(c, result);
            if (wait < 0) die("write");
            return wait;
        case RECEIVING:
            result = plain ? (int)recv(c->fd, buffer, 256 * 1024, 0) : SSL_read(c->ssl, buffer, 256 * 1024);
            if (result > 0) {
                c->received += result;
                if (c->received >= size) {
                    if (strcmp(mode, "idle") == 0) { c->state = HELD; return 0; }
                    if (measuring) completed++;
                    c->state = SENDING;
                    c->sent = 0;
                }
                continue;
            }
            wait = io_wait(c, result);
            if (wait < 0) die("read");
            return wait;
        case HELD:
            return 0;
        }
    }
}

int main(int argc, char **argv) {
    int conns = 10, option;
    double warmup = 1, duration = 5;
    const char *mode = "echo";
    while ((option = getopt(argc, argv, "p:c:s:w:d:m:P")) != -1) {
        switch (option) {
        case 'p': port = atoi(optarg); break;
        case 'c': conns = atoi(optarg); break;
        case 's': size = strtoul(optarg, NULL, 10); break;
        case 'w': warmup = atof(optarg); break;
        case 'd': duration = atof(optarg); break;
        case 'm': mode = optarg; break;
        case 'P': plain = 1; break;
        default: fprintf(stderr, "usage: see the top of tls_echo_client.c\n"); return 2;
        }
    }
    ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);    /* full handshakes */
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    message = malloc(size);
    buffer = malloc(256 * 1024);
    memset(message, 'x', size);
    epfd = epoll_create1(0);
    struct conn *all = calloc(conns, sizeof *all);
    for (int i = 0; i < conns; i++) start(&all[i]);
    struct epoll_event events[1024];
    double begin = now(), measure_from = begin + warmup, end = measure_from + duration;
    int handshake = strcmp(mode, "handshake") == 0, idle = strcmp(mode, "idle") == 0, held = 0;
    while (now() < (idle ? begin + warmup + 60 : end)) {
        if (!measuring && !idle && now() >= measure_from) { measuring = 1; completed = 0; }
        int ready = epoll_wait(epfd, events, 1024, 100);
        for (int i = 0; i < ready; i++) {
            struct conn *c = events[i].data.ptr;
            int wait = advance(c, mode);
            if (c->state == HELD) {
                if (handshake) {
                    if (measuring) completed++;
                    finish(c);
                    start(c);
                } else if (idle) {
                    watch(c, 0, EPOLL_CTL_MOD);
                    if (++held == conns) {
                        printf("HELD\n");
                        fflush(stdout);
                        usleep((useconds_t)(duration * 1e6));
                        return 0;
                    }
                }
                continue;
            }
            watch(c, wait == 2 ? EPOLLOUT : EPOLLIN, EPOLL_CTL_MOD);
        }
    }
    if (idle) { fprintf(stderr, "tls_echo_client: only %d of %d connections held\n", held, conns); return 1; }
    if (handshake)
        printf("{\"handshakes_per_s\": %.1f}\n", completed / duration);
    else
        printf("{\"messages_per_s\": %.1f, \"mb_per_s\": %.2f}\n", completed / duration,
               completed * (double)size / duration / 1e6);
    return 0;
}
