/* wsreader: console WebSocket readers for bench/console_throughput.py (not a benchmark by itself).
 *
 * The raw Docker baseline reads the attach stream in large reads and only counts newlines. A Python
 * WebSocket client spends microseconds per frame, so with one frame per console line (and 50 sockets) the
 * reader, not the daemon, would set the rate. This program is the WebSocket counterpart of that baseline:
 * CLIENTS connections in one process, a real handshake (the Sec-WebSocket-Accept is checked), large reads
 * with poll(), and a walk over every frame:
 *   - a `console` text frame counts one line; it must be exactly {"event":"console","data":"<line>","ts":<ms>}
 *     with the expected line (else it counts as bad);
 *   - a `console_batch` frame: its length gives the number of lines, and every slot of the JSON list must
 *     hold the expected line (else the frame counts as one bad line);
 *   - other text frames: an `exit` event ends that connection, a `daemon_message` is counted;
 *   - pings are answered (masked pong), a close frame or a protocol error ends the connection with an error.
 * It prints "ready" once every handshake is done, then, when every connection has seen its exit event (or
 * TIMEOUT seconds passed), one JSON object per connection (times in CLOCK_MONOTONIC seconds).
 *
 *   gcc -O2 -o wsreader bench/wsreader.c
 *   wsreader HOST PORT PATH KEY ACCEPT CLIENTS LINE TIMEOUT
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const char CONSOLE[] = "{\"event\":\"console\",\"data\":";
static const char BATCH[] = "{\"event\":\"console_batch\",\"data\":{\"lines\":[";
static const char BATCH_TAIL[] = "]},\"ts\":";
static const char EXIT_MARK[] = "\"type\":\"exit\"";
static const char NOTICE_MARK[] = "{\"event\":\"daemon_message\"";

typedef struct {
    int fd;
    unsigned char *buf;
    size_t len, cap;
    long lines, bad, frames, notices;
    double first, last, exit_at;
    int done;
    const char *error;
} conn_t;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what) {
    fprintf(stderr, "wsreader: %s: %s\n", what, strerror(errno));
    exit(2);
}

static char *quoted;
static size_t quoted_len;

static void walk(conn_t *c) {
    size_t i = 0, len = c->len;
    unsigned char *buf = c->buf;
    long before = c->lines;
    while (len - i >= 2 && !c->done) {
        unsigned char b0 = buf[i];
        uint64_t plen = buf[i + 1] & 0x7F;
        size_t start;
        if (buf[i + 1] & 0x80) { c->error = "masked server frame"; c->done = 1; break; }
        if (plen < 126) {
            start = i + 2;
        } else if (plen == 126) {
            if (len - i < 4) break;
            plen = ((uint64_t)buf[i + 2] << 8) | buf[i + 3];
            start = i + 4;
        } else {
            if (len - i < 10) break;
            plen = 0;
            for (int k = 0; k < 8; k++) plen = (plen << 8) | buf[i + 2 + k];
            start = i + 10;
        }
        if (start + plen > len) {
            if (start + plen > c->cap) {  /* a frame larger than the buffer: grow it */
                c->cap = start + plen + 65536;
                c->buf = realloc(c->buf, c->cap);
                if (!c->buf) die("realloc");
                buf = c->buf;
            }
            break;
        }
        const unsigned char *p = buf + start;
        int op = b0 & 0x0F;
        c->frames++;
        if (op == 1) {
            if (plen >= sizeof CONSOLE - 1 && memcmp(p, CONSOLE, sizeof CONSOLE - 1) == 0) {
                /* CONSOLE + the quoted line + ,"ts":<13 digits>} */
                c->lines++;
                if (plen != sizeof CONSOLE - 1 + quoted_len + 20
                    || memcmp(p + sizeof CONSOLE - 1, quoted, quoted_len) != 0) c->bad++;
            } else if (plen >= sizeof BATCH - 1 && memcmp(p, BATCH, sizeof BATCH - 1) == 0) {
                /* BATCH + count quoted lines joined by "," + ]},"ts": + 13 digits + }: the count follows
                 * from the length, then every slot is compared with the expected line. */
                uint64_t fixed = sizeof BATCH - 1 + sizeof BATCH_TAIL - 1 + 14;
                uint64_t slots = plen > fixed ? plen - fixed + 1 : 0;
                long count = (long)(slots / (quoted_len + 1));
                int ok = slots % (quoted_len + 1) == 0 && count > 0;
                const unsigned char *q = p + sizeof BATCH - 1;
                for (long k = 0; ok && k < count; k++, q += quoted_len + 1) {
                    if (memcmp(q, quoted, quoted_len) != 0 || (k + 1 < count && q[quoted_len] != ',')) ok = 0;
                }
                if (!ok) {  /* not a list of the expected lines: count it as one bad line */
                    c->bad++;
                    count = 1;
                }
                c->lines += count;
            } else if (memmem(p, plen, EXIT_MARK, sizeof EXIT_MARK - 1)) {
                c->exit_at = now();
                c->done = 1;
            } else if (plen >= sizeof NOTICE_MARK - 1 && memcmp(p, NOTICE_MARK, sizeof NOTICE_MARK - 1) == 0) {
                c->notices++;
            }
        } else if (op == 9) {  /* ping -> pong with the same payload, masked with a zero key */
            unsigned char pong[2 + 4 + 125];
            size_t n = plen > 125 ? 125 : plen;
            pong[0] = 0x8A; pong[1] = 0x80 | (unsigned char)n;
            memset(pong + 2, 0, 4);
            memcpy(pong + 6, p, n);
            if (write(c->fd, pong, 6 + n) < 0) { c->error = "pong failed"; c->done = 1; }
        } else if (op == 8) {
            c->error = "closed by the daemon";
            c->done = 1;
        } else if (op != 10) {
            c->error = "unexpected opcode";
            c->done = 1;
        }
        i = start + plen;
    }
    memmove(buf, buf + i, len - i);
    c->len = len - i;
    if (c->lines != before) {
        double t = now();
        if (before == 0) c->first = t;
        c->last = t;
    }
}

static void handshake(conn_t *c, const char *host, int port, const char *path, const char *key, const char *accept) {
    struct sockaddr_in addr = {0};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) { fprintf(stderr, "wsreader: bad host %s\n", host); exit(2); }
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (c->fd < 0) die("socket");
    int rcvbuf = 4 << 20;
    setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    if (connect(c->fd, (struct sockaddr *)&addr, sizeof addr) < 0) die("connect");
    char req[4096];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n", path, host, port, key);
    if (write(c->fd, req, n) != n) die("write handshake");
    char *head_end = NULL;
    while (!head_end) {
        if (c->len == c->cap) { fprintf(stderr, "wsreader: handshake too long\n"); exit(2); }
        ssize_t r = read(c->fd, c->buf + c->len, c->cap - c->len - 1);
        if (r <= 0) die("read handshake");
        c->len += r;
        c->buf[c->len] = 0;
        head_end = strstr((char *)c->buf, "\r\n\r\n");
    }
    *head_end = 0;
    char *head = (char *)c->buf;
    if (strncmp(head, "HTTP/1.1 101", 12) != 0) { fprintf(stderr, "wsreader: refused: %.200s\n", head); exit(2); }
    char *field = strcasestr(head, "\r\nsec-websocket-accept:");
    if (!field) { fprintf(stderr, "wsreader: no Sec-WebSocket-Accept\n"); exit(2); }
    field += strlen("\r\nsec-websocket-accept:");
    while (*field == ' ') field++;
    if (strncmp(field, accept, strlen(accept)) != 0) { fprintf(stderr, "wsreader: wrong Sec-WebSocket-Accept\n"); exit(2); }
    size_t used = (size_t)(head_end + 4 - head);
    memmove(c->buf, c->buf + used, c->len - used);
    c->len -= used;
}

int main(int argc, char **argv) {
    if (argc != 9) {
        fprintf(stderr, "usage: wsreader HOST PORT PATH KEY ACCEPT CLIENTS LINE TIMEOUT\n");
        return 2;
    }
    const char *host = argv[1], *path = argv[3], *key = argv[4], *accept = argv[5], *line = argv[7];
    int port = atoi(argv[2]), clients = atoi(argv[6]);
    double timeout = atof(argv[8]);
    quoted_len = strlen(line) + 2;
    quoted = malloc(quoted_len + 1);
    snprintf(quoted, quoted_len + 1, "\"%s\"", line);

    conn_t *conns = calloc(clients, sizeof *conns);
    struct pollfd *fds = calloc(clients, sizeof *fds);
    for (int k = 0; k < clients; k++) {
        conns[k].cap = 4 << 20;
        conns[k].buf = malloc(conns[k].cap);
        if (!conns[k].buf) die("malloc");
        handshake(&conns[k], host, port, path, key, accept);
    }
    printf("ready\n");
    fflush(stdout);

    double deadline = now() + timeout;
    int open = clients;
    for (int k = 0; k < clients; k++) walk(&conns[k]);  /* bytes that came with the handshake */
    while (open > 0) {
        int n = 0;
        for (int k = 0; k < clients; k++) {
            if (conns[k].done) continue;
            fds[n].fd = conns[k].fd;
            fds[n].events = POLLIN;
            n++;
        }
        open = n;
        if (n == 0) break;
        double left = deadline - now();
        if (left <= 0) break;
        int ready = poll(fds, n, (int)(left * 1000) + 1);
        if (ready < 0) { if (errno == EINTR) continue; die("poll"); }
        for (int j = 0, k = 0; j < n; j++) {
            if (!fds[j].revents) continue;
            while (conns[k].fd != fds[j].fd) k++;
            conn_t *c = &conns[k];
            if (c->cap - c->len < 65536) {
                c->cap *= 2;
                c->buf = realloc(c->buf, c->cap);
                if (!c->buf) die("realloc");
            }
            ssize_t r = read(c->fd, c->buf + c->len, c->cap - c->len);
            if (r < 0) { if (errno == EINTR || errno == EAGAIN) continue; c->error = strerror(errno); c->done = 1; continue; }
            if (r == 0) { c->error = "connection ended before the exit event"; c->done = 1; continue; }
            c->len += r;
            walk(c);
        }
    }
    for (int k = 0; k < clients; k++) {
        conn_t *c = &conns[k];
        if (!c->done && !c->error) c->error = "timeout";
        printf("{\"lines\":%ld,\"bad\":%ld,\"frames\":%ld,\"notices\":%ld,\"first\":%.6f,\"last\":%.6f,\"exit_at\":%.6f,"
               "\"error\":%s%s%s}\n", c->lines, c->bad, c->frames, c->notices, c->first, c->last, c->exit_at,
               c->error ? "\"" : "", c->error ? c->error : "null", c->error ? "\"" : "");
        /* a close frame (1000), masked with a zero key */
        unsigned char bye[] = {0x88, 0x82, 0, 0, 0, 0, 0x03, 0xE8};
        if (write(c->fd, bye, sizeof bye) < 0) { /* the daemon may be gone already */ }
        close(c->fd);
    }
    return 0;
}
