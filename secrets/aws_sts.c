/* Temporary credentials from STS: AssumeRoleWithWebIdentity (EKS IRSA) and AssumeRole. */
#include "secrets/aws_sts.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "secrets/aws_endpoint.h"
#include "secrets/aws_request.h"
#include "secrets/http_client.h"
#include "secrets/sigv4.h"

#define WEB_TOKEN_MAX (64 * 1024)

struct sts_provider {
    struct aws_provider base;
    struct aws_ctx *ctx;
    char *name;
    char *endpoint;
    char *role_arn;
    char *session_name;
    char *token_file;            /* web identity; NULL for AssumeRole */
    struct aws_provider *source; /* AssumeRole's source credentials */
    char *external_id;
    int duration_sec;
};

/* One call: (for AssumeRole) the source credentials, then the STS request. */
struct sts_op {
    struct aws_fetch base;
    struct sts_provider *sp;
    struct aws_fetch *source_fetch;
    struct http_request *req;
    aws_creds_cb cb;
    void *arg;
};

static void wipe_free(char *s)
{
    if (s) {
        OPENSSL_cleanse(s, strlen(s));
        free(s);
    }
}

static void op_free(struct sts_op *op)
{
    aws_fetch_cancel(op->source_fetch);
    http_request_cancel(op->req);
    free(op);
}

static void op_cancel(struct aws_fetch *base)
{
    op_free((struct sts_op *)base);
}

/* Appends "&key=value" (value encoded) to a growing form body. */
static bool form_add(char **body, const char *key, const char *value)
{
    char *enc = sigv4_uri_encode(value, strlen(value), false);
    char *n = NULL;
    bool ok = enc && asprintf(&n, "%s&%s=%s", *body, key, enc) >= 0;
    wipe_free(enc);
    if (!ok)
        return false;
    wipe_free(*body);
    *body = n;
    return true;
}

/* Decodes the five XML entities in place. */
static void xml_unescape(char *s)
{
    static const struct {
        const char *ent;
        char c;
    } ents[] = {{"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''}};
    char *w = s;
    for (char *r = s; *r;) {
        size_t i = 0;
        for (; *r == '&' && i < sizeof(ents) / sizeof(ents[0]); i++)
            if (strncmp(r, ents[i].ent, strlen(ents[i].ent)) == 0)
                break;
        if (*r == '&' && i < sizeof(ents) / sizeof(ents[0])) {
            *w++ = ents[i].c;
            r += strlen(ents[i].ent);
        } else {
            *w++ = *r++;
        }
    }
    *w = '\0';
}

/* A malloc'd copy of the text of <tag> inside <Credentials>, or NULL. */
static char *cred_field(const char *body, const char *tag)
{
    const char *cred = strstr(body, "<Credentials>");
    char open[64], close[64];
    snprintf(open, sizeof(open), "<%s>", tag);
    snprintf(close, sizeof(close), "</%s>", tag);
    const char *a = cred ? strstr(cred, open) : NULL;
    const char *b = a ? strstr(a, close) : NULL;
    if (!a || !b)
        return NULL;
    a += strlen(open);
    char *v = strndup(a, (size_t)(b - a));
    if (v)
        xml_unescape(v);
    return v;
}

static struct aws_credentials *parse_sts(const char *body, char *err, size_t errlen)
{
    char *akid = cred_field(body, "AccessKeyId");
    char *secret = cred_field(body, "SecretAccessKey");
    char *token = cred_field(body, "SessionToken");
    char *exp = cred_field(body, "Expiration");
    struct aws_credentials *c = NULL;
    time_t t = exp ? aws_parse_time(exp) : -1;
    if (!akid || !secret || !token || !*akid || !*secret)
        snprintf(err, errlen, "the response has no complete <Credentials>");
    else if (t < 0)
        snprintf(err, errlen, "the response's <Expiration> is not an ISO 8601 time");
    else if (!(c = aws_credentials_new(akid, secret, token, t)))
        snprintf(err, errlen, "out of memory");
    wipe_free(akid);
    wipe_free(secret);
    wipe_free(token);
    free(exp);
    return c;
}

static void on_sts_response(const struct http_response *r, void *arg)
{
    struct sts_op *op = arg;
    op->req = NULL;
    const char *action = op->sp->token_file ? "AssumeRoleWithWebIdentity" : "AssumeRole";
    char err[640], why[300], code[64], msg[256];
    struct aws_credentials *c = NULL;
    if (r->status == 0) {
        snprintf(err, sizeof(err), "STS %s at %s: %s", action, op->sp->endpoint,
                 r->timed_out ? "no answer in time" : r->error);
    } else if (r->status != 200) {
        aws_response_error(r, code, sizeof(code), msg, sizeof(msg));
        snprintf(err, sizeof(err), "STS %s for %s: %s%s%s (HTTP %ld)", action, op->sp->role_arn,
                 code[0] ? code : "error", msg[0] ? ": " : "", msg, r->status);
    } else if (!(c = parse_sts(r->body, why, sizeof(why)))) {
        snprintf(err, sizeof(err), "STS %s for %s: %s", action, op->sp->role_arn, why);
    }
    op->cb(c, c ? NULL : err, op->arg);
    op_free(op);
}

/* Reads the web identity token; the buffer is wiped by the caller. */
static char *read_web_token(const char *path, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        snprintf(err, errlen, "cannot read the web identity token file %.200s: %s", path,
                 strerror(errno));
        return NULL;
    }
    char *buf = calloc(1, WEB_TOKEN_MAX + 1);
    ssize_t n = buf ? read(fd, buf, WEB_TOKEN_MAX) : -1;
    close(fd);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
        buf[--n] = '\0';
    if (n <= 0) {
        snprintf(err, errlen, "the web identity token file %.200s is empty", path);
        free(buf);
        return NULL;
    }
    return buf;
}

static char *form_body(struct sts_provider *sp, char *err, size_t errlen)
{
    char *body = strdup(sp->token_file ? "Action=AssumeRoleWithWebIdentity&Version=2011-06-15"
                                       : "Action=AssumeRole&Version=2011-06-15");
    char dur[16];
    snprintf(dur, sizeof(dur), "%d", sp->duration_sec);
    bool ok = body && form_add(&body, "RoleArn", sp->role_arn) &&
              form_add(&body, "RoleSessionName", sp->session_name) &&
              (!sp->external_id || form_add(&body, "ExternalId", sp->external_id)) &&
              (!sp->duration_sec || form_add(&body, "DurationSeconds", dur));
    if (ok && sp->token_file) {
        char *tok = read_web_token(sp->token_file, err, errlen);
        ok = tok && form_add(&body, "WebIdentityToken", tok);
        wipe_free(tok);
        if (!ok) {
            wipe_free(body);
            return NULL;
        }
    }
    if (!ok) {
        wipe_free(body);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    return body;
}

static bool send_sts(struct sts_op *op, const struct aws_credentials *creds, char *err,
                     size_t errlen)
{
    struct sts_provider *sp = op->sp;
    char *body = form_body(sp, err, errlen);
    if (!body)
        return false;
    struct aws_request_params p = {
        .url = sp->endpoint,
        .region = sp->ctx->region ? sp->ctx->region : "us-east-1",
        .service = "sts",
        .content_type = "application/x-www-form-urlencoded; charset=utf-8",
        .body = body,
        .body_len = strlen(body),
        .timeout_ms = sp->ctx->timeout_ms,
    };
    op->req = aws_request_start(sp->ctx->http, &p, creds, on_sts_response, op, err, errlen);
    wipe_free(body);
    return op->req != NULL;
}

static void on_source_creds(struct aws_credentials *c, const char *err, void *arg)
{
    struct sts_op *op = arg;
    op->source_fetch = NULL;
    char msg[640];
    if (!c) {
        snprintf(msg, sizeof(msg), "source credentials for %s (%s): %s", op->sp->role_arn,
                 op->sp->source->name, err ? err : "unknown error");
        op->cb(NULL, msg, op->arg);
        op_free(op);
        return;
    }
    bool ok = send_sts(op, c, msg, sizeof(msg));
    aws_credentials_unref(c);
    if (!ok) {
        op->cb(NULL, msg, op->arg);
        op_free(op);
    }
}

static struct aws_fetch *sts_fetch(struct aws_provider *p, aws_creds_cb cb, void *arg, char *err,
                                   size_t errlen)
{
    struct sts_provider *sp = (struct sts_provider *)p;
    struct sts_op *op = calloc(1, sizeof(*op));
    if (!op) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    op->base.cancel = op_cancel;
    op->sp = sp;
    op->cb = cb;
    op->arg = arg;
    bool ok = sp->source ? (op->source_fetch = sp->source->fetch(sp->source, on_source_creds, op,
                                                                 err, errlen)) != NULL
                         : send_sts(op, NULL, err, errlen);
    if (!ok) {
        op_free(op);
        return NULL;
    }
    return &op->base;
}

static void sts_destroy(struct aws_provider *p)
{
    struct sts_provider *sp = (struct sts_provider *)p;
    aws_provider_free(sp->source);
    free(sp->name);
    free(sp->endpoint);
    free(sp->role_arn);
    free(sp->session_name);
    free(sp->token_file);
    free(sp->external_id);
    free(sp);
}

static struct sts_provider *sts_new(struct aws_ctx *ctx, const char *name, const char *role_arn,
                                    const char *session_name, char *err, size_t errlen)
{
    struct sts_provider *sp = calloc(1, sizeof(*sp));
    if (!sp) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    sp->ctx = ctx;
    sp->base.fetch = sts_fetch;
    sp->base.destroy = sts_destroy;
    char def[64];
    snprintf(def, sizeof(def), "credproxy-%lld", (long long)time(NULL));
    sp->name = strdup(name);
    sp->role_arn = strdup(role_arn);
    sp->session_name = strdup(session_name && *session_name ? session_name : def);
    if (!ctx->region && !getenv("AWS_ENDPOINT_URL_STS") && !getenv("AWS_ENDPOINT_URL"))
        sp->endpoint = strdup("https://sts.amazonaws.com");
    else
        sp->endpoint = aws_service_endpoint(NULL, "sts", "STS", ctx->region, err, errlen);
    if (!sp->name || !sp->role_arn || !sp->session_name || !sp->endpoint) {
        if (sp->endpoint)
            snprintf(err, errlen, "out of memory");
        sts_destroy(&sp->base);
        return NULL;
    }
    sp->base.name = sp->name;
    return sp;
}

struct aws_provider *aws_provider_web_identity(struct aws_ctx *ctx, const char *name,
                                               const char *token_file, const char *role_arn,
                                               const char *session_name, char *err, size_t errlen)
{
    struct sts_provider *sp = sts_new(ctx, name, role_arn, session_name, err, errlen);
    if (sp && !(sp->token_file = strdup(token_file))) {
        snprintf(err, errlen, "out of memory");
        sts_destroy(&sp->base);
        return NULL;
    }
    return sp ? &sp->base : NULL;
}

struct aws_provider *aws_provider_assume_role(struct aws_ctx *ctx, const char *name,
                                              struct aws_provider *source, const char *role_arn,
                                              const char *session_name, const char *external_id,
                                              int duration_sec, char *err, size_t errlen)
{
    struct sts_provider *sp = sts_new(ctx, name, role_arn, session_name, err, errlen);
    if (!sp) {
        aws_provider_free(source);
        return NULL;
    }
    sp->source = source;
    sp->duration_sec = duration_sec;
    if (external_id && !(sp->external_id = strdup(external_id))) {
        snprintf(err, errlen, "out of memory");
        sts_destroy(&sp->base);
        return NULL;
    }
    return &sp->base;
}
