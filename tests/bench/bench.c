/* Load generator and in-process ceiling for `make bench`.
 *
 *   bench --socket PATH --threads N --seconds S [--audience AUD | --upstream NAME]
 *       N threads, each on its own persistent connection, request tokens back to back for S
 *       seconds; prints tokens/s and p50/p99 latency of the whole request (send to answer).
 *       With --upstream: the upstream's tokens (cache hits once the first is in).
 *   bench --socket PATH --threads N --once --upstream NAME
 *       N threads connect, wait for each other, then each asks once at the same moment:
 *       prints cold_us, the time until the last of them has its token (on an empty cache,
 *       one exchange that all of them wait for).
 *   bench --ceiling --seconds S [--alg ALG]
 *       signs JWTs in this process on one core, no I/O: the upper bound for the daemon. */
#include <getopt.h>
#include <pthread.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "broker.h"
#include "policy/config.h"
#include "keys/jwt.h"
#include "keys/signer.h"

#define MAX_SAMPLES (4u * 1024 * 1024)

static double now_sec(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return ts.tv_sec + ts.tv_nsec / 1e9;
}

typedef struct Worker {
        pthread_t thread;
        const char *socket;
        const char *audience;
        const char *upstream; /* instead of audience */
        pthread_barrier_t *start; /* --once: all ask together */
        double until;
        uint32_t *lat_us; /* one per request */
        size_t n;
        int error;
} Worker;

static void *worker_main(void *userdata)
{
        Worker *w = userdata;
        broker *b = NULL;
        broker_error err;

        if (broker_open(w->socket, 5000, &b, &err) < 0) {
                fprintf(stderr, "bench: %s\n", err.message);
                w->error = 1;
                return NULL;
        }
        if (w->start)
                pthread_barrier_wait(w->start);
        while (w->n < MAX_SAMPLES) {
                double t0 = now_sec();
                int r;
                if (t0 >= w->until)
                        break;
                if (w->upstream) {
                        broker_upstream_token t = {};
                        r = broker_get_upstream_token(
                            b, &(broker_upstream_request){.upstream = w->upstream}, &t, &err);
                        broker_upstream_token_clear(&t);
                } else {
                        broker_token t;
                        r = broker_get_token(b, &(broker_token_request){.audience = w->audience},
                                             &t, &err);
                        if (r >= 0)
                                broker_token_clear(&t);
                }
                if (r < 0) {
                        fprintf(stderr, "bench: %s\n", err.message);
                        w->error = 1;
                        break;
                }
                w->lat_us[w->n++] = (uint32_t) ((now_sec() - t0) * 1e6);
                if (w->start) /* --once */
                        break;
        }
        broker_close(b);
        return NULL;
}

static int cmp_u32(const void *a, const void *b)
{
        uint32_t x = *(const uint32_t *) a, y = *(const uint32_t *) b;
        return x < y ? -1 : x > y;
}

static int run_load(const char *socket, const char *audience, const char *upstream,
                    int threads, double seconds, bool once)
{
        Worker *w = calloc(threads, sizeof(Worker));
        pthread_barrier_t start_together;
        size_t total = 0, k = 0;
        uint32_t *all;
        double start, elapsed;
        int failed = 0;

        if (once)
                pthread_barrier_init(&start_together, NULL, threads);
        start = now_sec();
        for (int i = 0; i < threads; i++) {
                w[i] = (Worker){.socket = socket, .audience = audience, .upstream = upstream,
                                .start = once ? &start_together : NULL,
                                .until = once ? 1e18 : start + seconds};
                w[i].lat_us = malloc(MAX_SAMPLES * sizeof(uint32_t));
                pthread_create(&w[i].thread, NULL, worker_main, &w[i]);
        }
        for (int i = 0; i < threads; i++) {
                pthread_join(w[i].thread, NULL);
                total += w[i].n;
                failed |= w[i].error;
        }
        elapsed = now_sec() - start;
        all = malloc((total ? total : 1) * sizeof(uint32_t));
        for (int i = 0; i < threads; i++) {
                memcpy(all + k, w[i].lat_us, w[i].n * sizeof(uint32_t));
                k += w[i].n;
                free(w[i].lat_us);
        }
        qsort(all, total, sizeof(uint32_t), cmp_u32);
        if (total == 0 || failed) {
                fprintf(stderr, "bench: load run failed\n");
                return 1;
        }
        if (once) {
                pthread_barrier_destroy(&start_together);
                printf("threads=%d cold_us=%u\n", threads, all[total - 1]);
                free(all);
                free(w);
                return 0;
        }
        printf("threads=%d tokens=%zu seconds=%.2f tokens_per_s=%.0f p50_us=%u p90_us=%u "
               "p99_us=%u p999_us=%u max_us=%u\n",
               threads, total, elapsed, total / elapsed, all[total / 2], all[total * 9 / 10],
               all[total * 99 / 100], all[total * 999 / 1000], all[total - 1]);
        free(all);
        free(w);
        return 0;
}

static int run_ceiling(Alg alg, double seconds)
{
        SigningKey *k;
        size_t n = 0;
        double start, end;

        if (signer_init() < 0 || signing_key_generate(alg, 2048, &k) < 0) {
                fprintf(stderr, "bench: cannot make a %s key\n", alg_to_string(alg));
                return 1;
        }
        start = now_sec();
        do {
                for (int i = 0; i < 100; i++) {
                        MintedToken t;
                        if (jwt_mint(k, "https://broker.bench", "spiffe://bench/uid/0",
                                     "https://api.bench", NULL, 0, (int64_t) time(NULL), 300, 0,
                                     &t) < 0)
                                return 1;
                        minted_token_done(&t);
                        n++;
                }
                end = now_sec();
        } while (end - start < seconds);
        printf("alg=%s ceiling_per_s=%.0f\n", alg_to_string(alg), n / (end - start));
        signing_key_unref(k);
        return 0;
}

int main(int argc, char **argv)
{
        static const struct option opts[] = {
            {"socket", required_argument, NULL, 's'},
            {"threads", required_argument, NULL, 't'},
            {"seconds", required_argument, NULL, 'd'},
            {"audience", required_argument, NULL, 'a'},
            {"ceiling", no_argument, NULL, 'c'},
            {"alg", required_argument, NULL, 'g'},
            {"upstream", required_argument, NULL, 'u'},
            {"once", no_argument, NULL, 'o'},
            {},
        };
        const char *socket = NULL, *audience = "https://api.bench", *alg = "EdDSA";
        const char *upstream = NULL;
        bool once = false;
        int threads = 1, c;
        double seconds = 3;
        int ceiling = 0;

        while ((c = getopt_long(argc, argv, "", opts, NULL)) >= 0)
                switch (c) {
                case 's':
                        socket = optarg;
                        break;
                case 't':
                        threads = atoi(optarg);
                        break;
                case 'd':
                        seconds = atof(optarg);
                        break;
                case 'a':
                        audience = optarg;
                        break;
                case 'c':
                        ceiling = 1;
                        break;
                case 'g':
                        alg = optarg;
                        break;
                case 'u':
                        upstream = optarg;
                        break;
                case 'o':
                        once = true;
                        break;
                default:
                        return 2;
                }
        if (sodium_init() < 0)
                return 1;
        if (ceiling) {
                int a = alg_from_string(alg);
                if (a < 0) {
                        fprintf(stderr, "bench: unknown alg %s\n", alg);
                        return 2;
                }
                return run_ceiling(a, seconds);
        }
        if (!socket || threads < 1 || threads > 256) {
                fprintf(stderr, "bench: --socket PATH and 1..256 --threads needed\n");
                return 2;
        }
        if (once && !upstream) {
                fprintf(stderr, "bench: --once needs --upstream NAME\n");
                return 2;
        }
        return run_load(socket, audience, upstream, threads, seconds, once);
}
