/* Request handlers of the two sockets. Each answers with conn_reply() before returning, or
 * calls conn_begin_async() and answers later with conn_reply_async(). `req` lives only for the
 * duration of the call. */
#pragma once

#include "transport/conn.h"
#include "message.h"

void workload_handle(Conn *c, const Request *req);
void admin_handle(Conn *c, const Request *req);
