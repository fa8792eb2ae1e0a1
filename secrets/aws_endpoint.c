/* AWS regions, partitions and service endpoints, with the SDKs' overrides. */
#include "secrets/aws_endpoint.h"

#include <ctype.h>
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "conf/config.h"

bool aws_env_true(const char *name)
{
    const char *v = getenv(name);
    return v && strcasecmp(v, "true") == 0;
}

bool aws_region_valid(const char *region)
{
    if (!region || !*region || strlen(region) > 64)
        return false;
    for (const char *p = region; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-'))
            return false;
    return true;
}

/* Region prefixes of the partitions other than "aws", most specific first. */
static const struct {
    const char *prefix;
    const char *suffix;
} partitions[] = {
    {"cn-", "amazonaws.com.cn"},    /* aws-cn */
    {"us-gov-", "amazonaws.com"},   /* aws-us-gov */
    {"us-isob-", "sc2s.sgov.gov"},  /* aws-iso-b */
    {"us-isof-", "csp.hci.ic.gov"}, /* aws-iso-f */
    {"eu-isoe-", "cloud.adc-e.uk"}, /* aws-iso-e */
    {"us-iso-", "c2s.ic.gov"},      /* aws-iso */
};

const char *aws_region_dns_suffix(const char *region)
{
    for (size_t i = 0; i < sizeof(partitions) / sizeof(partitions[0]); i++)
        if (strncmp(region, partitions[i].prefix, strlen(partitions[i].prefix)) == 0)
            return partitions[i].suffix;
    return "amazonaws.com";
}

bool aws_arn_region(const char *arn, char *out, size_t outlen)
{
    if (strncmp(arn, "arn:", 4) != 0)
        return false;
    const char *p = arn + 4;
    for (int field = 0; field < 2; field++) { /* skip partition and service */
        p = strchr(p, ':');
        if (!p)
            return false;
        p++;
    }
    const char *end = strchr(p, ':');
    size_t len = end ? (size_t)(end - p) : 0;
    if (!len || len >= outlen)
        return false;
    memcpy(out, p, len);
    out[len] = '\0';
    return aws_region_valid(out);
}

bool aws_rds_host_region(const char *host, char *out, size_t outlen)
{
    static const char *const suffixes[] = {".rds.amazonaws.com", ".rds.amazonaws.com.cn"};
    size_t n = host ? strlen(host) : 0;
    if (n && host[n - 1] == '.')
        n--;
    for (size_t k = 0; k < sizeof(suffixes) / sizeof(suffixes[0]); k++) {
        size_t sl = strlen(suffixes[k]);
        if (n <= sl || strncasecmp(host + n - sl, suffixes[k], sl) != 0)
            continue;
        const char *end = host + n - sl, *start = end;
        while (start > host && start[-1] != '.')
            start--;
        size_t len = (size_t)(end - start);
        if (start == host || len == 0 || len >= outlen)
            return false; /* the region label, after at least one label of the name */
        for (size_t i = 0; i < len; i++)
            out[i] = (char)tolower((unsigned char)start[i]);
        out[len] = '\0';
        return aws_region_valid(out);
    }
    return false;
}

bool aws_endpoint_check(const char *url, char *err, size_t errlen)
{
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL;
    bool ok = u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
              curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
              curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK;
    if (!ok) {
        snprintf(err, errlen, "endpoint '%.200s' is not a valid URL", url);
    } else if (strcasecmp(scheme, "https") != 0 && strcasecmp(scheme, "http") != 0) {
        snprintf(err, errlen, "endpoint '%.200s': only https:// (or http:// to loopback)", url);
        ok = false;
    } else if (strcasecmp(scheme, "http") == 0 && !config_host_is_loopback(host)) {
        snprintf(err, errlen,
                 "endpoint '%.200s': plain http:// is allowed only to a loopback address; use "
                 "https://",
                 url);
        ok = false;
    }
    curl_free(scheme);
    curl_free(host);
    curl_url_cleanup(u);
    return ok;
}

static const char *env_nonempty(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

char *aws_service_endpoint(const char *explicit_url, const char *prefix, const char *env_id,
                           const char *region, char *err, size_t errlen)
{
    char var[96];
    snprintf(var, sizeof(var), "AWS_ENDPOINT_URL_%s", env_id);
    const char *url = explicit_url && *explicit_url ? explicit_url : env_nonempty(var);
    if (!url)
        url = env_nonempty("AWS_ENDPOINT_URL");
    char *out = NULL;
    if (url) {
        out = strdup(url);
    } else if (!region || !aws_region_valid(region)) {
        snprintf(err, errlen, "no valid AWS region to build the %s endpoint from", prefix);
        return NULL;
    } else if (asprintf(&out, "https://%s%s.%s.%s", prefix,
                        aws_env_true("AWS_USE_FIPS_ENDPOINT") ? "-fips" : "", region,
                        aws_region_dns_suffix(region)) < 0) {
        out = NULL;
    }
    if (!out) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (!aws_endpoint_check(out, err, errlen)) {
        free(out);
        return NULL;
    }
    return out;
}

bool aws_url_host_path(const char *url, char *host, size_t hostlen, char *path, size_t pathlen)
{
    CURLU *u = curl_url();
    char *h = NULL, *port = NULL, *p = NULL, *scheme = NULL;
    bool ok = u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
              curl_url_get(u, CURLUPART_HOST, &h, 0) == CURLUE_OK &&
              curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
              curl_url_get(u, CURLUPART_PATH, &p, 0) == CURLUE_OK;
    if (ok && curl_url_get(u, CURLUPART_PORT, &port, 0) != CURLUE_OK)
        port = NULL;
    if (ok) {
        bool dflt = !port || (strcasecmp(scheme, "https") == 0 && strcmp(port, "443") == 0) ||
                    (strcasecmp(scheme, "http") == 0 && strcmp(port, "80") == 0);
        int n = snprintf(host, hostlen, "%s%s%s", h, dflt ? "" : ":", dflt ? "" : port);
        int m = snprintf(path, pathlen, "%s", *p ? p : "/");
        ok = n > 0 && (size_t)n < hostlen && m > 0 && (size_t)m < pathlen;
    }
    curl_free(h);
    curl_free(port);
    curl_free(p);
    curl_free(scheme);
    curl_url_cleanup(u);
    return ok;
}
