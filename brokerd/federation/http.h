/* HTTP POSTs to token endpoints: libcurl's multi interface driven by the sd-event loop (its
 * socket and timer callbacks become io and time sources), so a slow or dead endpoint holds no
 * thread and delays nothing else on the loop. One multi handle for the daemon: connections
 * (and TLS sessions) are reused between requests to the same endpoint.
 *
 * Every transfer: TLS peer and host verification on (TLS 1.2 at least), https only unless the
 * request allows http (a loopback endpoint the configuration accepted), no redirects, no
 * proxy unless one is given (the environment's proxy variables are ignored), no cookies, no
 * compression, and a response body bounded by max_response_bytes, kept in secure memory
 * (it holds a token) and wiped when the callback returns.
 *
 * Threads: the loop only. The done callback runs on the loop exactly once per transfer, also
 * when the client is freed first (outcome HTTP_CANCELLED). */
#pragma once

#include <curl/curl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <systemd/sd-event.h>

typedef enum HttpOutcome {
        HTTP_RESPONSE,       /* a complete response, whatever its status */
        HTTP_CONNECT_FAILED, /* no connection, or it broke before a response: retryable */
        HTTP_TIMEOUT,        /* the attempt's timeout passed: retryable */
        HTTP_TLS_FAILED,     /* the certificate or name did not verify: not retried */
        HTTP_TOO_LARGE,      /* the body passed max_response_bytes */
        HTTP_FAILED,         /* anything else libcurl refused */
        HTTP_CANCELLED,      /* the client was freed first */
} HttpOutcome;

const char *http_outcome_to_string(HttpOutcome o);

/* What the response's headers said that matters here. */
typedef struct HttpHeaders {
        char content_type[128];
        int64_t retry_after_s; /* -1: none (or an HTTP date, which is not used) */
} HttpHeaders;

/* One header line as libcurl hands it over ("Name: value\r\n", or a status line, which
 * starts a new response and resets `h`). Pure, for the fuzzer too. */
void http_header_parse(const char *line, size_t n, HttpHeaders *h);

typedef struct HttpResponse {
        HttpOutcome outcome;
        long status; /* HTTP_RESPONSE: the status code */
        const char *body; /* NUL-terminated, len bytes; secure memory, wiped after the callback */
        size_t len;
        HttpHeaders headers;
        const char *error; /* libcurl's words for what failed, "" on a response */
} HttpResponse;

typedef void (*http_done_t)(const HttpResponse *r, void *userdata);

typedef struct HttpRequest {
        const char *url;
        bool allow_http;
        /* Headers, besides Content-Type, Accept and User-Agent. Borrowed until
         * the callback: the caller wipes what it put there. */
        struct curl_slist *headers;
        const char *body; /* borrowed until the callback */
        size_t body_len;
        bool json_body;     /* the body is application/json (else a form) */
        bool accept_xml;    /* ask for XML (AWS's query APIs), else JSON */
        const char *ca_file; /* NULL: the system's trust store */
        const char *proxy;   /* NULL: none */
        int64_t timeout_ms, connect_timeout_ms;
        size_t max_response_bytes;
} HttpRequest;

typedef struct HttpClient HttpClient;

int http_client_new(sd_event *event, HttpClient **ret);
/* Completes every transfer still running with HTTP_CANCELLED, then frees. */
void http_client_free(HttpClient *c);

/* Starts a POST. Returns 0 (`done` will run later, never from within this call) or -errno
 * (`done` never runs). */
int http_post(HttpClient *c, const HttpRequest *req, http_done_t done, void *userdata);

/* Transfers running now. */
size_t http_client_running(const HttpClient *c);
