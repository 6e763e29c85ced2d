/*
 * unotifyd-launch: the daemon's client in C, for `launch --daemon`.
 *
 *   unotifyd-launch --daemon SOCKET --profile PROFILE [--] PROG [ARGS...]
 *
 * It does what unotifyd/daemon/client.py does, in the same order and with
 * the same messages, without starting Python: a Python client pays ~9 ms
 * for the interpreter and ~13 ms for its imports before the first byte
 * reaches the daemon, which made a launch through the daemon cost 12x the
 * C reference's (benchmarks/README.md). `unotifyd launch --daemon S
 * --profile P -- PROG` execs this program when it was built, and falls back
 * to the Python client when it was not (setup.py builds it where it builds
 * the pass-through lane).
 *
 *   connect (SOCK_SEQPACKET)     ->  daemon: SO_PEERCRED, authorize
 *   {"type":"launch",...}        ->
 *                                <-  {"type":"filter", bpf, exec_allowed, scope_signals,
 *                                     no_core_dumps}
 *   RLIMIT_CORE 0 if no_core_dumps (unotifyd/kernel/coredump.py)
 *   Landlock ruleset, a thread to send the listener (see below)
 *   NO_NEW_PRIVS, landlock_restrict_self, seccomp(NEW_LISTENER)
 *   {"type":"listener"} + fd     ->  (sent by the thread the filter does not cover)
 *                                <-  {"type":"ack"} or {"type":"error"}
 *   execvp(PROG): same pid, terminal, parent and exit status
 *
 * The protocol is unotifyd/daemon/protocol.py's (version 2): a frame is a
 * big-endian u32 length and that many bytes of a JSON object; a reply with
 * an unknown type, an unknown field, a missing field or a duplicate key is
 * refused, as the Python client refuses it. Exit statuses are env(1)'s,
 * as unotifyd's: 125 unotifyd failed, 126 PROG could not run, 127 no PROG.
 *
 * The same source built with -DUNOTIFYD_FRONT is the `unotifyd` command
 * itself, where setup.py could build it: see the end of this file.
 *
 * Signal dispositions are left as this process got them: an exec keeps
 * ignored signals ignored (execve(2)), and that is what PROG would inherit
 * run natively. --reset-signals is for a caller that ignored SIGPIPE and
 * SIGXFSZ for itself, as Python does (`unotifyd launch --daemon`, through
 * unotifyd/daemon/quick.py): they are given their defaults before PROG,
 * as the Python client gives them.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/filter.h>
#include <linux/landlock.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/auxv.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <sys/un.h>
#include <unistd.h>

#define EXIT_FAILED 125
#define EXIT_CANNOT_EXEC 126
#define EXIT_NOT_FOUND 127

#define PROTOCOL_VERSION 3
/* protocol.MAX_FRAME: the largest frame anyone may send. */
#define MAX_FRAME (192 * 1024)
/* client.REPLY_TIMEOUT, seconds. */
#define REPLY_TIMEOUT 30
/* protocol.PROGRAM_NAME_MAX: the program's name shown in `status`. */
#define PROGRAM_NAME_MAX 256

#ifndef SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
#define SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV (1UL << 5)
#endif
#ifndef LANDLOCK_SCOPE_SIGNAL
#define LANDLOCK_SCOPE_SIGNAL (1ULL << 1)
#endif
/* The first Landlock ABI with `scoped` (Linux 6.12). */
#define SCOPE_ABI 6

/* struct landlock_ruleset_attr as of ABI 6, whatever the headers say: a
 * kernel older than a field takes the whole struct as long as the fields
 * it does not know are zero (copy_struct_from_user). */
struct ruleset_attr {
    uint64_t handled_access_fs;
    uint64_t handled_access_net;
    uint64_t scoped;
};

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    char buf[4096];
    int n = snprintf(buf, sizeof buf, "unotifyd: ");
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(buf + n, sizeof buf - n - 1, fmt, ap);
    va_end(ap);
    if (m < 0)
        m = 0;
    n += (size_t)m < sizeof buf - n - 1 ? m : (int)(sizeof buf - n - 2);
    buf[n++] = '\n';
    /* One write, as client._say: lines of two clients do not interleave. */
    if (write(2, buf, n) < 0) {
        /* Nowhere left to say it. */
    }
}

/* ---- base64 (the filter) ------------------------------------------------ */

static int b64(unsigned c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/* Strict standard base64 (as protocol._bytes_from: validate=True). */
static unsigned char *unbase64(const char *s, size_t *outlen)
{
    size_t n = strlen(s);
    if (n % 4)
        return NULL;
    unsigned char *out = malloc(n / 4 * 3 + 1);
    size_t o = 0;
    if (!out)
        return NULL;
    for (size_t i = 0; i < n; i += 4) {
        int a = b64(s[i]), b = b64(s[i + 1]), c = b64(s[i + 2]), d = b64(s[i + 3]);
        int last = i + 4 == n;
        if (a < 0 || b < 0)
            goto bad;
        out[o++] = a << 2 | b >> 4;
        if (s[i + 2] == '=' && s[i + 3] == '=' && last)
            break;
        if (c < 0)
            goto bad;
        out[o++] = (b & 15) << 4 | c >> 2;
        if (s[i + 3] == '=' && last)
            break;
        if (d < 0)
            goto bad;
        out[o++] = (c & 3) << 6 | d;
    }
    *outlen = o;
    return out;
bad:
    free(out);
    return NULL;
}

/* ---- JSON: the daemon's replies, checked as protocol.py checks them ----- */

/* The fields of every reply type, and what each must be. */
enum { F_V, F_TYPE, F_PROGRAM, F_BPF, F_EXEC_ALLOWED, F_SCOPE_SIGNALS, F_NO_CORE_DUMPS,
       F_CODE, F_MESSAGE, F_REPORT, F_PROFILES, NFIELDS };
static const char *const field_names[NFIELDS] = {
    "v", "type", "program", "bpf", "exec_allowed", "scope_signals", "no_core_dumps", "code",
    "message", "report", "profiles",
};

enum kind { K_NONE, K_INT, K_STR, K_BOOL, K_NULL, K_STRINGS, K_OBJECT, K_OTHER };

/* protocol._KINDS: what a field must be, as the error says it. */
static const char *const must_be[NFIELDS] = {
    [F_PROGRAM] = "a string", [F_BPF] = "a base64 string",
    [F_EXEC_ALLOWED] = "null or an array of strings", [F_SCOPE_SIGNALS] = "true or false",
    [F_NO_CORE_DUMPS] = "true or false",
    [F_CODE] = "a string", [F_MESSAGE] = "a string", [F_REPORT] = "an object",
    [F_PROFILES] = "an array of strings",
};

/* The reply types (protocol._MESSAGES, direction REPLY), their fields in
 * the order protocol.py checks them, -1 ended. */
enum { R_ACK, R_ERROR, R_FILTER, R_RELOADED, R_STATUS, NREPLIES };
static const struct {
    const char *type;
    int fields[6];
} replies[NREPLIES] = {
    [R_ACK] = {"ack", {F_PROGRAM, -1}},
    [R_ERROR] = {"error", {F_CODE, F_MESSAGE, -1}},
    [R_FILTER] = {"filter", {F_PROGRAM, F_BPF, F_EXEC_ALLOWED, F_SCOPE_SIGNALS, F_NO_CORE_DUMPS,
                             -1}},
    [R_RELOADED] = {"reloaded", {F_PROFILES, -1}},
    [R_STATUS] = {"status", {F_REPORT, -1}},
};

struct value {
    enum kind kind;
    long long i;
    char *s;        /* K_STR: malloc'd, NUL-terminated */
    char **strings; /* K_STRINGS: malloc'd, NULL-terminated */
    size_t n;
};

struct reply {
    int type; /* R_... */
    struct value f[NFIELDS];
    unsigned char *bpf; /* F_BPF decoded */
    size_t bpf_len;
    char **keys; /* every key, in order (for the first unknown one) */
    size_t nkeys;
};

struct parser {
    const unsigned char *start, *p, *end;
    char err[200];
};

/* Nesting deeper than this is in no reply (a status report is two deep). */
#define MAX_DEPTH 64

static int fail(struct parser *ps, const char *what)
{
    if (!ps->err[0])
        snprintf(ps->err, sizeof ps->err, "invalid JSON: %s at offset %td", what,
                 ps->p - ps->start);
    return -1;
}

static void skip_ws(struct parser *ps)
{
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
        ps->p++;
}

static int hex4(struct parser *ps, unsigned *out)
{
    unsigned v = 0;
    if (ps->end - ps->p < 4)
        return fail(ps, "Invalid \\uXXXX escape");
    for (int k = 0; k < 4; k++) {
        unsigned c = *ps->p++, d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if (c >= 'a' && c <= 'f')
            d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            d = c - 'A' + 10;
        else
            return fail(ps, "Invalid \\uXXXX escape");
        v = v << 4 | d;
    }
    *out = v;
    return 0;
}

static size_t put_utf8(unsigned char *o, unsigned cp)
{
    if (cp < 0x80) {
        o[0] = cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = 0xc0 | cp >> 6;
        o[1] = 0x80 | (cp & 0x3f);
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = 0xe0 | cp >> 12;
        o[1] = 0x80 | (cp >> 6 & 0x3f);
        o[2] = 0x80 | (cp & 0x3f);
        return 3;
    }
    o[0] = 0xf0 | cp >> 18;
    o[1] = 0x80 | (cp >> 12 & 0x3f);
    o[2] = 0x80 | (cp >> 6 & 0x3f);
    o[3] = 0x80 | (cp & 0x3f);
    return 4;
}

/* A JSON string, decoded to the bytes Python hands the kernel for it
 * (os.fsencode): UTF-8, with a lone surrogate U+DC80..U+DCFF as the byte it
 * stands for (surrogateescape: how a name that is not UTF-8 travels). Any
 * other lone surrogate, or a NUL, is in no name, path or message: refused.
 * The payload was checked to be UTF-8 before. */
static int parse_string(struct parser *ps, char **out)
{
    if (ps->p >= ps->end || *ps->p != '"')
        return fail(ps, "Expecting value");
    ps->p++;
    /* Decoded, a string is never longer than its JSON spelling. */
    unsigned char *buf = malloc(ps->end - ps->p + 1), *o = buf;
    if (!buf)
        return fail(ps, "out of memory");
    for (;;) {
        if (ps->p >= ps->end)
            goto bad_end;
        unsigned c = *ps->p++;
        if (c == '"')
            break;
        if (c < 0x20) {
            free(buf);
            return fail(ps, "Invalid control character");
        }
        if (c != '\\') {
            *o++ = c;
            continue;
        }
        if (ps->p >= ps->end)
            goto bad_end;
        c = *ps->p++;
        switch (c) {
        case '"': case '\\': case '/': *o++ = c; break;
        case 'b': *o++ = '\b'; break;
        case 'f': *o++ = '\f'; break;
        case 'n': *o++ = '\n'; break;
        case 'r': *o++ = '\r'; break;
        case 't': *o++ = '\t'; break;
        case 'u': {
            unsigned cp, lo;
            if (hex4(ps, &cp)) {
                free(buf);
                return -1;
            }
            if (cp >= 0xd800 && cp < 0xdc00 && ps->end - ps->p >= 6 && ps->p[0] == '\\' &&
                ps->p[1] == 'u') {
                const unsigned char *save = ps->p;
                ps->p += 2;
                if (hex4(ps, &lo)) {
                    free(buf);
                    return -1;
                }
                if (lo >= 0xdc00 && lo < 0xe000)
                    cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                else
                    ps->p = save;
            }
            if (cp >= 0xdc80 && cp <= 0xdcff) {
                *o++ = cp - 0xdc00;
            } else if (cp >= 0xd800 && cp < 0xe000) {
                free(buf);
                return fail(ps, "a lone surrogate that no name holds");
            } else {
                o += put_utf8(o, cp);
            }
            break;
        }
        default:
            free(buf);
            return fail(ps, "Invalid \\escape");
        }
    }
    *o = 0;
    if (memchr(buf, 0, o - buf)) {
        free(buf);
        return fail(ps, "a NUL that no name holds");
    }
    *out = (char *)buf;
    return 0;
bad_end:
    free(buf);
    return fail(ps, "Unterminated string");
}

static int literal(struct parser *ps, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, word, n))
        return fail(ps, "Expecting value");
    ps->p += n;
    return 0;
}

static void free_value(struct value *v)
{
    free(v->s);
    if (v->strings)
        for (size_t j = 0; j < v->n; j++)
            free(v->strings[j]);
    free(v->strings);
    memset(v, 0, sizeof *v);
}

static int parse_value(struct parser *ps, struct value *v, int depth);

/* At the '{' or '[' of a container: past it, and 1 if the container is
 * empty (past its `close` too), else 0. */
static int open_container(struct parser *ps, char close)
{
    ps->p++;
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == close) {
        ps->p++;
        return 1;
    }
    return 0;
}

/* After a member of a container: 1 if another follows (past its ','), 0 at
 * the end (past `close`), -1 for anything else. */
static int next_member(struct parser *ps, char close)
{
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == ',') {
        ps->p++;
        return 1;
    }
    if (ps->p < ps->end && *ps->p == close) {
        ps->p++;
        return 0;
    }
    return fail(ps, "Expecting ',' delimiter");
}

/* An object's key and its ':' into *key (the caller's to free); 0 or -1. */
static int member_key(struct parser *ps, char **key)
{
    skip_ws(ps);
    if (parse_string(ps, key))
        return -1;
    skip_ws(ps);
    if (ps->p >= ps->end || *ps->p != ':') {
        free(*key);
        return fail(ps, "Expecting ':' delimiter");
    }
    ps->p++;
    return 0;
}

/* An object below the top: read and dropped (a status report). */
static int skip_object(struct parser *ps, int depth)
{
    if (open_container(ps, '}'))
        return 0;
    for (;;) {
        char *key;
        struct value v = {0};
        if (member_key(ps, &key))
            return -1;
        free(key);
        int rc = parse_value(ps, &v, depth + 1);
        free_value(&v);
        if (rc)
            return -1;
        int more = next_member(ps, '}');
        if (more <= 0)
            return more;
    }
}

/* An array: K_STRINGS if it holds strings only (kept), else K_OTHER. */
static int parse_array(struct parser *ps, struct value *v, int depth)
{
    v->kind = K_STRINGS;
    v->strings = calloc(1, sizeof(char *));
    if (!v->strings)
        return fail(ps, "out of memory");
    if (open_container(ps, ']'))
        return 0;
    for (;;) {
        struct value e = {0};
        if (parse_value(ps, &e, depth + 1)) {
            free_value(&e);
            return -1;
        }
        if (e.kind == K_STR && v->kind == K_STRINGS) {
            char **grown = realloc(v->strings, (v->n + 2) * sizeof(char *));
            if (!grown) {
                free_value(&e);
                return fail(ps, "out of memory");
            }
            v->strings = grown;
            v->strings[v->n++] = e.s;
            v->strings[v->n] = NULL;
            e.s = NULL;
        } else {
            v->kind = K_OTHER;
        }
        free_value(&e);
        int more = next_member(ps, ']');
        if (more <= 0)
            return more;
    }
}

/* Any JSON value (RFC 8259). An integer too large for 63 bits is kept as the
 * largest one: no field takes one, and every check refuses it. */
static int parse_value(struct parser *ps, struct value *v, int depth)
{
    skip_ws(ps);
    if (depth > MAX_DEPTH)
        return fail(ps, "nested too deeply");
    if (ps->p >= ps->end)
        return fail(ps, "Expecting value");
    unsigned c = *ps->p;
    if (c == '"') {
        v->kind = K_STR;
        return parse_string(ps, &v->s);
    }
    if (c == '{') {
        v->kind = K_OBJECT;
        return skip_object(ps, depth);
    }
    if (c == '[')
        return parse_array(ps, v, depth);
    if (c == 't' || c == 'f') {
        v->kind = K_BOOL;
        v->i = c == 't';
        return literal(ps, c == 't' ? "true" : "false");
    }
    if (c == 'n') {
        v->kind = K_NULL;
        return literal(ps, "null");
    }
    if (c != '-' && (c < '0' || c > '9'))
        return fail(ps, "Expecting value");
    int neg = c == '-';
    long long n = 0;
    ps->p += neg;
    const unsigned char *digits = ps->p;
    while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9') {
        int d = *ps->p++ - '0';
        n = n > (LLONG_MAX - d) / 10 ? LLONG_MAX : n * 10 + d;
    }
    if (ps->p == digits)
        return fail(ps, "Expecting value");
    if (ps->p - digits > 1 && *digits == '0')
        return fail(ps, "Extra data"); /* 01: "0" then garbage, as Python reads it */
    v->kind = K_INT;
    v->i = neg ? -n : n;
    if (ps->p < ps->end && *ps->p == '.') {
        const unsigned char *frac = ++ps->p;
        while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9')
            ps->p++;
        if (ps->p == frac)
            return fail(ps, "Extra data");
        v->kind = K_OTHER;
    }
    if (ps->p < ps->end && (*ps->p == 'e' || *ps->p == 'E')) {
        ps->p++;
        if (ps->p < ps->end && (*ps->p == '+' || *ps->p == '-'))
            ps->p++;
        const unsigned char *exp = ps->p;
        while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9')
            ps->p++;
        if (ps->p == exp)
            return fail(ps, "Extra data");
        v->kind = K_OTHER;
    }
    return 0;
}

static void free_reply(struct reply *r)
{
    for (int k = 0; k < NFIELDS; k++)
        free_value(&r->f[k]);
    for (size_t k = 0; k < r->nkeys; k++)
        free(r->keys[k]);
    free(r->keys);
    free(r->bpf);
    memset(r, 0, sizeof *r);
}

/* The offset of the first byte that is not UTF-8 (where Python's decoder
 * stops, the start of the bad sequence), or -1. */
static ssize_t not_utf8(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t len;
        unsigned cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            len = 2;
            cp = c & 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            len = 3;
            cp = c & 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            len = 4;
            cp = c & 0x07;
        } else {
            return i;
        }
        if (n - i < len)
            return i;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return i;
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        /* Overlong forms, surrogates and beyond U+10FFFF are not UTF-8. */
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
            (cp >= 0xd800 && cp < 0xe000) || cp > 0x10ffff)
            return i;
        i += len;
    }
    return -1;
}

/* The character at u[i] (of n bytes) as Python's os.fsdecode sees it: a
 * UTF-8 sequence's code point, or for a byte that begins none the lone
 * surrogate U+DC80..U+DCFF standing for it (surrogateescape). Its length
 * in bytes goes to *len. */
static unsigned char_at(const unsigned char *u, size_t n, size_t i, size_t *len)
{
    unsigned c = u[i], cp;
    if (c < 0x80) {
        *len = 1;
        return c;
    }
    size_t l = (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : (c & 0xf8) == 0xf0 ? 4 : 0;
    if (l == 0 || n - i < l || not_utf8(u + i, l) >= 0) {
        *len = 1;
        return 0xdc00 + c;
    }
    cp = c & (0x7f >> l);
    for (size_t k = 1; k < l; k++)
        cp = cp << 6 | (u[i + k] & 0x3f);
    *len = l;
    return cp;
}

static int field_index(const char *key)
{
    for (int k = 0; k < NFIELDS; k++)
        if (!strcmp(key, field_names[k]))
            return k;
    return -1;
}

/* Python's repr() of the string whose file-system bytes are `s` (as
 * protocol.py quotes a daemon's key or type in its error), into `o` of
 * `size` bytes: so that a socket that is not the daemon's cannot write a
 * terminal's control sequences through us. The characters Python does not
 * print as they are (str.isprintable) are found here without its tables:
 * controls, separators other than the space, the format characters that
 * reorder or hide text, private use, and bytes that are not UTF-8. */
static int printable(unsigned cp)
{
    if (cp < 0x20 || (cp >= 0x7f && cp <= 0xa0) || cp == 0xad)
        return 0;
    if (cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200f) || (cp >= 0x2028 && cp <= 0x202f) ||
        (cp >= 0x205f && cp <= 0x206f) || cp == 0x3000 || cp == 0xfeff ||
        (cp >= 0xfff9 && cp <= 0xfffb) || (cp >= 0x600 && cp <= 0x605) || cp == 0x61c ||
        cp == 0x6dd || cp == 0x70f || cp == 0x180e)
        return 0;
    if ((cp >= 0xd800 && cp < 0xf900) || cp >= 0xf0000)
        return 0; /* surrogates, private use */
    return 1;
}

static void py_repr(const char *s, char *o, size_t size)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t n = strlen(s), i = 0, out = 0;
    char quote = strchr(s, '\'') && !strchr(s, '"') ? '"' : '\'';
    if (size < 16) {
        o[0] = 0;
        return;
    }
    o[out++] = quote;
    while (i < n && out + 12 < size) {
        size_t len;
        unsigned cp = char_at(u, n, i, &len);
        if (cp == (unsigned)quote || cp == '\\') {
            o[out++] = '\\';
            o[out++] = cp;
        } else if (cp == '\t' || cp == '\n' || cp == '\r') {
            o[out++] = '\\';
            o[out++] = cp == '\t' ? 't' : cp == '\n' ? 'n' : 'r';
        } else if (printable(cp)) {
            memcpy(o + out, u + i, len);
            out += len;
        } else {
            out += snprintf(o + out, size - out, cp <= 0xff ? "\\x%02x" : cp <= 0xffff ? "\\u%04x"
                                                             : "\\U%08x", cp);
        }
        i += len;
    }
    o[out++] = quote;
    o[out] = 0;
}

/* The top-level object into `r`: every key kept in order, a duplicate
 * refused (protocol._no_duplicates), the values of known fields kept. */
static int parse_object(struct parser *ps, struct reply *r)
{
    skip_ws(ps);
    if (ps->p >= ps->end || *ps->p != '{')
        return 1; /* not an object: the caller says so */
    if (open_container(ps, '}'))
        return 0;
    for (;;) {
        char *key;
        if (member_key(ps, &key))
            return -1;
        for (size_t k = 0; k < r->nkeys; k++) {
            if (!strcmp(r->keys[k], key)) {
                char quoted[160];
                py_repr(key, quoted, sizeof quoted);
                snprintf(ps->err, sizeof ps->err, "duplicate key %s", quoted);
                free(key);
                return -1;
            }
        }
        char **grown = realloc(r->keys, (r->nkeys + 1) * sizeof(char *));
        if (!grown) {
            free(key);
            return fail(ps, "out of memory");
        }
        r->keys = grown;
        r->keys[r->nkeys++] = key;
        int k = field_index(key);
        struct value dropped = {0}, *v = k >= 0 ? &r->f[k] : &dropped;
        int rc = parse_value(ps, v, 1);
        free_value(&dropped);
        if (rc)
            return -1;
        int more = next_member(ps, '}');
        if (more <= 0)
            return more;
    }
}

/* Is field k of the kind protocol.py takes? (F_BPF is decoded too.) */
static int of_kind(struct reply *r, int k)
{
    struct value *v = &r->f[k];
    switch (k) {
    case F_EXEC_ALLOWED:
        return v->kind == K_NULL || v->kind == K_STRINGS;
    case F_SCOPE_SIGNALS:
    case F_NO_CORE_DUMPS:
        return v->kind == K_BOOL;
    case F_REPORT:
        return v->kind == K_OBJECT;
    case F_PROFILES:
        return v->kind == K_STRINGS;
    case F_BPF:
        return v->kind == K_STR && (r->bpf = unbase64(v->s, &r->bpf_len)) != NULL;
    default:
        return v->kind == K_STR;
    }
}

/* protocol.decode_record for a reply: one record, exactly one frame, a
 * JSON object of a known reply type with exactly its fields. 0, or -1
 * with protocol.py's reason in `why`. */
static int decode_reply(const unsigned char *rec, size_t len, struct reply *r, char *why,
                        size_t whylen)
{
    struct parser ps = {.err = ""};
    memset(r, 0, sizeof *r);
    if (len < 4) {
        snprintf(why, whylen, "truncated frame: %zu bytes, no complete header", len);
        return -1;
    }
    uint32_t n = (uint32_t)rec[0] << 24 | (uint32_t)rec[1] << 16 | (uint32_t)rec[2] << 8 | rec[3];
    size_t held = len - 4;
    if (4 + (uint64_t)n > MAX_FRAME) {
        snprintf(why, whylen, "frame of %llu bytes exceeds the limit of %d",
                 4 + (unsigned long long)n, MAX_FRAME);
        return -1;
    }
    if (held < n) {
        snprintf(why, whylen,
                 "truncated frame: header announces %u bytes of payload, the message holds %zu",
                 n, held);
        return -1;
    }
    if (held > n) {
        snprintf(why, whylen, "%zu bytes after the frame", held - n);
        return -1;
    }
    ssize_t bad = not_utf8(rec + 4, n);
    if (bad >= 0) {
        snprintf(why, whylen, "payload is not UTF-8 (byte %zd)", bad);
        return -1;
    }
    ps.start = ps.p = rec + 4;
    ps.end = rec + len;
    int rc = parse_object(&ps, r);
    if (rc == 0) {
        skip_ws(&ps);
        if (ps.p != ps.end)
            rc = fail(&ps, "Extra data");
    }
    if (rc) {
        snprintf(why, whylen, "%s", rc > 0 ? "payload is not a JSON object" : ps.err);
        goto bad;
    }
    /* protocol._from_object's checks, in its order. */
    if (r->f[F_V].kind != K_INT) {
        snprintf(why, whylen, "missing protocol version 'v'");
        goto bad;
    }
    if (r->f[F_V].i != PROTOCOL_VERSION) {
        snprintf(why, whylen, "unsupported protocol version %lld (this unotifyd speaks %d)",
                 r->f[F_V].i, PROTOCOL_VERSION);
        goto bad;
    }
    r->type = -1;
    for (int t = 0; t < NREPLIES && r->f[F_TYPE].kind == K_STR; t++)
        if (!strcmp(r->f[F_TYPE].s, replies[t].type))
            r->type = t;
    if (r->type < 0) {
        char quoted[160] = "None";
        if (r->f[F_TYPE].kind == K_STR)
            py_repr(r->f[F_TYPE].s, quoted, sizeof quoted);
        else if (r->f[F_TYPE].kind != K_NONE)
            snprintf(quoted, sizeof quoted, "that is not a string");
        snprintf(why, whylen, "unknown reply type %s (expected one of: "
                 "ack, error, filter, reloaded, status)", quoted);
        goto bad;
    }
    const char *type = replies[r->type].type;
    const int *fields = replies[r->type].fields;
    for (size_t k = 0; k < r->nkeys; k++) {
        int f = field_index(r->keys[k]), known = f == F_V || f == F_TYPE;
        for (int j = 0; fields[j] >= 0 && !known; j++)
            known = fields[j] == f;
        if (!known) {
            char quoted[160];
            py_repr(r->keys[k], quoted, sizeof quoted);
            snprintf(why, whylen, "%s: unknown field %s", type, quoted);
            goto bad;
        }
    }
    for (int j = 0; fields[j] >= 0; j++) {
        if (r->f[fields[j]].kind == K_NONE) {
            snprintf(why, whylen, "%s: missing field '%s'", type, field_names[fields[j]]);
            goto bad;
        }
    }
    for (int j = 0; fields[j] >= 0; j++) {
        if (!of_kind(r, fields[j])) {
            snprintf(why, whylen, "%s: field '%s' must be %s", type, field_names[fields[j]],
                     must_be[fields[j]]);
            goto bad;
        }
    }
    return 0;
bad:
    free_reply(r);
    return -1;
}

/* ---- JSON out: the two requests ----------------------------------------- */

/* `s` as a JSON string into `o`, byte for byte what client.py sends for it
 * (protocol.encode: json.dumps with ensure_ascii): printable ASCII as it is,
 * the two-letter escapes json has, every other character as \uXXXX (a pair
 * of surrogates above U+FFFF), and a byte that is not UTF-8 as the lone
 * surrogate Python's surrogateescape makes of it (how sys.argv holds it).
 * At most `max_chars` characters (client.py cuts argv[0] at
 * PROGRAM_NAME_MAX); at most 6 bytes of `o` per byte of `s`, plus 2. */
static size_t json_string(char *o, const char *s, size_t max_chars)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t n = strlen(s), i = 0, out = 0, chars = 0;
    o[out++] = '"';
    while (i < n && chars < max_chars) {
        size_t len;
        unsigned cp = char_at(u, n, i, &len);
        const char *esc = cp == '"' ? "\\\"" : cp == '\\' ? "\\\\" : cp == '\n' ? "\\n"
                        : cp == '\r' ? "\\r" : cp == '\t' ? "\\t" : cp == '\b' ? "\\b"
                        : cp == '\f' ? "\\f" : NULL;
        if (esc) {
            memcpy(o + out, esc, 2);
            out += 2;
        } else if (cp >= 0x20 && cp <= 0x7e) {
            o[out++] = cp;
        } else if (cp >= 0x10000) {
            cp -= 0x10000;
            out += sprintf(o + out, "\\u%04x\\u%04x", 0xd800 + (cp >> 10), 0xdc00 + (cp & 0x3ff));
        } else {
            out += sprintf(o + out, "\\u%04x", cp);
        }
        i += len;
        chars++;
    }
    o[out++] = '"';
    return out;
}

/* A frame holding `json` (NUL-terminated) into `frame`; its length. */
static size_t frame(unsigned char *frame, const char *json)
{
    size_t n = strlen(json);
    frame[0] = n >> 24;
    frame[1] = n >> 16;
    frame[2] = n >> 8;
    frame[3] = n;
    memcpy(frame + 4, json, n);
    return n + 4;
}

/* ---- Landlock: the backstop (unotifyd/kernel/landlock.py) ---------------- */

static long ll_abi(void)
{
    long v = syscall(SYS_landlock_create_ruleset, NULL, 0, LANDLOCK_CREATE_RULESET_VERSION);
    return v < 0 ? 0 : v; /* ENOSYS, or EOPNOTSUPP when Landlock is not among the LSMs */
}

/* Grant EXECUTE beneath `path` (only a regular file if `file_only`).
 * 0 (granted, or nothing there to grant), or -1 with errno and `why`. */
static int add_beneath(int ruleset, const char *path, int file_only, char *why, size_t whylen)
{
    if (path[0] != '/')
        return 0;
    int fd = open(path, O_PATH | O_CLOEXEC);
    if (fd < 0)
        return 0; /* A rule names a file: nothing there, nothing granted. */
    struct stat st;
    if (file_only && (fstat(fd, &st) || !S_ISREG(st.st_mode))) {
        close(fd);
        return 0;
    }
    struct landlock_path_beneath_attr attr = {
        .allowed_access = LANDLOCK_ACCESS_FS_EXECUTE,
        .parent_fd = fd,
    };
    int rc = syscall(SYS_landlock_add_rule, ruleset, LANDLOCK_RULE_PATH_BENEATH, &attr, 0);
    int err = errno;
    close(fd);
    if (rc < 0) {
        snprintf(why, whylen, "landlock_add_rule %s: %s", path, strerror(err));
        errno = err;
        return -1;
    }
    return 0;
}

/* The loader an ELF executable names (PT_INTERP, elf(5)) into `out`, or "". */
static void elf_interpreter(const char *path, char *out, size_t outlen)
{
    unsigned char head[64], ph[56];
    out[0] = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    if (pread(fd, head, 64, 0) != 64 || memcmp(head, "\x7f" "ELF\x02", 5) || head[5] != 1)
        goto done; /* 64-bit little-endian only */
    uint64_t phoff;
    uint16_t phentsize, phnum;
    memcpy(&phoff, head + 32, 8);
    memcpy(&phentsize, head + 54, 2);
    memcpy(&phnum, head + 56, 2);
    if (phentsize < sizeof ph)
        goto done;
    for (unsigned i = 0; i < phnum; i++) {
        if (pread(fd, ph, sizeof ph, phoff + (uint64_t)i * phentsize) != sizeof ph)
            goto done;
        uint32_t type;
        uint64_t offset, size;
        memcpy(&type, ph, 4);
        if (type != 3) /* PT_INTERP */
            continue;
        memcpy(&offset, ph + 8, 8);
        memcpy(&size, ph + 32, 8);
        if (size == 0 || size >= outlen)
            goto done;
        ssize_t got = pread(fd, out, size, offset);
        if (got < 0)
            got = 0;
        out[got] = 0; /* the name ends at its first NUL */
        goto done;
    }
done:
    close(fd);
}

/* Add EXECUTE on the dynamic loaders (landlock.loaders): the kernel opens a
 * binary's PT_INTERP with __FMODE_EXEC as it opens the binary
 * (fs/binfmt_elf.c), so Landlock asks for EXECUTE on it too. The system's
 * ld*.so* files in the loader directories and their multiarch
 * subdirectories, and the loaders the exact paths name. */
static int add_loaders_in(int ruleset, const char *dir, int recurse, char *why, size_t whylen)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    struct dirent *e;
    int rc = 0;
    while (rc == 0 && (e = readdir(d))) {
        char path[PATH_MAX];
        if (snprintf(path, sizeof path, "%s/%s", dir, e->d_name) >= (int)sizeof path)
            continue;
        if (!strncmp(e->d_name, "ld", 2) && strstr(e->d_name, ".so")) {
            rc = add_beneath(ruleset, path, 1, why, whylen);
        } else if (recurse && strstr(e->d_name, "-linux-")) {
            struct stat st;
            if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
                rc = add_loaders_in(ruleset, path, 0, why, whylen);
        }
    }
    closedir(d);
    return rc;
}

static int add_loaders(int ruleset, char **exact, char *why, size_t whylen)
{
    static const char *const dirs[] = {"/lib", "/lib64", "/lib32", "/usr/lib", "/usr/lib64",
                                       "/usr/lib32"};
    for (size_t k = 0; k < sizeof dirs / sizeof *dirs; k++) {
        /* Only /lib and /usr/lib have multiarch subdirectories (landlock.loaders). */
        int recurse = !strcmp(dirs[k], "/lib") || !strcmp(dirs[k], "/usr/lib");
        if (add_loaders_in(ruleset, dirs[k], recurse, why, whylen))
            return -1;
    }
    for (; *exact; exact++) {
        char interp[PATH_MAX];
        elf_interpreter(*exact, interp, sizeof interp);
        if (interp[0] == '/' && add_beneath(ruleset, interp, 1, why, whylen))
            return -1;
    }
    return 0;
}

/* landlock.ruleset_for: the ruleset fd (close-on-exec), -1 for none, or -2
 * with `why` set. */
static int ruleset_for(struct value *exec_allowed, int scope_signals, char *why, size_t whylen)
{
    long version = ll_abi();
    if (version < 1)
        return -1;
    int scope = scope_signals && version >= SCOPE_ABI;
    int restrict_exec = exec_allowed->kind == K_STRINGS;
    if (!restrict_exec && !scope)
        return -1;
    struct ruleset_attr attr = {
        .handled_access_fs = restrict_exec ? LANDLOCK_ACCESS_FS_EXECUTE : 0,
        .scoped = scope ? LANDLOCK_SCOPE_SIGNAL : 0,
    };
    int fd = syscall(SYS_landlock_create_ruleset, &attr, sizeof attr, 0);
    if (fd < 0) {
        snprintf(why, whylen, "landlock_create_ruleset: %s", strerror(errno));
        return -2;
    }
    if (!restrict_exec)
        return fd;
    char **exact = calloc(exec_allowed->n + 1, sizeof(char *));
    size_t nexact = 0;
    if (!exact) {
        snprintf(why, whylen, "out of memory");
        close(fd);
        return -2;
    }
    for (size_t k = 0; k < exec_allowed->n; k++) {
        char *pattern = exec_allowed->strings[k];
        size_t n = strlen(pattern);
        int tree = n >= 3 && !strcmp(pattern + n - 3, "/**");
        if (tree) {
            /* a tree "/t/" "**" is "/t", and "/" "**" is "/" */
            pattern[n == 3 ? 1 : n - 3] = 0;
        }
        if (add_beneath(fd, pattern, !tree, why, whylen))
            goto bad;
        if (!tree)
            exact[nexact++] = pattern;
    }
    if (add_loaders(fd, exact, why, whylen))
        goto bad;
    free(exact);
    return fd;
bad:
    free(exact);
    close(fd);
    return -2;
}

/* ---- Talking to the daemon, each exchange bounded in time --------------- */

/* Each wait for the daemon (a connect, a send, a reply) may take
 * REPLY_TIMEOUT seconds in all, as client.py's socket timeout allows. The
 * timeout is the socket's (SO_RCVTIMEO, SO_SNDTIMEO). A socket call with a
 * timeout fails with EINTR when the process is stopped and continued, even
 * with no handler (signal(7), "Interruption of system calls and library
 * functions by stop signals"): Ctrl-Z and fg, a cgroup freezer, a debugger.
 * The call is then made again with the time that is left (as Python does,
 * PEP 475), not failed. */
static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static void set_timeout(int sock, int option, double seconds)
{
    if (seconds < 1e-6)
        seconds = 1e-6; /* 0 would mean no timeout at all */
    struct timeval tv = {.tv_sec = (time_t)seconds};
    tv.tv_usec = (suseconds_t)((seconds - (double)tv.tv_sec) * 1e6);
    setsockopt(sock, SOL_SOCKET, option, &tv, sizeof tv);
}

/* After an EINTR: 0 to make the call again, with the timeout cut to the
 * time left; -1 with errno EAGAIN (timed out) when none is. The caller
 * puts the full timeout back (set_timeout) once its call is done. */
static int again(int sock, int option, double deadline)
{
    double left = deadline - now();
    if (left <= 0) {
        errno = EAGAIN;
        return -1;
    }
    set_timeout(sock, option, left);
    return 0;
}

/* One recvmsg (`receiving`) or sendmsg on the daemon's socket, bounded in
 * time and made again after a stop (see above). */
static ssize_t msg_timed(int sock, struct msghdr *msg, int receiving)
{
    int option = receiving ? SO_RCVTIMEO : SO_SNDTIMEO, cut = 0;
    double deadline = now() + REPLY_TIMEOUT;
    ssize_t n;
    while ((n = receiving ? recvmsg(sock, msg, 0) : sendmsg(sock, msg, MSG_NOSIGNAL)) < 0 &&
           errno == EINTR && again(sock, option, deadline) == 0)
        cut = 1;
    if (cut) {
        int err = errno;
        set_timeout(sock, option, REPLY_TIMEOUT);
        errno = err;
    }
    return n;
}

static ssize_t io_timed(int sock, const void *buf, size_t len, int receiving)
{
    struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    return msg_timed(sock, &msg, receiving);
}

/* ---- The hand-over ------------------------------------------------------ */

/* The listener is sent by a thread started before the filter is loaded:
 * a filter goes on the thread that loads it and no other (seccomp(2):
 * only SECCOMP_FILTER_FLAG_TSYNC spreads it), and an enforcing filter
 * traps sendmsg (unotifyd/calls/sends.py), which made by the filtered
 * thread would wait forever for a supervisor that has no listener yet.
 * The filtered thread only posts to it and joins it: futexes, never
 * trapped. Nothing of PROG runs meanwhile, and the exec ends the thread
 * anyway. */
struct handover {
    pthread_mutex_t lock;
    pthread_cond_t go;
    int ready;
    int sock;
    int fd; /* the listener, or -1: send nothing */
    int err;
    const unsigned char *frame;
    size_t len;
};

static void *handover_thread(void *arg)
{
    struct handover *h = arg;
    pthread_mutex_lock(&h->lock);
    while (!h->ready)
        pthread_cond_wait(&h->go, &h->lock);
    pthread_mutex_unlock(&h->lock);
    if (h->fd < 0)
        return NULL;
    char control[CMSG_SPACE(sizeof(int))];
    memset(control, 0, sizeof control);
    struct iovec iov = {.iov_base = (void *)h->frame, .iov_len = h->len};
    struct msghdr msg = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof control,
    };
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &h->fd, sizeof(int));
    if (msg_timed(h->sock, &msg, 0) < 0)
        h->err = errno;
    return NULL;
}

static void release(struct handover *h, pthread_t thread, int fd)
{
    pthread_mutex_lock(&h->lock);
    h->fd = fd;
    h->ready = 1;
    pthread_cond_signal(&h->go);
    pthread_mutex_unlock(&h->lock);
    pthread_join(thread, NULL);
}

/* PreparedFilter.install: NO_NEW_PRIVS (both landlock_restrict_self and an
 * unprivileged seccomp need it), the ruleset before the filter (so that no
 * trapped call comes before the hand-over), then the filter with
 * WAIT_KILLABLE_RECV (5.19+: a non-fatal signal does not interrupt a call
 * already received, which the kernel would notify again), without it where
 * the kernel refuses the flag (EINVAL). The listener fd, or -errno. */
static int install(struct sock_fprog *prog, int ruleset)
{
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
        return -errno;
    if (ruleset >= 0 && syscall(SYS_landlock_restrict_self, ruleset, 0) < 0)
        return -errno;
    unsigned long flags = SECCOMP_FILTER_FLAG_NEW_LISTENER | SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV;
    int fd = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, prog);
    if (fd < 0 && errno == EINVAL)
        fd = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, prog);
    return fd < 0 ? -errno : fd;
}

static const char *install_failure(int err)
{
    /* kernel/filter.install_failure: the kernel gives a filter chain one
     * listener at most (has_duplicate_listener() in kernel/seccomp.c). */
    if (err == EBUSY)
        return "this process is already served by a seccomp supervisor (unotifyd's or "
               "another's), and the kernel gives a process one at most (EBUSY): "
               "run unotifyd outside that sandbox";
    return strerror(err);
}

/* ---- The conversation --------------------------------------------------- */

static unsigned char record[MAX_FRAME];

/* client._recv: one reply into `r`; 0, or -1 having said why. */
static int recv_reply(int sock, struct reply *r)
{
    ssize_t n = io_timed(sock, record, sizeof record, 1);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            say("the daemon did not answer in time");
        else
            say("lost the connection to the daemon: %s", strerror(errno));
        return -1;
    }
    if (n == 0) {
        say("the daemon closed the connection without an answer");
        return -1;
    }
    char why[256];
    if (decode_reply(record, n, r, why, sizeof why)) {
        say("bad answer from the daemon: %s", why);
        return -1;
    }
    return 0;
}

/* client.py's checks of a reply: an `error` has its message said; a reply
 * of another type than `want` is unexpected. 0 for the reply wanted. */
static int expect(struct reply *r, int want)
{
    if (r->type == want)
        return 0;
    if (r->type == R_ERROR)
        say("%s", r->f[F_MESSAGE].s);
    else
        say("unexpected '%s' answer from the daemon", replies[r->type].type);
    return -1;
}

static int connect_daemon(const char *path)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    /* An empty path would name an abstract socket (a NUL first: unix(7)),
     * which any local user may bind: `--daemon "$SOCK"` with SOCK unset
     * would hand the program's listener to them. The kernel refuses an
     * address of no path at all, as the Python client sends it (EINVAL). */
    if (!path[0] || strlen(path) >= sizeof addr.sun_path) {
        say("cannot connect to %s: %s", path, strerror(path[0] ? ENAMETOOLONG : EINVAL));
        return -1;
    }
    strcpy(addr.sun_path, path);
    int sock = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (sock < 0) {
        say("cannot connect to %s: %s", path, strerror(errno));
        return -1;
    }
    /* Not one of fds 0-2, which the caller may have closed: say() writes to
     * 2, and PROG must find them as the caller left them. */
    if (sock <= 2) {
        int moved = fcntl(sock, F_DUPFD_CLOEXEC, 3);
        int err = errno;
        close(sock);
        if (moved < 0) {
            say("cannot connect to %s: %s", path, strerror(err));
            return -1;
        }
        sock = moved;
    }
    set_timeout(sock, SO_RCVTIMEO, REPLY_TIMEOUT);
    set_timeout(sock, SO_SNDTIMEO, REPLY_TIMEOUT);
    /* A connect waits only while the daemon's backlog is full; one stopped
     * and continued meanwhile is made again, which a unix socket allows
     * (EISCONN: it went through after all). */
    double deadline = now() + REPLY_TIMEOUT;
    int rc;
    socklen_t len = offsetof(struct sockaddr_un, sun_path) + strlen(path) + 1;
    while ((rc = connect(sock, (struct sockaddr *)&addr, len)) < 0 && errno == EINTR &&
           again(sock, SO_SNDTIMEO, deadline) == 0)
        ;
    if (rc < 0 && errno == EISCONN)
        rc = 0;
    set_timeout(sock, SO_SNDTIMEO, REPLY_TIMEOUT);
    if (rc < 0) {
        int err = errno;
        if (err == ENOENT)
            say("no daemon socket at %s (is `unotifyd serve` running?)", path);
        else if (err == ECONNREFUSED)
            say("no daemon listening on %s", path);
        else
            say("cannot connect to %s: %s", path, strerror(err));
        close(sock);
        return -1;
    }
    return sock;
}

/* client._request: send `len` bytes of `frm`, take the reply. The daemon may
 * refuse a client before reading anything (an unauthorized uid) and close
 * the connection: the send then fails with EPIPE, but the refusal is
 * already in our receive queue. */
static int request(int sock, const unsigned char *frm, size_t len, struct reply *r)
{
    if (io_timed(sock, frm, len, 0) < 0) {
        int err = errno;
        ssize_t n = recv(sock, record, sizeof record, MSG_DONTWAIT);
        char why[256];
        if (n > 0 && decode_reply(record, n, r, why, sizeof why) == 0) {
            if (r->type == R_ERROR)
                return 0;
            free_reply(r);
        }
        say("lost the connection to the daemon: %s", strerror(err));
        return -1;
    }
    return recv_reply(sock, r);
}

/* client._exec: os.execvp's search, so that both clients run the same file
 * and fail the same way: a name with a '/' as it is; otherwise each
 * directory of PATH (/bin:/usr/bin if unset; an empty one is the working
 * directory), and the first failure that is not ENOENT or ENOTDIR, else
 * the last, is the answer. (glibc's execvp differs: it runs a file the
 * kernel cannot (ENOEXEC) with /bin/sh.) */
static int exec_program(char **argv)
{
    extern char **environ;
    const char *file = argv[0];
    int saved = 0, err = ENOENT;
    if (!file[0]) {
        /* No file has an empty name (execvp(3) and env(1) fail it so). */
    } else if (strchr(file, '/')) {
        execve(file, argv, environ);
        err = errno;
    } else {
        const char *path = getenv("PATH");
        if (!path)
            path = "/bin:/usr/bin";
        for (const char *dir = path;; dir++) {
            const char *end = strchrnul(dir, ':');
            char full[PATH_MAX];
            size_t dlen = end - dir;
            if (dlen + strlen(file) + 2 <= sizeof full) {
                memcpy(full, dir, dlen);
                snprintf(full + dlen, sizeof full - dlen, "%s%s", dlen ? "/" : "", file);
                execve(full, argv, environ);
                err = errno;
            } else {
                err = ENAMETOOLONG;
            }
            if (err != ENOENT && err != ENOTDIR && !saved)
                saved = err;
            if (!*end)
                break;
            dir = end;
        }
        if (saved)
            err = saved;
    }
    say("%s: %s", file, strerror(err));
    return err == ENOENT ? EXIT_NOT_FOUND : EXIT_CANNOT_EXEC;
}

/* The conversation up to the daemon's ack: 0, or an exit status. */
static int converse(int sock, const char *profile, char **argv)
{
    static const char handover_json[] = "{\"v\":3,\"type\":\"listener\"}";
    static unsigned char handover_frame[sizeof handover_json + 4];
    struct reply r;
    char why[512];

    /* {"v":3,"type":"launch","profile":...,"program":...} (protocol.encode's
     * order). A byte of a name takes at most 6 in JSON (\u00XX, \udcXX). */
    size_t room = 6 * strlen(profile) + 6 * PROGRAM_NAME_MAX + 128;
    char *json = malloc(room);
    unsigned char *out = malloc(room + 4);
    if (!json || !out) {
        say("out of memory");
        free(json);
        free(out);
        return EXIT_FAILED;
    }
    size_t n = (size_t)snprintf(json, room, "{\"v\":%d,\"type\":\"launch\",\"profile\":",
                                PROTOCOL_VERSION);
    n += json_string(json + n, profile, (size_t)-1);
    n += (size_t)snprintf(json + n, room - n, ",\"program\":");
    n += json_string(json + n, argv[0], PROGRAM_NAME_MAX);
    json[n++] = '}';
    json[n] = 0;
    if (n + 4 > MAX_FRAME) {
        /* protocol.encode refuses it too. */
        say("launch message of %zu bytes exceeds the frame limit", n);
        free(json);
        free(out);
        return EXIT_FAILED;
    }
    int failed = request(sock, out, frame(out, json), &r);
    free(json);
    free(out);
    if (failed)
        return EXIT_FAILED;
    if (expect(&r, R_FILTER)) {
        free_reply(&r);
        return EXIT_FAILED;
    }
    if (r.bpf_len == 0 || r.bpf_len % 8) {
        say("the daemon sent an invalid filter: a BPF program is a non-empty array of 8-byte "
            "instructions");
        free_reply(&r);
        return EXIT_FAILED;
    }
    unsigned char *bpf = r.bpf;
    size_t bpf_len = r.bpf_len;
    r.bpf = NULL;
    int ruleset = ruleset_for(&r.f[F_EXEC_ALLOWED], (int)r.f[F_SCOPE_SIGNALS].i, why, sizeof why);
    int no_cores = (int)r.f[F_NO_CORE_DUMPS].i;
    free_reply(&r);
    if (ruleset == -2) {
        say("cannot build the Landlock ruleset: %s", why);
        free(bpf);
        return EXIT_FAILED;
    }
    /* Enforcing mode: no core dump files (unotifyd/kernel/coredump.py). A
     * process may always lower its own limits (setrlimit(2)). */
    struct rlimit none = {0, 0};
    if (no_cores && setrlimit(RLIMIT_CORE, &none) < 0) {
        say("cannot forbid core dumps (RLIMIT_CORE 0): %s", strerror(errno));
        free(bpf);
        if (ruleset >= 0)
            close(ruleset);
        return EXIT_FAILED;
    }
    /* More than BPF_MAXINSNS instructions, the kernel refuses (EINVAL); .len
     * is 16 bits, which must not wrap to a program it would take. */
    size_t insns = bpf_len / 8 > BPF_MAXINSNS ? BPF_MAXINSNS + 1 : bpf_len / 8;
    struct sock_fprog prog = {.len = insns, .filter = (struct sock_filter *)bpf};
    struct handover h = {
        .lock = PTHREAD_MUTEX_INITIALIZER,
        .go = PTHREAD_COND_INITIALIZER,
        .sock = sock,
        .fd = -1,
        .frame = handover_frame,
        .len = frame(handover_frame, handover_json),
    };
    pthread_t thread;
    int err = pthread_create(&thread, NULL, handover_thread, &h);
    if (err) {
        say("cannot start the hand-over thread: %s", strerror(err));
        free(bpf);
        if (ruleset >= 0)
            close(ruleset);
        return EXIT_FAILED;
    }

    /* The critical section: from the filter's load until the daemon holds
     * the listener, a trapped call would wait for nobody. Only raw system
     * calls and futexes here. */
    int fd = install(&prog, ruleset);
    if (fd < 0) {
        /* No filter is in place: nothing can deadlock from here on. */
        release(&h, thread, -1);
        char abort_json[64];
        unsigned char abort_frame[sizeof abort_json + 4];
        snprintf(abort_json, sizeof abort_json, "{\"v\":%d,\"type\":\"abort\",\"errno\":%d}",
                 PROTOCOL_VERSION, -fd);
        /* If it cannot be sent, the daemon sees the connection close instead. */
        io_timed(sock, abort_frame, frame(abort_frame, abort_json), 0);
        say("cannot install the seccomp filter: %s", install_failure(-fd));
        free(bpf);
        if (ruleset >= 0)
            close(ruleset);
        return EXIT_FAILED;
    }
    release(&h, thread, fd);
    /* Our copy must not reach PROG; the daemon has its own. From here the
     * daemon holds the listener (trapped calls wait for it), or nobody does
     * (they fail with ENOSYS): no call can hang forever any more. */
    close(fd);
    free(bpf);
    if (ruleset >= 0)
        close(ruleset);
    if (h.err) {
        say("cannot hand the listener to the daemon: %s", strerror(h.err));
        return EXIT_FAILED;
    }
    ssize_t got = io_timed(sock, record, sizeof record, 1);
    if (got < 0) {
        say("no acknowledgement from the daemon: %s",
            errno == EAGAIN || errno == EWOULDBLOCK ? "timed out" : strerror(errno));
        return EXIT_FAILED;
    }
    if (got == 0) {
        say("the daemon closed the connection before acknowledging the hand-over");
        return EXIT_FAILED;
    }
    if (decode_reply(record, got, &r, why, sizeof why)) {
        say("bad answer from the daemon: %s", why);
        return EXIT_FAILED;
    }
    int refused = expect(&r, R_ACK);
    free_reply(&r);
    return refused ? EXIT_FAILED : 0;
}

struct launch_args {
    const char *socket_path, *profile;
    char **prog;
    int reset_signals;
};

/* The spellings quick.parse_daemon_launch takes, from argv[0] on: --daemon
 * S, --daemon=S, the same for --profile, each once, then -- or PROG; and
 * --reset-signals where `with_reset` (the C client's own option, never the
 * command's). 0, or -1 for anything else. */
static int parse_launch(int argc, char **argv, int with_reset, struct launch_args *a)
{
    int i = 0;
    *a = (struct launch_args){0};
    while (i < argc) {
        const char *arg = argv[i];
        if (!strcmp(arg, "--")) {
            i++;
            break;
        }
        if (arg[0] != '-')
            break;
        if (with_reset && !strcmp(arg, "--reset-signals") && !a->reset_signals) {
            a->reset_signals = 1;
            i++;
            continue;
        }
        const char **slot = NULL;
        size_t len;
        if (!strncmp(arg, "--daemon", len = 8) && (arg[len] == 0 || arg[len] == '='))
            slot = &a->socket_path;
        else if (!strncmp(arg, "--profile", len = 9) && (arg[len] == 0 || arg[len] == '='))
            slot = &a->profile;
        if (!slot || *slot)
            return -1;
        if (arg[len] == '=') {
            *slot = arg + len + 1;
        } else {
            if (++i == argc || argv[i][0] == '-')
                return -1;
            *slot = argv[i];
        }
        i++;
    }
    if (!a->socket_path || !a->profile || i == argc)
        return -1;
    a->prog = argv + i;
    return 0;
}

/* The launch: PROG's exit status is what this process ends with, since it
 * becomes PROG; a return is unotifyd's own failure (125) or PROG's (126,
 * 127). */
static int launch(const struct launch_args *a)
{
    /* SIGPIPE ignored for our own messages (stderr may be a pipe no one
     * reads: then 125, as the Python client, not death by a signal), and
     * given back as it was before PROG, which inherits it (--reset-signals:
     * its default). */
    struct sigaction ignore = {.sa_handler = SIG_IGN}, given;
    sigaction(SIGPIPE, &ignore, &given);
    int sock = connect_daemon(a->socket_path);
    if (sock < 0)
        return EXIT_FAILED;
    int status = converse(sock, a->profile, a->prog);
    close(sock);
    if (status)
        return status;
    if (a->reset_signals) {
        given.sa_handler = SIG_DFL;
        signal(SIGXFSZ, SIG_DFL);
    }
    sigaction(SIGPIPE, &given, NULL);
    return exec_program(a->prog);
}

#ifndef UNOTIFYD_FRONT

static void usage(void)
{
    say("usage: unotifyd-launch --daemon SOCKET --profile PROFILE [--reset-signals] [--] PROG "
        "[ARGS...]");
}

int main(int argc, char **argv)
{
    struct launch_args a;
    if (parse_launch(argc - 1, argv + 1, 1, &a)) {
        usage();
        return EXIT_FAILED;
    }
    return launch(&a);
}

#else

/*
 * Built with -DUNOTIFYD_FRONT, this is the `unotifyd` command itself
 * (setup.py installs it so; where it could not be built, `unotifyd` is
 * unotifyd/daemon/unotifyd, a shell script that runs unotifyd-python). A plain `unotifyd launch --daemon S --profile P -- PROG`
 * is done here, so that a launch through the daemon starts no Python at
 * all: the interpreter alone costs ~10 ms on a 2-CPU machine before any
 * import, against ~6 ms for the whole launch in C. Every other command
 * line, errors and --help included, goes unchanged to `unotifyd-python`
 * (the same command in Python, a console script installed beside this
 * program), which
 * parses it with argparse. The test is parse_launch's, the one
 * unotifyd.daemon.quick makes before Python's own parser, so a command
 * line means the same whichever of the two reads it.
 *
 * Nothing is changed for PROG: this process started as the caller made
 * it, so its signal dispositions and environment are the caller's (no
 * --reset-signals, no locale coercion to undo: see unotifyd/environ.py).
 */
#define PYTHON_FRONT "unotifyd-python"

/* This program's path: /proc/self/exe (proc(5)), else, without procfs, the
 * name it was executed by (getauxval(AT_EXECFN)) with its links resolved. */
static int own_path(char *out, size_t size)
{
    ssize_t n = readlink("/proc/self/exe", out, size - 1);
    if (n >= 0) {
        out[n] = 0;
        return 0;
    }
    int err = errno;
    const char *name = (const char *)getauxval(AT_EXECFN);
    char resolved[PATH_MAX];
    if (name && realpath(name, resolved) && strlen(resolved) < size) {
        strcpy(out, resolved);
        return 0;
    }
    errno = err;
    return -1;
}

static int exec_python(char **argv)
{
    /* The directory of this program, not of the link it may have been run
     * by: `unotifyd` is often one (the README's /usr/local/bin/unotifyd),
     * and the script is installed beside its target. */
    char self[PATH_MAX], script[PATH_MAX];
    if (own_path(self, sizeof self)) {
        say("cannot find %s: /proc/self/exe: %s", PYTHON_FRONT, strerror(errno));
        return EXIT_FAILED;
    }
    char *slash = strrchr(self, '/');
    if (!slash || (size_t)snprintf(script, sizeof script, "%.*s/%s", (int)(slash - self), self,
                                   PYTHON_FRONT) >= sizeof script) {
        say("cannot find %s beside %s: %s", PYTHON_FRONT, self, strerror(ENAMETOOLONG));
        return EXIT_FAILED;
    }
    /* The script's #! line names the interpreter; the kernel passes it the
     * script's path, then the rest of argv as given (binfmt_script). */
    argv[0] = script;
    extern char **environ;
    execve(script, argv, environ);
    int err = errno;
    if ((err == ENOENT || err == ENOEXEC) && !access(script, F_OK))
        say("cannot run %s: the interpreter on its #! line: %s", script, strerror(err));
    else
        say("cannot run %s: %s", script, strerror(err));
    return EXIT_FAILED;
}

int main(int argc, char **argv)
{
    struct launch_args a;
    if (argc < 1) {
        /* No argv[0] (kernels before 5.18 allowed that): no slot for the
         * script's path. */
        say("run with no argv[0]");
        return EXIT_FAILED;
    }
    if (argc > 1 && !strcmp(argv[1], "launch") && !parse_launch(argc - 2, argv + 2, 0, &a))
        return launch(&a);
    return exec_python(argv);
}

#endif
