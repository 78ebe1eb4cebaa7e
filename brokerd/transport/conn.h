/* One client connection, as a request handler sees it (the rest is the transport's). A
 * handler answers with conn_reply() before it returns, or calls conn_begin_async() and answers
 * later, exactly once, with conn_reply_async(); meanwhile nothing more is read from the
 * connection. If the peer goes away first, the answer is dropped (the request still completes
 * and is recorded). Event loop only. */
#pragma once

#include <jansson.h>

#include "identity/caller.h"

typedef struct Conn Conn;

/* Who is on the other end (identified before any request is handled). Borrowed. */
Caller *conn_caller(Conn *c);

/* Sends a response (takes over the reference). */
void conn_reply(Conn *c, json_t *msg);

void conn_begin_async(Conn *c);
void conn_reply_async(Conn *c, json_t *msg);
