#include "federation/http.h"

#include <ctype.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>

#include "macro.h"

typedef struct Transfer {
        HttpClient *client;
        CURL *easy;
        struct curl_slist *headers; /* ours, then a copy of the caller's (Authorization) */
        http_done_t done;
        void *userdata;
        char *body; /* sodium_malloc'd, max + 1 bytes */
        size_t len, max;
        bool too_large;
        HttpHeaders resp_headers;
        char error[CURL_ERROR_SIZE];
        struct Transfer *prev, *next;
} Transfer;

struct HttpClient {
        sd_event *event;
        CURLM *multi;
        sd_event_source *timer;
        Transfer *transfers;
        size_t running;
};

const char *http_outcome_to_string(HttpOutcome o)
{
        static const char *const names[] = {
            [HTTP_RESPONSE] = "response",         [HTTP_CONNECT_FAILED] = "connection failed",
            [HTTP_TIMEOUT] = "timed out",         [HTTP_TLS_FAILED] = "TLS verification failed",
            [HTTP_TOO_LARGE] = "response too large", [HTTP_FAILED] = "request failed",
            [HTTP_CANCELLED] = "cancelled",
        };
        return (unsigned) o < ELEMENTSOF(names) ? names[o] : "unknown";
}

void http_header_parse(const char *line, size_t n, HttpHeaders *h)
{
        static const char ct[] = "content-type:", ra[] = "retry-after:";
        const char *v, *end = line + n;
        size_t vn;

        if (n >= 5 && strncmp(line, "HTTP/", 5) == 0) {
                /* a new response (after a 100 Continue, say): forget the last one's */
                *h = (HttpHeaders){.retry_after_s = -1};
                return;
        }
        if (n > sizeof(ct) - 1 && strncasecmp(line, ct, sizeof(ct) - 1) == 0)
                v = line + sizeof(ct) - 1;
        else if (n > sizeof(ra) - 1 && strncasecmp(line, ra, sizeof(ra) - 1) == 0)
                v = line + sizeof(ra) - 1;
        else
                return;
        while (v < end && (*v == ' ' || *v == '\t'))
                v++;
        while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t'))
                end--;
        vn = (size_t) (end - v);
        if (tolower((unsigned char) line[0]) == 'c') {
                vn = MIN(vn, sizeof(h->content_type) - 1);
                memcpy(h->content_type, v, vn);
                h->content_type[vn] = 0;
                return;
        }
        /* Retry-After: delay-seconds (an HTTP date is ignored) */
        int64_t s = 0;
        if (vn == 0 || vn > 9)
                return;
        for (size_t i = 0; i < vn; i++) {
                if (v[i] < '0' || v[i] > '9')
                        return;
                s = s * 10 + (v[i] - '0');
        }
        h->retry_after_s = s;
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *userdata)
{
        Transfer *t = userdata;

        http_header_parse(data, size * nmemb, &t->resp_headers);
        return size * nmemb;
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *userdata)
{
        Transfer *t = userdata;
        size_t n = size * nmemb;

        if (n > t->max - t->len) {
                t->too_large = true;
                return 0; /* libcurl stops with CURLE_WRITE_ERROR */
        }
        memcpy(t->body + t->len, data, n);
        t->len += n;
        return n;
}

static HttpOutcome classify(Transfer *t, CURLcode rc)
{
        switch (rc) {
        case CURLE_OK:
                return HTTP_RESPONSE;
        case CURLE_OPERATION_TIMEDOUT:
                return HTTP_TIMEOUT;
        case CURLE_COULDNT_RESOLVE_PROXY:
        case CURLE_COULDNT_RESOLVE_HOST:
        case CURLE_COULDNT_CONNECT:
        case CURLE_SEND_ERROR:
        case CURLE_RECV_ERROR:
        case CURLE_GOT_NOTHING:
        case CURLE_PARTIAL_FILE:
        case CURLE_SSL_CONNECT_ERROR: /* the handshake broke off, unlike a refused peer */
        case CURLE_HTTP2:
        case CURLE_HTTP2_STREAM:
                return HTTP_CONNECT_FAILED;
        case CURLE_PEER_FAILED_VERIFICATION:
        case CURLE_SSL_CACERT_BADFILE:
        case CURLE_SSL_CERTPROBLEM:
        case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
                return HTTP_TLS_FAILED;
        case CURLE_FILESIZE_EXCEEDED:
                return HTTP_TOO_LARGE;
        case CURLE_WRITE_ERROR:
                return t->too_large ? HTTP_TOO_LARGE : HTTP_FAILED;
        default:
                return HTTP_FAILED;
        }
}

static void transfer_free(Transfer *t)
{
        HttpClient *c = t->client;

        if (t->easy) {
                curl_multi_remove_handle(c->multi, t->easy);
                curl_easy_cleanup(t->easy);
        }
        /* The copy of the caller's headers may hold a client secret (Basic). */
        for (struct curl_slist *h = t->headers; h; h = h->next)
                explicit_bzero(h->data, strlen(h->data));
        curl_slist_free_all(t->headers);
        if (t->body)
                sodium_free(t->body);
        if (t->prev)
                t->prev->next = t->next;
        else
                c->transfers = t->next;
        if (t->next)
                t->next->prev = t->prev;
        c->running--;
        free(t);
}

static void transfer_finish(Transfer *t, HttpOutcome outcome)
{
        HttpResponse r = {.outcome = outcome,
                          .body = t->body,
                          .len = t->len,
                          .headers = t->resp_headers,
                          .error = t->error};

        t->body[t->len] = 0;
        if (outcome == HTTP_RESPONSE)
                curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &r.status);
        else if (!t->error[0])
                snprintf(t->error, sizeof(t->error), "%s", http_outcome_to_string(outcome));
        t->done(&r, t->userdata);
        transfer_free(t);
}

static void check_done(HttpClient *c)
{
        CURLMsg *m;
        int left;

        while ((m = curl_multi_info_read(c->multi, &left)))
                if (m->msg == CURLMSG_DONE) {
                        Transfer *t = NULL;
                        CURLcode rc = m->data.result;

                        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **) &t);
                        transfer_finish(t, classify(t, rc));
                }
}

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
        HttpClient *c = userdata;
        int running, flags = 0;

        if (revents & EPOLLIN)
                flags |= CURL_CSELECT_IN;
        if (revents & EPOLLOUT)
                flags |= CURL_CSELECT_OUT;
        if (revents & (EPOLLERR | EPOLLHUP))
                flags |= CURL_CSELECT_ERR;
        (void) curl_multi_socket_action(c->multi, fd, flags, &running);
        check_done(c);
        return 0;
}

static int on_timer(sd_event_source *s, uint64_t usec, void *userdata)
{
        HttpClient *c = userdata;
        int running;

        (void) curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
        check_done(c);
        return 0;
}

/* libcurl says which sockets to watch for what; each gets an io source, kept as the socket's
 * private pointer. */
static int on_socket(CURL *easy, curl_socket_t fd, int what, void *userdata, void *socketp)
{
        HttpClient *c = userdata;
        sd_event_source *src = socketp;
        uint32_t events = 0;

        if (what == CURL_POLL_REMOVE) {
                sd_event_source_disable_unref(src);
                curl_multi_assign(c->multi, fd, NULL);
                return 0;
        }
        if (what & CURL_POLL_IN)
                events |= EPOLLIN;
        if (what & CURL_POLL_OUT)
                events |= EPOLLOUT;
        if (src)
                return sd_event_source_set_io_events(src, events) < 0 ? -1 : 0;
        if (sd_event_add_io(c->event, &src, fd, events, on_io, c) < 0)
                return -1;
        curl_multi_assign(c->multi, fd, src);
        return 0;
}

/* libcurl's one timer: -1 stops it; 0 means "call me soon", not from within this callback. */
static int on_timer_change(CURLM *multi, long timeout_ms, void *userdata)
{
        HttpClient *c = userdata;

        if (timeout_ms < 0)
                return sd_event_source_set_enabled(c->timer, SD_EVENT_OFF) < 0 ? -1 : 0;
        if (sd_event_source_set_time_relative(c->timer, (uint64_t) timeout_ms * 1000) < 0 ||
            sd_event_source_set_enabled(c->timer, SD_EVENT_ONESHOT) < 0)
                return -1;
        return 0;
}

int http_client_new(sd_event *event, HttpClient **ret)
{
        HttpClient *c = calloc(1, sizeof(HttpClient));
        int r;

        if (!c)
                return -ENOMEM;
        c->event = sd_event_ref(event);
        c->multi = curl_multi_init();
        if (!c->multi) {
                http_client_free(c);
                return -ENOMEM;
        }
        r = sd_event_add_time_relative(event, &c->timer, CLOCK_MONOTONIC, 0, 0, on_timer, c);
        if (r >= 0)
                r = sd_event_source_set_enabled(c->timer, SD_EVENT_OFF);
        if (r < 0) {
                http_client_free(c);
                return r;
        }
        curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
        curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
        curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, on_timer_change);
        curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
        *ret = c;
        return 0;
}

void http_client_free(HttpClient *c)
{
        if (!c)
                return;
        while (c->transfers)
                transfer_finish(c->transfers, HTTP_CANCELLED);
        if (c->multi)
                curl_multi_cleanup(c->multi); /* REMOVEs every socket's io source */
        sd_event_source_disable_unref(c->timer);
        sd_event_unref(c->event);
        free(c);
}

size_t http_client_running(const HttpClient *c)
{
        return c->running;
}

static int setup_easy(Transfer *t, const HttpRequest *req)
{
        CURL *e = t->easy;
        int ok = CURLE_OK;

        /* Every header: ours first, then the caller's (copied by libcurl at send time). */
        const char *const fixed[] = {
            req->json_body ? "Content-Type: application/json"
                           : "Content-Type: application/x-www-form-urlencoded",
            req->accept_xml ? "Accept: text/xml" : "Accept: application/json",
            "Expect:", /* no 100-continue round trip */
        };
        for (size_t i = 0; i < ELEMENTSOF(fixed); i++) {
                struct curl_slist *n = curl_slist_append(t->headers, fixed[i]);
                if (!n)
                        return -ENOMEM;
                t->headers = n;
        }
        for (const struct curl_slist *h = req->headers; h; h = h->next) {
                struct curl_slist *n = curl_slist_append(t->headers, h->data);
                if (!n)
                        return -ENOMEM;
                t->headers = n;
        }

        ok |= curl_easy_setopt(e, CURLOPT_URL, req->url);
        ok |= curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, req->allow_http ? "http,https" : "https");
        ok |= curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
        ok |= curl_easy_setopt(e, CURLOPT_POST, 1L);
        ok |= curl_easy_setopt(e, CURLOPT_POSTFIELDS, req->body);
        ok |= curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) req->body_len);
        ok |= curl_easy_setopt(e, CURLOPT_HTTPHEADER, t->headers);
        ok |= curl_easy_setopt(e, CURLOPT_USERAGENT, "brokerd");
        ok |= curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
        ok |= curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
        ok |= curl_easy_setopt(e, CURLOPT_SSLVERSION, (long) CURL_SSLVERSION_TLSv1_2);
        if (req->ca_file)
                ok |= curl_easy_setopt(e, CURLOPT_CAINFO, req->ca_file);
        /* "" turns proxies off, whatever http_proxy/HTTPS_PROXY/ALL_PROXY in our environment
         * say: a proxy sees every secret we send. */
        ok |= curl_easy_setopt(e, CURLOPT_PROXY, req->proxy ? req->proxy : "");
        ok |= curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
        ok |= curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long) MAX(req->timeout_ms, 1));
        ok |= curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long) MAX(req->connect_timeout_ms, 1));
        ok |= curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t) t->max);
        ok |= curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
        ok |= curl_easy_setopt(e, CURLOPT_WRITEDATA, t);
        ok |= curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
        ok |= curl_easy_setopt(e, CURLOPT_HEADERDATA, t);
        ok |= curl_easy_setopt(e, CURLOPT_ERRORBUFFER, t->error);
        ok |= curl_easy_setopt(e, CURLOPT_PRIVATE, (char *) t);
        return ok == CURLE_OK ? 0 : -EINVAL;
}

int http_post(HttpClient *c, const HttpRequest *req, http_done_t done, void *userdata)
{
        Transfer *t = calloc(1, sizeof(Transfer));
        int r;

        if (!t)
                return -ENOMEM;
        *t = (Transfer){.client = c,
                        .done = done,
                        .userdata = userdata,
                        .max = req->max_response_bytes,
                        .resp_headers.retry_after_s = -1,
                        .next = c->transfers};
        if (c->transfers)
                c->transfers->prev = t;
        c->transfers = t;
        c->running++;
        t->body = sodium_malloc(t->max + 1);
        t->easy = curl_easy_init();
        if (!t->body || !t->easy) {
                transfer_free(t);
                return -ENOMEM;
        }
        r = setup_easy(t, req);
        if (r >= 0 && curl_multi_add_handle(c->multi, t->easy) != CURLM_OK)
                r = -ENOMEM;
        if (r < 0) {
                transfer_free(t);
                return r;
        }
        return 0;
}
