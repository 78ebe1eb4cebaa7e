/* One client connection: reads frames (length checked before the body is buffered), hands
 * each request to the workload or admin handler, writes the response, and enforces the idle,
 * read and write timeouts. A connection works on one request at a time: while a request waits
 * for its audit commit, nothing more is read from it, so a client can never queue unbounded
 * work or memory. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <systemd/sd-event.h>

#include "identity/identity.h"
#include "message.h"
#include "daemon/server.h"

struct Conn {
        Server *server;
        unsigned refs;
        int fd;
        bool admin;
        struct ucred cred;
        Identity id;  /* workload connections: read at accept */
        int id_error; /* 0, or why the caller could not be identified */
        json_t *peer; /* the identity as audit records show it; immutable, shared */

        sd_event_source *io, *timer;
        uint8_t *in;
        size_t in_len, in_cap;
        uint64_t deadline;    /* monotonic usec this connection times out, 0 while busy */
        uint64_t armed;       /* what the timer is set to, 0 when it is not */
        uint64_t in_deadline; /* monotonic usec by which the partial frame in `in` must be
                               * complete; 0 until we start waiting for its rest */
        char *out;
        size_t out_len, out_off;

        bool busy;     /* a request is waiting for its audit commit */
        bool closing;  /* close once the pending output is written */
        bool read_eof; /* the peer will send no more: answer what it sent, then close */
        bool closed;   /* fd gone; the struct lives until the last reference drops */

        Conn *prev, *next;
};

/* I/O callback of a listening socket. */
int conn_on_listener(sd_event_source *s, int fd, uint32_t revents, void *userdata);

Conn *conn_ref(Conn *c);
void conn_unref(Conn *c);

/* Sends a response (takes over the reference) and, unless the connection is busy with an
 * asynchronous request, goes on with the next buffered request. */
void conn_reply(Conn *c, json_t *msg);

/* For handlers that answer later: call conn_begin_async() before returning, then
 * conn_reply_async() from the completion (it clears busy and resumes reading). */
void conn_begin_async(Conn *c);
void conn_reply_async(Conn *c, json_t *msg);

void conn_close(Conn *c);
void conn_close_all(Server *s);

/* Stops reading new requests; connections close once their current request is answered. */
void conn_shutdown_all(Server *s);
