/* Credentials and region from HTTP metadata endpoints: EC2 IMDSv2 and the container endpoint. */
#include "secrets/aws_metadata.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "conf/config.h"
#include "secrets/aws_endpoint.h"
#include "secrets/http_client.h"

#define IMDS_DEFAULT      "http://169.254.169.254"
#define IMDS_DEFAULT_IPV6 "http://[fd00:ec2::254]"
#define ECS_HOST          "http://169.254.170.2"
#define TOKEN_TTL         "21600"
#define TOKEN_FILE_MAX    16384

static const char *env_nonempty(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

static void wipe_free(char *s)
{
    if (s) {
        OPENSSL_cleanse(s, strlen(s));
        free(s);
    }
}

/* A header line holding a secret ("X-aws-ec2-metadata-token: ..."), to be wiped. */
static char *header_line(const char *name, const char *value)
{
    char *s = NULL;
    return asprintf(&s, "%s: %s", name, value) < 0 ? NULL : s;
}

/* "HTTP 404" or the transport error, for messages. */
static void describe_failure(const struct http_response *r, char *out, size_t n)
{
    if (r->status)
        snprintf(out, n, "HTTP %ld", r->status);
    else if (r->timed_out)
        snprintf(out, n, "no answer in time");
    else
        snprintf(out, n, "%s", r->error ? r->error : "no response");
}

/* ---- IMDSv2 ------------------------------------------------------------------------------- */

struct imds_provider {
    struct aws_provider base;
    struct aws_ctx *ctx;
};

enum imds_step { IMDS_TOKEN, IMDS_ROLE, IMDS_CREDS, IMDS_REGION };

/* One sequence of requests: token, then role and credentials, or the region. */
struct imds_op {
    struct aws_fetch base;
    struct aws_ctx *ctx;
    char *endpoint;
    char *token; /* the IMDSv2 session token, wiped */
    char role[256];
    enum imds_step step;
    bool want_region;
    aws_creds_cb creds_cb;
    aws_region_cb region_cb;
    void *arg;
    struct http_request *req;
    int timeout_ms;
};

static void imds_free(struct imds_op *op)
{
    http_request_cancel(op->req);
    wipe_free(op->token);
    free(op->endpoint);
    free(op);
}

static void imds_cancel(struct aws_fetch *base)
{
    imds_free((struct imds_op *)base);
}

static void imds_fail(struct imds_op *op, const char *fmt, const char *what)
{
    char msg[512];
    snprintf(msg, sizeof(msg), fmt, what);
    op->req = NULL;
    if (op->want_region)
        op->region_cb(NULL, msg, op->arg);
    else
        op->creds_cb(NULL, msg, op->arg);
    imds_free(op);
}

static void imds_response(const struct http_response *r, void *arg);

static bool imds_send(struct imds_op *op, const char *method, const char *path)
{
    char url[1024], err[256];
    snprintf(url, sizeof(url), "%s%s", op->endpoint, path);
    char *hdr = op->token ? header_line("X-aws-ec2-metadata-token", op->token)
                          : strdup("X-aws-ec2-metadata-token-ttl-seconds: " TOKEN_TTL);
    const char *headers[] = {hdr, NULL};
    struct http_request_params p = {
        .method = method, .url = url, .headers = headers, .timeout_ms = op->timeout_ms};
    op->req =
        hdr ? http_request_start(op->ctx->http, &p, imds_response, op, err, sizeof(err)) : NULL;
    wipe_free(hdr);
    return op->req != NULL;
}

static const char *imds_step_path(const struct imds_op *op)
{
    switch (op->step) {
    case IMDS_TOKEN:
        return "/latest/api/token";
    case IMDS_ROLE:
        return "/latest/meta-data/iam/security-credentials/";
    case IMDS_CREDS:
        return "/latest/meta-data/iam/security-credentials/ROLE";
    case IMDS_REGION:
        return "/latest/meta-data/placement/region";
    }
    return "?";
}

static void imds_next(struct imds_op *op)
{
    char path[600];
    if (op->step == IMDS_CREDS)
        snprintf(path, sizeof(path), "/latest/meta-data/iam/security-credentials/%s", op->role);
    else
        snprintf(path, sizeof(path), "%s", imds_step_path(op));
    if (!imds_send(op, op->step == IMDS_TOKEN ? "PUT" : "GET", path))
        imds_fail(op, "instance metadata: cannot start a request to %s", op->endpoint);
}

static void imds_got_creds(struct imds_op *op, const struct http_response *r)
{
    char err[320];
    cJSON *j = cJSON_ParseWithLength(r->body, r->body_len);
    const cJSON *code = cJSON_GetObjectItemCaseSensitive(j, "Code");
    struct aws_credentials *c = NULL;
    if (cJSON_IsString(code) && strcmp(code->valuestring, "Success") != 0)
        snprintf(err, sizeof(err), "instance metadata: role credentials say Code %.64s",
                 code->valuestring);
    else if ((c = aws_credentials_from_json(j, err, sizeof(err))) == NULL) {
        char tmp[256];
        snprintf(tmp, sizeof(tmp), "%.255s", err);
        snprintf(err, sizeof(err), "instance metadata: %s", tmp);
    }
    cJSON_Delete(j);
    op->req = NULL;
    op->creds_cb(c, c ? NULL : err, op->arg);
    imds_free(op);
}

static void imds_response(const struct http_response *r, void *arg)
{
    struct imds_op *op = arg;
    op->req = NULL;
    if (r->status != 200) {
        char why[256], msg[512];
        describe_failure(r, why, sizeof(why));
        snprintf(msg, sizeof(msg), "instance metadata %s %s: %s%s", op->endpoint,
                 imds_step_path(op), why,
                 op->step == IMDS_TOKEN ? " (IMDSv2 token; IMDSv1 is not used)" : "");
        imds_fail(op, "%s", msg);
        return;
    }
    switch (op->step) {
    case IMDS_TOKEN:
        op->token = strndup(r->body, strcspn(r->body, "\r\n"));
        if (!op->token || !*op->token) {
            imds_fail(op, "instance metadata %s: empty IMDSv2 token", op->endpoint);
            return;
        }
        op->step = op->want_region ? IMDS_REGION : IMDS_ROLE;
        imds_next(op);
        return;
    case IMDS_ROLE: {
        size_t len = strcspn(r->body, "\r\n");
        if (!len || len >= sizeof(op->role)) {
            imds_fail(op, "instance metadata %s: no IAM role is attached to this instance",
                      op->endpoint);
            return;
        }
        memcpy(op->role, r->body, len);
        op->role[len] = '\0';
        op->step = IMDS_CREDS;
        imds_next(op);
        return;
    }
    case IMDS_CREDS:
        imds_got_creds(op, r);
        return;
    case IMDS_REGION: {
        char region[65];
        size_t len = strcspn(r->body, "\r\n");
        snprintf(region, sizeof(region), "%.*s", (int)(len < 64 ? len : 64), r->body);
        if (!aws_region_valid(region)) {
            imds_fail(op, "instance metadata %s: no valid region in placement/region",
                      op->endpoint);
            return;
        }
        op->region_cb(region, NULL, op->arg);
        imds_free(op);
        return;
    }
    }
}

static struct imds_op *imds_op_new(struct aws_ctx *ctx)
{
    struct imds_op *op = calloc(1, sizeof(*op));
    if (!op)
        return NULL;
    const char *ep = env_nonempty("AWS_EC2_METADATA_SERVICE_ENDPOINT");
    const char *mode = env_nonempty("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE");
    if (!ep)
        ep = mode && strcasecmp(mode, "IPv6") == 0 ? IMDS_DEFAULT_IPV6 : IMDS_DEFAULT;
    op->endpoint = strdup(ep);
    if (!op->endpoint) {
        free(op);
        return NULL;
    }
    size_t n = strlen(op->endpoint);
    while (n && op->endpoint[n - 1] == '/')
        op->endpoint[--n] = '\0';
    const char *t = env_nonempty("AWS_METADATA_SERVICE_TIMEOUT");
    int sec = t ? atoi(t) : 1;
    op->timeout_ms = (sec > 0 ? sec : 1) * 1000;
    if (op->timeout_ms > ctx->timeout_ms)
        op->timeout_ms = ctx->timeout_ms;
    op->ctx = ctx;
    op->base.cancel = imds_cancel;
    return op;
}

static struct aws_fetch *imds_fetch(struct aws_provider *p, aws_creds_cb cb, void *arg, char *err,
                                    size_t errlen)
{
    struct imds_provider *ip = (struct imds_provider *)p;
    struct imds_op *op = imds_op_new(ip->ctx);
    if (!op) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    op->creds_cb = cb;
    op->arg = arg;
    op->step = IMDS_TOKEN;
    if (!imds_send(op, "PUT", "/latest/api/token")) {
        snprintf(err, errlen, "instance metadata: cannot start a request to %s", op->endpoint);
        imds_free(op);
        return NULL;
    }
    return &op->base;
}

struct aws_fetch *aws_imds_region(struct aws_ctx *ctx, aws_region_cb cb, void *arg)
{
    struct imds_op *op = imds_op_new(ctx);
    if (!op)
        return NULL;
    op->want_region = true;
    op->region_cb = cb;
    op->arg = arg;
    op->step = IMDS_TOKEN;
    if (!imds_send(op, "PUT", "/latest/api/token")) {
        imds_free(op);
        return NULL;
    }
    return &op->base;
}

static void imds_destroy(struct aws_provider *p)
{
    free(p);
}

struct aws_provider *aws_provider_imds(struct aws_ctx *ctx)
{
    struct imds_provider *ip = calloc(1, sizeof(*ip));
    if (!ip)
        return NULL;
    ip->ctx = ctx;
    ip->base.name = "EC2 instance metadata (IMDSv2)";
    ip->base.fetch = imds_fetch;
    ip->base.destroy = imds_destroy;
    return &ip->base;
}

/* ---- The container endpoint --------------------------------------------------------------- */

struct container_provider {
    struct aws_provider base;
    struct aws_ctx *ctx;
    char *url;
    char *token_file; /* re-read at every fetch: EKS rotates it */
    char *token;      /* fixed token, wiped */
};

struct container_op {
    struct aws_fetch base;
    struct http_request *req;
    aws_creds_cb cb;
    void *arg;
};

static void container_cancel(struct aws_fetch *base)
{
    struct container_op *op = (struct container_op *)base;
    http_request_cancel(op->req);
    free(op);
}

static void container_response(const struct http_response *r, void *arg)
{
    struct container_op *op = arg;
    char err[300], why[256];
    struct aws_credentials *c = NULL;
    if (r->status != 200) {
        describe_failure(r, why, sizeof(why));
        snprintf(err, sizeof(err), "container credentials endpoint: %s", why);
    } else {
        cJSON *j = cJSON_ParseWithLength(r->body, r->body_len);
        c = aws_credentials_from_json(j, why, sizeof(why));
        cJSON_Delete(j);
        if (!c)
            snprintf(err, sizeof(err), "container credentials endpoint: %s", why);
    }
    op->cb(c, c ? NULL : err, op->arg);
    free(op);
}

/* Reads the authorization token file (small, local: a projected volume). */
static char *read_token_file(const char *path, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        snprintf(err, errlen, "cannot read AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE %.200s: %s", path,
                 strerror(errno));
        return NULL;
    }
    char *buf = calloc(1, TOKEN_FILE_MAX + 1);
    ssize_t n = buf ? read(fd, buf, TOKEN_FILE_MAX) : -1;
    close(fd);
    if (n <= 0) {
        snprintf(err, errlen, "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE %.200s is empty", path);
        free(buf);
        return NULL;
    }
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
        buf[--n] = '\0';
    if (strpbrk(buf, "\r\n")) {
        snprintf(err, errlen, "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE %.200s has several lines",
                 path);
        OPENSSL_cleanse(buf, TOKEN_FILE_MAX);
        free(buf);
        return NULL;
    }
    return buf;
}

static struct aws_fetch *container_fetch(struct aws_provider *p, aws_creds_cb cb, void *arg,
                                         char *err, size_t errlen)
{
    struct container_provider *cp = (struct container_provider *)p;
    char *token = cp->token_file ? read_token_file(cp->token_file, err, errlen)
                                 : (cp->token ? strdup(cp->token) : NULL);
    if (cp->token_file && !token)
        return NULL;
    char *hdr = token ? header_line("Authorization", token) : NULL;
    wipe_free(token);
    const char *headers[] = {"Accept: application/json", hdr, NULL};
    struct container_op *op = calloc(1, sizeof(*op));
    if (op) {
        op->base.cancel = container_cancel;
        op->cb = cb;
        op->arg = arg;
        struct http_request_params hp = {
            .method = "GET", .url = cp->url, .headers = headers, .timeout_ms = cp->ctx->timeout_ms};
        op->req = http_request_start(cp->ctx->http, &hp, container_response, op, err, errlen);
    }
    wipe_free(hdr);
    if (!op || !op->req) {
        if (!op)
            snprintf(err, errlen, "out of memory");
        free(op);
        return NULL;
    }
    return &op->base;
}

static void container_destroy(struct aws_provider *p)
{
    struct container_provider *cp = (struct container_provider *)p;
    free(cp->url);
    free(cp->token_file);
    wipe_free(cp->token);
    free(cp);
}

/* FULL_URI must be https, or http to loopback or the ECS / EKS Pod Identity agents. */
static bool full_uri_allowed(const char *url, char *err, size_t errlen)
{
    char host[512], path[1024];
    if (!aws_url_host_path(url, host, sizeof(host), path, sizeof(path))) {
        snprintf(err, errlen, "AWS_CONTAINER_CREDENTIALS_FULL_URI is not a valid URL");
        return false;
    }
    if (strncasecmp(url, "https://", 8) == 0)
        return true;
    char *colon = host[0] == '[' ? strstr(host, "]:") : strchr(host, ':');
    if (colon)
        colon[host[0] == '[' ? 1 : 0] = '\0';
    if (strncasecmp(url, "http://", 7) == 0 &&
        (config_host_is_loopback(host) || strcmp(host, "169.254.170.2") == 0 ||
         strcmp(host, "169.254.170.23") == 0 || strcasecmp(host, "[fd00:ec2::23]") == 0))
        return true;
    snprintf(err, errlen,
             "AWS_CONTAINER_CREDENTIALS_FULL_URI must be https://, or http:// to loopback, "
             "169.254.170.2 or 169.254.170.23");
    return false;
}

struct aws_provider *aws_provider_container(struct aws_ctx *ctx, bool *configured, char *err,
                                            size_t errlen)
{
    const char *rel = env_nonempty("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");
    const char *full = env_nonempty("AWS_CONTAINER_CREDENTIALS_FULL_URI");
    *configured = rel || full;
    if (!*configured)
        return NULL;
    struct container_provider *cp = calloc(1, sizeof(*cp));
    if (!cp) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    cp->ctx = ctx;
    if (rel) {
        if (asprintf(&cp->url, "%s%s%s", ECS_HOST, rel[0] == '/' ? "" : "/", rel) < 0)
            cp->url = NULL;
    } else if (full_uri_allowed(full, err, errlen)) {
        cp->url = strdup(full);
    } else {
        free(cp);
        return NULL;
    }
    const char *tf = env_nonempty("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE");
    const char *tok = env_nonempty("AWS_CONTAINER_AUTHORIZATION_TOKEN");
    if (tf)
        cp->token_file = strdup(tf);
    else if (tok)
        cp->token = strdup(tok);
    cp->base.name = "the container credentials endpoint";
    cp->base.fetch = container_fetch;
    cp->base.destroy = container_destroy;
    if (!cp->url || (tf && !cp->token_file) || (!tf && tok && !cp->token)) {
        container_destroy(&cp->base);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    return &cp->base;
}
