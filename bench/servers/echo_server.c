/*
 * echo_server.c -- single-thread epoll TCP echo server: the machine's ceiling.
 *
 * Level-triggered epoll, 256 KiB reads, write back at once; whatever the
 * socket does not take is kept per connection and reading pauses until it
 * has drained (so memory stays bounded). TCP_NODELAY on accepted sockets.
 * Usage: echo_server PORT   (binds 127.0.0.1, prints "READY PORT" when listening)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct { char *buf; size_t len, off; } pend_t;

static pend_t *pend;
static size_t npend;
static int epfd;
static char rbuf[1 << 18];

static void set_ev(int fd, uint32_t ev, int op) {
    struct epoll_event e = { .events = ev, .data.fd = fd };
    epoll_ctl(epfd, op, fd, &e);
}

static void drop(int fd) {
    epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL);
    close(fd);
    if ((size_t)fd < npend) { free(pend[fd].buf); pend[fd] = (pend_t){0}; }
}

static void ensure(int fd) {
    if ((size_t)fd < npend) return;
    size_t n = npend ? npend : 1024;
    while (n <= (size_t)fd) n *= 2;
    pend = realloc(pend, n * sizeof *pend);
    memset(pend + npend, 0, (n - npend) * sizeof *pend);
    npend = n;
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: %s PORT\n", argv[0]); return 2; }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) { rl.rlim_cur = rl.rlim_max; setrlimit(RLIMIT_NOFILE, &rl); }
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1])) };
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (bind(ls, (struct sockaddr *)&a, sizeof a) < 0 || listen(ls, 4096) < 0) { perror("bind/listen"); return 1; }
    socklen_t al = sizeof a;
    getsockname(ls, (struct sockaddr *)&a, &al);
    epfd = epoll_create1(EPOLL_CLOEXEC);
    set_ev(ls, EPOLLIN, EPOLL_CTL_ADD);
    printf("READY %d\n", ntohs(a.sin_port));
    fflush(stdout);
    struct epoll_event evs[1024];
    for (;;) {
        int n = epoll_wait(epfd, evs, 1024, -1);
        if (n < 0) { if (errno == EINTR) continue; perror("epoll_wait"); return 1; }
        for (int k = 0; k < n; k++) {
            int fd = evs[k].data.fd;
            uint32_t e = evs[k].events;
            if (fd == ls) {
                for (;;) {
                    int c = accept4(ls, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (c < 0) break;   /* EAGAIN, or EMFILE: retried on the next event */
                    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    ensure(c);
                    set_ev(c, EPOLLIN, EPOLL_CTL_ADD);
                }
                continue;
            }
            ensure(fd);
            pend_t *p = &pend[fd];
            if (p->len) {   /* draining: only EPOLLOUT is registered */
                if (e & (EPOLLERR | EPOLLHUP) && !(e & EPOLLOUT)) { drop(fd); continue; }
                ssize_t w = send(fd, p->buf + p->off, p->len - p->off, MSG_NOSIGNAL);
                if (w < 0 && errno != EAGAIN) { drop(fd); continue; }
                if (w > 0) p->off += (size_t)w;
                if (p->off == p->len) { p->len = p->off = 0; set_ev(fd, EPOLLIN, EPOLL_CTL_MOD); }
                continue;
            }
            ssize_t r = recv(fd, rbuf, sizeof rbuf, 0);
            if (r < 0 && errno == EAGAIN) continue;
            if (r <= 0) { drop(fd); continue; }
            ssize_t w = send(fd, rbuf, (size_t)r, MSG_NOSIGNAL);
            if (w < 0) { if (errno != EAGAIN) { drop(fd); continue; } w = 0; }
            if (w < r) {
                p->buf = realloc(p->buf, (size_t)(r - w));
                memcpy(p->buf, rbuf + w, (size_t)(r - w));
                p->len = (size_t)(r - w);
                p->off = 0;
                set_ev(fd, EPOLLOUT, EPOLL_CTL_MOD);
            }
        }
    }
}
